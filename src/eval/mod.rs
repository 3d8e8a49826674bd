//! Scoring and detection metrics.

pub mod metrics;
pub mod score;
