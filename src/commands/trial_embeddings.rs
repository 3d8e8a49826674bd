//! The input side of `eval` and `calibrate`: the model, the trial list's
//! files embedded through the cache, and the AS-norm cohort's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::audio::{decode_wav, read_file};
use crate::config::ExperimentConfig;
use crate::device::SelectedDevice;
use crate::embed::{default_batch_seconds, Embedder, Loaded};
use crate::eval::cache::{audio_key, AudioKey, EmbeddingCache};
use crate::eval::calibration::Qmf;
use crate::eval::score::NormScores;
use crate::eval::trials::TrialSet;
use crate::lists::{preflight, read_cohort, ListedFile};
use crate::weights::{import_official, SpeakerModel};

/// What `eval` and `calibrate` embed: the model, the trial list and an
/// optional AS-norm cohort, with the cache and batching settings.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalInputs {
    /// Model file (default: the bundled model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Evaluate an official checkpoint directly (imported on the fly; needs --config).
    #[arg(long, conflicts_with = "model")]
    pub checkpoint: Option<PathBuf>,
    /// Config of --checkpoint.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Trial list (`label enroll test`), or vox1-o, vox1-e, vox1-h for the
    /// standard cleaned lists under --data-dir. Default: the bundled list.
    #[arg(long)]
    pub trials: Option<String>,
    /// Where vox1-o/e/h lists live.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Root of the trial list's audio paths (default: the list's folder).
    #[arg(long)]
    pub wav_root: Option<PathBuf>,
    /// Cohort list for AS-norm (one path per line, or the reference's CSV of ids).
    #[arg(long)]
    pub cohort: Option<PathBuf>,
    /// Root of the cohort's audio paths (default: the cohort list's folder).
    #[arg(long)]
    pub cohort_root: Option<PathBuf>,
    /// Embedding cache (default: ~/.cache/nexttdnn/embeddings).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Backbone precision: f32, f16 or bf16 (front end and head stay f32).
    #[arg(long, default_value = "f32")]
    pub precision: crate::model::Precision,
    /// Seconds of audio per padded batch (0: one file at a time). Default:
    /// 20 on the CPU, 400 on a GPU. Batches give the embeddings of files alone.
    #[arg(long, value_parser = super::cli::non_negative)]
    pub batch_seconds: Option<f64>,
    /// Memory budget (e.g. `8G`): a file whose embedding would need more is
    /// refused before any work. Default: half of the memory available.
    #[arg(long, value_parser = super::cli::memory_size)]
    pub max_memory: Option<u64>,
}

/// Standard VoxCeleb1 trial lists, by short name.
fn standard_list(name: &str) -> Option<&'static str> {
    match name {
        "vox1-o" => Some("veri_test2.txt"),
        "vox1-e" => Some("list_test_all2.txt"),
        "vox1-h" => Some("list_test_hard2.txt"),
        _ => None,
    }
}

/// A trial list's files embedded with a model, and the cohort's.
pub struct Embedded {
    pub model: SpeakerModel,
    /// The model file (none for a checkpoint imported on the fly).
    pub model_path: Option<PathBuf>,
    pub trial_path: PathBuf,
    pub wav_root: PathBuf,
    pub set: TrialSet,
    /// Embeddings of `set.files`, in order.
    pub embs: Vec<Vec<f32>>,
    /// How many were computed rather than read from the cache.
    pub computed: usize,
    pub stage: EvalStage,
    pub embed_secs: f64,
    /// The cohort's embeddings and their timing.
    pub cohort: Option<(Vec<Vec<f32>>, EvalStage)>,
    pub batch_seconds: f64,
}

/// Loads the model and the lists, then embeds every trial and cohort file.
pub fn embed(args: &EvalInputs, dev: &SelectedDevice) -> Result<Embedded> {
    let (model, model_path) = load_model(args, dev)?;
    let cfg = &model.config;
    let (trial_path, wav_root) = trial_source(args)?;
    let sr = cfg.frontend.sample_rate;
    let set = TrialSet::load(&trial_path, Some(&wav_root), sr)?;
    let cohort_files = cohort_files(args, sr)?;
    let every: Vec<(ListedFile, String)> = set
        .files
        .iter()
        .chain(cohort_files.iter().flatten())
        .map(|f| (f.clone(), f.path.display().to_string()))
        .collect();
    crate::embed::check_memory(cfg, &every, super::cli::memory_budget(args.max_memory))?;
    log::info!("{}: {} trials over {} files", trial_path.display(), set.trials.len(), set.files.len());

    // Embeddings, cached per model and file; embeddings of another
    // precision are other embeddings, keyed apart.
    let cache_root = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let variant = (args.precision != crate::model::Precision::F32).then(|| args.precision.name());
    let cache = EmbeddingCache::new(&cache_root, &model.key, variant, cfg.model.embedding_dim)?;
    let embedder = Embedder::with_precision(&model, &dev.device, args.precision);
    let batch_seconds = args.batch_seconds.unwrap_or_else(|| default_batch_seconds(&dev.device));
    let t_embed = Instant::now();
    let (embs, computed, stage) = embed_all(&embedder, &cache, &set.files, batch_seconds, "embedding")?;
    let embed_secs = t_embed.elapsed().as_secs_f64();
    let cohort = match &cohort_files {
        Some(cf) => {
            let (e, _, stage) = embed_all(&embedder, &cache, cf, batch_seconds, "cohort")?;
            Some((e, stage))
        }
        None => None,
    };
    drop(embedder);
    Ok(Embedded {
        model,
        model_path,
        trial_path,
        wav_root,
        set,
        embs,
        computed,
        stage,
        embed_secs,
        cohort,
        batch_seconds,
    })
}

impl Embedded {
    /// Cosine score of every trial.
    pub fn raw_scores(&self) -> Vec<f64> {
        self.set.cosine_scores(&self.embs)
    }

    /// AS-normalised scores of every trial (z, t and s), with the seconds
    /// they took; `None` without a cohort.
    pub fn asnorm(&self, raw: &[f64]) -> Option<(Vec<NormScores>, f64)> {
        let (cohort, _) = self.cohort.as_ref()?;
        let top_k = self.model.config.eval.asnorm_top_k;
        if cohort.len() < top_k {
            log::warn!(
                "the cohort holds {} files, fewer than eval.asnorm_top_k ({top_k}): AS-norm uses all of them",
                cohort.len()
            );
        }
        let t = Instant::now();
        let normed = self.set.asnorm_scores(&self.embs, cohort, top_k, raw);
        let secs = t.elapsed().as_secs_f64();
        log::info!("AS-norm of {} files against {} cohort files: {secs:.2} s", self.embs.len(), cohort.len());
        Some((normed, secs))
    }

    /// The cohort scores AS-norm keeps per side: the config's `asnorm_top_k`,
    /// or the whole cohort where it is smaller; `None` without a cohort.
    pub fn asnorm_top_k(&self) -> Option<usize> {
        let (cohort, _) = self.cohort.as_ref()?;
        Some(self.model.config.eval.asnorm_top_k.min(cohort.len()))
    }

    /// `[score, quality measures…]` of every trial (see [`TrialSet::features`]).
    pub fn features(&self, qmfs: &[Qmf], scores: &[f64]) -> Vec<Vec<f64>> {
        self.set.features(&self.embs, self.model.config.frontend.sample_rate, qmfs, scores)
    }
}

/// Embeddings of `files` in order, in padded batches of `batch_seconds`,
/// through the cache: each file is read once, its bytes hashed for the cache
/// key and decoded only on a miss. Returns the embeddings and how many were
/// computed.
pub fn embed_all(
    embedder: &Embedder,
    cache: &EmbeddingCache,
    files: &[ListedFile],
    batch_seconds: f64,
    what: &str,
) -> Result<(Vec<Vec<f32>>, usize, EvalStage)> {
    let paths = crate::lists::paths(files);
    let lengths: Vec<usize> = files.iter().map(|f| f.samples).collect();
    let keys: Vec<OnceLock<(AudioKey, bool)>> = (0..files.len()).map(|_| OnceLock::new()).collect();
    let (rate, min) = (embedder.config.frontend.sample_rate, embedder.min_samples());
    let hash_ns = AtomicU64::new(0);
    let load = |i: usize, path: &Path| -> Result<Loaded> {
        let bytes = read_file(path)?;
        let t = Instant::now();
        let key = audio_key(&bytes);
        hash_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let hit = cache.get(&key);
        keys[i].set((key, hit.is_some())).ok();
        Ok(match hit {
            Some(e) => Loaded::Embedding(e),
            None => Loaded::Samples(decode_wav(path, &bytes, rate, min)?.samples),
        })
    };
    let mut out: Vec<Option<Vec<f32>>> = vec![None; files.len()];
    let done = |i: usize, e: Vec<f32>| -> Result<()> {
        let (key, hit) = keys[i].get().expect("key set by the loader");
        if !hit {
            cache.put(key, &e)?;
        }
        out[i] = Some(e);
        Ok(())
    };
    let pb = super::progress(files.len() as u64, what);
    let pipeline = embedder.embed_files(&paths, &lengths, batch_seconds, load, done, &|n| pb.inc(n))?;
    pb.finish_and_clear();
    let computed = pipeline.files - pipeline.known;
    let stage = EvalStage {
        audio_seconds: lengths.iter().sum::<usize>() as f64 / rate as f64,
        hash_secs: hash_ns.into_inner() as f64 * 1e-9,
        pipeline,
    };
    log::info!(
        "{what}: {} files, {} from cache, {computed} embedded in {:.1} s ({} batches; thread-seconds: load {:.1} of which hashing {:.1}, front end {:.1}; network {:.1} s, waiting for audio {:.1} s)",
        files.len(),
        files.len() - computed,
        pipeline.total_secs,
        pipeline.batches,
        pipeline.load_secs,
        stage.hash_secs,
        pipeline.features_secs,
        pipeline.network_secs,
        pipeline.wait_secs,
    );
    Ok((out.into_iter().map(|e| e.expect("every file embedded")).collect(), computed, stage))
}

/// Timing of one embedding stage (trial files or cohort), for `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalStage {
    audio_seconds: f64,
    /// Thread-seconds spent hashing audio for the cache keys.
    hash_secs: f64,
    #[serde(flatten)]
    pipeline: crate::embed::PipelineStats,
}

/// The model to evaluate, and its file.
fn load_model(args: &EvalInputs, dev: &SelectedDevice) -> Result<(SpeakerModel, Option<PathBuf>)> {
    match (&args.checkpoint, &args.model) {
        (Some(ckpt), None) => {
            let cfg_path = args.config.as_ref().context("--checkpoint needs --config")?;
            let cfg = ExperimentConfig::load(cfg_path)?;
            Ok((import_official(ckpt, &cfg, &dev.device)?, None))
        }
        (None, m) => {
            let p = super::model_or_bundled(m.as_deref())?;
            Ok((SpeakerModel::load(&p, &dev.device)?, Some(p)))
        }
        (Some(_), Some(_)) => bail!("give either --model or --checkpoint, not both"),
    }
}

/// The trial list and the root of its audio paths.
fn trial_source(args: &EvalInputs) -> Result<(PathBuf, PathBuf)> {
    let (trial_path, default_root) = match args.trials.as_deref() {
        None => (super::assets_dir()?.join("trials.txt"), super::assets_dir()?.join("audio")),
        Some(name) => {
            let p = match standard_list(name) {
                Some(file) => args.data_dir.join(file),
                None => PathBuf::from(name),
            };
            let root = p.parent().map(Path::to_path_buf).unwrap_or_default();
            (p, root)
        }
    };
    Ok((trial_path, args.wav_root.clone().unwrap_or(default_root)))
}

/// The checked files of the cohort list, when one is given.
fn cohort_files(args: &EvalInputs, sample_rate: u32) -> Result<Option<Vec<ListedFile>>> {
    let Some(c) = &args.cohort else { return Ok(None) };
    let list = read_cohort(c)?;
    // One cohort score has no spread: every normalised score would divide by 0.
    if list.len() < 2 {
        bail!("{}: the cohort holds one file; AS-norm needs at least two (the spread of one score is 0)", c.display());
    }
    let root = args.cohort_root.clone().or_else(|| c.parent().map(Path::to_path_buf));
    Ok(Some(preflight(c, &list, root.as_deref(), sample_rate)?))
}

/// `$XDG_CACHE_HOME/nexttdnn/embeddings`, else `~/.cache/nexttdnn/embeddings`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("nexttdnn").join("embeddings")
}
