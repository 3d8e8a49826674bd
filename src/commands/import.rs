//! `import`: official checkpoint → model file.

use std::path::PathBuf;

use anyhow::Result;

use crate::config::ExperimentConfig;
use crate::device::SelectedDevice;
use crate::weights::import_official;

/// Options of `import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The official checkpoint.
    pub checkpoint: PathBuf,
    /// The config it was trained with (configs/*.ron).
    #[arg(long)]
    pub config: PathBuf,
    /// Output model file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &ImportArgs, dev: &SelectedDevice) -> Result<()> {
    let (checkpoint, out) = (&args.checkpoint, &args.out);
    if out.is_dir() {
        anyhow::bail!("--out {}: is a directory; give the model file's name", out.display());
    }
    let cfg = ExperimentConfig::load(&args.config)?;
    let model = import_official(checkpoint, &cfg, &dev.device)?;
    model.save(out)?;
    println!(
        "imported {} ({}; {} parameters) into {}",
        checkpoint.display(),
        cfg.name,
        model.net.num_trainable_params(),
        out.display()
    );
    Ok(())
}
