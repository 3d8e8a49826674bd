//! The multi-scale temporal convolution on the CPU, forward and backward, by
//! hand, channels-first throughout.
//!
//! Why by hand: with Burn's operations the block transposes twice for its
//! per-frame linear layer and adds, splits and concatenates on one thread.
//! Here every step is a matrix product per utterance (`gemm`, transposes
//! read through strides), a row-wise depthwise convolution (the kernel of
//! `ops::depthwise`) or one fused element-wise pass, all multi-threaded.
//!
//! Forward, per utterance `x [C, T]`:
//! `p = (Wp·x + bp)·valid`, `q = depthwise_i(p)` on channel chunk `i`,
//! `a = GELU(q)`, `out = x + Wpwᵀ·a + bpw`.

use rayon::prelude::*;

use super::super::depthwise::cpu::{weight_grad_row, Row};
use super::super::flat::split_sizes;
use super::super::gelu::cpu::{cdf_pdf_with, forward_chunk, gelu_inference};
use super::super::host_gemm::{from_rows, per_utterance, sum_over_utterances, View};
use super::super::pointwise::backward_host;
use super::super::scratch::scratch;
use super::super::simd::simd_fn;
use super::super::sums::channel_sums;
use super::MscParams;

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub b: usize,
    pub c: usize,
    pub t: usize,
}

impl Dims {
    fn plane(&self) -> usize {
        self.c * self.t
    }
}

/// One depthwise branch: `w [chunk, K]`, `bias [chunk]`, 'same' padding.
pub struct Branch<'a> {
    pub w: &'a [f32],
    pub bias: &'a [f32],
    pub kernel: usize,
    pub pad: usize,
}

/// The block's parameters, as host slices.
pub struct Params<'a> {
    /// `[C_out, C_in]` (the 1×1 convolution's weight).
    pub projection_w: &'a [f32],
    pub projection_b: &'a [f32],
    /// The branches, on consecutive channel chunks of equal size.
    pub branches: Vec<Branch<'a>>,
    /// `[C_in, C_out]`, input-major as Burn's `Linear`.
    pub pointwise_w: &'a [f32],
    pub pointwise_b: &'a [f32],
}

impl Params<'_> {
    /// The branch of channel `ch`, and the channel's index inside it.
    fn branch(&self, ch: usize, c: usize) -> (&Branch<'_>, usize) {
        let chunk = c / self.branches.len();
        (&self.branches[ch / chunk], ch % chunk)
    }
}

/// Floats saved for the backward: `p`, `q` and `a`, `[B, C, T]` each.
pub fn saved_len(d: Dims) -> usize {
    3 * d.b * d.plane()
}

simd_fn!(fn gelu_row_simd(q: &[f32], a: &mut [f32]) => fma forward_chunk);

/// `a = GELU(q)` as inference computes it.
#[inline(always)]
fn gelu_inference_row<const FMA: bool>(q: &[f32], a: &mut [f32]) {
    for (av, &qv) in a.iter_mut().zip(q) {
        *av = gelu_inference::<FMA>(qv);
    }
}

simd_fn!(fn gelu_inference_row_simd(q: &[f32], a: &mut [f32]) => fma gelu_inference_row);

/// `out = (p + bias)·valid`: the projection's bias and the padding mask.
#[inline(always)]
fn bias_mask_row(p: &[f32], bias: f32, valid: &[f32], out: &mut [f32]) {
    for ((o, &x), &m) in out.iter_mut().zip(p).zip(valid) {
        *o = (x + bias) * m;
    }
}

simd_fn!(fn bias_mask_row_simd(p: &[f32], bias: f32, valid: &[f32], out: &mut [f32]) => bias_mask_row);

#[inline(always)]
fn gelu_grad_row<const FMA: bool>(q: &[f32], g: &mut [f32]) {
    for (gv, &qv) in g.iter_mut().zip(q) {
        let (cdf, pdf) = cdf_pdf_with::<FMA>(qv);
        *gv *= cdf + qv * pdf;
    }
}

simd_fn!(fn gelu_grad_row_simd(q: &[f32], g: &mut [f32]) => fma gelu_grad_row);

/// The forward in training: `out [B, C, T]` from `x [B, C, T]`, keeping
/// `saved = [p | q | a]` ([`saved_len`] floats); `valid [B·T]` is 1 on the
/// frames the depthwise convolutions may read and 0 on padding.
pub fn forward(x: &[f32], valid: &[f32], pr: &Params, d: Dims, out: &mut [f32], saved: &mut [f32]) {
    let (c, t, n) = (d.c, d.t, d.b * d.plane());
    let (p, rest) = saved.split_at_mut(n);
    let (q, a) = rest.split_at_mut(n);
    per_utterance(p, View::rows(pr.projection_w, c, c), x, d.b, t, false);
    mix_rows(p, q, a, valid, pr, d);
    // `Wpwᵀ` through strides: here the weight is the operand `gemm` packs
    // anyway, so a transposed copy (one thread, every call) bought nothing.
    per_utterance(out, View::rows(pr.pointwise_w, c, c).t(), a, d.b, t, false);
    out.par_chunks_mut(t).enumerate().with_min_len(8).for_each(|(row, o)| {
        let bias = pr.pointwise_b[row % c];
        o.iter_mut().zip(&x[row * t..(row + 1) * t]).for_each(|(y, &xv)| *y += xv + bias);
    });
}

/// The forward in inference, keeping nothing: the projection and the
/// activation in reused buffers, and the output started as `x + bpw` (in
/// fresh memory, no zero-filling pass) for the pointwise product to add
/// itself to: the same sum, `(x + bpw) + Wpwᵀ·a`, as the training forward's.
///
/// `pointwise_t` is `Wpwᵀ`, `[C_out, C_in]` row-major.
pub fn forward_inference(x: &[f32], valid: &[f32], pr: &Params, pointwise_t: &[f32], d: Dims) -> Vec<f32> {
    let (c, t, n) = (d.c, d.t, d.b * d.plane());
    let mut p = scratch(n);
    per_utterance(&mut p, View::rows(pr.projection_w, c, c), x, d.b, t, false);
    let mut a = scratch(n);
    mix_rows_inference(&p, &mut a, valid, pr, d);
    let mut out = from_rows(n, t, |row| {
        let bias = pr.pointwise_b[row % c];
        x[row * t..(row + 1) * t].iter().map(move |&xv| xv + bias)
    });
    per_utterance(&mut out, View::rows(pointwise_t, c, c), &a, d.b, t, true);
    out
}

/// The depthwise branch of channel row `row` of `[B·C, T]`: its taps, bias
/// and padding.
fn row_branch<'a>(pr: &'a Params, row: usize, c: usize) -> (&'a [f32], f32, usize) {
    let (br, local) = pr.branch(row % c, c);
    (&br.w[local * br.kernel..(local + 1) * br.kernel], br.bias[local], br.pad)
}

/// Every row of the projection `p [B·C, T]` in training: its bias and the
/// padding mask in place, the depthwise convolution into `q` and its GELU
/// into `a`, one task per row (a depthwise convolution reads only its own
/// channel's row).
fn mix_rows(p: &mut [f32], q: &mut [f32], a: &mut [f32], valid: &[f32], pr: &Params, d: Dims) {
    let (c, t) = (d.c, d.t);
    let rows = p.par_chunks_mut(t).zip(q.par_chunks_mut(t).zip(a.par_chunks_mut(t)));
    rows.enumerate().with_min_len(4).for_each_init(Row::default, |buf, (row, (p_row, (qr, ar)))| {
        let v = &valid[(row / c) * t..(row / c + 1) * t];
        let (taps, bias, pad) = row_branch(pr, row, c);
        let project_b = pr.projection_b[row % c];
        p_row.iter_mut().zip(v).for_each(|(x, &m)| *x = (*x + project_b) * m);
        buf.conv(p_row, taps, bias, pad, qr);
        gelu_row_simd(qr, ar);
    });
}

/// [`mix_rows`] in inference, keeping neither `p`'s masked rows nor the
/// convolution: the masked row is written straight into the convolution's
/// padded input, and GELU reads the convolution where it was computed.
fn mix_rows_inference(p: &[f32], a: &mut [f32], valid: &[f32], pr: &Params, d: Dims) {
    let (c, t) = (d.c, d.t);
    let rows = p.par_chunks(t).zip(a.par_chunks_mut(t));
    rows.enumerate().with_min_len(4).for_each_init(Row::default, |buf, (row, (p_row, ar))| {
        let v = &valid[(row / c) * t..(row / c + 1) * t];
        let (taps, bias, pad) = row_branch(pr, row, c);
        let project_b = pr.projection_b[row % c];
        let q = buf.conv_with(t, t, taps, bias, pad, |xp| bias_mask_row_simd(&p_row[..xp.len()], project_b, v, xp));
        gelu_inference_row_simd(q, ar);
    });
}

/// Each parameter's size, in the order of [`MscParams`].
fn param_sizes(d: Dims, pr: &Params) -> impl Iterator<Item = usize> {
    let kernels = [pr.branches[0].kernel, pr.branches[1].kernel];
    MscParams::shapes(d.c, kernels).sizes()
}

/// Gradients of every input of the forward, in the order of the autodiff
/// parents: `x`, then the parameters in the order of [`MscParams`].
pub fn grads_len(d: Dims, pr: &Params) -> usize {
    d.b * d.plane() + param_sizes(d, pr).sum::<usize>()
}

/// The backward: every gradient (see [`grads_len`]) from `dout [B, C, T]`,
/// the forward's input and what it saved.
pub fn backward(x: &[f32], valid: &[f32], pr: &Params, d: Dims, saved: &[f32], dout: &[f32], grads: &mut [f32]) {
    let (c, t, n) = (d.c, d.t, d.b * d.plane());
    let (p, rest) = saved.split_at(n);
    let (q, a) = rest.split_at(n);
    let (dx, rest) = grads.split_at_mut(n);
    let g = MscParams::from_values(split_sizes(rest, param_sizes(d, pr)).into_iter());
    let (dwp, dbp, dwpw, dbpw) = (g.projection_w, g.projection_b, g.pointwise_w, g.pointwise_b);
    let dbranches = [(g.branch1_w, g.branch1_b), (g.branch2_w, g.branch2_b)];

    dbpw.copy_from_slice(&channel_sums(dout, c, t));
    // ∂Wpw[i, o] = Σ a[i, t]·dout[o, t]; ∂a = Wpw·dout, then through GELU.
    sum_over_utterances(dwpw, a, dout, c, c, d.b, d.t);
    let mut dq = scratch(n);
    per_utterance(&mut dq, View::rows(pr.pointwise_w, c, c), dout, d.b, d.t, false);
    dq.par_chunks_mut(t).zip(q.par_chunks(t)).with_min_len(8).for_each(|(g, qr)| gelu_grad_row_simd(qr, g));
    let dq: &[f32] = &dq;
    // The depthwise convolutions: ∂p with the taps reversed, then ∂w and ∂bias per channel.
    let flipped: Vec<Vec<f32>> = pr
        .branches
        .iter()
        .map(|br| br.w.chunks(br.kernel).flat_map(|taps| taps.iter().rev().copied()).collect())
        .collect();
    let chunk = c / pr.branches.len();
    let mut dp = scratch(n);
    dp.par_chunks_mut(t).enumerate().with_min_len(4).for_each_init(Row::default, |buf, (row, o)| {
        let (bi, ch) = (row / c, row % c);
        let (br, local) = pr.branch(ch, c);
        let taps = &flipped[ch / chunk][local * br.kernel..(local + 1) * br.kernel];
        buf.conv(&dq[row * t..(row + 1) * t], taps, 0.0, br.kernel - 1 - br.pad, o);
        o.iter_mut().zip(&valid[bi * t..(bi + 1) * t]).for_each(|(g, &m)| *g *= m);
    });
    let per_channel: Vec<(Vec<f32>, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (br, _) = pr.branch(ch, c);
            let mut w = vec![0.0f32; br.kernel];
            let mut bias = 0.0f32;
            for bi in 0..d.b {
                let row = bi * c + ch;
                let g = &dq[row * t..(row + 1) * t];
                weight_grad_row(&p[row * t..(row + 1) * t], g, br.pad, &mut w);
                bias += g.iter().sum::<f32>();
            }
            (w, bias)
        })
        .collect();
    for (ch, (w, bias)) in per_channel.into_iter().enumerate() {
        let (i, local) = (ch / chunk, ch % chunk);
        let k = pr.branches[i].kernel;
        dbranches[i].0[local * k..(local + 1) * k].copy_from_slice(&w);
        dbranches[i].1[local] = bias;
    }
    // The 1×1 convolution, plus the residual: ∂x = dout + Wpᵀ·∂p.
    dx.copy_from_slice(dout);
    backward_host(x, pr.projection_w, &dp, [d.b, c, c, t], [dx, dwp, dbp], true);
}
