//! Attentive statistics on the CPU: for each (utterance, channel) row, a
//! softmax over time of the attention logits, then the weighted mean and
//! standard deviation of the features. Burn's path is about ten element-wise
//! passes forward and twenty backward over `[B, D, T]`, on one thread; here
//! each row is one pass forward and one backward, rows in parallel.

use rayon::prelude::*;

use crate::ops::fastmath::{exp_neg, madd};
use crate::ops::simd::simd_fn;
use crate::ops::sums::{lane_sum, LANES};

/// Below this logit difference to the row's maximum a softmax weight is
/// written as 0 instead of `e^d`: the weight would be under 4e-31 of the
/// largest, far below float32's resolution of the sums it enters, and its
/// normalised value could be subnormal, which the CPU multiplies 10-100
/// times slower in every later product (BENCHMARKS.md, "Subnormal numbers").
const SOFTMAX_FLUSH: f32 = -70.0;

/// Softmax of `e` into `w` (max subtracted first), for one row. A NaN logit
/// stays NaN in its weight (and so in the row's statistics).
#[inline(always)]
fn softmax_row<const FMA: bool>(e: &[f32], w: &mut [f32]) {
    let max = e.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for (wv, &ev) in w.iter_mut().zip(e) {
        let d = ev - max;
        let p = exp_neg::<FMA>(d);
        *wv = if d < SOFTMAX_FLUSH {
            0.0
        } else if d.is_nan() {
            d
        } else {
            p
        };
    }
    let inv = 1.0 / lane_sum(w);
    w.iter_mut().for_each(|v| *v *= inv);
}

/// `(μ, σ)` of one row: `μ = Σ w·h`, `σ = √max(Σ w·h² − μ², floor)`, and
/// whether the variance reached the floor. Both sums in one pass, each in
/// [`LANES`] partial sums as `sums::lane_dot` keeps them.
#[inline(always)]
fn moments<const FMA: bool>(h: &[f32], w: &[f32], floor: f32) -> (f32, f32, bool) {
    let m = madd::<FMA>;
    let (mut mu, mut m2) = ([0.0f32; LANES], [0.0f32; LANES]);
    for (hc, wc) in h.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
        for i in 0..LANES {
            let wh = wc[i] * hc[i];
            mu[i] += wh;
            m2[i] = m(wh, hc[i], m2[i]);
        }
    }
    let (mut mu, mut m2) = (mu.iter().sum::<f32>(), m2.iter().sum::<f32>());
    let tail = h.len() - h.len() % LANES;
    for (&hv, &wv) in h[tail..].iter().zip(&w[tail..]) {
        mu += wv * hv;
        m2 += wv * hv * hv;
    }
    let var = m2 - mu * mu;
    // `clamp_min` passes the gradient where the variance is at least the floor.
    let open = var >= floor;
    (mu, var.max(floor).sqrt(), open)
}

/// One row forward: `stats = [μ, σ]`, with `w` as the softmax's scratch.
#[inline(always)]
fn forward_row<const FMA: bool>(h: &[f32], e: &[f32], floor: f32, w: &mut [f32], stats: &mut [f32; 2]) {
    softmax_row::<FMA>(e, w);
    let (mu, sigma, _) = moments::<FMA>(h, w, floor);
    *stats = [mu, sigma];
}

simd_fn!(fn forward_row_simd(h: &[f32], e: &[f32], floor: f32, w: &mut [f32], stats: &mut [f32; 2]) => fma forward_row);

/// The forward: `h`, `e` `[R, T]` (rows `R = B·D`) → `stats [B, 2D]`
/// (`μ` then `σ` per utterance, as the head concatenates them).
pub fn forward(h: &[f32], e: &[f32], t: usize, d: usize, floor: f32) -> Vec<f32> {
    let rows: Vec<[f32; 2]> = h
        .par_chunks(t)
        .zip(e.par_chunks(t))
        .with_min_len(8)
        .map_init(
            || vec![0.0f32; t],
            |w, (hr, er)| {
                let mut stats = [0.0; 2];
                forward_row_simd(hr, er, floor, w, &mut stats);
                stats
            },
        )
        .collect();
    let mut out = vec![0.0f32; 2 * rows.len()];
    for (r, [mu, sigma]) in rows.into_iter().enumerate() {
        let (b, ch) = (r / d, r % d);
        out[b * 2 * d + ch] = mu;
        out[b * 2 * d + d + ch] = sigma;
    }
    out
}

/// One row backward: `∂h`, `∂e` from `(∂μ, ∂σ)`, with `w` as scratch.
#[inline(always)]
fn backward_row<const FMA: bool>(
    h: &[f32],
    e: &[f32],
    floor: f32,
    g: [f32; 2],
    w: &mut [f32],
    dh: &mut [f32],
    de: &mut [f32],
) {
    softmax_row::<FMA>(e, w);
    let (mu, sigma, open) = moments::<FMA>(h, w, floor);
    let [gmu, gsigma] = g;
    // σ = √(m2 − μ²): ∂m2 = gσ/(2σ), and μ gets −2μ·∂m2 besides gμ.
    let dm2 = if open { gsigma / (2.0 * sigma) } else { 0.0 };
    let dmu = gmu - 2.0 * mu * dm2;
    // ∂w_t = dmu·h_t + dm2·h_t², then the softmax: ∂e_t = w_t (∂w_t − Σ w·∂w).
    let mut dot = 0.0f32;
    for i in 0..h.len() {
        let dw = dmu * h[i] + dm2 * h[i] * h[i];
        dot += w[i] * dw;
        de[i] = dw;
        dh[i] = w[i] * (dmu + 2.0 * dm2 * h[i]);
    }
    for i in 0..h.len() {
        de[i] = w[i] * (de[i] - dot);
    }
}

simd_fn!(fn backward_row_simd(h: &[f32], e: &[f32], floor: f32, g: [f32; 2], w: &mut [f32], dh: &mut [f32], de: &mut [f32]) => fma backward_row);

/// The backward: `∂h`, `∂e` `[R, T]` (written into `dh`, `de`) from the
/// gradient of the stats `[B, 2D]`.
#[allow(clippy::too_many_arguments)]
pub fn backward(h: &[f32], e: &[f32], t: usize, d: usize, floor: f32, g: &[f32], dh: &mut [f32], de: &mut [f32]) {
    dh.par_chunks_mut(t).zip(de.par_chunks_mut(t)).enumerate().with_min_len(8).for_each_init(
        || vec![0.0f32; t],
        |w, (r, (dhr, der))| {
            let (hr, er) = (&h[r * t..(r + 1) * t], &e[r * t..(r + 1) * t]);
            let (b, ch) = (r / d, r % d);
            let g = [g[b * 2 * d + ch], g[b * 2 * d + d + ch]];
            backward_row_simd(hr, er, floor, g, w, dhr, der);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::softmax_row;

    /// Logits far below the row's maximum (a masked or silent stretch) give
    /// weights of exactly 0, never subnormal ones, and the rest still sum to 1.
    #[test]
    fn softmax_writes_no_subnormal() {
        let t = 4000;
        let e: Vec<f32> = (0..t).map(|i| -(i as f32) * 0.05).collect();
        let mut w = vec![0.0; t];
        softmax_row::<false>(&e, &mut w);
        assert!(!w.iter().any(|v| *v != 0.0 && v.abs() < f32::MIN_POSITIVE), "subnormal weight");
        assert_eq!(w[t - 1], 0.0);
        let sum: f32 = w.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "sum {sum}");
    }
}
