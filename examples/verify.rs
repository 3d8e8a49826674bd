//! The library in a dozen lines: are two recordings the same speaker?
//!
//! ```sh
//! cargo run --release --example verify -- A.wav B.wav [MODEL]
//! ```
//!
//! Without arguments it compares two bundled recordings of one speaker with
//! the bundled model. It runs on the CPU; any Burn device works the same way.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::Device;
use nexttdnn::{cosine, Decider, Embedder, SpeakerModel};

fn main() -> Result<()> {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (a, b) = match &args[..] {
        [a, b, ..] => (a.clone(), b.clone()),
        _ => (assets.join("audio/spk1_a.wav"), assets.join("audio/spk1_b.wav")),
    };
    let model_path = args.get(2).cloned().unwrap_or_else(|| assets.join("model/demo.nexttdnn.safetensors"));

    let device = Device::flex();
    let model = SpeakerModel::load(&model_path, &device)?;
    let embedder = Embedder::new(&model, &device);
    let score = cosine(&embedder.embed_file(&a)?, &embedder.embed_file(&b)?);
    let decider = Decider::for_model(&model, None, None).context("the model cannot decide")?;
    let verdict = if decider.accepts(score) { "same speaker" } else { "different speakers" };

    println!("{} vs {}", a.display(), b.display());
    println!("score {score:.6} (cosine), llr {:?}: {verdict}", decider.llr(score));
    Ok(())
}
