//! Waveforms to speaker embeddings, in eval mode.
//!
//! GRN and the attention pool are global over time, so a naive padded batch
//! would change every embedding. Here files are grouped by length into
//! zero-padded batches and a frame mask ([`crate::model::FrameMask`]) keeps
//! each utterance's result what it is for the file alone. Decoding and the
//! CPU front end of the next batches run on worker threads while the device
//! computes the current one, and each batch is read back once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::audio::{read_wav, AudioError};
use crate::config::ExperimentConfig;
use crate::features::Frontend;
use crate::lists::ListedFile;
use crate::model::{NextTdnn, Precision};
use crate::ops::frontend::cpu::CpuFrontend;
use crate::ops::{with_route, Route};
use crate::weights::SpeakerModel;

/// Default `--batch-seconds` on the CPU: enough audio per batch that every
/// operation has work for all cores, small enough that activations stay in
/// cache (larger batches were slower on the CPU; BENCHMARKS.md).
pub const DEFAULT_BATCH_SECONDS_CPU: f64 = 20.0;
/// Default `--batch-seconds` on a GPU: large enough to fill the device.
pub const DEFAULT_BATCH_SECONDS_GPU: f64 = 400.0;
/// Batches decoded ahead of the one the device is computing.
const PREFETCH_BATCHES: usize = 2;

/// The default `--batch-seconds` on `device`.
pub fn default_batch_seconds(device: &Device) -> f64 {
    if crate::ops::is_cpu(device) {
        DEFAULT_BATCH_SECONDS_CPU
    } else {
        DEFAULT_BATCH_SECONDS_GPU
    }
}

/// Fewest samples a model accepts: the centred STFT's reflect padding needs
/// more than `n_fft / 2`, and the unpadded stem needs `stem_kernel` frames.
pub fn min_samples(cfg: &ExperimentConfig) -> usize {
    cfg.min_samples()
}

/// Host memory, in bytes, that embedding one file of `samples` samples
/// takes at its peak on the CPU backend: the model's weights twice, a fixed
/// part, and per feature frame 4 bytes × (4 × the FFN's hidden width + 600)
/// for the front end's buffers and the network's activations. Fitted to
/// measured peaks with margin: the imported C256 model took 324 MB at 2
/// minutes and 1 056 MB at 10 (3 812 floats per frame; estimated 4 696),
/// the bundled C64 model 98 and 329 MB (1 200 floats per frame; estimated
/// 1 624). Memory grows linearly with a file's length: the network's GRN
/// and attention pooling are global over time, so an exact embedding needs
/// the whole file at once.
pub fn peak_bytes(cfg: &ExperimentConfig, samples: usize) -> u64 {
    let m = &cfg.model;
    let frames = cfg.frontend.num_frames(samples) as u64;
    let hidden = (m.channels * m.ffn_expansion) as u64;
    let weights = crate::model::value_count(m, cfg.frontend.n_mels).unwrap_or(0) * 4;
    (64 << 20) + 2 * weights + frames * 4 * (4 * hidden + 600)
}

/// The widest activation of the network, in values per feature frame: the
/// FFN's hidden layer, the multi-scale block's branches side by side, or
/// the MFA's concatenated stages. On a GPU each is one buffer of
/// `frames × widest × 4` bytes.
pub fn widest_activation(cfg: &ExperimentConfig) -> usize {
    let m = &cfg.model;
    (m.channels * m.ffn_expansion).max(m.channels * m.kernels.len()).max(cfg.model.mfa_channels())
}

/// The most samples one recording may have so that no activation buffer
/// exceeds `buffer_bytes` (WebGPU's `maxStorageBufferBindingSize`, 128 MiB
/// by default) and the whole embedding stays within `memory_bytes` of host
/// memory ([`peak_bytes`]).
pub fn max_samples(cfg: &ExperimentConfig, buffer_bytes: u64, memory_bytes: u64) -> usize {
    let frames = buffer_bytes / (4 * widest_activation(cfg) as u64);
    let by_buffer = frames.saturating_sub(1).saturating_mul(cfg.frontend.hop_length as u64);
    // peak_bytes is increasing in the length: search the largest that fits,
    // among lengths a usize holds (32 bits on wasm32).
    let (mut lo, mut hi) = (0u64, by_buffer.min(usize::MAX as u64));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if peak_bytes(cfg, mid as usize) <= memory_bytes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo as usize
}

/// Refuses files whose embedding would take more than `budget` bytes of
/// memory ([`peak_bytes`]), naming the file (as `at` gives it), its length
/// and the budget, before any long work starts.
pub fn check_memory(cfg: &ExperimentConfig, files: &[(ListedFile, String)], budget: u64) -> Result<()> {
    let rate = cfg.frontend.sample_rate as f64;
    for (f, at) in files {
        let need = peak_bytes(cfg, f.samples);
        if need > budget {
            anyhow::bail!(
                "{at}: {:.1} minutes of audio would need about {:.1} GB of memory to embed with {}, over the budget of {:.1} GB; \
                 raise it with --max-memory, or cut the file (the embedding of a whole file needs all of it at once)",
                f.samples as f64 / rate / 60.0,
                need as f64 / 1e9,
                cfg.name,
                budget as f64 / 1e9
            );
        }
    }
    Ok(())
}

/// Log-mel features of one utterance on the host: `[n_mels, frames]` row-major.
#[derive(Debug, Clone)]
pub struct Features {
    pub values: Vec<f32>,
    pub frames: usize,
}

/// What a loader gives for one file of [`Embedder::embed_files`].
pub enum Loaded {
    /// The embedding is already known (e.g. from a cache).
    Embedding(Vec<f32>),
    /// Mono samples at the model's rate, to embed.
    Samples(Vec<f32>),
}

/// Groups utterances of `lengths` samples into batches whose padded size
/// (files × longest) stays within `budget` samples; longest first, and at
/// least one file per batch. A budget of 0 gives one file per batch.
pub fn plan_batches(lengths: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted longest first: the batch's first file sets its padded length.
        let longest = current.first().map_or(lengths[i], |&f| lengths[f]);
        if !current.is_empty() && (current.len() + 1) * longest > budget {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Where the time of [`Embedder::embed_files`] went. `load_secs` and
/// `features_secs` are summed over worker threads (thread-seconds); the
/// others are wall time of the calling thread.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PipelineStats {
    pub files: usize,
    pub batches: usize,
    /// Files whose loader returned an embedding (e.g. from a cache).
    pub known: usize,
    pub load_secs: f64,
    pub features_secs: f64,
    /// Padding, the network, and the read-back.
    pub network_secs: f64,
    /// The device waiting for the workers.
    pub wait_secs: f64,
    pub total_secs: f64,
}

/// A model and its front end on one device.
pub struct Embedder {
    pub config: ExperimentConfig,
    pub frontend: Frontend,
    pub net: NextTdnn,
    pub device: Device,
    pub precision: Precision,
    /// Our operations or Burn's generic ones ([`crate::ops::Route`]).
    pub route: Route,
}

impl Embedder {
    pub fn new(model: &SpeakerModel, device: &Device) -> Self {
        Self::with_precision(model, device, Precision::F32)
    }

    /// With the backbone in `precision` (see [`Precision`]).
    pub fn with_precision(model: &SpeakerModel, device: &Device, precision: Precision) -> Self {
        Self {
            config: model.config.clone(),
            frontend: Frontend::new(&model.config.frontend, device),
            net: model.net.clone().with_precision(precision),
            device: device.clone(),
            precision,
            route: Route::Extension,
        }
    }

    /// The same model on Burn's generic operations, or back on ours.
    pub fn with_route(mut self, route: Route) -> Self {
        self.route = route;
        self
    }

    pub fn min_samples(&self) -> usize {
        min_samples(&self.config)
    }

    /// Runs `forward` under this embedder's route. On the CPU (natively) it
    /// runs on a thread of the rayon pool: each operation's parallel loop then
    /// starts as local tasks of that thread, where from any other thread every
    /// operation is handed to the pool and its end waited for, a wake-up per
    /// operation that at batch 1 on a small model costs about as much as
    /// some of the operations themselves. The other workers stay awake
    /// meanwhile ([`crate::ops::awake`]).
    fn run<R: Send>(&self, forward: impl FnOnce() -> R + Send) -> R {
        let route = self.route;
        crate::ops::on_pool(&self.device, move || with_route(route, forward))
    }

    /// Reads and checks a WAV file for this model.
    pub fn load_audio(&self, path: &Path) -> Result<Vec<f32>, AudioError> {
        Ok(read_wav(path, self.config.frontend.sample_rate, self.min_samples())?.samples)
    }

    /// Log-mel features of one waveform on the device: `[1, n_mels, T]`.
    pub fn features(&self, samples: &[f32]) -> Tensor<3> {
        let wav = Tensor::<2>::from_data(TensorData::new(samples.to_vec(), [1, samples.len()]), &self.device);
        self.frontend.forward(wav)
    }

    /// Log-mel features of one waveform, computed on the host.
    pub fn host_features(&self, samples: &[f32]) -> Features {
        host_features(self.frontend.host(), samples)
    }

    /// Embedding of one waveform (eval mode), on the host.
    pub fn embed_samples(&self, samples: &[f32]) -> Result<Vec<f32>> {
        anyhow::ensure!(
            samples.len() >= self.min_samples(),
            "audio too short: {} samples, at least {} needed",
            samples.len(),
            self.min_samples()
        );
        let v = self.run(|| read_back(self.net.forward(self.features(samples), false)))?;
        ensure_finite(&v, 0).map_err(|e| anyhow::anyhow!("{e}{}", amplitude_hint(samples)))?;
        Ok(v)
    }

    /// Embedding of one WAV file.
    pub fn embed_file(&self, path: &Path) -> Result<Vec<f32>> {
        Ok(self.embed_file_counted(path)?.0)
    }

    /// Embedding of one WAV file, with its number of samples.
    pub fn embed_file_counted(&self, path: &Path) -> Result<(Vec<f32>, usize)> {
        let samples = self.load_audio(path)?;
        warn_if_silent(path, &samples);
        let emb = self.embed_samples(&samples).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok((emb, samples.len()))
    }

    /// Embeddings of a batch of host features: zero-padded to the longest,
    /// masked, and read back once. Row `b` equals the embedding of `batch[b]`
    /// alone. An embedding that is not finite is an error naming its index.
    pub fn embed_batch(&self, batch: &[&Features]) -> Result<Vec<Vec<f32>>> {
        let (feats, frames) = self.padded(batch)?;
        let flat = self.run(|| read_back(self.net.forward_padded(feats, &frames)))?;
        rows_of(flat, batch.len())
    }

    /// [`Embedder::embed_samples`] without blocking the thread: the front end
    /// runs on the host and the embedding is read back with
    /// `into_data_async`, the only read-back WebGPU allows in a browser. On
    /// the CPU backend it completes at once.
    pub async fn embed_samples_async(&self, samples: &[f32]) -> Result<Vec<f32>> {
        let mut rows = self.embed_samples_batch_async(&[samples]).await?;
        Ok(rows.pop().expect("one row per recording"))
    }

    /// Embeddings of several recordings in one padded batch, without
    /// blocking (see [`Embedder::embed_samples_async`]); row `b` is the
    /// embedding of `recordings[b]` alone. Errors name the recording's index.
    pub async fn embed_samples_batch_async(&self, recordings: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let features = recordings
            .iter()
            .enumerate()
            .map(|(i, s)| {
                checked_features(Path::new(&format!("recording {i}")), s, self.frontend.host(), self.min_samples())
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Features> = features.iter().collect();
        let (feats, frames) = self.padded(&refs)?;
        let embedding = with_route(self.route, || self.net.forward_padded(feats, &frames));
        let data = embedding.into_data_async().await;
        let flat = data
            .map_err(|e| anyhow::anyhow!("cannot read embeddings: {e:?}"))?
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read embeddings: {e:?}"))?;
        rows_of(flat, recordings.len()).map_err(|e| match e.downcast_ref::<NonFinite>() {
            Some(nf) => anyhow::anyhow!("recording {}: {nf}{}", nf.0, amplitude_hint(recordings[nf.0])),
            None => e,
        })
    }

    /// A batch of host features zero-padded to the longest, on the device:
    /// `[B, n_mels, T]`, with each utterance's frame count.
    fn padded(&self, batch: &[&Features]) -> Result<(Tensor<3>, Vec<usize>)> {
        anyhow::ensure!(!batch.is_empty(), "empty batch");
        let n_mels = self.config.frontend.n_mels;
        let t = batch.iter().map(|f| f.frames).max().expect("non-empty");
        let mut padded = vec![0.0f32; batch.len() * n_mels * t];
        for (b, f) in batch.iter().enumerate() {
            anyhow::ensure!(
                f.values.len() == n_mels * f.frames,
                "features of {} values for {} frames",
                f.values.len(),
                f.frames
            );
            for m in 0..n_mels {
                let dst = (b * n_mels + m) * t;
                padded[dst..dst + f.frames].copy_from_slice(&f.values[m * f.frames..(m + 1) * f.frames]);
            }
        }
        let feats = Tensor::<3>::from_data(TensorData::new(padded, [batch.len(), n_mels, t]), &self.device);
        Ok((feats, batch.iter().map(|f| f.frames).collect()))
    }

    /// Embeds `files` (of `lengths` samples) in padded batches of at most
    /// `batch_seconds` of audio (0: one file at a time). `load` runs on
    /// worker threads; `done(i, embedding)` and `progress(n)` on the caller's
    /// thread, in batch order. Errors name the file.
    pub fn embed_files<L, D>(
        &self,
        files: &[PathBuf],
        lengths: &[usize],
        batch_seconds: f64,
        load: L,
        mut done: D,
        progress: &dyn Fn(u64),
    ) -> Result<PipelineStats>
    where
        L: Fn(usize, &Path) -> Result<Loaded> + Sync,
        D: FnMut(usize, Vec<f32>) -> Result<()>,
    {
        assert_eq!(files.len(), lengths.len(), "one length per file");
        let started = Instant::now();
        let budget = (batch_seconds.max(0.0) * self.config.frontend.sample_rate as f64) as usize;
        let batches = plan_batches(lengths, budget);
        let frontend = self.frontend.host().clone();
        let min = self.min_samples();
        let (load_ns, features_ns) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut stats = PipelineStats { files: files.len(), batches: batches.len(), ..Default::default() };
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = sync_channel::<Result<Vec<(usize, Prepared)>>>(PREFETCH_BATCHES);
            let (load, frontend, batches) = (&load, &frontend, &batches);
            let (load_ns, features_ns) = (&load_ns, &features_ns);
            scope.spawn(move || {
                for batch in batches {
                    let prepared = batch
                        .par_iter()
                        .map(|&i| {
                            let t = Instant::now();
                            let loaded = load(i, &files[i])?;
                            load_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            let t = Instant::now();
                            let p = prepare(&files[i], loaded, frontend, min)?;
                            features_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            Ok((i, p))
                        })
                        .collect::<Result<Vec<_>>>();
                    let failed = prepared.is_err();
                    // A closed channel means the consumer stopped: stop too.
                    if tx.send(prepared).is_err() || failed {
                        break;
                    }
                }
            });
            for _ in 0..batches.len() {
                let t = Instant::now();
                let prepared = rx.recv().context("the audio loader stopped")??;
                stats.wait_secs += t.elapsed().as_secs_f64();
                let n = prepared.len() as u64;
                stats.known += prepared.iter().filter(|(_, p)| matches!(p, Prepared::Embedding(_))).count();
                let t = Instant::now();
                self.finish_batch(files, prepared, &mut done)?;
                stats.network_secs += t.elapsed().as_secs_f64();
                progress(n);
            }
            Ok(())
        })?;
        stats.load_secs = load_ns.into_inner() as f64 * 1e-9;
        stats.features_secs = features_ns.into_inner() as f64 * 1e-9;
        stats.total_secs = started.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Embeddings of checked files, in order, read with [`Embedder::load_audio`].
    pub fn embed_listed(
        &self,
        files: &[ListedFile],
        batch_seconds: f64,
        progress: &dyn Fn(u64),
    ) -> Result<Vec<Vec<f32>>> {
        let paths = crate::lists::paths(files);
        let lengths: Vec<usize> = files.iter().map(|f| f.samples).collect();
        let mut out: Vec<Option<Vec<f32>>> = vec![None; files.len()];
        let load = |_: usize, p: &Path| Ok(Loaded::Samples(self.load_audio(p)?));
        self.embed_files(
            &paths,
            &lengths,
            batch_seconds,
            load,
            |i, e| {
                out[i] = Some(e);
                Ok(())
            },
            progress,
        )?;
        Ok(out.into_iter().map(|e| e.expect("every file embedded")).collect())
    }

    /// Embeds the prepared files of one batch and hands every result to `done`.
    fn finish_batch<D>(&self, files: &[PathBuf], prepared: Vec<(usize, Prepared)>, done: &mut D) -> Result<()>
    where
        D: FnMut(usize, Vec<f32>) -> Result<()>,
    {
        let mut todo: Vec<(usize, Features)> = Vec::new();
        for (i, p) in prepared {
            match p {
                Prepared::Embedding(e) => done(i, e)?,
                Prepared::Features(f) => todo.push((i, f)),
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let refs: Vec<&Features> = todo.iter().map(|(_, f)| f).collect();
        let rows = self.embed_batch(&refs).map_err(|e| match e.downcast_ref::<NonFinite>() {
            Some(nf) => anyhow::anyhow!("{}: {nf}", files[todo[nf.0].0].display()),
            None => e,
        })?;
        for ((i, _), row) in todo.into_iter().zip(rows) {
            done(i, row)?;
        }
        Ok(())
    }
}

/// A file after its worker: a known embedding, or features to embed.
enum Prepared {
    Embedding(Vec<f32>),
    Features(Features),
}

fn prepare(path: &Path, loaded: Loaded, frontend: &CpuFrontend, min: usize) -> Result<Prepared> {
    Ok(match loaded {
        Loaded::Embedding(e) => Prepared::Embedding(e),
        Loaded::Samples(s) => Prepared::Features(checked_features(path, &s, frontend, min)?),
    })
}

/// Host features of a recording long enough for the model (`path` names it
/// in errors), with a warning if it is silent; features that are not finite
/// are an error.
fn checked_features(path: &Path, s: &[f32], frontend: &CpuFrontend, min: usize) -> Result<Features> {
    anyhow::ensure!(s.len() >= min, "{}: audio too short: {} samples, at least {min} needed", path.display(), s.len());
    warn_if_silent(path, s);
    let f = host_features(frontend, s);
    if let Some(x) = f.values.iter().find(|x| !x.is_finite()) {
        anyhow::bail!(
            "{}: the log-mel features hold a value that is not a finite number ({x}){}",
            path.display(),
            amplitude_hint(s)
        );
    }
    Ok(f)
}

/// Warns that a recording is (nearly) silent, or its samples unscaled.
pub fn warn_if_silent(path: &Path, samples: &[f32]) {
    if let Some(problem) = crate::audio::Level::of(samples).problem() {
        log::warn!("{}: {problem}; its embedding says little about the speaker", path.display());
    }
}

/// Why features or embeddings of finite samples may not be finite: samples
/// far outside [-1, 1] overflow the power spectrum.
fn amplitude_hint(samples: &[f32]) -> String {
    crate::audio::Level::of(samples).unscaled().map(|why| format!("; {why}")).unwrap_or_default()
}

fn host_features(frontend: &CpuFrontend, samples: &[f32]) -> Features {
    let (values, frames) = frontend.logmel(samples, 1, samples.len());
    Features { values, frames }
}

/// The rows of `n` embeddings read back flat; a row that is not finite is
/// an error naming its index ([`NonFinite`]).
fn rows_of(flat: Vec<f32>, n: usize) -> Result<Vec<Vec<f32>>> {
    let dim = flat.len() / n;
    let rows: Vec<Vec<f32>> = flat.chunks_exact(dim).map(<[f32]>::to_vec).collect();
    for (b, row) in rows.iter().enumerate() {
        ensure_finite(row, b)?;
    }
    Ok(rows)
}

fn read_back(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("cannot read embeddings: {e:?}"))
}

/// Row `.0` of a batch holds a value that is not a finite number.
#[derive(Debug)]
struct NonFinite(usize, f32);

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the embedding holds a value that is not a finite number ({})", self.1)
    }
}

impl std::error::Error for NonFinite {}

fn ensure_finite(v: &[f32], row: usize) -> Result<()> {
    match v.iter().find(|x| !x.is_finite()) {
        Some(&x) => Err(NonFinite(row, x).into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{max_samples, peak_bytes, plan_batches, widest_activation};
    use crate::config::ExperimentConfig;

    /// The longest recording fits both limits, and one hop more does not.
    #[test]
    fn the_longest_recording_fits_the_buffer_and_the_memory() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let cfg = ExperimentConfig::load(&root.join("NeXt_TDNN_C256_B3_K65_7.ron")).unwrap();
        assert_eq!(widest_activation(&cfg), 1024);
        let hop = cfg.frontend.hop_length;
        let buffer_bytes = |n: usize| cfg.frontend.num_frames(n) as u64 * 4 * 1024;
        // WebGPU's default binding limit: about five minutes of C256.
        let n = max_samples(&cfg, 128 << 20, u64::MAX);
        assert!(buffer_bytes(n) <= 128 << 20 && buffer_bytes(n + hop) > 128 << 20, "{n}");
        assert!((300.0..360.0).contains(&(n as f64 / 16_000.0)), "{n}");
        // A memory budget below that length decides.
        let m = max_samples(&cfg, 128 << 20, 500 << 20);
        assert!(m < n && peak_bytes(&cfg, m) <= 500 << 20 && peak_bytes(&cfg, m + 1) > 500 << 20, "{m}");
        assert_eq!(max_samples(&cfg, 128 << 20, 1), 0);
        // Without a buffer limit the memory budget alone decides.
        let k = max_samples(&cfg, u64::MAX, 500 << 20);
        assert!(peak_bytes(&cfg, k) <= 500 << 20 && peak_bytes(&cfg, k + 1) > 500 << 20, "{k}");
    }

    #[test]
    fn batches_respect_the_budget_and_cover_every_file_once() {
        let lengths = [16_000, 320_000, 48_000, 47_000, 160_000, 16_500, 200_000];
        let plan = plan_batches(&lengths, 400_000);
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &plan {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() == 1 || b.len() * longest <= 400_000, "{b:?}");
        }
        // Longest first: the 20 s file alone (it and the next exceed the budget).
        assert_eq!(plan[0], vec![1]);
        assert_eq!(plan_batches(&lengths, 0).len(), lengths.len());
    }
}
