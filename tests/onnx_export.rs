//! `export --onnx`: the graph passes `onnx.checker` and onnxruntime's
//! embeddings match ours and the reference's (cosine ≥ 0.99999) for every
//! fixture variant, at lengths from the minimum to 20 s, and for the
//! bundled model. Runs `tests/reference/onnx_check.py`; without Python's
//! onnx and onnxruntime it is a skip, or a failure under
//! `NEXTTDNN_REQUIRE_ONNXRUNTIME=1` (CI installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use nexttdnn::config::ExperimentConfig;
use nexttdnn::embed::Embedder;
use nexttdnn::weights::{import_official, SpeakerModel};
use serde_json::json;

const MIN_COSINE: f64 = 0.99999;

fn onnxruntime_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import numpy, onnx, onnxruntime"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_unless_required(
            "NEXTTDNN_REQUIRE_ONNXRUNTIME",
            "ONNX export checks: python3 with numpy, onnx and onnxruntime not found (pip install numpy onnx onnxruntime)",
        );
    }
    ok
}

/// Test recordings: the four fixture files, the shortest input the model
/// takes, and 20 s (the longest fixture file repeated).
fn recordings(dir: &Path, min_samples: usize) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> =
        UTTS.iter().map(|u| (u.to_string(), fixtures().join(format!("{u}.wav")))).collect();
    let long = nexttdnn::audio::read_wav(&fixtures().join("utt_7p900s.wav"), 16000, 1).unwrap().samples;
    let to_i16 =
        |v: &[f32]| v.iter().map(|s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16).collect::<Vec<_>>();
    let min = dir.join("min.wav");
    common::wav::write_pcm16(&min, &to_i16(&long[..min_samples]), 16000, 1);
    let twenty: Vec<f32> = long.iter().cycle().take(20 * 16000).copied().collect();
    let p20 = dir.join("20s.wav");
    common::wav::write_pcm16(&p20, &to_i16(&twenty), 16000, 1);
    out.push((format!("min ({min_samples} samples)"), min));
    out.push(("20 s".into(), p20));
    out
}

/// Exports `model` through the CLI (`--input waveform|features`).
fn export(model: &Path, onnx: &Path, input: &str) {
    let out = run_ok(
        bin().args(["--device", "cpu", "export", "--input", input, "--model"]).arg(model).arg("--onnx").arg(onnx),
    );
    assert!(out.contains("exported"), "{out}");
}

/// Runs the checker and onnxruntime on `cases`; panics with its report on
/// any failure.
fn check(dir: &Path, onnx: &Path, cases: serde_json::Value) {
    let file = dir.join(format!("{}.json", onnx.file_stem().unwrap().to_string_lossy()));
    std::fs::write(&file, cases.to_string()).unwrap();
    let script = root().join("tests/reference/onnx_check.py");
    let out = Command::new("python3").arg(script).arg("--onnx").arg(onnx).arg("--expect").arg(&file).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}: {report}{}", onnx.display(), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}: {report}", onnx.display());
}

/// One model: its waveform graph against our embeddings at every length
/// and (with `reference`) the reference's for the fixture files; its
/// features graph against the reference's embedding of its features.
fn check_model(dir: &Path, model: &SpeakerModel, reference: Option<&Path>) {
    let path = dir.join("model.safetensors");
    model.save(&path).unwrap();
    let device = burn::tensor::Device::flex();
    let embedder = Embedder::new(model, &device);
    let mut cases = vec![];
    for (name, wav) in recordings(dir, embedder.min_samples()) {
        let ours = embedder.embed_file(&wav).unwrap();
        cases
            .push(json!({"name": format!("{name} vs nexttdnn"), "wav": wav, "expect": ours, "min_cosine": MIN_COSINE}));
    }
    let outputs = reference.map(load);
    if let Some(out) = &outputs {
        for u in UTTS {
            let want = &out[&format!("emb.{u}")].values;
            let wav = fixtures().join(format!("{u}.wav"));
            cases.push(
                json!({"name": format!("{u} vs reference"), "wav": wav, "expect": want, "min_cosine": MIN_COSINE}),
            );
        }
    }
    let onnx = dir.join("waveform.onnx");
    export(&path, &onnx, "waveform");
    check(dir, &onnx, json!(cases));

    if let Some(out) = &outputs {
        let feat = &out["utt_3p015s.feat"];
        let npy = dir.join("feat.npy");
        std::fs::write(&npy, nexttdnn::npy::encode_f32(&feat.values, feat.shape[0], feat.shape[1]).unwrap()).unwrap();
        let want = &out["utt_3p015s.embedding"].values;
        let onnx = dir.join("features.onnx");
        export(&path, &onnx, "features");
        check(
            dir,
            &onnx,
            json!([{"name": "reference features", "npy": npy, "expect": want, "min_cosine": MIN_COSINE}]),
        );
    }
}

fn check_variant(fixture_dir: &Path, variant: &str, config_name: &str) {
    if !onnxruntime_available() {
        return;
    }
    let dir = tmpdir(&format!("onnx-{variant}"));
    let cfg = ExperimentConfig::load(&config(config_name)).unwrap();
    let model =
        import_official(&fixture_dir.join(format!("{variant}.pt")), &cfg, &burn::tensor::Device::flex()).unwrap();
    check_model(&dir, &model, Some(&fixture_dir.join(format!("{variant}_outputs.safetensors"))));
}

#[test]
fn tiny_variants_export_and_match() {
    check_variant(&fixtures(), "tiny_C32_B1_K65_7", "tiny_C32_B1_K65_7");
    check_variant(&fixtures(), "tiny_light_C32_B1_K65", "tiny_light_C32_B1_K65");
}

#[test]
fn full_size_variants_export_and_match() {
    let Some(shared) = shared_fixtures() else {
        no_shared_fixtures("full_size_variants_export_and_match");
        return;
    };
    check_variant(&shared, "C256_B3_K65_7", "NeXt_TDNN_C256_B3_K65_7");
    check_variant(&shared, "light_C128_B3_K65", "NeXt_TDNN_light_C128_B3_K65");
}

#[test]
fn bundled_model_exports_and_matches() {
    if !onnxruntime_available() {
        return;
    }
    let dir = tmpdir("onnx-bundled");
    let model =
        SpeakerModel::load(&root().join("assets/model/demo.nexttdnn.safetensors"), &burn::tensor::Device::flex())
            .unwrap();
    check_model(&dir, &model, None);
}

#[test]
fn unsupported_opset_is_an_error() {
    let dir = tmpdir("onnx-opset");
    let e = run_err(bin().args(["--device", "cpu", "export", "--opset", "13", "--onnx"]).arg(dir.join("m.onnx")));
    assert!(e.contains("opset 13") && e.contains("17..=21"), "{e}");
    assert!(!dir.join("m.onnx").exists());
}
