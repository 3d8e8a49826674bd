//! `verify`: cosine score of two recordings and an accept/reject decision.

use std::path::PathBuf;

use anyhow::Result;

use crate::device::SelectedDevice;
use crate::embed::Embedder;
use crate::eval::score::cosine;

/// Options of `verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Model file (default: the bundled demonstration model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Decision threshold on the cosine score (default: the model's stored one).
    #[arg(long, value_parser = super::cli::finite)]
    pub threshold: Option<f64>,
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
    let (model, threshold) = (args.model.as_deref(), args.threshold);
    let m = super::load_model(model, dev)?;
    let embedder = Embedder::new(&m, &dev.device);
    let start = std::time::Instant::now();
    let a = embedder.embed_file(&enroll)?;
    let b = embedder.embed_file(&test)?;
    let score = cosine(&a, &b);
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
    match threshold.or(m.meta.threshold) {
        Some(t) => {
            println!("decision {}  (threshold {t:.6})", if score >= t { "same speaker" } else { "different speakers" })
        }
        None => println!("decision none: the model stores no threshold; pass --threshold or run `eval` to set one"),
    }
    log::info!("embedded 2 files in {:.1} ms", elapsed.as_secs_f64() * 1e3);
    Ok(())
}
