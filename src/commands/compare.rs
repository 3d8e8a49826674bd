//! `compare`: one model and one trial list on several devices, side by side.
//!
//! Every device embeds every file afresh (no cache). The first device is the
//! reference: for the others the report gives the EER and minDCF differences,
//! the embedding deviations, and the fraction of trials whose decision at the
//! reference's EER threshold flips. The run fails when a device disagrees
//! beyond the tolerances, so it doubles as a health check of a new driver.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::device::{select, DeviceInfo, DeviceSpec, SelectedDevice};
use crate::embed::{default_batch_seconds, Embedder};
use crate::eval::trials::{ScoreSummary, TrialSet};
use crate::files::{sha256_file, write_atomic};
use crate::weights::SpeakerModel;

/// Options of `compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Model file (default: the bundled model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Devices, comma-separated; the first is the reference (e.g. cpu,wgpu:0,cuda:0).
    #[arg(long, value_delimiter = ',', default_value = "cpu,wgpu")]
    pub devices: Vec<DeviceSpec>,
    /// Trial list (default: the bundled list).
    #[arg(long)]
    pub trials: Option<PathBuf>,
    /// Root of the trial list's paths (default: the list's folder).
    #[arg(long)]
    pub wav_root: Option<PathBuf>,
    /// Output directory for compare.json.
    #[arg(long, default_value = "compare-results")]
    pub out: PathBuf,
    /// Largest allowed embedding deviation, relative to the largest reference value.
    #[arg(long, default_value_t = 1e-3, value_parser = super::cli::non_negative)]
    pub emb_tol: f64,
    /// Largest allowed EER difference, in percentage points.
    #[arg(long, default_value_t = 0.01, value_parser = super::cli::non_negative)]
    pub eer_tol: f64,
    /// Seconds of audio per padded batch (default: each device's).
    #[arg(long, value_parser = super::cli::non_negative)]
    pub batch_seconds: Option<f64>,
}

/// The first device's results, which the others are compared with.
struct Reference {
    embs: Vec<Vec<f32>>,
    scores: Vec<f64>,
    eer: f64,
    /// At the config's first P_target.
    min_dcf: f64,
    eer_threshold: f64,
}

/// One device's embeddings, scores and costs, before the comparison.
struct Measured {
    device: DeviceInfo,
    embs: Vec<Vec<f32>>,
    scores: Vec<f64>,
    summary: ScoreSummary,
    p_target: f64,
    files: usize,
    seconds: f64,
    peak_rss_mib: Option<f64>,
    device_reserved_mib: Option<f64>,
}

/// Results of one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceResult {
    pub device: DeviceInfo,
    pub eer: f64,
    pub eer_threshold: f64,
    /// `min_dcf_p05`, `min_dcf_p01`, … at the config's P_targets, with thresholds.
    #[serde(flatten)]
    pub min_dcf: std::collections::BTreeMap<String, f64>,
    pub eer_diff: f64,
    /// The P_target of `min_dcf_diff`: the config's first.
    pub p_target: f64,
    pub min_dcf_diff: f64,
    pub emb_max_abs_dev: f64,
    pub emb_mean_abs_dev: f64,
    pub emb_max_rel_dev: f64,
    pub decision_flips: f64,
    pub files_per_second: f64,
    pub seconds: f64,
    pub peak_rss_mib: Option<f64>,
    /// Device memory reserved by the allocator after the run (GPU backends).
    pub device_reserved_mib: Option<f64>,
    pub within_tolerance: bool,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct CompareReport {
    pub model: String,
    pub model_sha256: String,
    pub config: String,
    pub crate_version: &'static str,
    pub trial_list: String,
    pub trials: usize,
    pub files: usize,
    pub emb_tolerance_rel: f64,
    pub eer_tolerance_points: f64,
    pub devices: Vec<DeviceResult>,
    pub passed: bool,
}

pub fn run(args: &CompareArgs) -> Result<bool> {
    if args.devices.is_empty() {
        bail!("--devices needs at least one device");
    }
    let model_path = super::model_or_bundled(args.model.as_deref())?;
    let model_sha = sha256_file(&model_path)?;
    let (trial_path, default_root) = match &args.trials {
        Some(t) => (t.clone(), t.parent().map(Path::to_path_buf).unwrap_or_default()),
        None => (super::assets_dir()?.join("trials.txt"), super::assets_dir()?.join("audio")),
    };
    let root = args.wav_root.clone().unwrap_or(default_root);

    let mut reference: Option<Reference> = None;
    let mut results = Vec::new();
    let (mut config_name, mut counts) = (String::new(), (0, 0));
    for spec in &args.devices {
        let dev = select(Some(*spec))?;
        let model = SpeakerModel::load(&model_path, &dev.device)?;
        let set = TrialSet::load(&trial_path, Some(&root), model.config.frontend.sample_rate)?;
        config_name = model.config.name.clone();
        counts = (set.trials.len(), set.files.len());
        let measured = measure(args, &dev, &model, &set)?;
        let reference = reference.get_or_insert_with(|| measured.as_reference());
        results.push(compared(measured, reference, args));
    }
    let passed = results.iter().all(|r| r.within_tolerance);
    let report = CompareReport {
        model: model_path.display().to_string(),
        model_sha256: model_sha,
        config: config_name,
        crate_version: env!("CARGO_PKG_VERSION"),
        trial_list: trial_path.display().to_string(),
        trials: counts.0,
        files: counts.1,
        emb_tolerance_rel: args.emb_tol,
        eer_tolerance_points: args.eer_tol,
        devices: results,
        passed,
    };
    print_markdown(&report);
    std::fs::create_dir_all(&args.out)?;
    write_atomic(&args.out.join("compare.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!("\nwrote {}", args.out.join("compare.json").display());
    Ok(passed)
}

/// Embeds every file of the list on one device (after one untimed batch
/// for kernel compilation and autotuning) and scores the trials.
fn measure(args: &CompareArgs, dev: &SelectedDevice, model: &SpeakerModel, set: &TrialSet) -> Result<Measured> {
    let files = &set.files;
    let embedder = Embedder::new(model, &dev.device);
    let batch_seconds = args.batch_seconds.unwrap_or_else(|| default_batch_seconds(&dev.device));
    embedder.embed_listed(&files[..files.len().min(8)], batch_seconds, &|_| {})?;
    let t = Instant::now();
    let pb = super::progress(files.len() as u64, &format!("embedding on {}", dev.info.spec));
    let embs = embedder.embed_listed(files, batch_seconds, &|n| pb.inc(n))?;
    pb.finish_and_clear();
    let seconds = t.elapsed().as_secs_f64();
    let scores = set.cosine_scores(&embs);
    let (summary, _) = set.summarize(&scores, &model.config.eval)?;
    Ok(Measured {
        device: dev.info.clone(),
        embs,
        scores,
        summary,
        // The config's first P_target is the one compared.
        p_target: model.config.eval.p_targets[0],
        files: files.len(),
        seconds,
        peak_rss_mib: crate::device::peak_resident_mib(),
        device_reserved_mib: dev.device.memory_pool_usage().map(|u| u.bytes_reserved as f64 / (1 << 20) as f64),
    })
}

impl Measured {
    fn as_reference(&self) -> Reference {
        Reference {
            embs: self.embs.clone(),
            scores: self.scores.clone(),
            eer: self.summary.eer,
            min_dcf: self.summary.min_dcf_at(self.p_target),
            eer_threshold: self.summary.eer_threshold,
        }
    }
}

/// One device against the reference: the metric differences, the embedding
/// deviations and the decisions that flip at the reference's EER threshold.
fn compared(m: Measured, r: &Reference, args: &CompareArgs) -> DeviceResult {
    let (mut max_abs, mut sum_abs, mut n, mut max_ref) = (0.0f64, 0.0f64, 0usize, 0.0f64);
    for (x, y) in m.embs.iter().flatten().zip(r.embs.iter().flatten()) {
        let d = (*x as f64 - *y as f64).abs();
        max_abs = max_abs.max(d);
        sum_abs += d;
        n += 1;
        max_ref = max_ref.max((*y as f64).abs());
    }
    let t = r.eer_threshold;
    let flips = m.scores.iter().zip(&r.scores).filter(|(s, q)| (**s >= t) != (**q >= t)).count();
    let rel = max_abs / max_ref.max(1e-12);
    let eer_diff = m.summary.eer - r.eer;
    DeviceResult {
        device: m.device,
        eer: m.summary.eer,
        eer_threshold: m.summary.eer_threshold,
        min_dcf_diff: m.summary.min_dcf_at(m.p_target) - r.min_dcf,
        min_dcf: m.summary.min_dcf,
        eer_diff,
        p_target: m.p_target,
        emb_max_abs_dev: max_abs,
        emb_mean_abs_dev: sum_abs / n.max(1) as f64,
        emb_max_rel_dev: rel,
        decision_flips: flips as f64 / m.scores.len().max(1) as f64,
        files_per_second: m.files as f64 / m.seconds,
        seconds: m.seconds,
        peak_rss_mib: m.peak_rss_mib,
        device_reserved_mib: m.device_reserved_mib,
        within_tolerance: rel <= args.emb_tol && eer_diff.abs() <= args.eer_tol,
    }
}

fn print_markdown(r: &CompareReport) {
    println!("### nexttdnn compare");
    println!();
    println!(
        "model `{}` ({}, sha256 {}), nexttdnn {}; {} trials over {} files of `{}`",
        r.model,
        r.config,
        &r.model_sha256[..12],
        r.crate_version,
        r.trials,
        r.files,
        r.trial_list
    );
    println!(
        "tolerance: embeddings {:.0e} of the largest reference value, EER {} points; reference = first device",
        r.emb_tolerance_rel, r.eer_tolerance_points
    );
    println!();
    let p = r.devices.first().map_or(0.05, |d| d.p_target);
    println!("| device | backend | adapter | driver | EER % | ΔEER | minDCF {p} | ΔminDCF | max \\|Δemb\\| | mean \\|Δemb\\| | rel | flips | files/s | peak RSS MiB | device MiB | ok |");
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for d in &r.devices {
        println!(
            "| {} | {} | {} | {} | {:.3} | {:+.3} | {:.4} | {:+.4} | {:.2e} | {:.2e} | {:.2e} | {:.2}% | {:.1} | {} | {} | {} |",
            d.device.spec,
            d.device.backend,
            d.device.adapter,
            d.device.driver,
            d.eer,
            d.eer_diff,
            d.min_dcf.get(&crate::eval::trials::dcf_key(d.p_target)).copied().unwrap_or(f64::NAN),
            d.min_dcf_diff,
            d.emb_max_abs_dev,
            d.emb_mean_abs_dev,
            d.emb_max_rel_dev,
            d.decision_flips * 100.0,
            d.files_per_second,
            d.peak_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "n/a".into()),
            d.device_reserved_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "n/a".into()),
            if d.within_tolerance { "yes" } else { "**no**" }
        );
    }
}
