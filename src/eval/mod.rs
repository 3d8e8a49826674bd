//! Scoring, metrics, trial sets, the embedding cache and plots.

#[cfg(feature = "cli")]
pub mod cache;
pub mod calibration;
pub mod metrics;
#[cfg(feature = "cli")]
pub mod plot;
pub mod score;
pub mod trials;
