//! `bench`: timing of embedding extraction and the front end on one device.
//!
//! Each measurement is warmed up, repeated, and reported as the median (with
//! min and max). The process's peak resident memory is reported too.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::config::ExperimentConfig;
use crate::device::{DeviceInfo, SelectedDevice};
use crate::embed::Embedder;
use crate::features::Frontend;
use crate::weights::{write_atomic, ModelMeta, SpeakerModel};

/// One timed operation.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub repeats: usize,
}

/// The whole report, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub config: String,
    /// SHA-256 of the model file, when one was given.
    pub model_sha256: Option<String>,
    pub device: DeviceInfo,
    pub crate_version: &'static str,
    pub measurements: Vec<Measurement>,
    pub peak_rss_mib: Option<f64>,
}

fn time<F: FnMut()>(name: String, warmup: usize, repeats: usize, mut f: F) -> Measurement {
    for _ in 0..warmup {
        f();
    }
    let mut ms: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = Measurement { name, median_ms: ms[ms.len() / 2], min_ms: ms[0], max_ms: ms[ms.len() - 1], repeats };
    log::info!("{}: median {:.2} ms (min {:.2}, max {:.2})", m.name, m.median_ms, m.min_ms, m.max_ms);
    m
}

/// Deterministic speech-like test signal (a few harmonics plus noise).
fn signal(samples: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..samples)
        .map(|i| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.02;
            let t = i as f64 / 16000.0;
            (0.1 * (2.0 * std::f64::consts::PI * 140.0 * t).sin() + 0.05 * (2.0 * std::f64::consts::PI * 610.0 * t).sin() + noise) as f32
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    config: Option<&Path>,
    model: Option<&Path>,
    seconds: &[f64],
    frontend_batch: usize,
    train_batch: usize,
    warmup: usize,
    repeats: usize,
    out: Option<&Path>,
    dev: &SelectedDevice,
) -> Result<()> {
    let m = match model {
        Some(p) => SpeakerModel::load(p, &dev.device)?,
        None => {
            let default = super::configs_dir().join("NeXt_TDNN_C256_B3_K65_7.ron");
            let cfg = ExperimentConfig::load(config.unwrap_or(&default))?;
            let net = crate::model::NextTdnn::new(&cfg.model, cfg.frontend.n_mels, cfg.train.seed, &dev.device);
            SpeakerModel { config: cfg, net, aam: None, meta: ModelMeta::default() }
        }
    };
    let cfg = m.config.clone();
    let sr = cfg.frontend.sample_rate as f64;
    let embedder = Embedder::new(&m, &dev.device);
    let mut results = Vec::new();
    for &s in seconds {
        let wav = signal((s * sr) as usize, 7);
        results.push(time(format!("embed {s} s (batch 1, waveform to embedding)"), warmup, repeats, || {
            embedder.embed_samples(&wav).expect("embedding");
        }));
    }
    if frontend_batch > 0 {
        let len = cfg.train.crop_samples;
        let fe = Frontend::new(&cfg.frontend, &dev.device);
        let data: Vec<f32> = (0..frontend_batch).flat_map(|b| signal(len, b as u64)).collect();
        results.push(time(format!("front end, batch {frontend_batch} x {len} samples"), warmup, repeats, || {
            let x = Tensor::<2>::from_data(TensorData::new(data.clone(), [frontend_batch, len]), &dev.device);
            let _ = fe.forward(x).into_data();
        }));
    }
    if train_batch > 0 {
        let device = dev.device.clone().autodiff();
        let len = cfg.train.crop_samples;
        let mut optim = crate::train::optim::adamw(&cfg.train.optimizer);
        let frontend = Frontend::new(&cfg.frontend, &device);
        let aam = crate::train::loss::AamSoftmax::new(&cfg.train.loss);
        let data: Vec<f32> = (0..train_batch).flat_map(|b| signal(len, 100 + b as u64)).collect();
        let labels: Vec<usize> = (0..train_batch).map(|i| i % cfg.train.loss.n_classes).collect();
        let name = format!("training step, batch {train_batch} x {len} samples ({} classes): forward, backward, AdamW", cfg.train.loss.n_classes);
        let mut holder = Some(crate::train::model::TrainModel::new(&cfg, &device));
        results.push(time(name, warmup.min(1), repeats, || {
            let m = holder.take().expect("model");
            let x = Tensor::<2>::from_data(TensorData::new(data.clone(), [train_batch, len]), &device);
            let (_, out) = crate::train::step::train_forward(&m, &frontend, x, &labels, &aam, None);
            let (m, _) = crate::train::step::backward_and_step(m, &mut optim, out.loss, 1e-4, cfg.train.optimizer.grad_clip_norm);
            // Wait for the device before the clock stops.
            let _ = m.aam.val().slice([0..1, 0..1]).into_data();
            holder = Some(m);
        }));
    }
    let report = Report {
        config: cfg.name.clone(),
        model_sha256: model.map(crate::weights::sha256_file).transpose()?,
        device: dev.info.clone(),
        crate_version: env!("CARGO_PKG_VERSION"),
        measurements: results,
        peak_rss_mib: crate::device::peak_resident_mib(),
    };
    println!("config {}  device {} ({}, {})", report.config, report.device.spec, report.device.adapter, report.device.backend);
    println!("| measurement | median ms | min ms | max ms | repeats |");
    println!("|---|---:|---:|---:|---:|");
    for r in &report.measurements {
        println!("| {} | {:.2} | {:.2} | {:.2} | {} |", r.name, r.median_ms, r.min_ms, r.max_ms, r.repeats);
    }
    if let Some(p) = report.peak_rss_mib {
        println!("peak resident memory: {p:.0} MiB");
    }
    if let Some(o) = out {
        write_atomic(o, serde_json::to_string_pretty(&report)?.as_bytes())?;
        println!("wrote {}", o.display());
    }
    Ok(())
}
