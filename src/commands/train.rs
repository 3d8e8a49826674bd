//! `train`: runs or resumes training (see [`crate::train::run`]), in one
//! process or, with the `distributed` feature under an MPI launcher, as one
//! rank of a data-parallel job.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::ExperimentConfig;
use crate::device::{BackendKind, DeviceSpec};
use crate::train::collective::{Collective, Single};
use crate::train::run::{train, RunSpec};

/// Options of `train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Config (configs/*.ron).
    #[arg(long)]
    pub config: PathBuf,
    /// Train list in voxceleb_trainer format (`speaker path`).
    #[arg(long)]
    pub train_list: PathBuf,
    /// Root of the train list's paths.
    #[arg(long)]
    pub wav_root: PathBuf,
    /// MUSAN root (split or flat layout); with --rir enables waveform
    /// augmentation (written into the run's config as train.augment.enabled).
    #[arg(long, requires = "rir")]
    pub musan: Option<PathBuf>,
    /// Root of the room impulse responses.
    #[arg(long, requires = "musan")]
    pub rir: Option<PathBuf>,
    /// Turn SpecAugment off (written into the run's config).
    #[arg(long)]
    pub no_spec_augment: bool,
    /// Validation trial list (EER after each epoch).
    #[arg(long)]
    pub val_trials: Option<PathBuf>,
    /// Root of the validation list's paths (default: the list's folder).
    #[arg(long)]
    pub val_root: Option<PathBuf>,
    /// Run directory (config, metrics, curves, checkpoints, models).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start from this model file (fine-tuning).
    #[arg(long)]
    pub init_model: Option<PathBuf>,
    /// Override train.max_epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override train.batch_size: crops per optimiser step, over all ranks.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override train.accumulate: micro-batches per optimiser step on each rank.
    #[arg(long)]
    pub accumulate: Option<usize>,
    /// Override train.loss.n_classes (the number of training speakers).
    #[arg(long)]
    pub n_classes: Option<usize>,
    /// Data-loading threads (per rank).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Also checkpoint every N steps inside epochs (0: at epoch ends only).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: usize,
    /// Stop after this many optimiser steps (with a checkpoint to resume from).
    #[arg(long)]
    pub stop_after_steps: Option<usize>,
    /// Read the loss and accuracy back from the device every N steps (one
    /// `steps.csv` row each); the device never waits in between.
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
    /// Keep the models of the last N epochs in RUN/epochs/ (0: none), for
    /// `average --run RUN --last k`.
    #[arg(long, default_value_t = 5)]
    pub keep_last: usize,
}

impl TrainArgs {
    /// The run: the config with the overrides applied. On resume the run
    /// directory's config wins over --config, and only the overrides that
    /// keep the run the same run are accepted.
    fn spec(&self, is_root: bool) -> Result<RunSpec> {
        let saved = self.out.join("config.ron");
        let resuming = self.resume && saved.is_file();
        let mut cfg = ExperimentConfig::load(if resuming { &saved } else { &self.config })?;
        if resuming {
            if self.batch_size.is_some_and(|b| b != cfg.train.batch_size)
                || self.n_classes.is_some_and(|n| n != cfg.train.loss.n_classes)
            {
                bail!(
                    "--resume continues the run in {} with its own batch size and classes ({}): --batch-size and --n-classes cannot change them",
                    self.out.display(),
                    saved.display()
                );
            }
            if is_root && ExperimentConfig::load(&self.config).is_ok_and(|c| c.name != cfg.name) {
                log::warn!("--resume: using {} (--config {} is ignored)", saved.display(), self.config.display());
            }
        }
        if let Some(e) = self.epochs {
            if e == 0 {
                bail!("--epochs must be at least 1");
            }
            cfg.train.max_epochs = e;
        }
        if let Some(b) = self.batch_size {
            cfg.train.batch_size = b;
        }
        if let Some(a) = self.accumulate {
            cfg.train.accumulate = a;
        }
        if let Some(n) = self.n_classes {
            cfg.train.loss.n_classes = n;
        }
        self.write_augmentation(&mut cfg, resuming.then_some(saved.as_path()), is_root)?;
        cfg.validate()?;
        Ok(RunSpec {
            cfg,
            train_list: self.train_list.clone(),
            wav_root: self.wav_root.clone(),
            augment: self.musan.clone().zip(self.rir.clone()),
            val_trials: self.val_trials.clone(),
            val_root: self.val_root.clone(),
            out: self.out.clone(),
            resume: self.resume,
            init_model: self.init_model.clone(),
            workers: self.workers,
            checkpoint_every: self.checkpoint_every,
            stop_after_steps: self.stop_after_steps,
            log_every: self.log_every,
            keep_last: self.keep_last,
        })
    }
}

impl TrainArgs {
    /// Writes the augmentation flags into the run's config, so that the saved
    /// config says how the model was trained. On resume the saved config
    /// decides, and a flag that contradicts it is refused.
    fn write_augmentation(&self, cfg: &mut ExperimentConfig, saved: Option<&Path>, is_root: bool) -> Result<()> {
        let waveform = self.musan.is_some();
        let Some(saved) = saved else {
            if !waveform && cfg.train.augment.enabled && is_root {
                log::warn!("training without waveform augmentation (no --musan/--rir); the run's config records it");
            }
            cfg.train.augment.enabled = waveform;
            cfg.train.spec_augment.enabled &= !self.no_spec_augment;
            return Ok(());
        };
        match (cfg.train.augment.enabled, waveform) {
            (true, false) => bail!(
                "{}: this run trains with waveform augmentation (train.augment.enabled): resume it with --musan and --rir",
                saved.display()
            ),
            (false, true) => bail!(
                "{}: this run trains without waveform augmentation (train.augment.enabled is false): resume it without --musan and --rir",
                saved.display()
            ),
            _ => {}
        }
        if self.no_spec_augment && cfg.train.spec_augment.enabled {
            bail!(
                "{}: this run trains with SpecAugment (train.spec_augment.enabled): --no-spec-augment cannot change it on resume",
                saved.display()
            );
        }
        Ok(())
    }
}

/// The device of this rank: with several ranks, `--device wgpu` (no index)
/// means the local rank's GPU.
fn rank_device(spec: Option<DeviceSpec>, comm: &dyn Collective) -> Option<DeviceSpec> {
    if comm.size() == 1 {
        return spec;
    }
    let mut spec = spec.unwrap_or_else(crate::device::default_spec);
    if spec.index.is_none() && matches!(spec.kind, BackendKind::Wgpu | BackendKind::Vulkan | BackendKind::Cuda) {
        spec.index = Some(comm.local_rank());
    }
    Some(spec)
}

fn run_rank(args: &TrainArgs, device: Option<DeviceSpec>, comm: &dyn Collective) -> Result<()> {
    // One run per output folder: a second stops at once (runs last hours).
    let _lock = match comm.is_root() {
        true => Some(crate::files::OutputLock::acquire(&args.out, crate::files::WhenBusy::Fail)?),
        false => None,
    };
    let spec = args.spec(comm.is_root())?;
    let dev = crate::device::select(rank_device(device, comm))?;
    if comm.size() > 1 {
        log::info!("rank {} of {} on {}", comm.rank(), comm.size(), dev.info.spec);
    }
    let quiet = crate::progress::Silent;
    let reporter: &dyn crate::progress::Reporter = if comm.is_root() { &super::Terminal } else { &quiet };
    train(&spec, &dev.device, comm, reporter).map(|_| ())
}

pub fn run(args: &TrainArgs, device: Option<DeviceSpec>) -> Result<()> {
    #[cfg(feature = "distributed")]
    if let Some(mpi) = crate::train::distributed::Mpi::from_launcher()? {
        if let Err(e) = run_rank(args, device, &mpi) {
            // The other ranks may be waiting in a collective: end the job.
            eprintln!("error: rank {} of {}: {e:#}", mpi.rank(), mpi.size());
            mpi.abort(1);
        }
        return Ok(());
    }
    run_rank(args, device, &Single)
}
