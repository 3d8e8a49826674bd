//! Parity with the reference implementation (fixtures made by the official
//! PyTorch code), on every test device. Bounds on the front end's and the
//! network's tensors are the reference's own float32 noise times
//! `common::noise::NOISE_FACTOR`.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::noise::RefNoise;
use common::*;
use nexttdnn::config::ExperimentConfig;
use nexttdnn::embed::Embedder;
use nexttdnn::features::{hamming_periodic, mel_filterbank, Frontend};
use nexttdnn::weights::{import_official, HostTensor};

fn fixture_wav(dir: &std::path::Path, utt: &str) -> Vec<f32> {
    nexttdnn::audio::read_wav(&dir.join(format!("{utt}.wav")), 16000, 1).unwrap().samples
}

#[test]
fn frontend_matches_reference() {
    let cfg = ExperimentConfig::load(&config("tiny_C32_B1_K65_7")).unwrap();
    let fx = load(&fixtures().join("frontend.safetensors"));
    let noise = RefNoise::load();
    // Constants, on the host: float32 roundings of closed forms.
    let window = hamming_periodic(cfg.frontend.win_length);
    assert!(max_abs(&window, &fx["window"].values) < 1e-6, "window");
    let fb = mel_filterbank(&cfg.frontend);
    let fb_err = max_abs(&fb, &fx["fb"].values);
    assert!(fb_err < 1e-5, "filterbank differs by {fb_err:e}");

    for (name, device) in test_devices() {
        let fe = Frontend::new(&cfg.frontend, &device);
        // Step by step on the shortest file.
        let wav = fixture_wav(&fixtures(), "utt_0p500s");
        let x = Tensor::<2>::from_data(TensorData::new(wav.clone(), [1, wav.len()]), &device);
        let pre = fe.pre_emphasis(x);
        let e = max_abs(&to_vec(pre.clone()), &fx["pre.utt_0p500s"].values);
        assert!(e < 1e-6, "[{name}] pre-emphasis differs by {e:e}");
        let power = fe.power(pre); // [1, T, F]
        let p_ref = &fx["power.utt_0p500s"]; // [F, T]
        let (f, t) = (p_ref.shape[0], p_ref.shape[1]);
        let ours = transpose(&to_vec(power.clone()), t, f);
        let rel = max_abs(&ours, &p_ref.values) / max_ref(&p_ref.values);
        let tol = noise.bound(&["frontend", "utt_0p500s", "power_rel_to_max"]);
        eprintln!("[{name}] power: {rel:.2e} of max (bound {tol:.1e})");
        assert!(rel < tol, "[{name}] power differs by {rel:e} of max");
        let mel = to_vec(fe.mel(power));
        let m_ref = &fx["mel.utt_0p500s"];
        let ours = transpose(&mel, t, m_ref.shape[0]);
        let rel = max_abs(&ours, &m_ref.values) / max_ref(&m_ref.values);
        // Measured relative to the largest mel energy, against the
        // reference's largest element-wise relative mel error (which is
        // never smaller). Most of ours comes from the filterbank's float32
        // rounding (checked above).
        let tol = noise.bound(&["frontend", "utt_0p500s", "mel_rel_err_max"]);
        eprintln!("[{name}] mel: {rel:.2e} of max (bound {tol:.1e})");
        assert!(rel < tol, "[{name}] mel differs by {rel:e} of max");

        for utt in UTTS {
            let wav = fixture_wav(&fixtures(), utt);
            let x = Tensor::<2>::from_data(TensorData::new(wav.clone(), [1, wav.len()]), &device);
            let feat = fe.forward(x);
            let r = &fx[&format!("feat.{utt}")];
            assert_eq!(feat.dims()[1..], r.shape[..], "[{name}] {utt} shape");
            let e = max_abs(&to_vec(feat), &r.values);
            let tol = noise.bound(&["frontend", utt, "max_abs"]);
            eprintln!("[{name}] front end {utt}: max abs {e:.2e} (bound {tol:.1e})");
            assert!(e < tol, "[{name}] {utt}: features differ by {e:e}");
            // The tensor-operation path too (`forward` is fused on the CPU).
            let x = Tensor::<2>::from_data(TensorData::new(wav.clone(), [1, wav.len()]), &device);
            let e = max_abs(&to_vec(fe.forward_tensor(x)), &r.values);
            assert!(e < tol, "[{name}] {utt}: tensor-path features differ by {e:e}");
        }

        // A batch of three rows (an odd number of frames in all, so one FFT
        // pair spans two rows) equals the rows one by one.
        let wav = fixture_wav(&fixtures(), "utt_0p500s");
        let n = wav.len();
        let rows: Vec<Vec<f32>> = vec![
            wav.clone(),
            wav.iter().rev().map(|v| 0.5 * v).collect(),
            (0..n).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect(),
        ];
        let flat: Vec<f32> = rows.concat();
        let batch = to_vec(fe.forward(Tensor::<2>::from_data(TensorData::new(flat, [3, n]), &device)));
        let per_row = batch.len() / 3;
        for (i, row) in rows.iter().enumerate() {
            let one = to_vec(fe.forward(Tensor::<2>::from_data(TensorData::new(row.clone(), [1, n]), &device)));
            let e = max_abs(&batch[i * per_row..(i + 1) * per_row], &one);
            // Frames are transformed two per FFT, so a frame's partner (and
            // its rounding) depends on the batch: equal to float rounding of
            // log-mel values of magnitude ~10.
            assert!(e < 5e-5, "[{name}] batch row {i} differs from the row alone by {e:e}");
        }
    }
}

/// Checks one variant: intermediates from the reference features, and
/// embeddings of the four files from the waveform.
fn check_variant(dir: &std::path::Path, variant: &str, config_name: &str) {
    let cfg = ExperimentConfig::load(&config(config_name)).unwrap();
    let out = load(&dir.join(format!("{variant}_outputs.safetensors")));
    let noise = RefNoise::load();
    for (name, device) in test_devices() {
        let model =
            import_official(&dir.join(format!("{variant}.pt")), &cfg, &device).unwrap_or_else(|e| panic!("{e:#}"));
        let emb = Embedder::new(&model, &device);

        // Intermediates, fed with the reference features.
        let feat = &out["utt_3p015s.feat"];
        let x =
            Tensor::<3>::from_data(TensorData::new(feat.values.clone(), [1, feat.shape[0], feat.shape[1]]), &device);
        let tr = model.net.forward_trace(x);
        let rel = |ours: Vec<f32>, key: &str| {
            let r: &HostTensor = &out[key];
            let rel = max_abs(&ours, &r.values) / max_ref(&r.values);
            let tol = noise.model_rel(variant, key);
            eprintln!("[{name}] {variant} {key}: rel {rel:.2e} (bound {tol:.1e})");
            assert!(rel < tol, "[{name}] {variant} {key}: rel error {rel:e} > {tol:e}");
        };
        let abs = |ours: Vec<f32>, key: &str| {
            let e = max_abs(&ours, &out[key].values);
            let tol = noise.model_abs(variant, key);
            eprintln!("[{name}] {variant} {key}: abs {e:.2e} (bound {tol:.1e})");
            assert!(e < tol, "[{name}] {variant} {key}: abs error {e:e} > {tol:e}");
        };
        if out.contains_key("utt_3p015s.stem_conv") {
            rel(to_vec(tr.stem_conv.clone()), "utt_3p015s.stem_conv");
            rel(to_vec(tr.mfa_conv.clone()), "utt_3p015s.mfa_conv");
            rel(to_vec(tr.pooling.attn_logits.clone()), "utt_3p015s.pool_attn_logits");
        }
        rel(to_vec(tr.stem.clone()), "utt_3p015s.stem");
        for (i, s) in tr.stages.iter().enumerate() {
            rel(to_vec(s.clone()), &format!("utt_3p015s.stage{i}"));
        }
        rel(to_vec(tr.mfa.clone()), "utt_3p015s.mfa");
        rel(to_vec(tr.pooling.attn_conv1.clone()), "utt_3p015s.pool_conv1");
        rel(to_vec(tr.pooling.attn_bn.clone()), "utt_3p015s.pool_bn1");
        abs(to_vec(tr.pooling.stats.clone()), "utt_3p015s.pool_stats");
        abs(to_vec(tr.pooling.stats_bn.clone()), "utt_3p015s.pool_bn2");
        abs(to_vec(tr.pooling.fc.clone()), "utt_3p015s.fc");
        abs(to_vec(tr.embedding.clone()), "utt_3p015s.embedding");

        // Embeddings from the waveform, through our front end.
        for utt in UTTS {
            let e = emb.embed_samples(&fixture_wav(dir, utt)).unwrap();
            let r = &out[&format!("emb.{utt}")].values;
            let (err, cos) = (max_abs(&e, r), cosine(&e, r));
            let tol = noise.model_abs(variant, &format!("emb.{utt}"));
            eprintln!("[{name}] {variant} emb.{utt}: max abs {err:.2e} (bound {tol:.1e}), cosine {cos:.9}");
            assert!(cos >= 0.99999, "[{name}] {variant} {utt}: cosine {cos}");
            assert!(err < tol, "[{name}] {variant} {utt}: max abs {err:e}");
        }
    }
}

#[test]
fn tiny_ts_convnext_matches_reference() {
    check_variant(&fixtures(), "tiny_C32_B1_K65_7", "tiny_C32_B1_K65_7");
}

#[test]
fn tiny_light_matches_reference() {
    check_variant(&fixtures(), "tiny_light_C32_B1_K65", "tiny_light_C32_B1_K65");
}

#[test]
fn c256_b3_matches_reference() {
    match shared_fixtures() {
        Some(dir) => check_variant(&dir, "C256_B3_K65_7", "NeXt_TDNN_C256_B3_K65_7"),
        None => no_shared_fixtures("c256_b3_matches_reference"),
    }
}

#[test]
fn light_c128_b3_matches_reference() {
    match shared_fixtures() {
        Some(dir) => check_variant(&dir, "light_C128_B3_K65", "NeXt_TDNN_light_C128_B3_K65"),
        None => no_shared_fixtures("light_c128_b3_matches_reference"),
    }
}

#[test]
fn safetensors_checkpoint_imports_like_pt() {
    let Some(dir) = shared_fixtures() else {
        no_shared_fixtures("safetensors_checkpoint_imports_like_pt");
        return;
    };
    let cfg = ExperimentConfig::load(&config("tiny_C32_B1_K65_7")).unwrap();
    let device = burn::tensor::Device::flex();
    let a = import_official(&dir.join("tiny_C32_B1_K65_7.pt"), &cfg, &device).unwrap();
    let b = import_official(&dir.join("tiny_C32_B1_K65_7.safetensors"), &cfg, &device).unwrap();
    let wav = fixture_wav(&dir, "utt_1p370s");
    let ea = Embedder::new(&a, &device).embed_samples(&wav).unwrap();
    let eb = Embedder::new(&b, &device).embed_samples(&wav).unwrap();
    assert_eq!(ea, eb);
}
