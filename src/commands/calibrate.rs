//! `calibrate`: fits the map from scores (and quality measures) to
//! log-likelihood ratios on a development trial list.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::trial_embeddings::{self, EvalInputs};
use crate::device::SelectedDevice;
use crate::eval::calibration::{cllr, min_cllr, Calibration, Qmf, SCORE_SETS};
use crate::files::{OutputLock, WhenBusy};
use crate::lists::read_scores;
use crate::weights::SpeakerModel;

/// Options of `calibrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Fit on a score file (`enroll test score label`, as `eval` writes it)
    /// instead of embedding --trials with --model.
    #[arg(long, conflicts_with_all = ["checkpoint", "trials", "cohort"])]
    pub scores: Option<PathBuf>,
    #[command(flatten)]
    pub input: EvalInputs,
    /// The score set to calibrate: raw (cosine) or snorm (needs --cohort).
    #[arg(long, default_value = "raw", value_parser = clap::builder::PossibleValuesParser::new(SCORE_SETS))]
    pub score_set: String,
    /// Quality measures besides the score, comma-separated: duration (log
    /// of the shorter recording's seconds), norm (mean embedding norm).
    #[arg(long, value_delimiter = ',')]
    pub qmf: Vec<String>,
    /// The prior the regression is weighted for (default: the config's
    /// first P_target).
    #[arg(long, value_parser = super::cli::probability)]
    pub p_target: Option<f64>,
    /// Where to write the calibration (JSON).
    #[arg(long, required_unless_present = "store")]
    pub out: Option<PathBuf>,
    /// Store the calibration in the model file (--model), for `eval` and
    /// `verify`.
    #[arg(long)]
    pub store: bool,
}

/// Scores (and quality measures) with labels, ready to fit.
struct FitData {
    features: Vec<Vec<f64>>,
    labels: Vec<bool>,
    /// Where they came from, for messages.
    source: String,
}

pub fn run(args: &CalibrateArgs, dev: &SelectedDevice) -> Result<()> {
    let mut qmfs = args.qmf.iter().map(|q| Qmf::parse(q)).collect::<Result<Vec<_>>>()?;
    qmfs.sort();
    qmfs.dedup();
    // --store rewrites the model file: held from its reading to its writing,
    // so that two runs cannot each store over the other's calibration.
    let _lock = match args.store {
        true => Some(OutputLock::acquire(&super::model_or_bundled(args.input.model.as_deref())?, WhenBusy::Wait)?),
        false => None,
    };
    let (data, mut model, model_path) = match &args.scores {
        Some(file) => {
            if !qmfs.is_empty() {
                bail!("--qmf needs the recordings (--model with --trials), not a score file");
            }
            if args.score_set != "raw" {
                bail!("--score-set applies to --trials; a score file's scores are calibrated as they are");
            }
            let rows = read_scores(file)?;
            let features = rows.iter().map(|r| vec![r.score]).collect();
            let labels = rows.iter().map(|r| r.target).collect();
            let path = super::model_or_bundled(args.input.model.as_deref())?;
            let model = SpeakerModel::load(&path, &dev.device)?;
            (FitData { features, labels, source: file.display().to_string() }, model, Some(path))
        }
        None => {
            let e = trial_embeddings::embed(&args.input, dev)?;
            let raw = e.raw_scores();
            let scores = match args.score_set.as_str() {
                "raw" => raw,
                _ => {
                    let (normed, _) = e.asnorm(&raw).context("--score-set snorm needs --cohort")?;
                    normed.iter().map(|n| n.s).collect()
                }
            };
            let features = e.features(&qmfs, &scores);
            let source = format!("{} ({} scores)", e.trial_path.display(), args.score_set);
            let labels = e.set.labels.clone();
            (FitData { features, labels, source }, e.model, e.model_path)
        }
    };
    let p_target = args.p_target.unwrap_or(model.config.eval.p_targets[0]);
    let mut cal = Calibration::fit(&data.features, &data.labels, &qmfs, p_target)
        .with_context(|| format!("cannot calibrate on {}", data.source))?;
    cal.scores = args.score_set.clone();
    report(&cal, &data);

    if let Some(out) = &args.out {
        cal.save(out)?;
        println!("wrote {}", out.display());
    }
    if args.store {
        let Some(p) = model_path else { bail!("--store needs --model (a model file), not --checkpoint") };
        model.meta.calibration = Some(cal.to_json());
        model.save(&p)?;
        println!("stored the calibration in {}", p.display());
    }
    Ok(())
}

/// Prints the map and how it does on the data it was fitted on.
fn report(cal: &Calibration, data: &FitData) {
    let scores: Vec<f64> = data.features.iter().map(|f| f[0]).collect();
    let llrs = cal.llrs(&data.features);
    let (nt, n) = (data.labels.iter().filter(|&&l| l).count(), data.labels.len());
    println!("calibration on {} ({n} trials, {nt} target), weighted for P_target {}", data.source, cal.p_target);
    let terms: Vec<String> = cal.weights.iter().map(|(k, w)| format!("{w:+.6}·{k}")).collect();
    println!("llr = {:+.6} {}", cal.bias, terms.join(" "));
    println!(
        "on these trials: Cllr {:.4} bits (minCllr {:.4}; the scores read as LLRs: {:.4})",
        cllr(&llrs, &data.labels),
        min_cllr(&scores, &data.labels),
        cllr(&scores, &data.labels)
    );
}
