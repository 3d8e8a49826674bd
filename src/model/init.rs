//! Host-side, seeded parameter initialisation (see docs/MODEL.md, 'Initialisation').
//!
//! Drawing on the host makes a fresh model identical on every backend, which
//! the cross-device comparison relies on.

use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

/// How the next weight/bias pair is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scheme {
    /// Truncated normal (std 0.02, cut at ±2) weights, zero bias: stem and blocks.
    TruncNormal,
    /// PyTorch's default: uniform ±1/√fan_in for weights and biases.
    KaimingUniform,
}

/// A seeded source of initial weights.
pub struct Init {
    rng: StdRng,
    pub scheme: Scheme,
    pub trunc_std: f64,
}

impl Init {
    pub fn new(seed: u64, trunc_std: f64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), scheme: Scheme::KaimingUniform, trunc_std }
    }

    /// Draws a weight of `shape` and a bias of `bias_len` for a layer with `fan_in` inputs.
    pub fn weight_bias<const D: usize>(
        &mut self,
        shape: [usize; D],
        bias_len: usize,
        fan_in: usize,
    ) -> (TensorData, TensorData) {
        let n: usize = shape.iter().product();
        match self.scheme {
            Scheme::TruncNormal => {
                let normal = Normal::new(0.0, self.trunc_std).expect("valid std");
                let w: Vec<f32> = (0..n)
                    .map(|_| loop {
                        let v: f64 = normal.sample(&mut self.rng);
                        if v.abs() <= 2.0 {
                            break v as f32;
                        }
                    })
                    .collect();
                (TensorData::new(w, shape), TensorData::new(vec![0.0f32; bias_len], [bias_len]))
            }
            Scheme::KaimingUniform => {
                let bound = 1.0 / (fan_in as f64).sqrt();
                let mut u = || self.rng.random_range(-bound..bound) as f32;
                let w: Vec<f32> = (0..n).map(|_| u()).collect();
                let b: Vec<f32> = (0..bias_len).map(|_| u()).collect();
                (TensorData::new(w, shape), TensorData::new(b, [bias_len]))
            }
        }
    }
}
