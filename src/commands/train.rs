//! `train`: runs or resumes training (see [`crate::train::run`]).

use anyhow::Result;

use crate::device::SelectedDevice;
use crate::train::run::{train, RunSpec};

pub fn run(spec: &RunSpec, dev: &SelectedDevice) -> Result<()> {
    if spec.resume {
        // The run directory's resolved config wins over --config on resume.
        let saved = spec.out.join("config.ron");
        if saved.is_file() {
            let cfg = crate::config::ExperimentConfig::load(&saved)?;
            let spec = RunSpec { cfg, ..spec.clone() };
            return train(&spec, &dev.device).map(|_| ());
        }
    }
    train(spec, &dev.device).map(|_| ())
}
