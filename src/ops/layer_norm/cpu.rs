//! LayerNorm over the channels of `[B, C, T]`, read and written
//! channels-first, on the CPU: Burn's path transposes twice and runs about
//! eight element-wise passes forward and fifteen backward on one thread;
//! here each utterance is one pass forward and one backward, in parallel.

use rayon::prelude::*;

use super::super::simd::simd_fn;
use super::super::sums::column_sums;

/// Frames per tile.
const FRAMES: usize = 64;

/// The mean and reciprocal standard deviation over channels of the frames
/// `t0..t0 + mu.len()` of one utterance `x [C, T]`: two passes, each
/// reading every channel's frames contiguously.
#[inline(always)]
pub(crate) fn frame_stats(x: &[f32], t0: usize, c: usize, t: usize, eps: f32, mu: &mut [f32], rs: &mut [f32]) {
    let n = mu.len();
    let inv_c = 1.0 / c as f32;
    mu.fill(0.0);
    for ch in 0..c {
        mu.iter_mut().zip(&x[ch * t + t0..ch * t + t0 + n]).for_each(|(m, &v)| *m += v);
    }
    mu.iter_mut().for_each(|m| *m *= inv_c);
    rs.fill(0.0);
    for ch in 0..c {
        for ((s, &v), &m) in rs.iter_mut().zip(&x[ch * t + t0..ch * t + t0 + n]).zip(mu.iter()) {
            *s += (v - m) * (v - m);
        }
    }
    rs.iter_mut().for_each(|s| *s = 1.0 / (*s * inv_c + eps).sqrt());
}

/// One utterance `x [C, T]` → `out [C, T]`, with each frame's mean and
/// reciprocal deviation in `stats [2, T]`.
#[inline(always)]
fn forward_utt(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32], stats: &mut [f32]) {
    let c = w.len();
    let t = x.len() / c;
    let (mean, rstd) = stats.split_at_mut(t);
    for t0 in (0..t).step_by(FRAMES) {
        let n = FRAMES.min(t - t0);
        let (mu, rs) = (&mut mean[t0..t0 + n], &mut rstd[t0..t0 + n]);
        frame_stats(x, t0, c, t, eps, mu, rs);
        for ch in 0..c {
            let (xr, o) = (&x[ch * t + t0..ch * t + t0 + n], &mut out[ch * t + t0..ch * t + t0 + n]);
            for i in 0..n {
                o[i] = (xr[i] - mu[i]) * rs[i] * w[ch] + b[ch];
            }
        }
    }
}

simd_fn!(fn forward_simd(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32], stats: &mut [f32]) => forward_utt);

/// The forward: `out [B, C, T]` and `stats [B, 2, T]` (mean, then reciprocal
/// standard deviation of every frame).
pub fn forward(x: &[f32], w: &[f32], b: &[f32], eps: f32, t: usize, out: &mut [f32], stats: &mut [f32]) {
    let plane = w.len() * t;
    out.par_chunks_mut(plane)
        .zip(stats.par_chunks_mut(2 * t))
        .zip(x.par_chunks(plane))
        .for_each(|((o, s), xb)| forward_simd(xb, w, b, eps, o, s));
}

/// One utterance of the backward: `dx [C, T]` from `g [C, T]`; adds
/// `Σ g·x̂` and `Σ g` per channel to `acc [2C]`.
#[inline(always)]
fn backward_utt(x: &[f32], g: &[f32], stats: &[f32], w: &[f32], dx: &mut [f32], acc: &mut [f32]) {
    let c = w.len();
    let t = x.len() / c;
    let (mean, rstd) = stats.split_at(t);
    let (dw, db) = acc.split_at_mut(c);
    let inv_c = 1.0 / c as f32;
    for t0 in (0..t).step_by(FRAMES) {
        let n = FRAMES.min(t - t0);
        let (mu, rs) = (&mean[t0..t0 + n], &rstd[t0..t0 + n]);
        let (mut m1, mut m2) = ([0.0f32; FRAMES], [0.0f32; FRAMES]);
        for ch in 0..c {
            let (xr, gr) = (&x[ch * t + t0..ch * t + t0 + n], &g[ch * t + t0..ch * t + t0 + n]);
            for i in 0..n {
                let xhat = (xr[i] - mu[i]) * rs[i];
                dw[ch] += gr[i] * xhat;
                db[ch] += gr[i];
                m1[i] += gr[i] * w[ch];
                m2[i] += gr[i] * w[ch] * xhat;
            }
        }
        for ch in 0..c {
            let (xr, gr) = (&x[ch * t + t0..ch * t + t0 + n], &g[ch * t + t0..ch * t + t0 + n]);
            let o = &mut dx[ch * t + t0..ch * t + t0 + n];
            for i in 0..n {
                let xhat = (xr[i] - mu[i]) * rs[i];
                o[i] = rs[i] * (gr[i] * w[ch] - m1[i] * inv_c - xhat * m2[i] * inv_c);
            }
        }
    }
}

simd_fn!(fn backward_simd(x: &[f32], g: &[f32], stats: &[f32], w: &[f32], dx: &mut [f32], acc: &mut [f32]) => backward_utt);

/// The backward: `dx [B, C, T]` and the weight's and bias's gradients
/// `[2C]` from the output gradient `g`, the input and the forward's stats.
pub fn backward(x: &[f32], g: &[f32], stats: &[f32], w: &[f32], t: usize, dx: &mut [f32]) -> Vec<f32> {
    let c = w.len();
    let plane = c * t;
    let parts: Vec<Vec<f32>> = dx
        .par_chunks_mut(plane)
        .enumerate()
        .map(|(bi, o)| {
            let mut acc = vec![0.0f32; 2 * c];
            let utt = bi * plane..(bi + 1) * plane;
            backward_simd(&x[utt.clone()], &g[utt], &stats[bi * 2 * t..(bi + 1) * 2 * t], w, o, &mut acc);
            acc
        })
        .collect();
    column_sums(&parts, 2 * c)
}
