//! `embed`: WAV files → `embeddings.npy` (float32, one row per file) + `index.txt`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::device::SelectedDevice;
use crate::embed::{default_batch_seconds, Embedder};
use crate::lists::{read_audio_list, ListedFile};
use crate::npy;
use crate::weights::write_atomic;

pub fn run(
    model: Option<&Path>,
    out: &Path,
    list: Option<&Path>,
    wav_root: Option<&Path>,
    wavs: &[PathBuf],
    precision: crate::model::Precision,
    batch_seconds: Option<f64>,
    dev: &SelectedDevice,
) -> Result<()> {
    let mut files: Vec<PathBuf> = wavs.to_vec();
    if let Some(l) = list {
        files.extend(read_audio_list(l, wav_root)?);
    }
    if files.is_empty() {
        bail!("no input: give WAV files or --list FILE");
    }
    let loaded = super::load_model(model, dev)?;
    // Check every file before the long work starts, and read its length.
    let listed = check_files(&files, loaded.config.frontend.sample_rate)?;
    let embedder = Embedder::with_precision(&loaded, &dev.device, precision);
    let dim = loaded.config.model.embedding_dim;
    let batch_seconds = batch_seconds.unwrap_or_else(|| default_batch_seconds(&dev.device));
    let pb = super::progress(files.len() as u64, "embedding");
    let values: Vec<f32> = embedder.embed_listed(&listed, batch_seconds, &|n| pb.inc(n))?.concat();
    pb.finish_and_clear();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join("embeddings.npy"), &npy::encode_f32(&values, files.len(), dim)?)?;
    let index: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    write_atomic(&out.join("index.txt"), index.as_bytes())?;
    let model_path = model.map(Path::to_path_buf).unwrap_or_else(super::bundled_model);
    let provenance = serde_json::json!({
        "model": model_path.display().to_string(),
        "model_sha256": crate::weights::sha256_file(&model_path)?,
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

/// Every input file exists and has a WAV header at the model's rate; their lengths.
fn check_files(files: &[PathBuf], sample_rate: u32) -> Result<Vec<ListedFile>> {
    files
        .iter()
        .map(|f| {
            if !f.is_file() {
                bail!("{}: file not found", f.display());
            }
            let r = hound::WavReader::open(f).map_err(|e| anyhow::anyhow!("{}: not a readable WAV file: {e}", f.display()))?;
            if r.spec().sample_rate != sample_rate {
                bail!("{}: sample rate {} Hz, the model expects {sample_rate} Hz", f.display(), r.spec().sample_rate);
            }
            Ok(ListedFile { path: f.clone(), samples: r.duration() as usize })
        })
        .collect()
}
