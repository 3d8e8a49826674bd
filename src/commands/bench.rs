//! `bench`: timing of embedding extraction and the front end on one device.
//!
//! Each measurement is warmed up, repeated, and reported as the median (with
//! min and max). The process's peak resident memory is reported too.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use super::timing::time;
pub use super::timing::Measurement;
use crate::config::ExperimentConfig;
use crate::device::{DeviceInfo, SelectedDevice};
use crate::embed::Embedder;
use crate::features::Frontend;
use crate::files::write_atomic;
use crate::ops::Route;
use crate::weights::{ModelMeta, SpeakerModel};

/// The whole report, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub config: String,
    /// Which weights ran: `loaded from FILE` or `fresh (no model file)`.
    pub weights: String,
    /// SHA-256 of the model file, when one was loaded.
    pub model_sha256: Option<String>,
    pub device: DeviceInfo,
    pub crate_version: &'static str,
    /// Custom operations (`extension`) or Burn's generic ones (`generic`).
    pub ops: String,
    /// Backbone precision of the embedding measurements.
    pub precision: String,
    pub measurements: Vec<Measurement>,
    pub peak_rss_mib: Option<f64>,
}

/// Deterministic speech-like test signal (a few harmonics plus noise).
fn signal(samples: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..samples)
        .map(|i| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.02;
            let t = i as f64 / 16000.0;
            (0.1 * (2.0 * std::f64::consts::PI * 140.0 * t).sin()
                + 0.05 * (2.0 * std::f64::consts::PI * 610.0 * t).sin()
                + noise) as f32
        })
        .collect()
}

/// Options of `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Config to benchmark with fresh (randomly initialised) weights, for
    /// sizes that have no model file. Trained weights run slower than fresh
    /// ones where they produce tiny values, so prefer --model.
    #[arg(long, conflicts_with = "model")]
    pub config: Option<PathBuf>,
    /// Model file to benchmark (default, without --config: the bundled model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Utterance lengths in seconds.
    #[arg(long, value_delimiter = ',', default_value = "4,8", value_parser = super::cli::non_negative)]
    pub seconds: Vec<f64>,
    /// Batch sizes of the embedding measurements: equal-length recordings
    /// embedded in one batch (front end on the host, then one padded batch).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub eval_batch: Vec<usize>,
    /// Batch size of the front-end measurement (training crops); 0 skips it.
    #[arg(long, default_value_t = 32)]
    pub frontend_batch: usize,
    /// Batch size of a training-step measurement (crops of the config's length); 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub train_batch: usize,
    /// Batch size of single-operation measurements (the depthwise
    /// convolutions at a training crop's shape); 0 skips them.
    #[arg(long, default_value_t = 0)]
    pub op_batch: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Write the report as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Every custom operation (the depthwise convolution, GELU, the front
    /// end, and the fused CPU blocks): `extension` (our kernels on the
    /// CubeCL backends, our CPU code on flex) or `generic` (Burn's own
    /// operations), for comparisons.
    #[arg(long, default_value = "extension", value_parser = ["extension", "generic"])]
    pub ops: String,
    /// Backbone precision of the embedding measurements: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub precision: crate::model::Precision,
    #[command(flatten)]
    pub training: super::bench_train::TrainBenchArgs,
}

pub fn run(args: &BenchArgs, dev: &SelectedDevice) -> Result<()> {
    let route = if args.ops == "generic" { Route::Generic } else { Route::Extension };
    crate::ops::with_route(route, || measure(args, dev, route))
}

/// The measurements of `bench`, on the operations `route` picks.
fn measure(args: &BenchArgs, dev: &SelectedDevice, route: Route) -> Result<()> {
    let (warmup, repeats) = (args.warmup, args.repeats);
    let (m, weights, model_path) = bench_model(args, dev)?;
    let cfg = m.config.clone();
    let embedder = Embedder::with_precision(&m, &dev.device, args.precision).with_route(route);
    let mut results = embedding(&embedder, &args.seconds, &args.eval_batch, warmup, repeats, dev);
    if args.frontend_batch > 0 {
        results.push(front_end(&cfg, args.frontend_batch, warmup, repeats, dev));
    }
    if args.train_batch > 0 {
        results.push(training_step(&cfg, args.train_batch, warmup, repeats, dev));
    }
    if args.op_batch > 0 {
        results.extend(depthwise_ops(&cfg, args.op_batch, warmup, repeats, &dev.device));
        results.extend(gelu_ops(&cfg, args.op_batch, warmup, repeats, &dev.device));
    }
    results.extend(super::bench_train::run(&args.training, &cfg, warmup, dev)?);
    let report = Report {
        config: cfg.name.clone(),
        weights,
        model_sha256: model_path.as_deref().map(crate::files::sha256_file).transpose()?,
        device: dev.info.clone(),
        crate_version: env!("CARGO_PKG_VERSION"),
        ops: args.ops.to_string(),
        precision: args.precision.to_string(),
        measurements: results,
        peak_rss_mib: crate::device::peak_resident_mib(),
    };
    print_report(&report);
    if let Some(o) = &args.out {
        write_atomic(o, serde_json::to_string_pretty(&report)?.as_bytes())?;
        println!("wrote {}", o.display());
    }
    Ok(())
}

/// The model measured: loaded (by default the bundled one) unless a config
/// asks for fresh weights; with how its weights were obtained and its file.
fn bench_model(args: &BenchArgs, dev: &SelectedDevice) -> Result<(SpeakerModel, String, Option<PathBuf>)> {
    Ok(match &args.config {
        Some(c) => {
            let cfg = ExperimentConfig::load(c)?;
            let net = crate::model::NextTdnn::new(&cfg.model, cfg.frontend.n_mels, cfg.train.seed, &dev.device);
            let m = SpeakerModel::from_net(cfg, net, None, ModelMeta::default())?;
            (m, "fresh (no model file)".to_string(), None)
        }
        None => {
            let p = super::model_or_bundled(args.model.as_deref())?;
            (SpeakerModel::load(&p, &dev.device)?, format!("loaded from {}", p.display()), Some(p))
        }
    })
}

/// One waveform-to-embedding measurement per length and batch size
/// (`--seconds 0` skips them). Batch 1 takes the single-recording path;
/// larger batches the padded-batch path of `eval`, front end included.
fn embedding(
    embedder: &Embedder,
    seconds: &[f64],
    batches: &[usize],
    warmup: usize,
    repeats: usize,
    dev: &SelectedDevice,
) -> Vec<Measurement> {
    let sr = embedder.config.frontend.sample_rate as f64;
    let mut results = Vec::new();
    for &s in seconds.iter().filter(|&&s| s > 0.0) {
        for &b in batches.iter().filter(|&&b| b > 0) {
            let wavs: Vec<Vec<f32>> = (0..b).map(|i| signal((s * sr) as usize, 7 + i as u64)).collect();
            results.push(time(format!("embed {s} s (batch {b}, waveform to embedding)"), warmup, repeats, || {
                if b == 1 {
                    embedder.embed_samples(&wavs[0]).expect("embedding");
                } else {
                    let feats: Vec<_> = wavs.iter().map(|w| embedder.host_features(w)).collect();
                    embedder.embed_batch(&feats.iter().collect::<Vec<_>>()).expect("embedding");
                }
                dev.device.sync().expect("device sync");
            }));
        }
    }
    results
}

/// The front end on a batch of training crops.
fn front_end(cfg: &ExperimentConfig, batch: usize, warmup: usize, repeats: usize, dev: &SelectedDevice) -> Measurement {
    let len = cfg.train.crop_samples;
    let fe = Frontend::new(&cfg.frontend, &dev.device);
    let data: Vec<f32> = (0..batch).flat_map(|b| signal(len, b as u64)).collect();
    time(format!("front end, batch {batch} x {len} samples"), warmup, repeats, || {
        let x = Tensor::<2>::from_data(TensorData::new(data.clone(), [batch, len]), &dev.device);
        let _ = fe.forward(x).into_data();
        dev.device.sync().expect("device sync");
    })
}

/// One training step of the real trainer (`train::step::accumulated_step`):
/// forward, backward and AdamW on a batch of training crops.
fn training_step(
    cfg: &ExperimentConfig,
    batch: usize,
    warmup: usize,
    repeats: usize,
    dev: &SelectedDevice,
) -> Measurement {
    let device = dev.device.clone().autodiff();
    let len = cfg.train.crop_samples;
    let mut optim = crate::train::optim::adamw(&cfg.train.optimizer);
    let frontend = Frontend::new(&cfg.frontend, &device);
    let aam = crate::train::loss::AamSoftmax::new(&cfg.train.loss);
    let data: Vec<f32> = (0..batch).flat_map(|b| signal(len, 100 + b as u64)).collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % cfg.train.loss.n_classes).collect();
    let name = format!(
        "training step, batch {batch} x {len} samples ({} classes): forward, backward, AdamW",
        cfg.train.loss.n_classes
    );
    let mut holder = Some(crate::train::model::TrainModel::new(cfg, &device));
    time(name, warmup.min(1), repeats, || {
        let m = holder.take().expect("model");
        let micro = vec![crate::train::step::MicroBatch {
            wav: Tensor::<2>::from_data(TensorData::new(data.clone(), [batch, len]), &device),
            labels: crate::train::loss::labels_tensor(&labels, &device),
        }];
        let (m, _) = crate::train::step::accumulated_step(
            m,
            &mut optim,
            &frontend,
            &aam,
            micro,
            None,
            1,
            1e-4,
            cfg.train.optimizer.grad_clip_norm,
            &crate::train::collective::Single,
        );
        // Wait for the device before the clock stops.
        let _ = m.aam.val().slice([0..1, 0..1]).into_data();
        device.sync().expect("device sync");
        holder = Some(m);
    })
}

fn print_report(report: &Report) {
    println!(
        "config {}  weights {}  device {} ({}, {})  ops {}  precision {}",
        report.config,
        report.weights,
        report.device.spec,
        report.device.adapter,
        report.device.backend,
        report.ops,
        report.precision
    );
    println!("| measurement | median ms | min ms | max ms | repeats |");
    println!("|---|---:|---:|---:|---:|");
    for r in &report.measurements {
        let bw = r.gb_per_s.map(|g| format!(" ({g:.1} GB/s)")).unwrap_or_default();
        println!("| {}{bw} | {:.2} | {:.2} | {:.2} | {} |", r.name, r.median_ms, r.min_ms, r.max_ms, r.repeats);
    }
    if let Some(p) = report.peak_rss_mib {
        println!("peak resident memory: {p:.0} MiB");
    }
}

/// The depthwise convolutions of the config alone, at the shape a training
/// crop gives them: forward, and forward + backward.
fn depthwise_ops(
    cfg: &ExperimentConfig,
    batch: usize,
    warmup: usize,
    repeats: usize,
    device: &burn::tensor::Device,
) -> Vec<Measurement> {
    use crate::config::BlockKind;
    use crate::ops::depthwise::depthwise_conv1d;
    let m = &cfg.model;
    let channels = match m.block {
        BlockKind::TsConvNeXt => m.channels / m.kernels.len(),
        BlockKind::Light => m.channels,
    };
    let frames = cfg.frontend.num_frames(cfg.train.crop_samples);
    let mut kernels = m.kernels.clone();
    kernels.dedup();
    let mut out = Vec::new();
    for k in kernels {
        let pad = (k - 1) / 2;
        let n = batch * channels * frames;
        let data = |seed: u64, len: usize| signal(len, seed);
        let shape = format!("[{batch}, {channels}, {frames}]");
        let make = |dev: &burn::tensor::Device| {
            let x = Tensor::<3>::from_data(TensorData::new(data(1, n), [batch, channels, frames]), dev);
            let w = Tensor::<3>::from_data(TensorData::new(data(2, channels * k), [channels, 1, k]), dev);
            let b = Tensor::<1>::from_data(TensorData::new(data(3, channels), [channels]), dev);
            (x, w, b)
        };
        let (x, w, b) = make(device);
        let mut fwd = time(format!("depthwise k={k} {shape}: forward"), warmup, repeats, || {
            let _ = depthwise_conv1d(x.clone(), w.clone(), b.clone(), pad);
            device.sync().expect("device sync");
        });
        // Read x, write y.
        fwd.gb_per_s = Some(2.0 * n as f64 * 4.0 / (fwd.median_ms * 1e6));
        out.push(fwd);
        let ad = device.clone().autodiff();
        let (x, w, b) = make(&ad);
        let r = Tensor::<3>::from_data(TensorData::new(data(4, n), [batch, channels, frames]), &ad);
        let mut both = time(format!("depthwise k={k} {shape}: forward + backward"), warmup, repeats, || {
            let (x, w, b) = (x.clone().require_grad(), w.clone().require_grad(), b.clone().require_grad());
            let y = depthwise_conv1d(x, w, b, pad);
            let _ = (y * r.clone()).sum().backward();
            ad.sync().expect("device sync");
        });
        // Forward: read x, write y. Backward: read g and x (weight), read g, write dx (input).
        both.gb_per_s = Some(6.0 * n as f64 * 4.0 / (both.median_ms * 1e6));
        out.push(both);
    }
    out
}

/// GELU at the FFN's hidden width for a training crop: forward, and
/// forward + backward.
fn gelu_ops(
    cfg: &ExperimentConfig,
    batch: usize,
    warmup: usize,
    repeats: usize,
    device: &burn::tensor::Device,
) -> Vec<Measurement> {
    use crate::ops::gelu::gelu;
    let frames = cfg.frontend.num_frames(cfg.train.crop_samples);
    let hidden = cfg.model.ffn_expansion * cfg.model.channels;
    let n = batch * frames * hidden;
    let shape = format!("[{batch}, {frames}, {hidden}]");
    let make = |dev: &burn::tensor::Device, seed: u64| {
        Tensor::<3>::from_data(TensorData::new(signal(n, seed), [batch, frames, hidden]), dev).mul_scalar(20.0)
    };
    let x = make(device, 5);
    let mut fwd = time(format!("gelu {shape}: forward"), warmup, repeats, || {
        let _ = gelu(x.clone());
        device.sync().expect("device sync");
    });
    fwd.gb_per_s = Some(2.0 * n as f64 * 4.0 / (fwd.median_ms * 1e6));
    let ad = device.clone().autodiff();
    let (x, r) = (make(&ad, 5), make(&ad, 6));
    let mut both = time(format!("gelu {shape}: forward + backward"), warmup, repeats, || {
        let _ = (gelu(x.clone().require_grad()) * r.clone()).sum().backward();
        ad.sync().expect("device sync");
    });
    // Forward: read x, write y. Backward: read x and ∂y, write ∂x.
    both.gb_per_s = Some(5.0 * n as f64 * 4.0 / (both.median_ms * 1e6));
    vec![fwd, both]
}
