//! `embed`: WAV files → `embeddings.npy` (float32, one row per file) + `index.txt`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::device::SelectedDevice;
use crate::embed::Embedder;
use crate::lists::read_audio_list;
use crate::npy;
use crate::weights::write_atomic;

pub fn run(
    model: Option<&Path>,
    out: &Path,
    list: Option<&Path>,
    wav_root: Option<&Path>,
    wavs: &[PathBuf],
    precision: crate::model::Precision,
    dev: &SelectedDevice,
) -> Result<()> {
    let mut files: Vec<PathBuf> = wavs.to_vec();
    if let Some(l) = list {
        files.extend(read_audio_list(l, wav_root)?);
    }
    if files.is_empty() {
        bail!("no input: give WAV files or --list FILE");
    }
    // Check every file before the long work starts.
    for f in &files {
        if !f.is_file() {
            bail!("{}: file not found", f.display());
        }
    }
    let loaded = super::load_model(model, dev)?;
    let embedder = Embedder::with_precision(&loaded, &dev.device, precision);
    let dim = loaded.config.model.embedding_dim;
    let mut values = Vec::with_capacity(files.len() * dim);
    let pb = super::progress(files.len() as u64, "embedding");
    for f in &files {
        values.extend(embedder.embed_file(f)?);
        pb.inc(1);
    }
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
        "crate_version": env!("CARGO_PKG_VERSION"),
        "files": files.len(),
        "dimension": dim,
    });
    write_atomic(&out.join("provenance.json"), serde_json::to_string_pretty(&provenance)?.as_bytes())?;
    println!("wrote {} embeddings of dimension {dim} to {}", files.len(), out.display());
    Ok(())
}
