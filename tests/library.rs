//! The library's byte and async entry points give what the file-based and
//! blocking ones give: models and audio from bytes, embeddings read back
//! without blocking.

mod common;

use burn::tensor::Device;
use common::*;
use nexttdnn::audio::{decode_wav, read_wav};
use nexttdnn::embed::Embedder;
use nexttdnn::weights::SpeakerModel;

fn bundled_model() -> std::path::PathBuf {
    root().join("assets").join("model").join("demo.nexttdnn.safetensors")
}

#[test]
fn a_model_from_bytes_is_the_model_from_its_file() {
    let device = Device::flex();
    let path = bundled_model();
    let bytes = std::fs::read(&path).unwrap();
    let a = SpeakerModel::load(&path, &device).unwrap();
    let b = SpeakerModel::from_bytes(&bytes, &device).unwrap();
    assert_eq!(a.key, b.key);
    assert_eq!(a.config, b.config);
    assert_eq!(a.meta, b.meta);
    // Same checks: a flipped byte is found, and the error names the bytes.
    let mut bad = bytes.clone();
    let at = bad.len() - 100;
    bad[at] ^= 1;
    let e = format!("{:#}", SpeakerModel::from_named_bytes("upload.safetensors", &bad, &device).unwrap_err());
    assert!(e.contains("upload.safetensors") && e.contains("corrupt"), "{e}");
}

#[test]
fn the_model_key_ignores_metadata_and_training_settings() {
    let device = Device::flex();
    let mut m = SpeakerModel::load(&bundled_model(), &device).unwrap();
    let key = m.key.clone();
    let dir = tmpdir("model-key");
    m.meta.threshold = Some(0.25);
    m.config.train.max_epochs += 7;
    m.config.eval.asnorm_top_k += 1;
    let p = dir.join("m.safetensors");
    m.save(&p).unwrap();
    let again = SpeakerModel::load(&p, &device).unwrap();
    assert_eq!(again.key, key, "metadata or training-only fields changed the key");
    // What determines embeddings does change it.
    m.config.frontend.pre_emphasis = 0.9;
    m.save(&p).unwrap();
    assert_ne!(SpeakerModel::load(&p, &device).unwrap().key, key);
}

#[test]
fn wav_bytes_decode_as_the_file_does() {
    let path = root().join("assets").join("audio").join("spk1_a.wav");
    let bytes = std::fs::read(&path).unwrap();
    let a = read_wav(&path, 16000, 480).unwrap();
    let b = decode_wav(std::path::Path::new("upload.wav"), &bytes, 16000, 480).unwrap();
    assert_eq!(a.samples, b.samples);
    let e = decode_wav(std::path::Path::new("upload.wav"), &bytes[..100], 16000, 480).unwrap_err().to_string();
    assert!(e.starts_with("upload.wav: "), "{e}");
}

#[test]
fn the_async_embedding_equals_the_blocking_one() {
    let device = Device::flex();
    let model = SpeakerModel::load(&bundled_model(), &device).unwrap();
    let embedder = Embedder::new(&model, &device);
    let audio = root().join("assets").join("audio");
    let a = embedder.load_audio(&audio.join("spk1_a.wav")).unwrap();
    let b = embedder.load_audio(&audio.join("spk2_b.wav")).unwrap();
    let sync_a = embedder.embed_samples(&a).unwrap();
    let sync_b = embedder.embed_samples(&b).unwrap();
    let async_a = futures_lite::future::block_on(embedder.embed_samples_async(&a)).unwrap();
    assert!(max_abs(&async_a, &sync_a) < 1e-5, "{}", max_abs(&async_a, &sync_a));
    let both = futures_lite::future::block_on(embedder.embed_samples_batch_async(&[&a, &b])).unwrap();
    assert!(max_abs(&both[0], &sync_a) < 1e-5 && max_abs(&both[1], &sync_b) < 1e-5);
    // Bad input is named, never a NaN.
    let e = futures_lite::future::block_on(embedder.embed_samples_async(&a[..100])).unwrap_err().to_string();
    assert!(e.contains("recording 0") && e.contains("too short"), "{e}");
}

/// The whole network on the CPU, our fused operations against Burn's
/// generic ones, in one process (the route is held by each embedder): within
/// the per-block bound of `tests/fused_blocks.rs`, 1e-5 of the largest value.
#[test]
fn the_whole_network_fused_equals_generic() {
    let device = Device::flex();
    let audio = root().join("assets").join("audio");
    for path in [bundled_model(), fixtures().join("tiny_C32_B1_K65_7.pt"), fixtures().join("tiny_light_C32_B1_K65.pt")]
    {
        let model = if path.extension().is_some_and(|e| e == "pt") {
            let variant = path.file_stem().unwrap().to_string_lossy().into_owned();
            let cfg = nexttdnn::config::ExperimentConfig::load(&config(&variant)).unwrap();
            nexttdnn::weights::import_official(&path, &cfg, &device).unwrap()
        } else {
            SpeakerModel::load(&path, &device).unwrap()
        };
        let fused = Embedder::new(&model, &device);
        let generic = Embedder::new(&model, &device).with_route(nexttdnn::ops::Route::Generic);
        let wav = fused.load_audio(&audio.join("spk3_b.wav")).unwrap();
        let a = fused.embed_samples(&wav).unwrap();
        let b = generic.embed_samples(&wav).unwrap();
        let scale = b.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
        let err = max_abs(&a, &b);
        assert!(err < 1e-5 * scale, "{}: fused and generic differ by {err:e} (scale {scale})", path.display());
        assert!(err > 0.0, "{}: the two routes gave identical bits; is the route ignored?", path.display());
    }
}
