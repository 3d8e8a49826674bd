//! nexttdnn: speaker verification with NeXt-TDNN on Burn, on any GPU or the CPU.
//!
//! Data flows one way: [`audio`] → [`features`] → [`model`] → [`embed`] →
//! [`eval`] (scoring and metrics). [`weights`] loads and saves models,
//! [`onnx`] exports them,
//! [`device`] picks the backend, [`commands`] composes the stages.

pub mod audio;
pub mod commands;
pub mod config;
pub mod device;
pub mod embed;
pub mod eval;
pub mod features;
pub mod files;
pub mod lists;
pub mod model;
pub mod npy;
pub mod onnx;
pub mod ops;
pub mod prepare;
pub mod progress;
pub mod train;
pub mod weights;

#[cfg(feature = "kernels")]
#[path = "../shaders/mod.rs"]
pub mod shaders;
