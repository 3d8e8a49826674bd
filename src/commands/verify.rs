//! `verify`: the score of two recordings and an accept/reject decision:
//! with a calibration, its log-likelihood ratio against the Bayes threshold
//! of a prior; without, the raw cosine against a stored threshold.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::device::SelectedDevice;
use crate::embed::Embedder;
use crate::eval::calibration::{bayes_threshold, calibration_for, Side, SourcedCalibration};
use crate::eval::score::cosine;
use crate::weights::SpeakerModel;

/// Options of `verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Model file (default: the bundled demonstration model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Decision threshold on the raw cosine (default: the model's stored
    /// one); given, it overrides a stored calibration.
    #[arg(long, value_parser = super::cli::finite, conflicts_with = "calibration")]
    pub threshold: Option<f64>,
    /// Calibration (`cal.json` from `calibrate`; default: the model's
    /// stored one): the score becomes a log-likelihood ratio.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Prior of a same-speaker trial for the calibrated decision (default:
    /// the config's first P_target).
    #[arg(long, value_parser = super::cli::probability)]
    pub p_target: Option<f64>,
    /// Enrolment recording (default, with no test either: a bundled example).
    #[arg(requires = "test")]
    pub enroll: Option<PathBuf>,
    /// Test recording.
    pub test: Option<PathBuf>,
}

pub fn run(args: &VerifyArgs, dev: &SelectedDevice) -> Result<()> {
    let audio = super::assets_dir()?.join("audio");
    let (enroll, test) = match (&args.enroll, &args.test) {
        (Some(e), Some(t)) => (e.clone(), t.clone()),
        _ => {
            log::info!("no recordings given: scoring two bundled examples of one speaker");
            (audio.join("spk1_a.wav"), audio.join("spk1_b.wav"))
        }
    };
    let model_path = super::model_or_bundled(args.model.as_deref())?;
    let m = SpeakerModel::load(&model_path, &dev.device)?;
    // An explicit --threshold asks for the raw decision, whatever the model stores.
    let cal = match args.threshold {
        Some(_) => None,
        None => calibration_for(args.calibration.as_deref(), &m, Some(&model_path))?,
    };
    let embedder = Embedder::new(&m, &dev.device);
    let start = std::time::Instant::now();
    let a = side(&embedder, &enroll)?;
    let b = side(&embedder, &test)?;
    let score = cosine(&a.0, &b.0);
    anyhow::ensure!(
        score.is_finite(),
        "the score of {} against {} is not a finite number",
        enroll.display(),
        test.display()
    );
    let elapsed = start.elapsed();
    println!("enroll   {}", enroll.display());
    println!("test     {}", test.display());
    println!("model    {} ({})", m.config.name, m.meta.source.as_deref().unwrap_or("trained here"));
    println!("device   {} ({})", dev.info.spec, dev.info.adapter);
    println!("score    {score:.6}  (cosine similarity)");
    match &cal {
        Some(c) => decide_calibrated(args, &m, c, score, [a.1, b.1])?,
        None => decide_raw(args.threshold.or(m.meta.threshold), score),
    }
    log::info!("embedded 2 files in {:.1} ms", elapsed.as_secs_f64() * 1e3);
    Ok(())
}

/// A recording's embedding and what its quality measures need.
fn side(embedder: &Embedder, path: &Path) -> Result<(Vec<f32>, Side)> {
    let (emb, samples) = embedder.embed_file_counted(path)?;
    let side = Side::new(samples, embedder.config.frontend.sample_rate, &emb);
    Ok((emb, side))
}

fn decide_calibrated(
    args: &VerifyArgs,
    m: &SpeakerModel,
    c: &SourcedCalibration,
    score: f64,
    sides: [Side; 2],
) -> Result<()> {
    let cal = &c.calibration;
    anyhow::ensure!(
        cal.scores == "raw",
        "the calibration ({}) maps {} scores, which need a cohort; verify scores raw cosines",
        c.source,
        cal.scores
    );
    let qmf: Vec<f64> = cal.qmfs().iter().map(|q| q.of(sides)).collect();
    let llr = cal.llr(score, &qmf);
    anyhow::ensure!(llr.is_finite(), "the calibrated score is not a finite number");
    let eval = &m.config.eval;
    let p = args.p_target.unwrap_or(eval.p_targets[0]);
    let t = bayes_threshold(p, eval.c_miss, eval.c_fa);
    println!("llr      {llr:.4}  (natural log; calibration {})", c.source);
    println!(
        "decision {}  (Bayes threshold {t:.4} for P_target {p}, C_miss {}, C_fa {})",
        if llr >= t { "same speaker" } else { "different speakers" },
        eval.c_miss,
        eval.c_fa
    );
    Ok(())
}

fn decide_raw(threshold: Option<f64>, score: f64) {
    println!("calibration none: the decision compares the raw cosine with a threshold (run `calibrate` for LLRs)");
    match threshold {
        Some(t) => {
            println!("decision {}  (threshold {t:.6})", if score >= t { "same speaker" } else { "different speakers" })
        }
        None => println!("decision none: the model stores no threshold; pass --threshold or run `eval` to set one"),
    }
}
