//! Per-channel sums shared by the fused CPU operations' backward passes.

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
