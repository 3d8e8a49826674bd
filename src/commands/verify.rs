//! `verify`: cosine score of two recordings and an accept/reject decision.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::device::SelectedDevice;
use crate::embed::Embedder;
use crate::eval::score::cosine;

pub fn run(
    model: Option<&Path>,
    threshold: Option<f64>,
    enroll: Option<&Path>,
    test: Option<&Path>,
    dev: &SelectedDevice,
) -> Result<()> {
    let audio = super::assets_dir().join("audio");
    let enroll: PathBuf = enroll.map(Path::to_path_buf).unwrap_or_else(|| audio.join("spk1_a.wav"));
    let test: PathBuf = test.map(Path::to_path_buf).unwrap_or_else(|| audio.join("spk1_b.wav"));
    let m = super::load_model(model, dev)?;
    let embedder = Embedder::new(&m, &dev.device);
    let start = std::time::Instant::now();
    let a = embedder.embed_file(&enroll)?;
    let b = embedder.embed_file(&test)?;
    let score = cosine(&a, &b);
    let elapsed = start.elapsed();
    println!("enroll   {}", enroll.display());
    println!("test     {}", test.display());
    println!("model    {} ({})", m.config.name, m.meta.source.as_deref().unwrap_or("trained here"));
    println!("device   {} ({})", dev.info.spec, dev.info.adapter);
    println!("score    {score:.6}  (cosine similarity)");
    match threshold.or(m.meta.threshold) {
        Some(t) => {
            println!("decision {}  (threshold {t:.6})", if score >= t { "same speaker" } else { "different speakers" })
        }
        None => println!("decision none: the model stores no threshold; pass --threshold or run `eval` to set one"),
    }
    log::info!("embedded 2 files in {:.1} ms", elapsed.as_secs_f64() * 1e3);
    Ok(())
}
