//! The training run: setup, the epoch loop, and the end of each epoch
//! (validation EER, the best models, checkpoints, history and curves).
//!
//! The step loop never waits on the device: losses and correct counts add
//! up on the device and are read back every `log_every` steps, at
//! checkpoints and at the end of an epoch. With several ranks (MPI), every
//! rank runs this loop on its share of each batch; rank 0 alone logs,
//! validates and writes files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::checkpoint::{self, EpochRow, EpochSums, IntervalSums, TrainState, STATE_FORMAT};
use super::collective::{micro_batches, Collective};
use super::data::{mix, steps_per_epoch, Batch, Loader, LoaderSpec, TrainSet};
use super::grads::{average_buffers, parameter_hash};
use super::history::{epoch_line, plot_curves, step_line, CsvLog, METRICS_HEADER, STEPS_HEADER};
use super::loss::{labels_tensor, margin_at, AamSoftmax};
use super::model::TrainModel;
use super::optim::{adamw, Schedule};
use super::step::{accumulated_step, spec_augment_mask, MicroBatch, StepSums};
use crate::audio::augment::{AudioCache, Augmenter, NoiseBank};
use crate::config::ExperimentConfig;
use crate::embed::{default_batch_seconds, Embedder};
use crate::eval::trials::TrialSet;
use crate::features::Frontend;
use crate::files::write_atomic;
use crate::progress::{Progress, Reporter};
use crate::weights::{ModelMeta, SpeakerModel};

/// Ranks compare a hash of their parameters every this many steps (and at
/// the end of every epoch).
const HASH_CHECK_EVERY: usize = 1000;

/// What a run trains on and where it writes.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub cfg: ExperimentConfig,
    pub train_list: PathBuf,
    pub wav_root: PathBuf,
    /// MUSAN-like noise root and RIR root: given exactly when the config's
    /// `train.augment.enabled` is true.
    pub augment: Option<(PathBuf, PathBuf)>,
    pub val_trials: Option<PathBuf>,
    pub val_root: Option<PathBuf>,
    pub out: PathBuf,
    pub resume: bool,
    pub init_model: Option<PathBuf>,
    pub workers: usize,
    pub checkpoint_every: usize,
    /// Stop (after checkpointing) once this many optimiser steps are done.
    pub stop_after_steps: Option<usize>,
    /// Read the loss and accuracy back every this many steps.
    pub log_every: usize,
    /// Keep the models of the last this many epochs in `epochs/` (for
    /// `average --run DIR --last k`).
    pub keep_last: usize,
}

/// The file name of epoch `epoch`'s model (1-based) in a run's `epochs/`.
pub fn epoch_file_name(epoch: usize) -> String {
    format!("epoch{epoch:04}.safetensors")
}

/// Validation: the EER of the model on a trial list, by the path `eval` takes.
struct Validation(TrialSet);

impl Validation {
    /// The run's validation list (`--val-trials`), if it has one.
    fn of_spec(spec: &RunSpec) -> Result<Option<Self>> {
        let Some(list) = &spec.val_trials else { return Ok(None) };
        let root = spec.val_root.clone().or_else(|| list.parent().map(Path::to_path_buf)).unwrap_or_default();
        Ok(Some(Self(TrialSet::load(list, Some(&root), spec.cfg.frontend.sample_rate)?)))
    }

    fn eer(&self, model: &SpeakerModel, device: &Device) -> Result<f64> {
        let e = Embedder::new(model, device);
        let embs = e.embed_listed(&self.0.files, default_batch_seconds(device), &|_| {})?;
        let scores = self.0.cosine_scores(&embs);
        Ok(self.0.summarize(&scores, &model.config.eval)?.0.eer)
    }
}

/// The history files, kept by rank 0 only.
struct Logs {
    steps: CsvLog,
    metrics: CsvLog,
}

/// Loss and correct count of the log interval in progress, on the device.
struct DeviceSums {
    loss: Tensor<1>,
    correct: Tensor<1>,
}

impl DeviceSums {
    fn new(start: IntervalSums, device: &Device) -> Self {
        let t = |v: f64| Tensor::<1>::from_data(TensorData::new(vec![v as f32], [1]), device);
        Self { loss: t(start.loss), correct: t(start.correct) }
    }

    fn add(&mut self, s: StepSums) {
        self.loss = self.loss.clone() + s.loss;
        self.correct = self.correct.clone() + s.correct;
    }

    /// One read-back of both sums.
    fn read(&self) -> [f64; 2] {
        let v = Tensor::cat(vec![self.loss.clone(), self.correct.clone()], 0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 sums");
        [v[0] as f64, v[1] as f64]
    }
}

/// What the epoch loop hands to the end of the epoch.
struct EpochTimes {
    steps_run: usize,
    secs: f64,
    step_secs: f64,
    loader_wait_secs: f64,
}

enum EpochEnd {
    Complete(EpochTimes),
    Stopped,
}

/// A training run after setup.
///
/// The loss and accuracy sums live in three places. `sums` holds the log
/// interval in progress on the device: this rank's micro-batches only.
/// `flush_interval` reads it back every `log_every` steps, sums it over the
/// ranks and adds it to `state.epoch_sums`, which is then the same on every
/// rank. A checkpoint stores the interval's partial sums, summed over the
/// ranks, in `state.interval`, and only rank 0 writes it: so on resume rank 0
/// continues from them, every other rank starts its interval at zero with the
/// same step count, and the next flush's sum over the ranks is whole again.
struct Run<'a> {
    spec: &'a RunSpec,
    comm: &'a dyn Collective,
    plain: Device,
    device: Device,
    steps: usize,
    /// Micro-batches per step over all ranks.
    total: usize,
    validation: Option<Validation>,
    loader: LoaderSpec,
    frontend: Frontend,
    aam: AamSoftmax,
    schedule: Schedule,
    optim: ModuleOptimizer,
    state: TrainState,
    sums: DeviceSums,
    logs: Option<Logs>,
    ckpt_root: PathBuf,
    /// The last values read back, for the progress bar.
    shown: String,
    /// Host time per step spent on anything but loading, the step itself and
    /// checkpoints (read-backs, logging, progress), over this process's steps.
    bookkeeping: (f64, usize),
}

/// Runs (or resumes) training. Returns the final model's path (or the
/// checkpoint folder when stopped early).
pub fn train(spec: &RunSpec, plain: &Device, comm: &dyn Collective, reporter: &dyn Reporter) -> Result<PathBuf> {
    let (mut run, mut model) = Run::setup(spec, plain, comm)?;
    while run.state.epoch < spec.cfg.train.max_epochs {
        let (m, end) = run.epoch(model, reporter)?;
        model = m;
        match end {
            EpochEnd::Stopped => return Ok(run.ckpt_root.clone()),
            EpochEnd::Complete(times) => model = run.end_of_epoch(model, times)?,
        }
    }
    run.finish(&model)
}

fn check_spec(spec: &RunSpec, set: &TrainSet, comm: &dyn Collective) -> Result<usize> {
    let tc = &spec.cfg.train;
    if set.speakers.len() != tc.loss.n_classes {
        bail!(
            "{}: {} speakers, but the config's train.loss.n_classes is {}; set it to the number of speakers",
            spec.train_list.display(),
            set.speakers.len(),
            tc.loss.n_classes
        );
    }
    let total = comm.size() * tc.accumulate;
    if !tc.batch_size.is_multiple_of(total) {
        bail!(
            "batch size {} does not split into {} micro-batches ({} ranks × accumulate {}): choose a multiple",
            tc.batch_size,
            total,
            comm.size(),
            tc.accumulate
        );
    }
    let steps = steps_per_epoch(set.files.len(), tc.batch_size);
    if steps == 0 {
        bail!("{} utterances make no full batch of {}", set.files.len(), tc.batch_size);
    }
    if spec.log_every == 0 {
        bail!("--log-every must be at least 1");
    }
    Ok(total)
}

fn augmenter(spec: &RunSpec) -> Result<Option<Arc<Augmenter>>> {
    let cfg = &spec.cfg;
    Ok(match (&spec.augment, cfg.train.augment.enabled) {
        (Some((musan, rir)), true) => Some(Arc::new(Augmenter {
            bank: NoiseBank::scan(musan, rir)?,
            cfg: cfg.train.augment.clone(),
            sample_rate: cfg.frontend.sample_rate,
            cache: AudioCache::for_training(cfg.frontend.sample_rate),
        })),
        (None, false) => None,
        (Some(_), false) => bail!("noise and RIR folders were given, but the config's train.augment.enabled is false"),
        (None, true) => bail!("the config's train.augment.enabled is true, but no noise and RIR folders were given"),
    })
}

/// What this rank's loader reads: its micro-batches of each step.
fn loader_spec(
    spec: &RunSpec,
    set: Arc<TrainSet>,
    augmenter: Option<Arc<Augmenter>>,
    total: usize,
    comm: &dyn Collective,
) -> LoaderSpec {
    let cfg = &spec.cfg;
    let tc = &cfg.train;
    LoaderSpec {
        set,
        augmenter,
        batch: tc.batch_size,
        micro: micro_batches(comm.rank(), comm.size(), tc.accumulate),
        total,
        crop: tc.crop_samples,
        seed: tc.seed,
        sample_rate: cfg.frontend.sample_rate,
        workers: spec.workers,
        prefetch: 2 * spec.workers.max(1),
    }
}

fn fresh_state(cfg: &ExperimentConfig) -> TrainState {
    TrainState {
        format: STATE_FORMAT,
        config_name: cfg.name.clone(),
        epoch: 0,
        step_in_epoch: 0,
        global_step: 0,
        epoch_sums: EpochSums::default(),
        interval: IntervalSums::default(),
        steps_csv_bytes: 0,
        metrics_csv_bytes: 0,
        best: vec![],
    }
}

/// Model, optimiser and state: fresh, from `--init-model`, or from the last
/// checkpoint; every rank must hold the same parameters.
fn restore(
    spec: &RunSpec,
    plain: &Device,
    device: &Device,
    ckpt_root: &Path,
    comm: &dyn Collective,
) -> Result<(TrainModel, ModuleOptimizer, TrainState)> {
    let cfg = &spec.cfg;
    let mut model = match &spec.init_model {
        Some(p) => TrainModel::from_model(&SpeakerModel::load(p, plain)?, cfg, device)
            .with_context(|| format!("--init-model {}", p.display()))?,
        None => TrainModel::new(cfg, device),
    };
    let mut optim = adamw(&cfg.train.optimizer);
    let mut state = fresh_state(cfg);
    if spec.resume {
        let Some(dir) = checkpoint::latest(ckpt_root) else {
            bail!("--resume: no checkpoint in {}", ckpt_root.display())
        };
        (model, optim, state) = checkpoint::load(&dir, model, optim)?;
        if comm.is_root() {
            log::info!("resumed from {} (epoch {}, step {})", dir.display(), state.epoch, state.step_in_epoch);
        }
    } else if checkpoint::latest(ckpt_root).is_some() {
        bail!("{} holds a run already: pass --resume to continue it, or choose another --out", spec.out.display());
    }
    if !comm.all_equal(parameter_hash(&model)) {
        bail!(
            "rank {}: the ranks start from different parameters (with --resume or --init-model, every rank must read the same files)",
            comm.rank()
        );
    }
    Ok((model, optim, state))
}

/// Rank 0: the run's config and its history files, new or cut back to the
/// checkpoint.
fn open_logs(spec: &RunSpec, state: &TrainState) -> Result<Logs> {
    write_atomic(&spec.out.join("config.ron"), spec.cfg.to_ron().as_bytes())?;
    let resume = |n: u64| spec.resume.then_some(n);
    Ok(Logs {
        steps: CsvLog::open(&spec.out.join("steps.csv"), STEPS_HEADER, resume(state.steps_csv_bytes))?,
        metrics: CsvLog::open(&spec.out.join("metrics.csv"), METRICS_HEADER, resume(state.metrics_csv_bytes))?,
    })
}

impl<'a> Run<'a> {
    fn setup(spec: &'a RunSpec, plain: &Device, comm: &'a dyn Collective) -> Result<(Self, TrainModel)> {
        let cfg = &spec.cfg;
        let tc = &cfg.train;
        let root = comm.is_root();
        if root {
            std::fs::create_dir_all(&spec.out).with_context(|| format!("cannot create {}", spec.out.display()))?;
        }
        let t0 = Instant::now();
        let set = Arc::new(TrainSet::load(&spec.train_list, &spec.wav_root)?);
        let total = check_spec(spec, &set, comm)?;
        let steps = steps_per_epoch(set.files.len(), tc.batch_size);
        let validation = if root { Validation::of_spec(spec)? } else { None };
        let loader = loader_spec(spec, set.clone(), augmenter(spec)?, total, comm);

        let device = plain.clone().autodiff();
        let ckpt_root = spec.out.join("checkpoints");
        let (model, optim, state) = restore(spec, plain, &device, &ckpt_root, comm)?;
        let logs = if root { Some(open_logs(spec, &state)?) } else { None };
        // The interval's partial sums of all ranks continue on rank 0 (see `Run`).
        let start =
            if root { state.interval } else { IntervalSums { steps: state.interval.steps, ..Default::default() } };
        if root {
            log::info!(
                "{}: {} utterances, {} speakers, {} steps of {} per epoch ({} ranks × {} micro-batches of {}), {} epochs; set up in {:.1} s",
                cfg.name,
                set.files.len(),
                set.speakers.len(),
                steps,
                tc.batch_size,
                comm.size(),
                tc.accumulate,
                tc.batch_size / total,
                tc.max_epochs,
                t0.elapsed().as_secs_f64()
            );
        }
        let run = Run {
            spec,
            comm,
            plain: plain.clone(),
            frontend: Frontend::new(&cfg.frontend, &device),
            sums: DeviceSums::new(start, plain),
            device,
            steps,
            total,
            validation,
            loader,
            aam: AamSoftmax::new(&tc.loss),
            schedule: Schedule::new(&tc.scheduler, tc.optimizer.lr, steps, tc.max_epochs),
            optim,
            state,
            logs,
            ckpt_root,
            shown: String::new(),
            bookkeeping: (0.0, 0),
        };
        Ok((run, model))
    }

    fn stop_reached(&self) -> bool {
        self.spec.stop_after_steps.is_some_and(|s| self.state.global_step >= s)
    }

    /// The rate of optimiser step `step` (0-based) in the current epoch.
    fn lr_of_step(&self, step: usize) -> f64 {
        if self.schedule.per_step() {
            self.schedule.lr_at(step)
        } else {
            self.schedule.lr_at(self.state.epoch)
        }
    }

    fn lr(&self) -> f64 {
        self.lr_of_step(self.state.global_step)
    }

    /// Uploads this rank's micro-batches and draws the step's SpecAugment mask.
    fn upload(&self, batch: Batch) -> (Vec<MicroBatch>, Option<Tensor<3>>) {
        let spec = self.spec;
        let cfg = &spec.cfg;
        let tc = &cfg.train;
        let micro = batch
            .micro
            .into_iter()
            .map(|m| {
                let b = m.labels.len();
                MicroBatch {
                    wav: Tensor::<2>::from_data(TensorData::new(m.wav, [b, tc.crop_samples]), &self.device),
                    labels: labels_tensor(&m.labels, &self.device),
                }
            })
            .collect();
        let mask = tc.spec_augment.enabled.then(|| {
            let mut rng = StdRng::seed_from_u64(mix(&[tc.seed, self.state.epoch as u64, batch.step as u64, 3]));
            let frames = cfg.frontend.num_frames(tc.crop_samples);
            spec_augment_mask(&tc.spec_augment, cfg.frontend.n_mels, frames, &mut rng, &self.device)
        });
        (micro, mask)
    }

    /// Steps through the rest of the epoch.
    fn epoch(&mut self, mut model: TrainModel, reporter: &dyn Reporter) -> Result<(TrainModel, EpochEnd)> {
        if self.stop_reached() {
            self.stop_message();
            return Ok((model, EpochEnd::Stopped));
        }
        let mut loader = Loader::start(&self.loader, self.state.epoch, self.state.step_in_epoch);
        let pb = self.epoch_bar(reporter);
        let (t_epoch, mut step_secs, mut n) = (Instant::now(), 0.0, 0usize);
        for batch in loader.by_ref() {
            let t = Instant::now();
            let lr = self.lr();
            model = self.step(model, batch?, lr);
            n += 1;
            let t_book = Instant::now();
            let crops_per_second = (n * self.spec.cfg.train.batch_size) as f64 / t_epoch.elapsed().as_secs_f64();
            self.after_step(&model, lr, pb.as_ref(), crops_per_second)?;
            self.bookkeeping.0 += t_book.elapsed().as_secs_f64();
            self.bookkeeping.1 += 1;
            step_secs += t.elapsed().as_secs_f64();
            let stop = self.stop_reached();
            if stop || self.checkpoint_due() {
                model = self.checkpoint(model)?;
            }
            if stop {
                pb.finish();
                self.stop_message();
                return Ok((model, EpochEnd::Stopped));
            }
        }
        pb.finish();
        self.flush_interval(self.lr_of_last_step())?;
        let times = EpochTimes {
            steps_run: n,
            secs: t_epoch.elapsed().as_secs_f64(),
            step_secs,
            loader_wait_secs: loader.wait_secs,
        };
        Ok((model, EpochEnd::Complete(times)))
    }

    /// The epoch's progress bar: rank 0 shows it, the other ranks none.
    fn epoch_bar(&self, reporter: &dyn Reporter) -> Box<dyn Progress> {
        if !self.comm.is_root() {
            return Box::new(crate::progress::Silent);
        }
        let left = (self.steps - self.state.step_in_epoch) as u64;
        reporter.bar(left, &format!("epoch {}/{}", self.state.epoch + 1, self.spec.cfg.train.max_epochs))
    }

    /// One optimiser step on this rank's micro-batches; the loss sums stay on
    /// the device.
    fn step(&mut self, model: TrainModel, batch: Batch, lr: f64) -> TrainModel {
        let tc = &self.spec.cfg.train;
        self.aam.margin = margin_at(&tc.loss, self.state.global_step, self.steps);
        let step = batch.step;
        let (micro, mask) = self.upload(batch);
        let (model, sums) = accumulated_step(
            model,
            &mut self.optim,
            &self.frontend,
            &self.aam,
            micro,
            mask,
            self.total,
            lr,
            tc.optimizer.grad_clip_norm,
            self.comm,
        );
        self.sums.add(sums);
        self.state.interval.steps += 1;
        self.state.global_step += 1;
        self.state.step_in_epoch = step + 1;
        model
    }

    /// After a step: the interval's read-back and log row when due, the check
    /// that the ranks hold the same parameters, and the progress bar.
    fn after_step(&mut self, model: &TrainModel, lr: f64, pb: &dyn Progress, crops_per_second: f64) -> Result<()> {
        if self.state.global_step.is_multiple_of(self.spec.log_every) {
            self.flush_interval(lr)?;
            let max_epochs = self.spec.cfg.train.max_epochs;
            let epoch = self.state.epoch + 1;
            pb.message(format!("epoch {epoch}/{max_epochs} {} {crops_per_second:.1} crops/s", self.shown));
        }
        if self.comm.size() > 1 && self.state.global_step.is_multiple_of(HASH_CHECK_EVERY) {
            self.check_ranks_agree(model)?;
        }
        pb.inc(1);
        Ok(())
    }

    /// A checkpoint inside the epoch is due every `--checkpoint-every` steps,
    /// except at its last step, which the end of the epoch checkpoints.
    fn checkpoint_due(&self) -> bool {
        let every = self.spec.checkpoint_every;
        every > 0 && self.state.global_step.is_multiple_of(every) && self.state.step_in_epoch < self.steps
    }

    fn stop_message(&self) {
        if self.comm.is_root() {
            log::info!("stopping after {} steps as asked; resume with --resume", self.state.global_step);
            self.log_bookkeeping();
        }
    }

    fn log_bookkeeping(&self) {
        let (secs, n) = self.bookkeeping;
        if n > 0 {
            log::info!(
                "bookkeeping {:.3} ms per step over {n} steps; resident memory {:.0} MiB",
                1e3 * secs / n as f64,
                crate::device::resident_mib().unwrap_or(0.0)
            );
        }
    }

    fn lr_of_last_step(&self) -> f64 {
        self.lr_of_step(self.state.global_step.saturating_sub(1))
    }

    /// Reads the interval's sums back (summed over ranks), checks them, adds
    /// them to the epoch's and logs a `steps.csv` row; the device sums restart
    /// from zero.
    fn flush_interval(&mut self, lr: f64) -> Result<()> {
        let steps = self.state.interval.steps;
        if steps == 0 {
            return Ok(());
        }
        let mut v = self.sums.read();
        self.comm.sum_f64(&mut v);
        let [loss_sum, correct] = v;
        let epoch = self.state.epoch;
        let g = self.state.global_step;
        if !loss_sum.is_finite() {
            bail!("loss is {loss_sum} in epoch {}, steps {}..={g}: stopping", epoch + 1, g + 1 - steps);
        }
        let loss = loss_sum / (steps * self.total) as f64;
        let accuracy = 100.0 * correct / (steps * self.spec.cfg.train.batch_size) as f64;
        let es = &mut self.state.epoch_sums;
        es.loss += loss_sum;
        es.correct += correct;
        es.steps += steps;
        self.state.interval = IntervalSums::default();
        self.sums = DeviceSums::new(IntervalSums::default(), &self.plain);
        self.shown = format!("loss {loss:.3} acc {accuracy:.1}% lr {lr:.2e}");
        if let Some(logs) = &mut self.logs {
            logs.steps.append(&step_line(g, epoch, steps, loss, accuracy, lr))?;
        }
        Ok(())
    }

    fn check_ranks_agree(&self, model: &TrainModel) -> Result<()> {
        let h = parameter_hash(model);
        log::info!("rank {}: step {}, parameter hash {h:016x}", self.comm.rank(), self.state.global_step);
        if !self.comm.all_equal(h) {
            bail!(
                "rank {}: parameters differ between ranks at step {}: stopping",
                self.comm.rank(),
                self.state.global_step
            );
        }
        Ok(())
    }

    /// Averages the BatchNorm statistics over ranks, then (rank 0) writes the
    /// checkpoint with the interval's partial sums as the device holds them.
    fn checkpoint(&mut self, model: TrainModel) -> Result<TrainModel> {
        let model = average_buffers(model, self.comm);
        let mut v = self.sums.read();
        self.comm.sum_f64(&mut v);
        if !v[0].is_finite() {
            bail!("loss is {} before the checkpoint at step {}: stopping", v[0], self.state.global_step);
        }
        if let Some(logs) = &mut self.logs {
            let mut state = self.state.clone();
            state.interval.loss = v[0];
            state.interval.correct = v[1];
            state.steps_csv_bytes = logs.steps.sync()?;
            state.metrics_csv_bytes = logs.metrics.sync()?;
            checkpoint::save(&self.ckpt_root, &model, &self.optim, &state)?;
        }
        Ok(model)
    }

    /// Validation, best models, history, curves and the checkpoint.
    fn end_of_epoch(&mut self, model: TrainModel, times: EpochTimes) -> Result<TrainModel> {
        let model = average_buffers(model, self.comm);
        if self.comm.size() > 1 {
            self.check_ranks_agree(&model)?;
        }
        let epoch = self.state.epoch;
        if self.comm.is_root() {
            self.record_epoch(&model, &times)?;
        }
        self.state.epoch += 1;
        self.state.step_in_epoch = 0;
        self.state.epoch_sums = EpochSums::default();
        self.checkpoint(model).inspect(|_| {
            if self.comm.is_root() {
                if let Err(e) = plot_curves(&self.spec.out) {
                    log::warn!("epoch {}: curves not drawn: {e:#}", epoch + 1);
                }
            }
        })
    }

    /// Rank 0: validation EER, the epoch's row, the best models and the model file.
    fn record_epoch(&mut self, model: &TrainModel, times: &EpochTimes) -> Result<()> {
        let spec = self.spec;
        let cfg = &spec.cfg;
        let epoch = self.state.epoch;
        let speaker_model = model.to_speaker_model(
            cfg,
            ModelMeta { source: Some(format!("trained: {}", spec.out.display())), ..Default::default() },
        );
        let eer = match &self.validation {
            Some(v) => Some(v.eer(&speaker_model, &self.plain)?),
            None => None,
        };
        // Over every step of the epoch, including those before a resume.
        let es = self.state.epoch_sums;
        let row = EpochRow {
            epoch,
            steps: es.steps,
            loss: es.loss / (es.steps.max(1) * self.total) as f64,
            accuracy: 100.0 * es.correct / (es.steps.max(1) * cfg.train.batch_size) as f64,
            lr: self.lr_of_last_step(),
            eer,
            crops_per_sec: (times.steps_run * cfg.train.batch_size) as f64 / times.secs,
            loader_wait_secs: times.loader_wait_secs,
            step_secs: times.step_secs,
            rss_mib: crate::device::resident_mib(),
            device_in_use_mib: self.plain.memory_pool_usage().map(|u| u.bytes_in_use as f64 / (1 << 20) as f64),
            device_reserved_mib: self.plain.memory_pool_usage().map(|u| u.bytes_reserved as f64 / (1 << 20) as f64),
        };
        log_epoch(&row);
        self.log_bookkeeping();
        if let Some(e) = eer {
            self.keep_best(&speaker_model, e)?;
        }
        self.keep_last(&speaker_model)?;
        if let Some(logs) = &mut self.logs {
            logs.metrics.append(&epoch_line(&row))?;
        }
        speaker_model.save(&spec.out.join("model.safetensors"))
    }

    fn keep_best(&mut self, speaker_model: &SpeakerModel, eer: f64) -> Result<()> {
        let path = self.spec.out.join("best").join(format!("epoch{:04}_eer{eer:.3}.safetensors", self.state.epoch + 1));
        let mut m = speaker_model.clone();
        m.meta.threshold = None;
        m.save(&path)?;
        let best = &mut self.state.best;
        best.push((eer, path));
        best.sort_by(|a, b| a.0.total_cmp(&b.0));
        while best.len() > self.spec.cfg.train.keep_best {
            if let Some((_, p)) = best.pop() {
                std::fs::remove_file(&p).ok();
            }
        }
        Ok(())
    }

    /// `epochs/epochNNNN.safetensors` of this epoch, and the one that falls
    /// out of the last `keep_last` removed.
    fn keep_last(&self, speaker_model: &SpeakerModel) -> Result<()> {
        let keep = self.spec.keep_last;
        if keep == 0 {
            return Ok(());
        }
        let dir = self.spec.out.join("epochs");
        let epoch = self.state.epoch + 1;
        speaker_model.save(&dir.join(epoch_file_name(epoch)))?;
        if epoch > keep {
            std::fs::remove_file(dir.join(epoch_file_name(epoch - keep))).ok();
        }
        Ok(())
    }

    fn finish(&self, model: &TrainModel) -> Result<PathBuf> {
        let final_path = self.spec.out.join("model.safetensors");
        if !self.comm.is_root() {
            return Ok(final_path);
        }
        if !final_path.exists() {
            model.to_speaker_model(&self.spec.cfg, ModelMeta::default()).save(&final_path)?;
        }
        println!("trained model: {}", final_path.display());
        if let Some((e, p)) = self.state.best.first() {
            println!("best validation EER {e:.3}%: {}", p.display());
        }
        Ok(final_path)
    }
}

fn log_epoch(row: &EpochRow) {
    log::info!(
        "epoch {}: loss {:.4}, accuracy {:.2}%, lr {:.3e}{}, {:.1} crops/s (loader wait {:.1} s, steps {:.1} s), RSS {:.0} MiB{}",
        row.epoch + 1,
        row.loss,
        row.accuracy,
        row.lr,
        row.eer.map(|e| format!(", validation EER {e:.2}%")).unwrap_or_default(),
        row.crops_per_sec,
        row.loader_wait_secs,
        row.step_secs,
        row.rss_mib.unwrap_or(0.0),
        row.device_reserved_mib
            .map(|r| format!(", device memory {:.0} MiB in use, {r:.0} MiB reserved", row.device_in_use_mib.unwrap_or(0.0)))
            .unwrap_or_default()
    );
}
