//! nexttdnn: speaker verification with NeXt-TDNN on Burn, on any GPU or the CPU.
//!
//! Data flows one way: [`audio`] → [`features`] → [`model`] → [`embed`] →
//! [`eval`] (scoring and metrics). [`weights`] loads and saves models,
//! [`onnx`] exports them,
//! [`device`] picks the backend, [`commands`] composes the stages.

pub mod audio;
#[cfg(feature = "cli")]
pub mod commands;
pub mod config;
#[cfg(feature = "cli")]
pub mod device;
pub mod embed;
pub mod eval;
pub mod features;
pub mod files;
pub mod lists;
pub mod model;
#[cfg(feature = "cli")]
pub mod npy;
#[cfg(feature = "cli")]
pub mod onnx;
pub mod ops;
#[cfg(feature = "cli")]
pub mod prepare;
pub mod progress;
pub mod registry;
#[cfg(feature = "cli")]
pub mod train;
pub mod weights;

#[cfg(feature = "kernels")]
#[path = "../shaders/mod.rs"]
pub mod shaders;
