//! `import`: official checkpoint → model file.

use std::path::Path;

use anyhow::Result;

use crate::config::ExperimentConfig;
use crate::device::SelectedDevice;
use crate::weights::import_official;

pub fn run(checkpoint: &Path, config: &Path, out: &Path, dev: &SelectedDevice) -> Result<()> {
    let cfg = ExperimentConfig::load(config)?;
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
