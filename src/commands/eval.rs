//! `eval`: embeddings of every file of a trial list (cached), cosine scoring,
//! optional AS-norm, EER and minDCF, scores, summary and plots.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::audio::{decode_wav, read_file};
use crate::config::ExperimentConfig;
use crate::device::SelectedDevice;
use crate::embed::{default_batch_seconds, Embedder, Loaded};
use crate::eval::cache::{audio_key, AudioKey, EmbeddingCache};
use crate::eval::metrics::Roc;
use crate::eval::plot;
use crate::eval::score::{AsNorm, CohortStats};
use crate::eval::trials::{ScoreSummary, TrialSet};
use crate::files::{sha256_file, write_atomic, StagedDir};
use crate::lists::{preflight, read_cohort, ListedFile, Trial};
use crate::weights::{import_official, SpeakerModel};

/// Options of `eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
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
    /// Output directory.
    #[arg(long, default_value = "eval-results")]
    pub out: PathBuf,
    /// Embedding cache (default: ~/.cache/nexttdnn/embeddings).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Store the EER threshold in the model file, for `verify`.
    #[arg(long)]
    pub store_threshold: bool,
    /// Skip the PNG/SVG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// Backbone precision: f32, f16 or bf16 (front end and head stay f32).
    #[arg(long, default_value = "f32")]
    pub precision: crate::model::Precision,
    /// Seconds of audio per padded batch (0: one file at a time). Default:
    /// 20 on the CPU, 400 on a GPU. Batches give the embeddings of files alone.
    #[arg(long, value_parser = super::cli::non_negative)]
    pub batch_seconds: Option<f64>,
}

pub use crate::eval::trials::dcf_key;

/// Standard VoxCeleb1 trial lists, by short name.
fn standard_list(name: &str) -> Option<&'static str> {
    match name {
        "vox1-o" => Some("veri_test2.txt"),
        "vox1-e" => Some("list_test_all2.txt"),
        "vox1-h" => Some("list_test_hard2.txt"),
        _ => None,
    }
}

/// Embeddings of `files` in order, in padded batches of `batch_seconds`,
/// through the cache: each file is read once, its bytes hashed for the cache
/// key and decoded only on a miss. Returns the embeddings and how many were
/// computed.
fn embed_all(
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
struct EvalStage {
    audio_seconds: f64,
    /// Thread-seconds spent hashing audio for the cache keys.
    hash_secs: f64,
    #[serde(flatten)]
    pipeline: crate::embed::PipelineStats,
}

/// The model to evaluate, the hash that keys its cache, and its file.
fn eval_model(args: &EvalArgs, dev: &SelectedDevice) -> Result<(SpeakerModel, String, Option<PathBuf>)> {
    match (&args.checkpoint, &args.model) {
        (Some(ckpt), None) => {
            let cfg_path = args.config.as_ref().context("--checkpoint needs --config")?;
            let cfg = ExperimentConfig::load(cfg_path)?;
            let m = import_official(ckpt, &cfg, &dev.device)?;
            let hash = m.content_hash()?;
            Ok((m, hash, None))
        }
        (None, m) => {
            let p = super::model_or_bundled(m.as_deref())?;
            let model = SpeakerModel::load(&p, &dev.device)?;
            let hash = model.content_hash()?;
            Ok((model, hash, Some(p)))
        }
        (Some(_), Some(_)) => bail!("give either --model or --checkpoint, not both"),
    }
}

/// The trial list and the root of its audio paths.
fn trial_source(args: &EvalArgs) -> Result<(PathBuf, PathBuf)> {
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
fn cohort_files(args: &EvalArgs, sample_rate: u32) -> Result<Option<Vec<ListedFile>>> {
    let Some(c) = &args.cohort else { return Ok(None) };
    let list = read_cohort(c)?;
    let root = args.cohort_root.clone().or_else(|| c.parent().map(Path::to_path_buf));
    Ok(Some(preflight(c, &list, root.as_deref(), sample_rate)?))
}

/// Outputs an earlier run may have left that this run may not write: they
/// are removed when the new outputs are put in place, so that a folder
/// never mixes two runs.
const OPTIONAL_OUTPUTS: [&str; 7] =
    ["scores_snorm.txt", "det.png", "det.svg", "hist.png", "hist.svg", "hist_snorm.png", "hist_snorm.svg"];

/// Everything `eval` measured, for `summary.json` and the table.
struct Outcome {
    summary: serde_json::Value,
    rows: Vec<(String, ScoreSummary)>,
    threshold: f64,
}

pub fn run(args: &EvalArgs, dev: &SelectedDevice) -> Result<()> {
    let started = Instant::now();
    let (mut model, model_hash, model_path) = eval_model(args, dev)?;
    let cfg = model.config.clone();
    let (trial_path, wav_root) = trial_source(args)?;
    let sr = cfg.frontend.sample_rate;
    let set = TrialSet::load(&trial_path, Some(&wav_root), sr)?;
    let files = &set.files;
    let cohort_files = cohort_files(args, sr)?;
    log::info!("{}: {} trials over {} files", trial_path.display(), set.trials.len(), files.len());

    // Embeddings, cached per model and file; embeddings of another
    // precision are other embeddings, keyed apart.
    let cache_root = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let variant = (args.precision != crate::model::Precision::F32).then(|| args.precision.name());
    let cache = EmbeddingCache::new(&cache_root, &model_hash, variant, cfg.model.embedding_dim)?;
    let embedder = Embedder::with_precision(&model, &dev.device, args.precision);
    let batch_seconds = args.batch_seconds.unwrap_or_else(|| default_batch_seconds(&dev.device));
    let t_embed = Instant::now();
    let (embs, computed, embed_stage) = embed_all(&embedder, &cache, files, batch_seconds, "embedding")?;
    let embed_secs = t_embed.elapsed().as_secs_f64();
    let cohort = match &cohort_files {
        Some(cf) => Some(embed_all(&embedder, &cache, cf, batch_seconds, "cohort")?),
        None => None,
    };

    // Scores, metrics and plots, staged and put in place together.
    let out = StagedDir::new(&args.out)?;
    let scored = Scored { set: &set, embs: &embs, cfg: &cfg };
    let mut outcome = scored.outputs(&out, cohort.as_ref().map(|(c, _, _)| c.as_slice()), args.no_plots)?;
    let summary = &mut outcome.summary;
    summary["trial_list"] = json!(trial_path.display().to_string());
    summary["wav_root"] = json!(wav_root.display().to_string());
    summary["timing"]["embedding"] = serde_json::to_value(&embed_stage)?;
    if let Some((_, _, stage)) = &cohort {
        summary["timing"]["cohort"] = serde_json::to_value(stage)?;
    }
    summary["model"] = json!({
        "path": model_path.as_ref().map(|p| p.display().to_string()),
        "sha256": model_path.as_deref().map(sha256_file).transpose()?,
        "content_sha256": model_hash,
        "config": cfg.name,
        "source": model.meta.source,
    });
    summary["device"] = serde_json::to_value(&dev.info)?;
    summary["precision"] = json!(args.precision.name());
    summary["batch_seconds"] = json!(batch_seconds);
    summary["crate_version"] = json!(env!("CARGO_PKG_VERSION"));
    summary["files"] = json!(files.len());
    summary["embedded"] = json!(computed);
    summary["from_cache"] = json!(files.len() - computed);
    summary["embed_seconds"] = json!(embed_secs);
    summary["files_per_second"] = json!(if computed > 0 { computed as f64 / embed_secs } else { 0.0 });
    summary["total_seconds"] = json!(started.elapsed().as_secs_f64());
    summary["peak_rss_mib"] = json!(crate::device::peak_resident_mib());
    write_atomic(&out.path("summary.json"), serde_json::to_string_pretty(summary)?.as_bytes())
        .with_context(|| format!("cannot write {}", out.final_path("summary.json").display()))?;
    out.commit(&OPTIONAL_OUTPUTS)?;

    println!(
        "{} on {} ({} trials, {} files; {} embedded, {} from cache)",
        cfg.name,
        trial_path.display(),
        set.trials.len(),
        files.len(),
        computed,
        files.len() - computed
    );
    print_table(&cfg, &outcome.rows);
    println!("threshold (raw cosine at the EER point): {:.6}", outcome.threshold);
    println!("results in {}", args.out.display());

    if args.store_threshold {
        let Some(p) = model_path else {
            bail!("--store-threshold needs --model (an imported model file), not --checkpoint");
        };
        model.meta.threshold = Some(outcome.threshold);
        model.save(&p)?;
        println!("stored threshold {:.6} in {}", outcome.threshold, p.display());
    }
    Ok(())
}

/// Trials with the embeddings of their files.
struct Scored<'a> {
    set: &'a TrialSet,
    embs: &'a [Vec<f32>],
    cfg: &'a ExperimentConfig,
}

impl Scored<'_> {
    /// Raw (and, with a cohort, AS-normalised) scores, their metrics and
    /// plots, written into `out`.
    fn outputs(&self, out: &StagedDir, cohort: Option<&[Vec<f32>]>, no_plots: bool) -> Result<Outcome> {
        let labels = &self.set.labels;
        let t_score = Instant::now();
        let raw = self.set.cosine_scores(self.embs);
        let mut timing = json!({ "scoring_seconds": t_score.elapsed().as_secs_f64() });
        let t_metrics = Instant::now();
        let (raw_sum, raw_roc) = self.set.summarize(&raw, &self.cfg.eval)?;
        let mut metrics_secs = t_metrics.elapsed().as_secs_f64();
        self.write_scores(out, "scores.txt", &raw)?;
        let mut summary = json!({
            "trials": raw_sum.trials,
            "targets": raw_sum.targets,
            "eer": raw_sum.eer,
            "eer_threshold": raw_sum.eer_threshold,
            "threshold": raw_sum.eer_threshold,
        });
        for (k, v) in &raw_sum.min_dcf {
            summary[k] = json!(v);
        }
        let mut rows = vec![("raw cosine".to_string(), raw_sum.clone())];
        let mut curves = vec![("raw".to_string(), raw_roc)];
        if let Some(cohort) = cohort {
            let norm = AsNorm::new(cohort, self.cfg.eval.asnorm_top_k);
            let t_norm = Instant::now();
            let stats: Vec<CohortStats> = norm.stats_all(self.embs);
            let norm_secs = t_norm.elapsed().as_secs_f64();
            log::info!(
                "AS-norm statistics of {} files against {} cohort files: {norm_secs:.2} s",
                self.embs.len(),
                cohort.len()
            );
            timing["asnorm_seconds"] = json!(norm_secs);
            let normed: Vec<_> = (self.set.pairs().iter().zip(&raw))
                .map(|(&(a, b), &s)| AsNorm::normalize(s, stats[a], stats[b]))
                .collect();
            for (name, pick) in [("znorm", 0usize), ("tnorm", 1), ("snorm", 2)] {
                let scores: Vec<f64> = normed.iter().map(|n| [n.z, n.t, n.s][pick]).collect();
                let t_metrics = Instant::now();
                let (sum, roc) = self.set.summarize(&scores, &self.cfg.eval)?;
                metrics_secs += t_metrics.elapsed().as_secs_f64();
                summary[name] = serde_json::to_value(&sum)?;
                if name == "snorm" {
                    self.write_scores(out, "scores_snorm.txt", &scores)?;
                    if !no_plots {
                        plot::histogram(&out.path("hist_snorm"), &scores, labels, "Score distribution (s-norm)")?;
                    }
                    curves.push(("s-norm".into(), roc));
                }
                rows.push((name.to_string(), sum));
            }
            summary["cohort"] = json!({ "list": cohort.len(), "top_k": self.cfg.eval.asnorm_top_k });
        }
        if !no_plots {
            let refs: Vec<(&str, &Roc)> = curves.iter().map(|(n, r)| (n.as_str(), r)).collect();
            plot::det(&out.path("det"), &refs)?;
            plot::histogram(&out.path("hist"), &raw, labels, "Score distribution (raw cosine)")?;
        }
        timing["metrics_seconds"] = json!(metrics_secs);
        summary["timing"] = timing;
        Ok(Outcome { summary, rows, threshold: raw_sum.eer_threshold })
    }

    fn write_scores(&self, out: &StagedDir, name: &str, scores: &[f64]) -> Result<()> {
        write_scores(&out.path(name), &self.set.trials, scores)
            .with_context(|| format!("cannot write {}", out.final_path(name).display()))
    }
}

/// The results table, in Markdown.
fn print_table(cfg: &ExperimentConfig, rows: &[(String, ScoreSummary)]) {
    let dcf_keys: Vec<String> = cfg.eval.p_targets.iter().map(|&p| dcf_key(p)).collect();
    let head: Vec<String> = cfg.eval.p_targets.iter().map(|p| format!("minDCF@{p}")).collect();
    println!("| scores | trials | EER % | {} |", head.join(" | "));
    println!("|---|---:|---:|{}", "---:|".repeat(head.len()));
    for (name, s) in rows {
        let dcfs: Vec<String> = dcf_keys.iter().map(|k| format!("{:.4}", s.min_dcf[k])).collect();
        println!("| {name} | {} | {:.3} | {} |", s.trials, s.eer, dcfs.join(" | "));
    }
}

fn write_scores(path: &Path, trials: &[Trial], scores: &[f64]) -> Result<()> {
    let mut text = String::with_capacity(trials.len() * 64);
    for (t, s) in trials.iter().zip(scores) {
        text.push_str(&format!("{} {} {s:.6} {}\n", t.enroll, t.test, t.target as u8));
    }
    write_atomic(path, text.as_bytes())
}

/// `$XDG_CACHE_HOME/nexttdnn/embeddings`, else `~/.cache/nexttdnn/embeddings`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("nexttdnn").join("embeddings")
}
