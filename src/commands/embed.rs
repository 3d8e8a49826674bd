//! `embed`: WAV files → `embeddings.npy` (float32, one row per file) + `index.txt`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::device::SelectedDevice;
use crate::embed::{default_batch_seconds, Embedder};
use crate::files::write_atomic;
use crate::lists::{check_audio, read_audio_list, ListedFile};
use crate::npy;

/// Options of `embed`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmbedArgs {
    /// Model file (default: the bundled demonstration model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// A list of WAV paths, one per line (or `speaker path` lines).
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Root for relative paths in --list.
    #[arg(long)]
    pub wav_root: Option<PathBuf>,
    /// Backbone precision: f32, f16 or bf16 (front end and head stay f32).
    #[arg(long, default_value = "f32")]
    pub precision: crate::model::Precision,
    /// Seconds of audio per padded batch (0: one file at a time; default 20 on the CPU, 400 on a GPU).
    #[arg(long, value_parser = super::cli::non_negative)]
    pub batch_seconds: Option<f64>,
    /// WAV files.
    pub wavs: Vec<PathBuf>,
}

pub fn run(args: &EmbedArgs, dev: &SelectedDevice) -> Result<()> {
    let (model, out, precision) = (args.model.as_deref(), args.out.as_path(), args.precision);
    let mut files: Vec<PathBuf> = args.wavs.clone();
    if let Some(l) = &args.list {
        files.extend(read_audio_list(l, args.wav_root.as_deref())?);
    }
    if files.is_empty() {
        bail!("no input: give WAV files or --list FILE");
    }
    let loaded = super::load_model(model, dev)?;
    // Check every file before the long work starts, and read its length.
    let rate = loaded.config.frontend.sample_rate;
    let listed: Vec<ListedFile> =
        files.iter().map(|f| check_audio(f.clone(), &f.display().to_string(), rate)).collect::<Result<_>>()?;
    let embedder = Embedder::with_precision(&loaded, &dev.device, precision);
    let dim = loaded.config.model.embedding_dim;
    let batch_seconds = args.batch_seconds.unwrap_or_else(|| default_batch_seconds(&dev.device));
    let pb = super::progress(files.len() as u64, "embedding");
    let values: Vec<f32> = embedder.embed_listed(&listed, batch_seconds, &|n| pb.inc(n))?.concat();
    pb.finish_and_clear();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join("embeddings.npy"), &npy::encode_f32(&values, files.len(), dim)?)?;
    let index: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    write_atomic(&out.join("index.txt"), index.as_bytes())?;
    let model_path = super::model_or_bundled(model)?;
    let provenance = serde_json::json!({
        "model": model_path.display().to_string(),
        "model_sha256": crate::files::sha256_file(&model_path)?,
        "config": embedder.config.name,
        "device": dev.info,
        "precision": precision.name(),
        "batch_seconds": batch_seconds,
        "crate_version": env!("CARGO_PKG_VERSION"),
        "files": files.len(),
        "dimension": dim,
    });
    write_atomic(&out.join("provenance.json"), serde_json::to_string_pretty(&provenance)?.as_bytes())?;
    println!("wrote {} embeddings of dimension {dim} to {}", files.len(), out.display());
    Ok(())
}
