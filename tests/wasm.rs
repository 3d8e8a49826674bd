//! The core on wasm32, run under Node by `wasm-bindgen-test-runner`: the
//! bundled model and a bundled recording, both read from bytes, embedded on
//! the CPU backend with the non-blocking path, equal the native embedding
//! (`tests/fixtures/bundled_spk1_a.json`, which `tests/library.rs` checks
//! against the native build) within 1e-5.
//!
//! `.ci/run` runs it with
//! `cargo test --target wasm32-unknown-unknown --no-default-features --features web --test wasm`
//! and fails unless the test reports `ok`. Natively this file is empty.

#![cfg(target_arch = "wasm32")]

use std::path::Path;

use burn::tensor::Device;
use nexttdnn::audio::decode_wav;
use nexttdnn::embed::Embedder;
use nexttdnn::weights::SpeakerModel;
use wasm_bindgen_test::wasm_bindgen_test;

const MODEL: &[u8] = include_bytes!("../assets/model/demo.nexttdnn.safetensors");
const WAV: &[u8] = include_bytes!("../assets/audio/spk1_a.wav");
const NATIVE: &str = include_str!("fixtures/bundled_spk1_a.json");

#[wasm_bindgen_test]
async fn the_bundled_model_embeds_as_natively() {
    let device = Device::flex();
    let model = SpeakerModel::from_bytes(MODEL, &device).unwrap();
    let rate = model.config.frontend.sample_rate;
    let wav = decode_wav(Path::new("spk1_a.wav"), WAV, rate, model.config.min_samples()).unwrap();
    let embedder = Embedder::new(&model, &device);
    let ours = embedder.embed_samples_async(&wav.samples).await.unwrap();
    let native: Vec<f32> = serde_json::from_str::<serde_json::Value>(NATIVE).unwrap()["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(ours.len(), native.len());
    let worst = ours.iter().zip(&native).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "wasm differs from native by {worst:e}");
    assert_eq!(model.key, serde_json::from_str::<serde_json::Value>(NATIVE).unwrap()["model_key"]);
}
