//! nexttdnn: speaker verification with NeXt-TDNN on Burn, on any GPU or the CPU.
//!
//! Data flows one way: [`audio`] → [`features`] → [`model`] → [`embed`] →
//! [`eval`] (scoring and metrics) and [`registry`] (enrolled speakers).
//! [`weights`] reads and writes model files.
//!
//! # Using the library
//!
//! The names a user needs are re-exported here: load a model
//! ([`SpeakerModel::load`], or [`SpeakerModel::from_bytes`]), decode audio
//! ([`read_wav`], [`decode_wav`]), embed ([`Embedder`]), score ([`cosine`]),
//! decide ([`Decider`], with a [`Calibration`] where the model carries one)
//! and identify among enrolled speakers ([`Registry`], [`identify`]).
//! `examples/verify.rs` puts them together
//! (`cargo run --release --example verify -- A.wav B.wav`):
//!
//! ```text
//! let device = Device::flex();                          // or a GPU device
//! let model = SpeakerModel::load(path, &device)?;
//! let embedder = Embedder::new(&model, &device);
//! let a = embedder.embed_file(a_wav)?;                  // or embed_samples(_async)
//! let b = embedder.embed_file(b_wav)?;
//! let score = cosine(&a, &b);
//! let same = Decider::for_model(&model, None, None)?.accepts(score);
//! ```
//!
//! Without the default `cli` feature the crate is this library alone, and it
//! builds for `wasm32-unknown-unknown` with the feature `web` (the browser
//! page in `web/`). Modules hidden from these docs (the commands, training,
//! data preparation, the operations and file helpers) are public for the
//! binary, the tests and the fuzz targets, not as an API.

pub mod audio;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod commands;
pub mod config;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod device;
pub mod embed;
pub mod eval;
pub mod features;
#[doc(hidden)]
pub mod files;
#[doc(hidden)]
pub mod lists;
pub mod model;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod npy;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod onnx;
#[doc(hidden)]
pub mod ops;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod prepare;
#[doc(hidden)]
pub mod progress;
pub mod registry;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod train;
pub mod weights;

#[cfg(feature = "kernels")]
#[path = "../shaders/mod.rs"]
#[doc(hidden)]
pub mod shaders;

pub use audio::{decode_wav, read_wav, AudioError, Waveform};
pub use config::ExperimentConfig;
pub use embed::Embedder;
pub use eval::calibration::Calibration;
pub use eval::score::cosine;
pub use ops::Route;
pub use registry::{identify, Decider, Identification, Registry, Scoring};
pub use weights::SpeakerModel;
