//! The training loop: epochs of batches from the loader, validation EER after
//! each epoch, checkpoints, metrics CSV, curves and the best models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::checkpoint::{self, EpochRow, StepRow, TrainState};
use super::data::{mix, steps_per_epoch, Loader, LoaderSpec, TrainSet};
use super::loss::{accuracy_percent, AamSoftmax};
use super::model::TrainModel;
use super::optim::{adamw, Schedule};
use super::step::{backward_and_step, spec_augment_mask, train_forward};
use crate::audio::augment::{Augmenter, NoiseBank};
use crate::config::ExperimentConfig;
use crate::embed::{default_batch_seconds, Embedder};
use crate::eval::metrics::Roc;
use crate::eval::score::cosine;
use crate::features::Frontend;
use crate::lists::{preflight, read_trials, trial_files};
use crate::weights::{write_atomic, ModelMeta, SpeakerModel};

/// What a run trains on and where it writes.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub cfg: ExperimentConfig,
    pub train_list: PathBuf,
    pub wav_root: PathBuf,
    /// MUSAN-like noise root and RIR root; `None` trains without waveform augmentation.
    pub augment: Option<(PathBuf, PathBuf)>,
    pub spec_augment: bool,
    pub val_trials: Option<PathBuf>,
    pub val_root: Option<PathBuf>,
    pub out: PathBuf,
    pub resume: bool,
    pub init_model: Option<PathBuf>,
    pub workers: usize,
    pub checkpoint_every: usize,
    /// Stop (after checkpointing) once this many optimiser steps are done.
    pub stop_after_steps: Option<usize>,
}

/// Validation data: the trial list and its files.
struct Validation {
    trials: Vec<crate::lists::Trial>,
    files: Vec<crate::lists::ListedFile>,
    index: HashMap<String, usize>,
}

impl Validation {
    fn load(list: &Path, root: &Path, sample_rate: u32) -> Result<Self> {
        let trials = read_trials(list)?;
        let unique = trial_files(&trials);
        let files = preflight(list, &unique, Some(root), sample_rate)?;
        let index = unique.iter().enumerate().map(|(i, (f, _))| (f.clone(), i)).collect();
        Ok(Self { trials, files, index })
    }

    fn eer(&self, model: &SpeakerModel, device: &Device) -> Result<f64> {
        let e = Embedder::new(model, device);
        let embs = e.embed_listed(&self.files, default_batch_seconds(device), &|_| {})?;
        let scores: Vec<f64> =
            self.trials.iter().map(|t| cosine(&embs[self.index[&t.enroll]], &embs[self.index[&t.test]])).collect();
        let labels: Vec<bool> = self.trials.iter().map(|t| t.target).collect();
        Ok(Roc::new(&scores, &labels)?.eer().value)
    }
}

fn write_csvs(out: &Path, state: &TrainState) -> Result<()> {
    let mut e = String::from(
        "epoch,steps,loss,accuracy_percent,lr,eer_percent,crops_per_sec,loader_wait_secs,step_secs,rss_mib,device_in_use_mib,device_reserved_mib\n",
    );
    for r in &state.epochs {
        let opt = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
        e.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.steps,
            r.loss,
            r.accuracy,
            r.lr,
            opt(r.eer),
            r.crops_per_sec,
            r.loader_wait_secs,
            r.step_secs,
            opt(r.rss_mib),
            opt(r.device_in_use_mib),
            opt(r.device_reserved_mib)
        ));
    }
    write_atomic(&out.join("metrics.csv"), e.as_bytes())?;
    let mut s = String::from("global_step,epoch,loss,accuracy_percent,lr\n");
    for r in &state.steps {
        s.push_str(&format!("{},{},{},{},{}\n", r.global_step, r.epoch, r.loss, r.accuracy, r.lr));
    }
    write_atomic(&out.join("steps.csv"), s.as_bytes())
}

fn plot_curves(out: &Path, state: &TrainState) -> Result<()> {
    let col = |f: &dyn Fn(&EpochRow) -> Option<f64>| -> Vec<(f64, f64)> {
        state.epochs.iter().filter_map(|r| f(r).map(|v| (r.epoch as f64, v))).collect()
    };
    crate::eval::plot::panels(
        &out.join("curves"),
        "Training",
        &[
            ("loss", col(&|r| Some(r.loss))),
            ("accuracy (%)", col(&|r| Some(r.accuracy))),
            ("learning rate", col(&|r| Some(r.lr))),
            ("validation EER (%)", col(&|r| r.eer)),
        ],
    )
}

/// Runs (or resumes) training. Returns the final model's path.
pub fn train(spec: &RunSpec, plain: &Device) -> Result<PathBuf> {
    let cfg = &spec.cfg;
    let tc = &cfg.train;
    std::fs::create_dir_all(&spec.out).with_context(|| format!("cannot create {}", spec.out.display()))?;
    let set = Arc::new(TrainSet::load(&spec.train_list, &spec.wav_root)?);
    if set.speakers.len() != tc.loss.n_classes {
        bail!(
            "{}: {} speakers, but the config's train.loss.n_classes is {}; set it to the number of speakers",
            spec.train_list.display(),
            set.speakers.len(),
            tc.loss.n_classes
        );
    }
    let steps = steps_per_epoch(set.files.len(), tc.batch_size);
    if steps == 0 {
        bail!("{} utterances make no full batch of {}", set.files.len(), tc.batch_size);
    }
    let validation = match &spec.val_trials {
        Some(t) => {
            let root = spec.val_root.clone().or_else(|| t.parent().map(Path::to_path_buf)).unwrap_or_default();
            Some(Validation::load(t, &root, cfg.frontend.sample_rate)?)
        }
        None => None,
    };
    let augmenter = match &spec.augment {
        Some((musan, rir)) => Some(Arc::new(Augmenter {
            bank: NoiseBank::scan(musan, rir)?,
            cfg: tc.augment.clone(),
            sample_rate: cfg.frontend.sample_rate,
        })),
        None => {
            log::warn!("training without waveform augmentation (no --musan/--rir)");
            None
        }
    };
    write_atomic(&spec.out.join("config.ron"), cfg.to_ron().as_bytes())?;

    // Model, optimiser, schedule: fresh, from a model, or from the last checkpoint.
    let device = plain.clone().autodiff();
    let ckpt_root = spec.out.join("checkpoints");
    let mut model = match &spec.init_model {
        Some(p) => TrainModel::from_model(&SpeakerModel::load(p, plain)?, cfg, &device)?,
        None => TrainModel::new(cfg, &device),
    };
    let mut optim = adamw(&tc.optimizer);
    let mut state = TrainState {
        config_name: cfg.name.clone(),
        epoch: 0,
        step_in_epoch: 0,
        global_step: 0,
        schedule_count: 0,
        epochs: vec![],
        steps: vec![],
        best: vec![],
    };
    if spec.resume {
        match checkpoint::latest(&ckpt_root) {
            Some(dir) => {
                let (m, o, s) = checkpoint::load(&dir, model, optim)?;
                (model, optim, state) = (m, o, s);
                log::info!("resumed from {} (epoch {}, step {})", dir.display(), state.epoch, state.step_in_epoch);
            }
            None => bail!("--resume: no checkpoint in {}", ckpt_root.display()),
        }
    } else if checkpoint::latest(&ckpt_root).is_some() {
        bail!("{} holds a run already: pass --resume to continue it, or choose another --out", spec.out.display());
    }
    let mut schedule = Schedule::new(&tc.scheduler, tc.optimizer.lr);
    schedule.count = state.schedule_count;

    let frontend = Frontend::new(&cfg.frontend, &device);
    let aam = AamSoftmax::new(&tc.loss);
    let loader_spec = LoaderSpec {
        set: set.clone(),
        augmenter,
        batch: tc.batch_size,
        crop: tc.crop_samples,
        seed: tc.seed,
        sample_rate: cfg.frontend.sample_rate,
        workers: spec.workers,
        prefetch: 2 * spec.workers.max(1),
    };
    let frames = cfg.frontend.num_frames(tc.crop_samples);
    log::info!(
        "{}: {} utterances, {} speakers, {} steps of {} per epoch, {} epochs",
        cfg.name,
        set.files.len(),
        set.speakers.len(),
        steps,
        tc.batch_size,
        tc.max_epochs
    );

    while state.epoch < tc.max_epochs {
        let epoch = state.epoch;
        let epoch_lr = if schedule.per_step() { None } else { Some(schedule.lr_at(epoch)) };
        let mut loader = Loader::start(&loader_spec, epoch, state.step_in_epoch);
        let pb = crate::commands::progress(
            (steps - state.step_in_epoch) as u64,
            &format!("epoch {}/{}", epoch + 1, tc.max_epochs),
        );
        let mut n = 0usize;
        let (t_epoch, mut step_secs) = (Instant::now(), 0.0);
        for batch in loader.by_ref() {
            let batch = batch?;
            let t = Instant::now();
            let lr = epoch_lr.unwrap_or_else(|| schedule.lr_at(state.global_step));
            let b = batch.labels.len();
            let wav = Tensor::<2>::from_data(TensorData::new(batch.wav, [b, tc.crop_samples]), &device);
            let mask = spec.spec_augment.then(|| {
                let mut rng = StdRng::seed_from_u64(mix(&[tc.seed, epoch as u64, batch.step as u64, 3]));
                spec_augment_mask(&tc.spec_augment, cfg.frontend.n_mels, frames, &mut rng, &device)
            });
            let (_, out) = train_forward(&model, &frontend, wav, &batch.labels, &aam, mask);
            let loss = out.loss.clone().into_scalar::<f32>() as f64;
            let logits = out
                .logits
                .clone()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let acc = accuracy_percent(&logits, tc.loss.n_classes, &batch.labels);
            if !loss.is_finite() {
                bail!("loss is {loss} at epoch {epoch}, step {}: stopping", batch.step);
            }
            let (m, _) = backward_and_step(model, &mut optim, out.loss, lr, tc.optimizer.grad_clip_norm);
            model = m;
            step_secs += t.elapsed().as_secs_f64();
            n += 1;
            state.global_step += 1;
            state.step_in_epoch = batch.step + 1;
            if schedule.per_step() {
                state.schedule_count = state.global_step;
            }
            state.steps.push(StepRow { global_step: state.global_step, epoch, loss, accuracy: acc, lr });
            pb.set_message(format!(
                "epoch {}/{} loss {loss:.3} acc {acc:.1}% lr {lr:.2e} {:.1} crops/s",
                epoch + 1,
                tc.max_epochs,
                (n * b) as f64 / t_epoch.elapsed().as_secs_f64()
            ));
            pb.inc(1);
            let stop = spec.stop_after_steps.is_some_and(|s| state.global_step >= s);
            if stop
                || (spec.checkpoint_every > 0
                    && state.global_step.is_multiple_of(spec.checkpoint_every)
                    && state.step_in_epoch < steps)
            {
                checkpoint::save(&ckpt_root, &model, &optim, &state)?;
                write_csvs(&spec.out, &state)?;
            }
            if stop {
                pb.finish_and_clear();
                log::info!("stopping after {} steps as asked; resume with --resume", state.global_step);
                return Ok(ckpt_root);
            }
        }
        pb.finish_and_clear();
        let elapsed = t_epoch.elapsed().as_secs_f64();

        // Validation and the best models.
        let speaker_model = model.to_speaker_model(
            cfg,
            ModelMeta { source: Some(format!("trained: {}", spec.out.display())), ..Default::default() },
        );
        let eer = match &validation {
            Some(v) => Some(v.eer(&speaker_model, plain)?),
            None => None,
        };
        // Over every step of the epoch, including those before a resume.
        let rows: Vec<&StepRow> = state.steps.iter().filter(|r| r.epoch == epoch).collect();
        let count = rows.len().max(1) as f64;
        let row = EpochRow {
            epoch,
            steps: rows.len(),
            loss: rows.iter().map(|r| r.loss).sum::<f64>() / count,
            accuracy: rows.iter().map(|r| r.accuracy).sum::<f64>() / count,
            lr: epoch_lr.unwrap_or_else(|| schedule.lr_at(state.global_step.saturating_sub(1))),
            eer,
            crops_per_sec: (n * tc.batch_size) as f64 / elapsed,
            loader_wait_secs: loader.wait_secs,
            step_secs,
            rss_mib: crate::device::resident_mib(),
            device_in_use_mib: plain.memory_pool_usage().map(|u| u.bytes_in_use as f64 / (1 << 20) as f64),
            device_reserved_mib: plain.memory_pool_usage().map(|u| u.bytes_reserved as f64 / (1 << 20) as f64),
        };
        log::info!(
            "epoch {}: loss {:.4}, accuracy {:.2}%, lr {:.3e}{}, {:.1} crops/s (loader wait {:.1} s, steps {:.1} s), RSS {:.0} MiB{}",
            epoch + 1,
            row.loss,
            row.accuracy,
            row.lr,
            eer.map(|e| format!(", validation EER {e:.2}%")).unwrap_or_default(),
            row.crops_per_sec,
            row.loader_wait_secs,
            row.step_secs,
            row.rss_mib.unwrap_or(0.0),
            row.device_reserved_mib
                .map(|r| format!(", device memory {:.0} MiB in use, {r:.0} MiB reserved", row.device_in_use_mib.unwrap_or(0.0)))
                .unwrap_or_default()
        );
        if let Some(e) = eer {
            let best_dir = spec.out.join("best");
            let path = best_dir.join(format!("epoch{:04}_eer{e:.3}.safetensors", epoch + 1));
            let mut m = speaker_model.clone();
            m.meta.threshold = None;
            m.save(&path)?;
            state.best.push((e, path));
            state.best.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            while state.best.len() > tc.keep_best {
                let (_, p) = state.best.pop().unwrap();
                std::fs::remove_file(&p).ok();
            }
        }
        state.epochs.push(row);
        state.epoch += 1;
        state.step_in_epoch = 0;
        if !schedule.per_step() {
            state.schedule_count = state.epoch;
        }
        checkpoint::save(&ckpt_root, &model, &optim, &state)?;
        write_csvs(&spec.out, &state)?;
        plot_curves(&spec.out, &state)?;
        speaker_model.save(&spec.out.join("model.safetensors"))?;
    }
    let final_path = spec.out.join("model.safetensors");
    if !final_path.exists() {
        model.to_speaker_model(cfg, ModelMeta::default()).save(&final_path)?;
    }
    println!("trained model: {}", final_path.display());
    if let Some((e, p)) = state.best.first() {
        println!("best validation EER {e:.3}%: {}", p.display());
    }
    Ok(final_path)
}
