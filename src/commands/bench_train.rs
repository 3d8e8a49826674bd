//! `bench` measurements for training at scale: the data loader's crops per
//! second per worker thread, and the gradient all-reduce of data-parallel
//! training (under `mpirun` with the `distributed` feature).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use super::timing::{time, Measurement};
use crate::audio::augment::{AudioCache, Augmenter, NoiseBank};
use crate::config::ExperimentConfig;
use crate::device::SelectedDevice;
use crate::train::collective::{Collective, Single};
use crate::train::data::{Loader, LoaderSpec, TrainSet};
use crate::train::grads::mean_gradient;
use crate::train::model::TrainModel;

/// Options of the training measurements of `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainBenchArgs {
    /// Measure the data loader on this train list (`speaker path`).
    #[arg(long, requires = "loader_root")]
    pub loader_list: Option<PathBuf>,
    /// Root of the loader list's paths.
    #[arg(long)]
    pub loader_root: Option<PathBuf>,
    /// MUSAN root of the loader measurement (with --loader-rir: 6-way augmentation).
    #[arg(long, requires = "loader_rir")]
    pub loader_musan: Option<PathBuf>,
    /// Impulse-response root of the loader measurement.
    #[arg(long, requires = "loader_musan")]
    pub loader_rir: Option<PathBuf>,
    /// Loader threads.
    #[arg(long, default_value_t = 1)]
    pub loader_workers: usize,
    /// Crops per loader pass (batches of 32).
    #[arg(long, default_value_t = 512)]
    pub loader_crops: usize,
    /// Repeats of the gradient all-reduce of the config's model (meaningful
    /// under `mpirun` with the `distributed` feature); 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub allreduce: usize,
}

const LOADER_BATCH: usize = 32;

/// The measurements the options ask for.
pub fn run(
    args: &TrainBenchArgs,
    cfg: &ExperimentConfig,
    warmup: usize,
    dev: &SelectedDevice,
) -> Result<Vec<Measurement>> {
    let mut out = vec![];
    if let (Some(list), Some(root)) = (&args.loader_list, &args.loader_root) {
        out.extend(loader(args, list, root, cfg)?);
    }
    if args.allreduce > 0 {
        #[cfg(feature = "distributed")]
        if let Some(mpi) = crate::train::distributed::Mpi::from_launcher()? {
            out.extend(allreduce(cfg, warmup, args.allreduce, dev, &mpi));
            return Ok(out);
        }
        log::warn!("--allreduce: one process (start it under mpirun with the `distributed` feature to measure MPI)");
        out.extend(allreduce(cfg, warmup, args.allreduce, dev, &Single));
    }
    Ok(out)
}

/// Two passes over `loader_crops` crops: the first fills the noise and
/// impulse-response cache, the second reads from it.
fn loader(
    args: &TrainBenchArgs,
    list: &std::path::Path,
    root: &std::path::Path,
    cfg: &ExperimentConfig,
) -> Result<Vec<Measurement>> {
    let set = Arc::new(TrainSet::load(list, root)?);
    let augmenter = match (&args.loader_musan, &args.loader_rir) {
        (Some(m), Some(r)) => Some(Arc::new(Augmenter {
            bank: NoiseBank::scan(m, r)?,
            cfg: cfg.train.augment.clone(),
            sample_rate: cfg.frontend.sample_rate,
            cache: AudioCache::for_training(cfg.frontend.sample_rate),
        })),
        _ => None,
    };
    let spec = LoaderSpec {
        set,
        augmenter,
        batch: LOADER_BATCH,
        micro: vec![0],
        total: 1,
        crop: cfg.train.crop_samples,
        seed: cfg.train.seed,
        sample_rate: cfg.frontend.sample_rate,
        workers: args.loader_workers,
        prefetch: 2 * args.loader_workers.max(1),
    };
    let batches = args.loader_crops.div_ceil(LOADER_BATCH).max(1);
    let mut out = vec![];
    for (pass, what) in ["first pass", "second pass"].iter().enumerate() {
        let t = Instant::now();
        let mut loader = Loader::start(&spec, pass, 0);
        let mut crops = 0;
        for b in loader.by_ref().take(batches) {
            crops += b.context("loading a batch")?.micro[0].labels.len();
        }
        let secs = t.elapsed().as_secs_f64();
        let per_thread = crops as f64 / secs / args.loader_workers.max(1) as f64;
        let name = format!(
            "loader, {crops} crops of {} samples, {} thread(s), {} ({what}): {per_thread:.0} crops/s per thread",
            spec.crop,
            args.loader_workers,
            if spec.augmenter.is_some() { "6-way augmentation" } else { "no augmentation" },
        );
        log::info!("{name}");
        out.push(Measurement {
            name,
            median_ms: secs * 1e3,
            min_ms: secs * 1e3,
            max_ms: secs * 1e3,
            repeats: 1,
            gb_per_s: None,
        });
    }
    Ok(out)
}

/// A gradient of ones for every trained parameter.
struct Ones {
    grads: GradientsParams,
}

impl ModuleVisitor for Ones {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if p.val().is_require_grad() {
            let v = p.val().inner();
            self.grads.register::<D>(p.id, v.ones_like());
        }
    }
}

/// The step's gradient exchange: pack, read back, all-reduce, divide, write
/// back, on the config's full model (network and AAM class matrix).
fn allreduce(
    cfg: &ExperimentConfig,
    warmup: usize,
    repeats: usize,
    dev: &SelectedDevice,
    comm: &dyn Collective,
) -> Vec<Measurement> {
    let device = dev.device.clone().autodiff();
    let model = TrainModel::new(cfg, &device);
    let ones = || {
        let mut o = Ones { grads: GradientsParams::new() };
        model.visit(&mut o);
        o.grads
    };
    let n: usize = model.num_params();
    let name = format!("gradient all-reduce, {n} parameters, {} rank(s)", comm.size());
    let mut grads = Some(ones());
    let m = time(name, warmup, repeats, || {
        let g = grads.take().unwrap_or_else(ones);
        let g = mean_gradient(&model, g, comm.size(), comm);
        dev.device.sync().expect("device sync");
        grads = Some(g);
    });
    let mut host = vec![1.0f32; n];
    let bare = time(format!("MPI sum of {n} float32 on the host alone"), warmup, repeats, || comm.sum_f32(&mut host));
    vec![m, bare]
}
