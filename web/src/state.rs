//! The loaded model, its embedders on each backend, and its registry.

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{Context, Result};
use burn::tensor::Device;
use nexttdnn::embed::{max_samples, Embedder};
use nexttdnn::registry::{Decider, Registry};
use nexttdnn::weights::SpeakerModel;
use serde_json::{json, Value};

use crate::gpu;

/// Host memory one embedding may take (`embed::peak_bytes`): a quarter of
/// the 4 GiB a wasm32 module can address at most.
const MEMORY_BUDGET: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    WebGpu,
}

pub struct State {
    /// The model file's name, as errors show it.
    pub file: String,
    /// The model file, kept to build the model on WebGPU later.
    pub bytes: Rc<Vec<u8>>,
    /// The model on the CPU backend: its config, metadata and key.
    pub model: SpeakerModel,
    pub cpu: Rc<Embedder>,
    /// Built on the first switch to WebGPU.
    pub gpu: Option<Rc<Embedder>>,
    pub backend: Backend,
    pub registry: Registry,
}

thread_local! {
    /// The one model of this worker (wasm32 here is single-threaded).
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs `f` on the loaded state. Borrows end before any `await`: callers
/// clone the `Rc`s they need out of it.
pub fn with_state<R>(f: impl FnOnce(&State) -> Result<R>) -> Result<R> {
    STATE.with(|s| f(s.borrow().as_ref().context("no model is loaded")?))
}

pub fn with_state_mut<R>(f: impl FnOnce(&mut State) -> Result<R>) -> Result<R> {
    STATE.with(|s| f(s.borrow_mut().as_mut().context("no model is loaded")?))
}

pub fn replace(state: State) {
    STATE.with(|s| *s.borrow_mut() = Some(state));
}

/// The model of a file, built on `device`, ready to embed.
pub fn embedder_on(name: &str, bytes: &[u8], device: &Device) -> Result<Rc<Embedder>> {
    let model = SpeakerModel::from_named_bytes(name, bytes, device)?;
    Ok(Rc::new(Embedder::new(&model, device)))
}

impl State {
    /// A model file on the CPU backend, with an empty registry.
    pub fn load(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let cpu = Device::flex();
        let model = SpeakerModel::from_named_bytes(name, &bytes, &cpu)?;
        let embedder = Rc::new(Embedder::new(&model, &cpu));
        let registry = Registry::new(&model.key, model.config.model.embedding_dim);
        Ok(Self {
            file: name.to_string(),
            bytes: Rc::new(bytes),
            model,
            cpu: embedder,
            gpu: None,
            backend: Backend::Cpu,
            registry,
        })
    }

    /// The model for the page: name, file, size, key and what it decides with.
    pub fn describe(&self) -> Value {
        let c = &self.model.config;
        json!({
            "name": c.name,
            "file": self.file,
            "bytes": self.bytes.len(),
            "parameters": nexttdnn::model::value_count(&c.model, c.frontend.n_mels),
            "key": self.model.key,
            "dim": self.dim(),
            "sampleRate": c.frontend.sample_rate,
            "minSeconds": c.min_samples() as f64 / c.frontend.sample_rate as f64,
            "source": self.model.meta.source,
            "calibrated": self.model.meta.calibration.is_some(),
            "threshold": self.model.meta.threshold,
        })
    }

    /// The backend in use: `{backend, adapter, maxSeconds}`.
    pub fn describe_backend(&self) -> Value {
        let rate = self.model.config.frontend.sample_rate as f64;
        let (name, adapter) = match self.backend {
            Backend::Cpu => ("cpu", "WebAssembly on the CPU".to_string()),
            Backend::WebGpu => ("webgpu", gpu::adapter().unwrap_or_default()),
        };
        json!({"backend": name, "adapter": adapter, "maxSeconds": self.max_samples() as f64 / rate})
    }

    /// The embedder of the current backend.
    pub fn embedder(&self) -> Rc<Embedder> {
        match (self.backend, &self.gpu) {
            (Backend::WebGpu, Some(g)) => g.clone(),
            _ => self.cpu.clone(),
        }
    }

    /// The longest recording the current backend embeds whole.
    pub fn max_samples(&self) -> usize {
        let buffer = match self.backend {
            // No buffer limit on the CPU: the memory budget decides.
            Backend::Cpu => u64::MAX,
            Backend::WebGpu => gpu::buffer_limit().unwrap_or(128 << 20),
        };
        max_samples(&self.model.config, buffer, MEMORY_BUDGET)
    }

    pub fn dim(&self) -> usize {
        self.model.config.model.embedding_dim
    }

    /// The decision rule: the model's calibration, else its threshold.
    pub fn decider(&self) -> Result<Decider> {
        Decider::for_model(&self.model, None, None)
    }
}

/// How a decision is taken, for the page.
pub fn rule(decider: &Decider) -> String {
    match decider {
        Decider::Calibrated { threshold, .. } => format!("calibrated LLR ≥ {threshold:.3}"),
        Decider::Raw(t) => format!("cosine ≥ {t:.4}"),
    }
}
