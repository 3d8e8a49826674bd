//! Every bad input gets a clear error that names the file.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use nexttdnn::audio::{read_wav, AudioError};
use nexttdnn::config::ExperimentConfig;
use nexttdnn::weights::{import_official, SpeakerModel};

/// `name` in a fresh folder of its own, removed with the guard.
fn tmp(name: &str) -> (TempDir, PathBuf) {
    let dir = tmpdir(&format!("bad-{name}"));
    let p = dir.join(name);
    (dir, p)
}

fn read(p: &Path) -> Result<Vec<f32>, AudioError> {
    read_wav(p, 16000, 480).map(|w| w.samples)
}

fn assert_names_file(err: &AudioError, p: &Path) {
    assert_eq!(err.path(), p);
    assert!(err.to_string().contains(&p.display().to_string()), "{err}");
}

#[test]
fn missing_file() {
    let (_g, p) = tmp("does-not-exist.wav");
    let e = read(&p).unwrap_err();
    assert!(matches!(e, AudioError::NotFound { .. }), "{e}");
    assert_names_file(&e, &p);
}

#[test]
fn not_a_wav() {
    let (_g, p) = tmp("text.wav");
    std::fs::write(&p, "this is not audio at all, just some text").unwrap();
    let e = read(&p).unwrap_err();
    assert!(matches!(e, AudioError::NotWav { .. }), "{e}");
    assert_names_file(&e, &p);
}

#[test]
fn empty_file() {
    let (_g, p) = tmp("empty.wav");
    std::fs::write(&p, b"").unwrap();
    let e = read(&p).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    assert_names_file(&e, &p);
}

#[test]
fn truncated_header() {
    let (_g, p) = tmp("trunc-header.wav");
    let b = common::wav::pcm16_bytes(&common::wav::pattern(1000), 16000, 1);
    std::fs::write(&p, &b[..20]).unwrap();
    let e = read(&p).unwrap_err();
    assert!(matches!(e, AudioError::Truncated { .. } | AudioError::NotWav { .. }), "{e}");
    assert_names_file(&e, &p);
}

#[test]
fn truncated_data() {
    let (_g, p) = tmp("trunc-data.wav");
    let b = common::wav::pcm16_bytes(&common::wav::pattern(4000), 16000, 1);
    std::fs::write(&p, &b[..b.len() - 3001]).unwrap();
    let e = read(&p).unwrap_err();
    assert!(matches!(e, AudioError::Truncated { .. }), "{e}");
    assert_names_file(&e, &p);
}

#[test]
fn no_samples() {
    let (_g, p) = tmp("zero-samples.wav");
    std::fs::write(&p, common::wav::pcm16_bytes(&[], 16000, 1)).unwrap();
    let e = read(&p).unwrap_err();
    assert!(matches!(e, AudioError::Empty { .. }), "{e}");
    assert_names_file(&e, &p);
}

#[test]
fn too_short_for_one_frame() {
    let (_g, p) = tmp("short.wav");
    std::fs::write(&p, common::wav::pcm16_bytes(&common::wav::pattern(100), 16000, 1)).unwrap();
    let e = read(&p).unwrap_err();
    assert!(matches!(e, AudioError::TooShort { samples: 100, .. }), "{e}");
    assert_names_file(&e, &p);
}

#[test]
fn wrong_sample_rate_says_how_to_convert() {
    let (_g, p) = tmp("8k.wav");
    std::fs::write(&p, common::wav::pcm16_bytes(&common::wav::pattern(8000), 8000, 1)).unwrap();
    let e = read(&p).unwrap_err();
    assert!(matches!(e, AudioError::SampleRate { found: 8000, expected: 16000, .. }), "{e}");
    assert!(e.to_string().contains("sox"), "{e}");
    assert_names_file(&e, &p);
}

#[test]
fn nan_and_inf_samples() {
    for (name, bad) in [("nan.wav", f32::NAN), ("inf.wav", f32::INFINITY)] {
        let (_g, p) = tmp(name);
        let samples: Vec<f32> = (0..2000).map(|i| if i == 1234 { bad } else { 0.01 * (i as f32).sin() }).collect();
        common::wav::write_f32(&p, &samples);
        let e = read(&p).unwrap_err();
        assert!(matches!(e, AudioError::NonFinite { index: 1234, .. }), "{e}");
        assert_names_file(&e, &p);
    }
}

#[test]
fn unsupported_format() {
    // A-law (format tag 6) is valid WAV but not a format we read.
    let (_g, p) = tmp("alaw.wav");
    let mut b = common::wav::pcm16_bytes(&common::wav::pattern(2000), 16000, 1);
    b[20] = 6; // wFormatTag
    b[34] = 8; // bits per sample
    std::fs::write(&p, &b).unwrap();
    let e = read(&p).unwrap_err();
    assert!(matches!(e, AudioError::Unsupported { .. } | AudioError::NotWav { .. }), "{e}");
    assert_names_file(&e, &p);
}

#[test]
fn stereo_is_downmixed_and_formats_scale_alike() {
    let (_g, p) = tmp("stereo.wav");
    let frames = common::wav::pattern(1000);
    let inter: Vec<i16> = frames.iter().flat_map(|&s| [s, s / 2]).collect();
    std::fs::write(&p, common::wav::pcm16_bytes(&inter, 16000, 2)).unwrap();
    let mono = read(&p).unwrap();
    assert_eq!(mono.len(), 1000);
    for (m, s) in mono.iter().zip(&frames) {
        let expect = (*s as f32 / 32768.0 + (*s / 2) as f32 / 32768.0) / 2.0;
        assert!((m - expect).abs() < 1e-7);
    }
    // 8, 24 and 32-bit integer and 32-bit float carry the same signal.
    let base: Vec<f32> = frames.iter().map(|&s| (s as f32 / 32768.0).clamp(-0.99, 0.99)).collect();
    for (bits, fmt) in [
        (8u16, hound::SampleFormat::Int),
        (24, hound::SampleFormat::Int),
        (32, hound::SampleFormat::Int),
        (32, hound::SampleFormat::Float),
    ] {
        let (_g, q) = tmp(&format!("fmt{bits}{fmt:?}.wav"));
        let spec = hound::WavSpec { channels: 1, sample_rate: 16000, bits_per_sample: bits, sample_format: fmt };
        let mut w = hound::WavWriter::create(&q, spec).unwrap();
        for &v in &base {
            match fmt {
                hound::SampleFormat::Float => w.write_sample(v).unwrap(),
                hound::SampleFormat::Int => {
                    w.write_sample((v as f64 * (1u64 << (bits - 1)) as f64).round() as i32).unwrap()
                }
            }
        }
        w.finalize().unwrap();
        let got = read(&q).unwrap();
        let tol = if bits == 8 { 1.0 / 128.0 } else { 1e-4 };
        assert!(max_abs(&got, &base) <= tol, "{bits}-bit {fmt:?}");
    }
}

#[test]
fn checkpoint_of_the_wrong_variant() {
    let cfg = ExperimentConfig::load(&config("tiny_C32_B1_K65_7")).unwrap();
    let p = fixtures().join("tiny_light_C32_B1_K65.pt");
    let err = format!("{:#}", import_official(&p, &cfg, &burn::tensor::Device::flex()).unwrap_err());
    assert!(err.contains("tiny_light_C32_B1_K65.pt"), "{err}");
    assert!(err.contains("missing keys") && err.contains("stages.0.0.msc.projection.weight"), "{err}");
    assert!(err.contains("unexpected keys") && err.contains("dwconv"), "{err}");

    // Same block, other width: shape mismatches are listed.
    let mut wide = cfg.clone();
    wide.model.channels = 64;
    wide.model.pool_bottleneck = 24;
    let err = format!(
        "{:#}",
        import_official(&fixtures().join("tiny_C32_B1_K65_7.pt"), &wide, &burn::tensor::Device::flex()).unwrap_err()
    );
    assert!(err.contains("shape") && err.contains("stem.weight"), "{err}");
}

#[test]
fn corrupt_checkpoint_and_model_files() {
    let cfg = ExperimentConfig::load(&config("tiny_C32_B1_K65_7")).unwrap();
    let device = burn::tensor::Device::flex();
    let (_g, p) = tmp("garbage.pt");
    std::fs::write(&p, b"PK\x03\x04 not really a zip").unwrap();
    let err = format!("{:#}", import_official(&p, &cfg, &device).unwrap_err());
    assert!(err.contains("garbage.pt"), "{err}");

    let model = import_official(&fixtures().join("tiny_C32_B1_K65_7.pt"), &cfg, &device).unwrap();
    let (_g, good) = tmp("good.safetensors");
    model.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let (_g, cut) = tmp("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", SpeakerModel::load(&cut, &device).unwrap_err());
    assert!(err.contains("cut.safetensors"), "{err}");
    let (_g, junk) = tmp("junk.safetensors");
    std::fs::write(&junk, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let err = format!("{:#}", SpeakerModel::load(&junk, &device).unwrap_err());
    assert!(err.contains("junk.safetensors"), "{err}");
    let (_g, missing) = tmp("nope.safetensors");
    let err = format!("{:#}", SpeakerModel::load(&missing, &device).unwrap_err());
    assert!(err.contains("nope.safetensors") && err.contains("not found"), "{err}");
    // An official checkpoint is not a model file: the message says to import it.
    let err = format!("{:#}", SpeakerModel::load(&fixtures().join("frontend.safetensors"), &device).unwrap_err());
    assert!(err.contains("import"), "{err}");
}

#[test]
fn saved_model_reloads_identically() {
    let cfg = ExperimentConfig::load(&config("tiny_light_C32_B1_K65")).unwrap();
    let device = burn::tensor::Device::flex();
    let mut model = import_official(&fixtures().join("tiny_light_C32_B1_K65.pt"), &cfg, &device).unwrap();
    model.meta.threshold = Some(0.4321);
    let (_g, p) = tmp("roundtrip.safetensors");
    model.save(&p).unwrap();
    let back = SpeakerModel::load(&p, &device).unwrap();
    assert_eq!(back.config, model.config);
    assert_eq!(back.meta, model.meta);
    assert_eq!(back.aam, model.aam);
    let wav = read_wav(&fixtures().join("utt_1p370s.wav"), 16000, 480).unwrap().samples;
    let a = nexttdnn::embed::Embedder::new(&model, &device).embed_samples(&wav).unwrap();
    let b = nexttdnn::embed::Embedder::new(&back, &device).embed_samples(&wav).unwrap();
    assert_eq!(a, b);
}
