//! Sums shared by the fused CPU operations: per channel for the backward
//! passes, and over one row in lanes.

use rayon::prelude::*;

/// Element-wise sum of equally long partial sums (one per parallel task).
pub fn column_sums(parts: &[Vec<f32>], width: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; width];
    for p in parts {
        out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
    }
    out
}

/// Per-channel sums over utterances and frames of `g [B, C, T]`: a bias's
/// gradient.
pub fn channel_sums(g: &[f32], c: usize, t: usize) -> Vec<f32> {
    let rows: Vec<f32> = g.par_chunks(t).map(|r| r.iter().sum::<f32>()).collect();
    let mut out = vec![0.0f32; c];
    for (row, s) in rows.iter().enumerate() {
        out[row % c] += s;
    }
    out
}

/// Independent partial sums kept by [`lane_sum`] and [`lane_dot`], so that
/// the compiler can hold them in one SIMD register (a single running sum
/// stays scalar: float addition is not reassociated).
pub const LANES: usize = 8;

/// `Σ x[i]`, in [`LANES`] partial sums.
#[inline(always)]
pub fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a += v);
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ a[i]·b[i]`, in [`LANES`] partial sums.
#[inline(always)]
pub fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
