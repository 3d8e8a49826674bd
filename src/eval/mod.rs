//! Scoring, metrics, trial sets, the embedding cache and plots.

pub mod cache;
pub mod calibration;
pub mod metrics;
pub mod plot;
pub mod score;
pub mod trials;
