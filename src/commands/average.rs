//! `average`: one model from the mean of several (checkpoint averaging).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::device::SelectedDevice;
use crate::files::{OutputLock, WhenBusy};
use crate::weights::{average_model_files, SpeakerModel};

/// Options of `average`.
#[derive(Debug, Clone, clap::Args)]
pub struct AverageArgs {
    /// Model files to average.
    #[arg(conflicts_with = "run")]
    pub models: Vec<PathBuf>,
    /// A training run: average its last (`--last k`, from RUN/epochs/) or
    /// best (`--best k`, by validation EER, from RUN/best/) models.
    #[arg(long)]
    pub run: Option<PathBuf>,
    #[arg(long, requires = "run", conflicts_with = "best")]
    pub last: Option<usize>,
    #[arg(long, requires = "run")]
    pub best: Option<usize>,
    /// The averaged model file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &AverageArgs, dev: &SelectedDevice) -> Result<()> {
    let paths = match &args.run {
        None if args.models.is_empty() => {
            bail!("nothing to average: give model files, or --run RUN with --last k or --best k")
        }
        None => args.models.clone(),
        Some(run) => match (args.last, args.best) {
            (Some(k), _) => pick(&run.join("epochs"), k, "--last", |names| names.sort())?,
            (None, Some(k)) => pick(&run.join("best"), k, "--best", |names| {
                names.sort_by(|a, b| eer_of(a).total_cmp(&eer_of(b)));
                names.reverse();
            })?,
            (None, None) => bail!("--run needs --last k or --best k"),
        },
    };
    if paths.len() < 2 {
        bail!("averaging needs at least two models, {} given", paths.len());
    }
    let same = |a: &Path, b: &Path| {
        a == b || std::fs::canonicalize(a).ok().zip(std::fs::canonicalize(b).ok()).is_some_and(|(x, y)| x == y)
    };
    if let Some(p) = paths.iter().find(|p| same(p, &args.out)) {
        bail!("--out {} is one of the models to average; write the average to a new file", p.display());
    }
    for p in &paths {
        log::info!("averaging {}", p.display());
    }
    let _lock = OutputLock::acquire(&args.out, WhenBusy::Wait)?;
    let file = average_model_files(&paths)?;
    // Rebuilt as a network, so that what is written loads like any model.
    let model = SpeakerModel::from_file(file, &args.out, &dev.device)?;
    model.save(&args.out)?;
    println!("averaged {} models ({}) into {}", paths.len(), model.config.name, args.out.display());
    Ok(())
}

/// The `k` model files of `dir` that come last in the order `order` puts
/// their names in.
fn pick(dir: &Path, k: usize, flag: &str, order: impl Fn(&mut Vec<String>)) -> Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the run's models", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    order(&mut names);
    if names.len() < k {
        bail!("{}: {} models, {flag} {k} needs {k}", dir.display(), names.len());
    }
    Ok(names[names.len() - k..].iter().map(|n| dir.join(n)).collect())
}

/// The validation EER in a `best/` file name (`epoch0007_eer3.125.safetensors`).
fn eer_of(name: &str) -> f64 {
    name.split("_eer")
        .nth(1)
        .and_then(|r| r.strip_suffix(".safetensors"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::MAX)
}
