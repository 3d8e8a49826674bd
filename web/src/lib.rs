//! nexttdnn in the browser: the core library behind a small wasm-bindgen
//! API, which the page's Web Worker (`web/www/worker.js`) calls.
//!
//! One model is loaded at a time. It is built on the CPU backend at once,
//! and on WebGPU when the page switches there ([`set_backend`]), after our
//! kernels have passed [`nexttdnn::ops::check::check_kernels`] on that
//! device. The speakers enrolled with the model live here in memory as a
//! [`Registry`]; the worker keeps a copy in IndexedDB under the model's key
//! and hands it back with [`import_registry`] when the model loads again.
//!
//! Results that are more than a number cross as JSON text, in the shapes
//! the CLI prints (`identify --json`). Every embedding that leaves is
//! finite, and every error is a JavaScript `Error` whose message names the
//! recording.

#![cfg(target_arch = "wasm32")]

mod audio;
mod gpu;
mod state;

use anyhow::Result;
use nexttdnn::eval::score::cosine;
use nexttdnn::registry::{identify as rank_and_decide, Enrollment, Registry, Scoring};
use serde_json::json;
use wasm_bindgen::prelude::*;

pub use audio::Embedded;
use state::{with_state, with_state_mut, Backend, State};

/// Errors cross into JavaScript as `Error`s with the whole cause chain.
fn js(e: anyhow::Error) -> JsError {
    JsError::new(&format!("{e:#}"))
}

/// Runs once when the module is instantiated: panics and `log` records go
/// to the browser console.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    // A second instantiation in the same realm finds the logger set.
    let _ = console_log::init_with_level(log::Level::Info);
}

/// Loads a model file (`name` is shown in errors) on the CPU backend and
/// makes it current, with an empty registry and the CPU backend. Returns
/// the model's description as JSON (see [`State::describe`]).
#[wasm_bindgen(js_name = loadModel)]
pub fn load_model(name: &str, bytes: Vec<u8>) -> Result<String, JsError> {
    let state = State::load(name, bytes).map_err(js)?;
    let info = state.describe();
    state::replace(state);
    Ok(info.to_string())
}

/// Switches to `"cpu"` or `"webgpu"` and resolves with the backend's
/// description as JSON: `{backend, adapter, maxSeconds}`. WebGPU is set up
/// on first use; the kernels are checked on it and the model is built
/// there, and a failure leaves the current backend as it was.
#[wasm_bindgen(js_name = setBackend)]
pub async fn set_backend(kind: String) -> Result<String, JsError> {
    let backend = match kind.as_str() {
        "cpu" => Backend::Cpu,
        "webgpu" => Backend::WebGpu,
        other => return Err(JsError::new(&format!("unknown backend {other:?}: use \"cpu\" or \"webgpu\""))),
    };
    if backend == Backend::WebGpu {
        let (name, bytes, built) =
            with_state(|s| Ok((s.file.clone(), s.bytes.clone(), s.gpu.is_some()))).map_err(js)?;
        if !built {
            let device = gpu::device().await.map_err(js)?;
            nexttdnn::ops::check::check_kernels(&device.device)
                .await
                .map_err(|e| js(e.context(format!("WebGPU on {} was refused", device.adapter))))?;
            let embedder = state::embedder_on(&name, &bytes, &device.device).map_err(js)?;
            with_state_mut(|s| {
                s.gpu = Some(embedder);
                Ok(())
            })
            .map_err(js)?;
        }
    }
    with_state_mut(|s| {
        s.backend = backend;
        Ok(s.describe_backend().to_string())
    })
    .map_err(js)
}

/// The current backend's description as JSON (see [`set_backend`]).
#[wasm_bindgen(js_name = backendInfo)]
pub fn backend_info() -> Result<String, JsError> {
    with_state(|s| Ok(s.describe_backend().to_string())).map_err(js)
}

/// Embeds a WAV file at the model's sample rate (`name` is shown in
/// messages). Audio beyond the backend's limit is cut, with a notice.
#[wasm_bindgen(js_name = embedWav)]
pub async fn embed_wav(name: String, bytes: Vec<u8>) -> Result<Embedded, JsError> {
    let (embedder, limit) = with_state(|s| Ok((s.embedder(), s.max_samples()))).map_err(js)?;
    let samples = audio::decode(&name, &bytes, &embedder).map_err(js)?;
    audio::embed(&name, samples, limit, &embedder, None).await.map_err(js)
}

/// Embeds samples at the model's sample rate that the page decoded and
/// resampled itself from `rate` Hz (a recording, or a file at another
/// rate); `rate` is shown in the notice.
#[wasm_bindgen(js_name = embedSamples)]
pub async fn embed_samples(name: String, samples: Vec<f32>, rate: f64) -> Result<Embedded, JsError> {
    let (embedder, limit) = with_state(|s| Ok((s.embedder(), s.max_samples()))).map_err(js)?;
    audio::embed(&name, samples, limit, &embedder, Some(rate)).await.map_err(js)
}

/// The decision on two embeddings: JSON `{score, llr, decision, rule}`,
/// `decision` being `"same speaker"` or `"different speakers"`, decided as
/// `identify` decides (the model's calibration, else its threshold).
#[wasm_bindgen]
pub fn verify(a: Vec<f32>, b: Vec<f32>) -> Result<String, JsError> {
    with_state(|s| {
        anyhow::ensure!(a.len() == s.dim() && b.len() == s.dim(), "embeddings of {} values are needed", s.dim());
        let score = cosine(&a, &b);
        anyhow::ensure!(score.is_finite(), "the score is not a finite number");
        let decider = s.decider()?;
        let same = decider.accepts(score);
        Ok(json!({
            "score": score,
            "llr": decider.llr(score),
            "decision": if same { "same speaker" } else { "different speakers" },
            "rule": state::rule(&decider),
        })
        .to_string())
    })
    .map_err(js)
}

/// Enrolls `name` from embeddings laid end to end (`sources[i]` names the
/// i-th recording), enrolled at `now` (Unix seconds). With `replace`, the
/// speaker's earlier recordings are dropped.
#[wasm_bindgen]
pub fn enroll(name: &str, embeddings: Vec<f32>, sources: Vec<String>, now: f64, replace: bool) -> Result<(), JsError> {
    with_state_mut(|s| {
        let dim = s.dim();
        anyhow::ensure!(
            embeddings.len() == sources.len() * dim,
            "{} values for {} recordings of {dim}",
            embeddings.len(),
            sources.len()
        );
        let enrolled_at = now.max(0.0) as u64;
        let list = embeddings
            .chunks_exact(dim)
            .zip(sources)
            .map(|(e, source)| Enrollment { source, enrolled_at, embedding: e.to_vec() })
            .collect();
        s.registry.enroll(name, list, replace)
    })
    .map_err(js)
}

/// Identifies an embedding among the enrolled speakers: JSON
/// `{decision, ranked: [{name, score, llr}]}`, best first, as
/// `identify --json` prints it (`top` 0: every speaker).
#[wasm_bindgen]
pub fn identify(embedding: Vec<f32>, top: usize) -> Result<String, JsError> {
    with_state(|s| {
        anyhow::ensure!(!s.registry.speakers.is_empty(), "no speakers are enrolled");
        let index = s.registry.index(Scoring::Mean);
        let id = rank_and_decide(&index, &embedding, &s.decider()?, top)?;
        Ok(serde_json::to_string(&id)?)
    })
    .map_err(js)
}

/// Removes an enrolled speaker.
#[wasm_bindgen]
pub fn remove(name: &str) -> Result<(), JsError> {
    with_state_mut(|s| s.registry.remove(name)).map_err(js)
}

/// Renames an enrolled speaker.
#[wasm_bindgen]
pub fn rename(old: &str, new: &str) -> Result<(), JsError> {
    with_state_mut(|s| s.registry.rename(old, new)).map_err(js)
}

/// The enrolled speakers as JSON: `[{name, recordings}]`.
#[wasm_bindgen]
pub fn speakers() -> Result<String, JsError> {
    with_state(|s| {
        let list: Vec<_> =
            s.registry.speakers.iter().map(|p| json!({"name": p.name, "recordings": p.enrollments.len()})).collect();
        Ok(serde_json::Value::Array(list).to_string())
    })
    .map_err(js)
}

/// The registry in its JSON form, which `nexttdnn registry import` reads.
#[wasm_bindgen(js_name = exportRegistry)]
pub fn export_registry() -> Result<String, JsError> {
    with_state(|s| Ok(s.registry.to_json())).map_err(js)
}

/// Replaces the registry with one in JSON form (from `registry export` or
/// [`export_registry`]); one made with another model is refused.
#[wasm_bindgen(js_name = importRegistry)]
pub fn import_registry(text: &str, origin: &str) -> Result<(), JsError> {
    with_state_mut(|s| {
        let registry = Registry::from_json(text, origin)?;
        registry.check_model(&s.model.key, origin)?;
        s.registry = registry;
        Ok(())
    })
    .map_err(js)
}
