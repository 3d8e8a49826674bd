//! Reduced-precision inference: the f16 and bf16 backbones give embeddings
//! close to f32's, and the same verification decisions, on the bundled model
//! and audio.

mod common;

use burn::tensor::DType;
use common::{cosine, root, test_devices};
use nexttdnn::embed::Embedder;
use nexttdnn::model::Precision;
use nexttdnn::weights::SpeakerModel;

#[test]
fn reduced_precision_embeddings_stay_close_to_f32() {
    let audio: Vec<_> =
        ["spk1_a", "spk1_b", "spk2_a", "spk3_a"].iter().map(|n| root().join(format!("assets/audio/{n}.wav"))).collect();
    for (name, device) in test_devices() {
        let model =
            SpeakerModel::load(&root().join("assets/model/demo.nexttdnn.safetensors"), &device).expect("bundled model");
        let f32_embedder = Embedder::new(&model, &device);
        let reference: Vec<Vec<f32>> = audio.iter().map(|p| f32_embedder.embed_file(p).unwrap()).collect();
        // (precision, dtype, largest 1 - cosine to the f32 embedding). Measured
        // on the bundled model: f16 up to 3e-6 (cpu and wgpu), bf16 up to
        // 5.7e-5 (cpu); the bounds leave a factor of about five.
        for (precision, dtype, max_gap) in [(Precision::F16, DType::F16, 2e-5), (Precision::Bf16, DType::BF16, 3e-4)] {
            if !device.supports_dtype(dtype) {
                common::skip(&format!("{name}: {precision} is not supported by this device"));
                continue;
            }
            let embedder = Embedder::with_precision(&model, &device, precision);
            assert_eq!(embedder.net.stem.weight.val().dtype(), dtype, "{name}: backbone not cast");
            assert_eq!(embedder.net.head.fc.weight.val().dtype(), DType::F32, "{name}: head must stay f32");
            for (p, r) in audio.iter().zip(&reference) {
                let e = embedder.embed_file(p).unwrap();
                assert!(e.iter().all(|v| v.is_finite()), "{name} {precision}: non-finite embedding");
                let c = cosine(&e, r);
                eprintln!("{name} {precision} {}: cosine to f32 {c:.6}", p.display());
                assert!(1.0 - c <= max_gap, "{name} {precision} {}: cosine to f32 {c}", p.display());
            }
        }
    }
}
