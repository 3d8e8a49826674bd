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
            normalise_row(xr, mu, rs, w[ch], b[ch], o);
        }
    }
}

simd_fn!(fn forward_simd(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32], stats: &mut [f32]) => forward_utt);

/// The forward: `out [B, C, T]` and `stats [B, 2, T]` (mean, then reciprocal
/// standard deviation of every frame).
///
/// With at least as many utterances as threads, each utterance is one task
/// (one pass over tiles of frames that stay in cache). With fewer (batch 1
/// at inference), one task per utterance would leave threads idle, so the
/// work is split inside the utterance instead: frame tiles' statistics in
/// parallel, then every channel row normalised in parallel.
pub fn forward(x: &[f32], w: &[f32], b: &[f32], eps: f32, t: usize, out: &mut [f32], stats: &mut [f32]) {
    let plane = w.len() * t;
    if x.len() / plane >= rayon::current_num_threads() {
        out.par_chunks_mut(plane)
            .zip(stats.par_chunks_mut(2 * t))
            .zip(x.par_chunks(plane))
            .for_each(|((o, s), xb)| forward_simd(xb, w, b, eps, o, s));
        return;
    }
    let c = w.len();
    for ((o, s), xb) in out.chunks_mut(plane).zip(stats.chunks_mut(2 * t)).zip(x.chunks(plane)) {
        let (mean, rstd) = s.split_at_mut(t);
        mean.par_chunks_mut(FRAMES).zip(rstd.par_chunks_mut(FRAMES)).enumerate().for_each(|(i, (mu, rs))| {
            stats_simd(xb, i * FRAMES, c, t, eps, mu, rs);
        });
        let (mean, rstd) = (&*mean, &*rstd);
        o.par_chunks_mut(t).zip(xb.par_chunks(t)).enumerate().with_min_len(8).for_each(|(ch, (or, xr))| {
            normalise_row_simd(xr, mean, rstd, w[ch], b[ch], or);
        });
    }
}

simd_fn!(fn stats_simd(x: &[f32], t0: usize, c: usize, t: usize, eps: f32, mu: &mut [f32], rs: &mut [f32]) => frame_stats);

/// One channel's row: `out = (x − μ)·rstd·w + b` frame by frame (the
/// normalisation every LayerNorm pass here writes, channels-first or into
/// the FFN's frames-major tiles).
#[inline(always)]
pub(crate) fn normalise_row(x: &[f32], mu: &[f32], rs: &[f32], w: f32, b: f32, out: &mut [f32]) {
    for (((o, &v), &m), &r) in out.iter_mut().zip(x).zip(mu).zip(rs) {
        *o = (v - m) * r * w + b;
    }
}

simd_fn!(fn normalise_row_simd(x: &[f32], mu: &[f32], rs: &[f32], w: f32, b: f32, out: &mut [f32]) => normalise_row);

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward on a pool of `threads`.
    fn forward_on(threads: usize, x: &[f32], w: &[f32], b: &[f32], t: usize) -> (Vec<f32>, Vec<f32>) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
        let bs = x.len() / (w.len() * t);
        let (mut out, mut stats) = (vec![0.0; x.len()], vec![0.0; bs * 2 * t]);
        pool.install(|| forward(x, w, b, 1e-6, t, &mut out, &mut stats));
        (out, stats)
    }

    /// Fewer utterances than threads split each utterance's frames and
    /// channels; the numbers are those of one task per utterance, bit for bit.
    #[test]
    fn split_utterances_match_whole_ones() {
        let (bs, c, t) = (2, 40, 150); // 150 = 2 whole tiles and a partial one
        let x: Vec<f32> = (0..bs * c * t).map(|i| (i as f32 * 0.37).sin() * 3.0 + 0.5).collect();
        let w: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..c).map(|i| (i as f32 * 0.1).cos()).collect();
        let whole = forward_on(1, &x, &w, &b, t);
        let split = forward_on(4, &x, &w, &b, t);
        assert!(whole.0.iter().zip(&split.0).all(|(p, q)| p.to_bits() == q.to_bits()), "outputs differ");
        assert!(whole.1.iter().zip(&split.1).all(|(p, q)| p.to_bits() == q.to_bits()), "statistics differ");
        // And the split output is a LayerNorm: frame 7 of utterance 1.
        let frame: Vec<f32> = (0..c).map(|ch| x[(c + ch) * t + 7]).collect();
        let mean = frame.iter().sum::<f32>() / c as f32;
        let var = frame.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
        let got = split.0[(c + 3) * t + 7];
        let want = (frame[3] - mean) / (var + 1e-6).sqrt() * w[3] + b[3];
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
