//! Batched embedding equals one file at a time: padded batches of random
//! lengths (the model's minimum to 20 s), for both block types, on every test
//! device, within 1e-5 absolute.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use nexttdnn::config::ExperimentConfig;
use nexttdnn::embed::{min_samples, Embedder, Features, Loaded};
use nexttdnn::lists::ListedFile;
use nexttdnn::weights::{import_official, SpeakerModel};
use rand::{rngs::StdRng, RngExt, SeedableRng};

const VARIANTS: [&str; 2] = ["tiny_C32_B1_K65_7", "tiny_light_C32_B1_K65"];
const TOLERANCE: f64 = 1e-5;

fn model(variant: &str, device: &Device) -> SpeakerModel {
    let cfg = ExperimentConfig::load(&config(variant)).unwrap();
    import_official(&fixtures().join(format!("{variant}.pt")), &cfg, device).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Noise with a slowly moving tone, so that every frame differs.
fn signal(len: usize, rng: &mut StdRng) -> Vec<f32> {
    let f0: f32 = rng.random_range(100.0..400.0);
    (0..len)
        .map(|n| {
            let t = n as f32 / 16_000.0;
            0.3 * (2.0 * std::f32::consts::PI * f0 * t * (1.0 + 0.1 * t)).sin() + rng.random_range(-0.05f32..0.05)
        })
        .collect()
}

/// The embedding of one utterance alone, through the unmasked forward.
fn alone(e: &Embedder, f: &Features) -> Vec<f32> {
    let n_mels = e.config.frontend.n_mels;
    let x = Tensor::<3>::from_data(TensorData::new(f.values.clone(), [1, n_mels, f.frames]), &e.device);
    to_vec(e.net.forward(x, false))
}

#[test]
fn padded_batches_equal_files_alone() {
    for (name, device) in test_devices() {
        for variant in VARIANTS {
            let m = model(variant, &device);
            let e = Embedder::new(&m, &device);
            let mut rng = StdRng::seed_from_u64(7);
            let min = min_samples(&m.config);
            // The shortest accepted, the longest, and random lengths between.
            let mut lengths = vec![min, 320_000, min + 1];
            lengths.extend((0..5).map(|_| rng.random_range(min..=320_000)));
            let feats: Vec<Features> = lengths.iter().map(|&l| e.host_features(&signal(l, &mut rng))).collect();
            let want: Vec<Vec<f32>> = feats.iter().map(|f| alone(&e, f)).collect();
            // Batches that mix short and long files, and the whole set at once.
            for batch in [vec![0, 1], vec![2, 3, 1], (0..lengths.len()).rev().collect::<Vec<_>>()] {
                let refs: Vec<&Features> = batch.iter().map(|&i| &feats[i]).collect();
                let got = e.embed_batch(&refs).unwrap();
                for (row, &i) in got.iter().zip(&batch) {
                    let err = max_abs(row, &want[i]);
                    assert!(
                        err < TOLERANCE,
                        "{name} {variant}: file {i} ({} samples) in batch {batch:?}: max abs {err:e}",
                        lengths[i]
                    );
                }
            }
        }
    }
}

/// The check above can fail: without the mask, padding changes the embedding.
#[test]
fn padding_without_the_mask_changes_embeddings() {
    let device = Device::flex();
    for variant in VARIANTS {
        let m = model(variant, &device);
        let e = Embedder::new(&m, &device);
        let mut rng = StdRng::seed_from_u64(3);
        let f = e.host_features(&signal(24_000, &mut rng));
        let n_mels = e.config.frontend.n_mels;
        let t = f.frames + 50;
        let mut padded = vec![0.0f32; n_mels * t];
        for mel in 0..n_mels {
            padded[mel * t..mel * t + f.frames].copy_from_slice(&f.values[mel * f.frames..(mel + 1) * f.frames]);
        }
        let x = Tensor::<3>::from_data(TensorData::new(padded.clone(), [1, n_mels, t]), &device);
        let unmasked = to_vec(e.net.forward(x.clone(), false));
        let masked = to_vec(e.net.forward_padded(x, &[f.frames]));
        let want = alone(&e, &f);
        assert!(max_abs(&masked, &want) < TOLERANCE, "{variant}: masked");
        assert!(max_abs(&unmasked, &want) > 1e-3, "{variant}: padding should change the unmasked embedding");
    }
}

/// The file pipeline (worker threads, batches by length, cached entries
/// passed through) gives every file its own embedding, in order, whatever
/// the batch size.
#[test]
fn file_pipeline_keeps_order_and_passes_known_embeddings_through() {
    let device = Device::flex();
    let m = model(VARIANTS[0], &device);
    let e = Embedder::new(&m, &device);
    let files: Vec<ListedFile> = UTTS
        .iter()
        .chain(UTTS.iter())
        .map(|u| {
            let path = fixtures().join(format!("{u}.wav"));
            let samples = hound::WavReader::open(&path).unwrap().duration() as usize;
            ListedFile { path, samples }
        })
        .filter(|f| f.samples >= e.min_samples())
        .collect();
    let one_by_one = e.embed_listed(&files, 0.0, &|_| {}).unwrap();
    for (f, emb) in files.iter().zip(&one_by_one) {
        let direct = e.embed_file(&f.path).unwrap();
        assert!(max_abs(emb, &direct) < TOLERANCE, "{}", f.path.display());
    }
    let batched = e.embed_listed(&files, 30.0, &|_| {}).unwrap();
    for (a, b) in batched.iter().zip(&one_by_one) {
        assert!(max_abs(a, b) < TOLERANCE);
    }
    // A loader that knows file 0's embedding: it comes back untouched.
    let paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
    let lengths: Vec<usize> = files.iter().map(|f| f.samples).collect();
    let known = vec![0.25f32; m.config.model.embedding_dim];
    let mut got = vec![None; files.len()];
    let counted = std::sync::atomic::AtomicU64::new(0);
    e.embed_files(
        &paths,
        &lengths,
        30.0,
        |i, p| Ok(if i == 0 { Loaded::Embedding(known.clone()) } else { Loaded::Samples(e.load_audio(p)?) }),
        |i, v| {
            got[i] = Some(v);
            Ok(())
        },
        &|n| {
            counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .unwrap();
    assert_eq!(counted.into_inner(), files.len() as u64);
    assert_eq!(got[0].as_ref().unwrap(), &known);
    for i in 1..files.len() {
        assert!(max_abs(got[i].as_ref().unwrap(), &one_by_one[i]) < TOLERANCE);
    }
}

/// A loader error stops the run and names the file.
#[test]
fn loader_errors_name_the_file() {
    let device = Device::flex();
    let m = model(VARIANTS[0], &device);
    let e = Embedder::new(&m, &device);
    let dir = tmpdir("batched-bad");
    let bad = dir.join("broken.wav");
    std::fs::write(&bad, b"RIFF\x00\x00\x00\x00WAVEnot really").unwrap();
    let files = vec![ListedFile { path: bad.clone(), samples: 16_000 }];
    let err = format!("{:#}", e.embed_listed(&files, 30.0, &|_| {}).unwrap_err());
    assert!(err.contains("broken.wav"), "{err}");
}
