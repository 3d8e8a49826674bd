//! Recordings in: decoding, the checks a page needs, and embedding.

use std::path::Path;

use anyhow::{bail, Result};
use nexttdnn::audio::{decode_wav, Level};
use nexttdnn::embed::Embedder;
use wasm_bindgen::prelude::*;

/// An embedding, with what the page tells the user about the recording.
#[wasm_bindgen]
pub struct Embedded {
    embedding: Vec<f32>,
    seconds: f64,
    notice: Option<String>,
}

#[wasm_bindgen]
impl Embedded {
    /// The embedding (a `Float32Array`).
    #[wasm_bindgen(getter)]
    pub fn embedding(&self) -> Vec<f32> {
        self.embedding.clone()
    }

    /// The seconds of audio embedded.
    #[wasm_bindgen(getter)]
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// What was done to the audio (resampled, cut), if anything.
    #[wasm_bindgen(getter)]
    pub fn notice(&self) -> Option<String> {
        self.notice.clone()
    }
}

/// The samples of a WAV file at the model's rate, checked as the CLI checks
/// them (errors name `name`).
pub fn decode(name: &str, bytes: &[u8], embedder: &Embedder) -> Result<Vec<f32>> {
    let rate = embedder.config.frontend.sample_rate;
    Ok(decode_wav(Path::new(name), bytes, rate, embedder.min_samples())?.samples)
}

/// Embeds `samples` (at the model's rate; `resampled_from` the rate the
/// page converted from) after the checks: long enough, not silent, not
/// unscaled. Beyond `limit` samples the recording is cut, with a notice.
pub async fn embed(
    name: &str,
    mut samples: Vec<f32>,
    limit: usize,
    embedder: &Embedder,
    resampled_from: Option<f64>,
) -> Result<Embedded> {
    let rate = embedder.config.frontend.sample_rate as f64;
    let min = embedder.min_samples();
    if samples.len() < min {
        bail!(
            "{name}: too short: {:.3} s of audio, at least {:.3} s are needed",
            samples.len() as f64 / rate,
            min as f64 / rate
        );
    }
    let mut notices = vec![];
    if let Some(from) = resampled_from.filter(|&r| r != rate) {
        notices.push(format!("resampled from {from} Hz to {rate} Hz"));
    }
    if samples.len() > limit {
        notices.push(format!(
            "cut to its first {:.1} s of {:.1} s: the longest this backend embeds at once",
            limit as f64 / rate,
            samples.len() as f64 / rate
        ));
        samples.truncate(limit);
    }
    if let Some(problem) = Level::of(&samples).problem() {
        bail!("{name}: {problem}");
    }
    let embedding = embedder.embed_samples_async(&samples).await.map_err(|e| e.context(name.to_string()))?;
    let notice = (!notices.is_empty()).then(|| notices.join("; "));
    Ok(Embedded { embedding, seconds: samples.len() as f64 / rate, notice })
}
