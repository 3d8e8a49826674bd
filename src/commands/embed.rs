//! `embed`: WAV files → `embeddings.npy` (float32, one row per file) + `index.txt`.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::device::SelectedDevice;
use crate::embed::{default_batch_seconds, Embedder};
use crate::files::{write_atomic, OutputLock, StagedDir, WhenBusy};
use crate::lists::{audio_list_entries, check_audio, ListedFile};
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
    /// Memory budget (e.g. `8G`): a file whose embedding would need more is
    /// refused before any work. Default: half of the memory available.
    #[arg(long, value_parser = super::cli::memory_size)]
    pub max_memory: Option<u64>,
    /// Seconds of audio per padded batch (0: one file at a time; default 20 on the CPU, 400 on a GPU).
    #[arg(long, value_parser = super::cli::non_negative)]
    pub batch_seconds: Option<f64>,
    /// WAV files.
    pub wavs: Vec<PathBuf>,
}

pub fn run(args: &EmbedArgs, dev: &SelectedDevice) -> Result<()> {
    let (model, out, precision) = (args.model.as_deref(), args.out.as_path(), args.precision);
    // Each file with what its errors name: the file, or the list and line.
    let mut named: Vec<(PathBuf, String)> = args.wavs.iter().map(|f| (f.clone(), f.display().to_string())).collect();
    if let Some(l) = &args.list {
        let text = crate::files::read_text(l)?;
        for (f, n) in audio_list_entries(l, &text, args.wav_root.as_deref())? {
            let at = format!("{}:{n}: {}", l.display(), f.display());
            named.push((f, at));
        }
    }
    let files: Vec<PathBuf> = named.iter().map(|(f, _)| f.clone()).collect();
    if files.is_empty() {
        bail!("no input: give WAV files or --list FILE");
    }
    check_index_names(&files)?;
    let _lock = OutputLock::acquire(out, WhenBusy::Wait)?;
    let loaded = super::load_model(model, dev)?;
    // Check every file before the long work starts, and read its length.
    let rate = loaded.config.frontend.sample_rate;
    let checked: Vec<(ListedFile, String)> =
        named.iter().map(|(f, at)| Ok((check_audio(f.clone(), at, rate)?, at.clone()))).collect::<Result<_>>()?;
    crate::embed::check_memory(&loaded.config, &checked, super::cli::memory_budget(args.max_memory))?;
    let listed: Vec<ListedFile> = checked.into_iter().map(|(f, _)| f).collect();
    let embedder = Embedder::with_precision(&loaded, &dev.device, precision);
    let dim = loaded.config.model.embedding_dim;
    let batch_seconds = args.batch_seconds.unwrap_or_else(|| default_batch_seconds(&dev.device));
    let pb = super::progress(files.len() as u64, "embedding");
    let values: Vec<f32> = embedder.embed_listed(&listed, batch_seconds, &|n| pb.inc(n))?.concat();
    pb.finish_and_clear();
    // The three files are staged and put in place together: a failed run
    // (a full disk) leaves the previous set whole.
    let staged = StagedDir::new(out)?;
    write_atomic(&staged.path("embeddings.npy"), &npy::encode_f32(&values, files.len(), dim)?)?;
    let index: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    write_atomic(&staged.path("index.txt"), index.as_bytes())?;
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
    write_atomic(&staged.path("provenance.json"), serde_json::to_string_pretty(&provenance)?.as_bytes())?;
    staged.commit(&[])?;
    println!("wrote {} embeddings of dimension {dim} to {}", files.len(), out.display());
    Ok(())
}

/// `index.txt` holds one path per line, row `i` of `embeddings.npy` on line
/// `i`: a path with a line break would take two lines and shift every row
/// after it, so such names are refused (renaming the file is the fix).
fn check_index_names(files: &[PathBuf]) -> Result<()> {
    for f in files {
        let name = f.to_string_lossy();
        if name.contains(['\n', '\r']) {
            bail!("{name:?}: the file name holds a line break, which index.txt (one path per line) cannot record; rename the file");
        }
    }
    Ok(())
}
