//! Parity bounds derived from the reference's own float32 error.
//!
//! `tests/fixtures/tolerances_f32_vs_f64.json` holds, for every tensor the
//! fixtures store, how far the official code's float32 result lies from the
//! same code run in float64. Our float32 result carries its own rounding,
//! from another operation order (FFT, GEMM blocking, reductions), so the two
//! float32 results may differ by a few times that noise. A parity bound is
//! [`NOISE_FACTOR`] times the reference's noise for that tensor.

use std::path::Path;

use serde_json::Value;

/// Bound / reference noise. The largest ratio measured over the four
/// variants on the CPU and on wgpu (lavapipe) is 4.0 (an embedding on
/// wgpu); 8 leaves a factor of two for other devices' rounding.
pub const NOISE_FACTOR: f64 = 8.0;

/// The measured float32-vs-float64 errors of the reference.
pub struct RefNoise(Value);

impl RefNoise {
    pub fn load() -> Self {
        let path = super::fixtures().join("tolerances_f32_vs_f64.json");
        Self::from_file(&path)
    }

    fn from_file(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    /// The recorded value at `path` (object keys from the top).
    pub fn get(&self, path: &[&str]) -> f64 {
        let mut v = &self.0;
        for k in path {
            v = v.get(k).unwrap_or_else(|| panic!("tolerances_f32_vs_f64.json has no {}", path.join(" / ")));
        }
        let x =
            v.as_f64().unwrap_or_else(|| panic!("tolerances_f32_vs_f64.json: {} is not a number", path.join(" / ")));
        assert!(x.is_finite() && x > 0.0, "tolerances_f32_vs_f64.json: {} = {x}", path.join(" / "));
        x
    }

    /// The parity bound for the tensor at `path`.
    pub fn bound(&self, path: &[&str]) -> f64 {
        NOISE_FACTOR * self.get(path)
    }

    /// A model tensor's bound, relative to its largest magnitude (`rel`).
    pub fn model_rel(&self, variant: &str, key: &str) -> f64 {
        self.bound(&["model_eval", variant, key, "rel"])
    }

    /// A model tensor's bound in absolute terms (`max_abs`).
    pub fn model_abs(&self, variant: &str, key: &str) -> f64 {
        self.bound(&["model_eval", variant, key, "max_abs"])
    }
}
