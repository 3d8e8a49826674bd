//! `eval`: embeddings of every file of a trial list (cached), cosine scoring,
//! optional AS-norm and calibration, EER, minDCF, Cllr and actual DCF,
//! scores, summary and plots.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::trial_embeddings::{self, Embedded, EvalInputs};
use crate::config::ExperimentConfig;
use crate::device::SelectedDevice;
use crate::eval::calibration::{calibration_for, SourcedCalibration};
use crate::eval::metrics::Roc;
use crate::eval::plot;
use crate::eval::score::NormScores;
use crate::eval::trials::ScoreSummary;
use crate::files::{sha256_file, write_atomic, OutputLock, StagedDir, WhenBusy};
use crate::lists::Trial;

pub use super::trial_embeddings::default_cache_dir;

/// Options of `eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub input: EvalInputs,
    /// Output directory.
    #[arg(long, default_value = "eval-results")]
    pub out: PathBuf,
    /// Store the EER threshold in the model file, for `verify`.
    #[arg(long)]
    pub store_threshold: bool,
    /// Skip the PNG/SVG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// Calibration to apply (`cal.json` from `calibrate`; default: the
    /// model's stored one, if any): LLRs, Cllr and actual DCF.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

pub use crate::eval::trials::dcf_key;

/// Outputs an earlier run may have left that this run may not write: they
/// are removed when the new outputs are put in place, so that a folder
/// never mixes two runs.
const OPTIONAL_OUTPUTS: [&str; 8] = [
    "scores_snorm.txt",
    "scores_llr.txt",
    "det.png",
    "det.svg",
    "hist.png",
    "hist.svg",
    "hist_snorm.png",
    "hist_snorm.svg",
];

/// Everything `eval` measured, for `summary.json` and the table.
struct Outcome {
    summary: serde_json::Value,
    rows: Vec<(String, ScoreSummary)>,
    threshold: f64,
}

pub fn run(args: &EvalArgs, dev: &SelectedDevice) -> Result<()> {
    let started = Instant::now();
    let _lock = OutputLock::acquire(&args.out, WhenBusy::Wait)?;
    let e = trial_embeddings::embed(&args.input, dev)?;
    let cal = calibration_for(args.calibration.as_deref(), &e.model, e.model_path.as_deref())?;

    // Scores, metrics and plots, staged and put in place together.
    let out = StagedDir::new(&args.out)?;
    let mut outcome = outputs(&e, cal.as_ref(), &out, args.no_plots)?;
    describe(&mut outcome.summary, &e, args, dev, started)?;
    let summary = &outcome.summary;
    write_atomic(&out.path("summary.json"), serde_json::to_string_pretty(summary)?.as_bytes())
        .with_context(|| format!("cannot write {}", out.final_path("summary.json").display()))?;
    out.commit(&OPTIONAL_OUTPUTS)?;

    let (cfg, files) = (&e.model.config, e.set.files.len());
    println!(
        "{} on {} ({} trials, {files} files; {} embedded, {} from cache)",
        cfg.name,
        e.trial_path.display(),
        e.set.trials.len(),
        e.computed,
        files - e.computed
    );
    print_table(cfg, &outcome.rows);
    println!("threshold (raw cosine at the EER point): {:.6}", outcome.threshold);
    if let Some(c) = &cal {
        println!("calibrated {} scores with {} (LLRs in scores_llr.txt)", c.calibration.scores, c.source);
    }
    println!("results in {}", args.out.display());

    if args.store_threshold {
        store_threshold(e, outcome.threshold)?;
    }
    Ok(())
}

/// The run's context in `summary.json`: lists, model, device, timing, counts.
fn describe(
    summary: &mut serde_json::Value,
    e: &Embedded,
    args: &EvalArgs,
    dev: &SelectedDevice,
    started: Instant,
) -> Result<()> {
    summary["trial_list"] = json!(e.trial_path.display().to_string());
    summary["wav_root"] = json!(e.wav_root.display().to_string());
    summary["timing"]["embedding"] = serde_json::to_value(&e.stage)?;
    if let Some((_, stage)) = &e.cohort {
        summary["timing"]["cohort"] = serde_json::to_value(stage)?;
    }
    summary["model"] = json!({
        "path": e.model_path.as_ref().map(|p| p.display().to_string()),
        "sha256": e.model_path.as_deref().map(sha256_file).transpose()?,
        "content_sha256": e.model.key,
        "config": e.model.config.name,
        "source": e.model.meta.source,
    });
    let files = e.set.files.len();
    summary["device"] = serde_json::to_value(&dev.info)?;
    summary["precision"] = json!(args.input.precision.name());
    summary["batch_seconds"] = json!(e.batch_seconds);
    summary["crate_version"] = json!(env!("CARGO_PKG_VERSION"));
    summary["files"] = json!(files);
    summary["embedded"] = json!(e.computed);
    summary["from_cache"] = json!(files - e.computed);
    summary["embed_seconds"] = json!(e.embed_secs);
    summary["files_per_second"] = json!(if e.computed > 0 { e.computed as f64 / e.embed_secs } else { 0.0 });
    summary["total_seconds"] = json!(started.elapsed().as_secs_f64());
    summary["peak_rss_mib"] = json!(crate::device::peak_resident_mib());
    Ok(())
}

/// `--store-threshold`: the EER threshold into the model file.
fn store_threshold(e: Embedded, threshold: f64) -> Result<()> {
    let Some(p) = &e.model_path else {
        bail!("--store-threshold needs --model (an imported model file), not --checkpoint");
    };
    let mut model = e.model;
    model.meta.threshold = Some(threshold);
    model.save(p)?;
    println!("stored threshold {threshold:.6} in {}", p.display());
    Ok(())
}

/// Raw (and, with a cohort, AS-normalised) scores, their metrics, the
/// calibrated LLRs and plots, written into `out`.
fn outputs(e: &Embedded, cal: Option<&SourcedCalibration>, out: &StagedDir, no_plots: bool) -> Result<Outcome> {
    let (set, eval_cfg) = (&e.set, &e.model.config.eval);
    let labels = &set.labels;
    let t_score = Instant::now();
    let raw = e.raw_scores();
    let mut timing = json!({ "scoring_seconds": t_score.elapsed().as_secs_f64() });
    let t_metrics = Instant::now();
    let (mut raw_sum, raw_roc) = set.summarize(&raw, eval_cfg)?;
    let mut metrics_secs = t_metrics.elapsed().as_secs_f64();
    write_scores(out, "scores.txt", &set.trials, &raw)?;
    let mut rows = vec![];
    let mut curves = vec![("raw".to_string(), raw_roc)];
    let mut normed_sets = vec![];
    let mut llr_row = None;
    if let Some((normed, norm_secs)) = e.asnorm(&raw) {
        timing["asnorm_seconds"] = json!(norm_secs);
        let (sets, secs) = normalised_sets(e, &normed, out, no_plots, &mut curves)?;
        normed_sets = sets;
        metrics_secs += secs;
    }
    if let Some(c) = cal {
        let (scores, sum) = match c.calibration.scores.as_str() {
            "raw" => (&raw, &mut raw_sum),
            _ => match normed_sets.iter_mut().find(|(n, _, _)| n == "snorm") {
                Some((_, scores, sum)) => (&*scores, sum),
                None => bail!("the calibration ({}) maps s-norm scores: give --cohort", c.source),
            },
        };
        let llrs = c.calibration.llrs(&e.features(&c.calibration.qmfs(), scores));
        llr_row = Some(set.add_calibrated(sum, &llrs, eval_cfg)?);
        write_scores(out, "scores_llr.txt", &set.trials, &llrs)?;
    }
    let mut summary = serde_json::to_value(&raw_sum)?;
    summary["threshold"] = json!(raw_sum.eer_threshold);
    rows.push(("raw cosine".to_string(), raw_sum.clone()));
    for (name, _, sum) in normed_sets {
        summary[&name] = serde_json::to_value(&sum)?;
        rows.push((name, sum));
    }
    if let (Some(c), Some(llr)) = (cal, llr_row) {
        rows.push((format!("{} → LLR", c.calibration.scores), llr));
    }
    if let Some((cohort, _)) = &e.cohort {
        summary["cohort"] =
            json!({ "list": cohort.len(), "top_k": e.asnorm_top_k(), "top_k_config": eval_cfg.asnorm_top_k });
    }
    if let Some(c) = cal {
        summary["calibration"] = json!({ "source": c.source, "file": c.calibration });
    }
    if !no_plots {
        let refs: Vec<(&str, &Roc)> = curves.iter().map(|(n, r)| (n.as_str(), r)).collect();
        plot::det(&out.path("det"), &refs)?;
        plot::histogram(&out.path("hist"), &raw, labels, "Score distribution (raw cosine)")?;
    }
    timing["metrics_seconds"] = json!(metrics_secs);
    summary["timing"] = timing;
    Ok(Outcome { summary, rows, threshold: raw_sum.eer_threshold })
}

/// A named score set with its metrics.
type NamedScores = (String, Vec<f64>, ScoreSummary);

/// The z-, t- and s-normalised score sets with their metrics, and the
/// seconds the metrics took; the s-norm scores are written (with their
/// histogram) and their ROC joins `curves`.
fn normalised_sets(
    e: &Embedded,
    normed: &[NormScores],
    out: &StagedDir,
    no_plots: bool,
    curves: &mut Vec<(String, Roc)>,
) -> Result<(Vec<NamedScores>, f64)> {
    let (set, eval_cfg) = (&e.set, &e.model.config.eval);
    let (mut sets, mut secs) = (vec![], 0.0);
    for (name, pick) in [("znorm", 0usize), ("tnorm", 1), ("snorm", 2)] {
        let scores: Vec<f64> = normed.iter().map(|n| [n.z, n.t, n.s][pick]).collect();
        let t_metrics = Instant::now();
        let (sum, roc) = set.summarize(&scores, eval_cfg)?;
        secs += t_metrics.elapsed().as_secs_f64();
        if name == "snorm" {
            write_scores(out, "scores_snorm.txt", &set.trials, &scores)?;
            if !no_plots {
                plot::histogram(&out.path("hist_snorm"), &scores, &set.labels, "Score distribution (s-norm)")?;
            }
            curves.push(("s-norm".into(), roc));
        }
        sets.push((name.to_string(), scores, sum));
    }
    Ok((sets, secs))
}

/// The results table, in Markdown; calibration columns when a score set
/// has a calibration.
fn print_table(cfg: &ExperimentConfig, rows: &[(String, ScoreSummary)]) {
    let ps = &cfg.eval.p_targets;
    let calibrated = rows.iter().any(|(_, s)| s.cllr.is_some());
    let mut head: Vec<String> = ps.iter().map(|p| format!("minDCF@{p}")).collect();
    if calibrated {
        head.extend(["Cllr".to_string(), "minCllr".to_string()]);
        head.extend(ps.iter().map(|p| format!("actDCF@{p}")));
    }
    println!("| scores | trials | EER % | {} |", head.join(" | "));
    println!("|---|---:|---:|{}", "---:|".repeat(head.len()));
    for (name, s) in rows {
        let mut cells: Vec<String> = ps.iter().map(|&p| format!("{:.4}", s.min_dcf_at(p))).collect();
        if calibrated {
            let dash = || "–".to_string();
            // A calibrated score set's Cllr and actual DCF are on its LLR row.
            let own = s.llr.is_none();
            cells.push(s.cllr.filter(|_| own).map_or_else(dash, |c| format!("{c:.4}")));
            cells.push(format!("{:.4}", s.min_cllr));
            cells.extend(ps.iter().map(|&p| s.act_dcf_at(p).filter(|_| own).map_or_else(dash, |d| format!("{d:.4}"))));
        }
        println!("| {name} | {} | {:.3} | {} |", s.trials, s.eer, cells.join(" | "));
    }
}

/// `enroll test score label` per trial, into the staged folder.
fn write_scores(out: &StagedDir, name: &str, trials: &[Trial], scores: &[f64]) -> Result<()> {
    let mut text = String::with_capacity(trials.len() * 64);
    for (t, s) in trials.iter().zip(scores) {
        text.push_str(&format!("{} {} {s:.6} {}\n", t.enroll, t.test, t.target as u8));
    }
    write_atomic(&out.path(name), text.as_bytes())
        .with_context(|| format!("cannot write {}", out.final_path(name).display()))
}
