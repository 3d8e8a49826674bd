//! The feed-forward block on the CPU, forward and backward, by hand.
//!
//! Why by hand: written with Burn's tensor operations the block is about 30
//! element-wise passes forward and backward over `[B, T, 4C]` tensors plus
//! four layout copies, and burn-flex runs element-wise operations on one
//! thread. Here the block is five matrix products forward and seven backward
//! (`gemm`, multi-threaded, transposes read through strides) and a handful
//! of fused passes, each split over the rayon pool.
//!
//! Layouts: the block's input and output are channels-first `[B, C, T]`;
//! inside, rows are frames: `xn [B·T, C]`, `h, a [B·T, H]` with `H = 4C`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::super::flat::split_sizes;
use super::super::gelu::cpu::{cdf_pdf_with, gelu_inference};
use super::super::host_gemm::{matmul, transposed, View};
use super::super::layer_norm::cpu::{frame_stats, normalise_row};
use super::super::panels::{self, PanelRow, Panels};
use super::super::scratch::scratch;
use super::super::simd::{simd_fn, transpose_block};
use super::super::sums::column_sums;
use super::FfnParams;

/// Frames per parallel task.
const FRAMES: usize = 64;

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub b: usize,
    pub c: usize,
    pub t: usize,
    pub h: usize,
}

impl Dims {
    fn rows(&self) -> usize {
        self.b * self.t
    }
}

/// The block's parameters as host slices, with the two epsilons.
pub struct Params<'a> {
    pub w: FfnParams<&'a [f32]>,
    pub ln_eps: f32,
    pub grn_eps: f32,
}

/// What the forward keeps for the backward (or drops, in inference).
pub struct Saved<'a> {
    /// `[B·T, H]`: the first product plus its bias, before GELU.
    pub h: &'a mut [f32],
    /// `[B·T, H]`: GELU of `h`.
    pub a: &'a mut [f32],
    /// `[B·T]`: LayerNorm's mean and reciprocal standard deviation per frame.
    pub mean: &'a mut [f32],
    pub rstd: &'a mut [f32],
    /// `[B, H]`: GRN's L2 norm over time and its normalised value.
    pub g: &'a mut [f32],
    pub n: &'a mut [f32],
}

/// [`Saved`], read-only, for the backward.
pub struct SavedRef<'a> {
    pub h: &'a [f32],
    pub a: &'a [f32],
    pub mean: &'a [f32],
    pub rstd: &'a [f32],
    pub g: &'a [f32],
    pub n: &'a [f32],
}

/// Number of floats [`Saved`] takes.
pub fn saved_len(d: Dims) -> usize {
    2 * d.rows() * d.h + 2 * d.rows() + 2 * d.b * d.h
}

/// Splits a buffer of [`saved_len`] floats into the saved tensors.
pub fn split_saved(buf: &mut [f32], d: Dims) -> Saved<'_> {
    let (h, rest) = buf.split_at_mut(d.rows() * d.h);
    let (a, rest) = rest.split_at_mut(d.rows() * d.h);
    let (mean, rest) = rest.split_at_mut(d.rows());
    let (rstd, rest) = rest.split_at_mut(d.rows());
    let (g, n) = rest.split_at_mut(d.b * d.h);
    Saved { h, a, mean, rstd, g, n }
}

/// Reads a buffer of [`saved_len`] floats as the saved tensors.
pub fn view_saved(buf: &[f32], d: Dims) -> SavedRef<'_> {
    let (h, rest) = buf.split_at(d.rows() * d.h);
    let (a, rest) = rest.split_at(d.rows() * d.h);
    let (mean, rest) = rest.split_at(d.rows());
    let (rstd, rest) = rest.split_at(d.rows());
    let (g, n) = rest.split_at(d.b * d.h);
    SavedRef { h, a, mean, rstd, g, n }
}

/// Per-frame LayerNorm over channels of `x [B, C, T]`, written transposed
/// into `xn [B·T, C]`, with the statistics kept in `mean`, `rstd` `[B·T]`.
fn layer_norm(x: &[f32], p: &Params, d: Dims, xn: &mut [f32], mean: &mut [f32], rstd: &mut [f32]) {
    let (c, t) = (d.c, d.t);
    xn.par_chunks_mut(t * c).zip(mean.par_chunks_mut(t)).zip(rstd.par_chunks_mut(t)).enumerate().for_each(
        |(bi, ((xn_b, mean_b), rstd_b))| {
            let xb = &x[bi * c * t..(bi + 1) * c * t];
            xn_b.par_chunks_mut(FRAMES * c)
                .zip(mean_b.par_chunks_mut(FRAMES))
                .zip(rstd_b.par_chunks_mut(FRAMES))
                .enumerate()
                .for_each(|(chunk, ((xn_c, mu), rs))| {
                    norm_frames_simd(xb, chunk * FRAMES, p, c, t, xn_c, mu, rs);
                });
        },
    );
}

/// [`layer_norm`] for the frames `t0..t0 + mu.len()` of one utterance `xb [C, T]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn norm_frames(xb: &[f32], t0: usize, p: &Params, c: usize, t: usize, xn: &mut [f32], mu: &mut [f32], rs: &mut [f32]) {
    frame_stats(xb, t0, c, t, p.ln_eps, mu, rs);
    write_normalised(xb, t0, p, c, t, xn, mu, rs);
}

/// `xn[i, ch] = (x[ch, t0 + i] − μ_i)·rstd_i·w[ch] + b[ch]` for the frames of
/// `mu` and `rs`, from one utterance `xb [C, T]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn write_normalised(xb: &[f32], t0: usize, p: &Params, c: usize, t: usize, xn: &mut [f32], mu: &[f32], rs: &[f32]) {
    let n = mu.len();
    // Normalised in tiles of 16 channels, then written frame by frame: each
    // frame's 16 values fill one cache line of `xn` (a frame's row is `c`
    // floats apart from the next, too far for writing channel by channel).
    let mut tile = [[0.0f32; FRAMES]; TILE];
    for c0 in (0..c).step_by(TILE) {
        let width = TILE.min(c - c0);
        for (k, tr) in tile.iter_mut().enumerate().take(width) {
            let ch = c0 + k;
            let row = &xb[ch * t + t0..ch * t + t0 + n];
            normalise_row(row, mu, rs, p.w.norm_w[ch], p.w.norm_b[ch], &mut tr[..n]);
        }
        let whole = if width == TILE { n - n % BLOCK } else { 0 };
        for i0 in (0..whole).step_by(BLOCK) {
            let mut blk = [[0.0f32; BLOCK]; TILE];
            for (b, tr) in blk.iter_mut().zip(&tile) {
                b.copy_from_slice(&tr[i0..i0 + BLOCK]);
            }
            for (j, frame) in transpose_block(&blk).iter().enumerate() {
                xn[(i0 + j) * c + c0..(i0 + j) * c + c0 + TILE].copy_from_slice(frame);
            }
        }
        for i in whole..n {
            let out = &mut xn[i * c + c0..i * c + c0 + width];
            for (k, o) in out.iter_mut().enumerate() {
                *o = tile[k][i];
            }
        }
    }
}

simd_fn!(
    #[allow(clippy::too_many_arguments)]
    fn norm_frames_simd(xb: &[f32], t0: usize, p: &Params, c: usize, t: usize, xn: &mut [f32], mu: &mut [f32], rs: &mut [f32]) => norm_frames
);

#[inline(always)]
fn bias_gelu_rows<const FMA: bool>(h: &mut [f32], a: &mut [f32], b1: &[f32]) {
    for (hr, ar) in h.chunks_exact_mut(b1.len()).zip(a.chunks_exact_mut(b1.len())) {
        for ((hv, av), &bv) in hr.iter_mut().zip(ar.iter_mut()).zip(b1) {
            *hv += bv;
            *av = *hv * cdf_pdf_with::<FMA>(*hv).0;
        }
    }
}

simd_fn!(fn bias_gelu_simd(h: &mut [f32], a: &mut [f32], b1: &[f32]) => fma bias_gelu_rows);

/// `h += b1` and `a = GELU(h)`, row by row.
fn bias_gelu(h: &mut [f32], a: &mut [f32], b1: &[f32], width: usize) {
    h.par_chunks_mut(FRAMES * width).zip(a.par_chunks_mut(FRAMES * width)).for_each(|(h, a)| bias_gelu_simd(h, a, b1));
}

/// `acc[j] += valid[r]·a[r, j]²` over the rows `r` of `a` (`valid` holds
/// theirs); `b` is unused.
#[inline(always)]
fn squares_rows(a: &[f32], _b: &[f32], valid: &[f32], acc: &mut [f32]) {
    for (ar, &v) in a.chunks_exact(acc.len()).zip(valid) {
        for (s, &x) in acc.iter_mut().zip(ar) {
            *s += v * x * x;
        }
    }
}

simd_fn!(fn squares_simd(a: &[f32], b: &[f32], valid: &[f32], acc: &mut [f32]) => squares_rows);

/// `acc[..W] += a·b` and `acc[W..] += a` over the rows of `a` and `b` `[·, W]`.
#[inline(always)]
fn products_rows(a: &[f32], b: &[f32], _valid: &[f32], acc: &mut [f32]) {
    let w = acc.len() / 2;
    let (sp, sa) = acc.split_at_mut(w);
    for (ar, br) in a.chunks_exact(w).zip(b.chunks_exact(w)) {
        for j in 0..w {
            sp[j] += ar[j] * br[j];
            sa[j] += ar[j];
        }
    }
}

simd_fn!(fn products_simd(a: &[f32], b: &[f32], valid: &[f32], acc: &mut [f32]) => products_rows);

/// A row kernel of [`sum_frames`]: `(a rows, b rows, valid, acc)`.
type RowSum = fn(&[f32], &[f32], &[f32], &mut [f32]);

/// Per-utterance sums over frames, `[B, width]`: `kernel` adds the rows of
/// `a` and `b` (`[B·T, H]` each) of one chunk of frames to `acc [width]`.
fn sum_frames(d: Dims, width: usize, a: &[f32], b: &[f32], valid: &[f32], kernel: RowSum) -> Vec<f32> {
    let (chunks, h) = (d.t.div_ceil(FRAMES), d.h);
    let partial: Vec<Vec<f32>> = (0..d.b * chunks)
        .into_par_iter()
        .map(|task| {
            let (bi, ci) = (task / chunks, task % chunks);
            let rows = bi * d.t + ci * FRAMES..bi * d.t + ((ci + 1) * FRAMES).min(d.t);
            let mut acc = vec![0.0f32; width];
            let b_rows = if b.is_empty() { b } else { &b[rows.start * h..rows.end * h] };
            kernel(&a[rows.start * h..rows.end * h], b_rows, &valid[rows.clone()], &mut acc);
            acc
        })
        .collect();
    let mut out = vec![0.0f32; d.b * width];
    for (task, p) in partial.iter().enumerate() {
        let row = &mut out[(task / chunks) * width..(task / chunks + 1) * width];
        row.iter_mut().zip(p).for_each(|(o, v)| *o += v);
    }
    out
}

/// GRN's statistics: `g[b, j] = ‖a[b, :, j]‖` over valid frames (0 when all
/// are 0) and `n = g / (mean_j g + eps)`.
fn grn_stats(a: &[f32], valid: &[f32], d: Dims, eps: f32, g: &mut [f32], n: &mut [f32]) {
    let sq = sum_frames(d, d.h, a, &[], valid, squares_simd);
    grn_norms(&sq, d, eps, g, n);
}

/// `g = √sq` (0 where `sq` is 0) and `n = g / (mean_j g + eps)`, `[B, H]`.
fn grn_norms(sq: &[f32], d: Dims, eps: f32, g: &mut [f32], n: &mut [f32]) {
    let h = d.h;
    for bi in 0..d.b {
        let (gb, nb) = (&mut g[bi * h..(bi + 1) * h], &mut n[bi * h..(bi + 1) * h]);
        for (gv, &s) in gb.iter_mut().zip(&sq[bi * h..(bi + 1) * h]) {
            *gv = if s > 0.0 { s.max(f32::MIN_POSITIVE).sqrt() } else { 0.0 };
        }
        let mean = gb.iter().sum::<f32>() / h as f32;
        for (nv, &gv) in nb.iter_mut().zip(gb.iter()) {
            *nv = gv / (mean + eps);
        }
    }
}

#[inline(always)]
fn grn_apply_row(o: &mut [f32], a: &[f32], n: &[f32], gamma: &[f32], beta: &[f32]) {
    for j in 0..o.len() {
        o[j] = a[j] * (gamma[j] * n[j] + 1.0) + beta[j];
    }
}

simd_fn!(fn grn_apply_simd(o: &mut [f32], a: &[f32], n: &[f32], gamma: &[f32], beta: &[f32]) => grn_apply_row);

/// `r = a·(γ·n + 1) + β` into `out [B·T, H]`.
fn grn_apply(a: &[f32], n: &[f32], p: &Params, d: Dims, out: &mut [f32]) {
    let h = d.h;
    out.par_chunks_mut(h).enumerate().with_min_len(16).for_each(|(row, o)| {
        let nb = &n[(row / d.t) * h..(row / d.t + 1) * h];
        grn_apply_simd(o, &a[row * h..(row + 1) * h], nb, p.w.gamma, p.w.beta);
    });
}

/// `out[b, c, t] = x[b, c, t] + y[b·T + t, c] + b2[c]`, every element of
/// `out` written (it may be fresh memory).
fn residual(x: &[f32], y: &[f32], b2: &[f32], d: Dims, out: &mut [MaybeUninit<f32>]) {
    let (c, t) = (d.c, d.t);
    if c % TILE != 0 {
        out.par_chunks_mut(t).enumerate().for_each(|(row, o)| {
            let (bi, ch) = (row / c, row % c);
            for (ti, ov) in o.iter_mut().enumerate() {
                ov.write(x[row * t + ti] + y[(bi * t + ti) * c + ch] + b2[ch]);
            }
        });
        return;
    }
    out.par_chunks_mut(TILE * t).enumerate().for_each(|(chunk, o)| {
        let row0 = chunk * TILE;
        let (bi, c0) = (row0 / c, row0 % c);
        let xs = &x[row0 * t..(row0 + TILE) * t];
        residual_tile_simd(o, xs, &y[bi * t * c + c0..], &b2[c0..c0 + TILE], c, t);
    });
}

/// Channels `c0..c0 + TILE` of one utterance for [`residual`]: `o`, `xs`
/// `[TILE, T]`, `y` the utterance's `[T, C]` from channel `c0`. Eight frames
/// at a time go through a block in registers, so that both `y`'s frames and
/// `o`'s channel rows are read and written as runs (a frame-by-frame loop
/// writes every output to another row).
#[inline(always)]
fn residual_tile(o: &mut [MaybeUninit<f32>], xs: &[f32], y: &[f32], b2: &[f32], c: usize, t: usize) {
    let main = t - t % BLOCK;
    for t0 in (0..main).step_by(BLOCK) {
        let mut blk = [[0.0f32; TILE]; BLOCK];
        for (j, r) in blk.iter_mut().enumerate() {
            r.copy_from_slice(&y[(t0 + j) * c..(t0 + j) * c + TILE]);
        }
        let blk = transpose_block(&blk);
        for (k, &bk) in b2.iter().enumerate() {
            let (or, xr) = (&mut o[k * t + t0..k * t + t0 + BLOCK], &xs[k * t + t0..k * t + t0 + BLOCK]);
            for j in 0..BLOCK {
                or[j].write(xr[j] + blk[k][j] + bk);
            }
        }
    }
    for ti in main..t {
        for (k, &bk) in b2.iter().enumerate() {
            o[k * t + ti].write(xs[k * t + ti] + y[ti * c + k] + bk);
        }
    }
}
simd_fn!(fn residual_tile_simd(o: &mut [MaybeUninit<f32>], xs: &[f32], y: &[f32], b2: &[f32], c: usize, t: usize) => residual_tile);

/// Channels per tile of the passes between `[C, T]` and `[T, C]` (a tile's
/// values of one frame fill a cache line), and frames per block of
/// [`residual`] and [`transpose_grad`]: a block is `BLOCK × TILE` floats.
const TILE: usize = 16;
const BLOCK: usize = 8;

/// `a = GELU(a + b1)` row by row, adding `valid[r]·a²` of each row to `acc`.
#[inline(always)]
fn bias_gelu_squares_rows<const FMA: bool>(a: &mut [f32], b1: &[f32], valid: &[f32], acc: &mut [f32]) {
    for (ar, &v) in a.chunks_exact_mut(b1.len()).zip(valid) {
        for ((x, &bv), s) in ar.iter_mut().zip(b1).zip(acc.iter_mut()) {
            let y = *x + bv;
            let g = gelu_inference::<FMA>(y);
            *x = g;
            *s += v * g * g;
        }
    }
}

simd_fn!(fn bias_gelu_squares_simd(a: &mut [f32], b1: &[f32], valid: &[f32], acc: &mut [f32]) => fma bias_gelu_squares_rows);

/// GELU of `a + b1` in place, returning GRN's sums of squares over the
/// valid frames, `[B, H]`: the two passes of inference in one.
fn bias_gelu_squares(a: &mut [f32], valid: &[f32], b1: &[f32], d: Dims) -> Vec<f32> {
    let h = d.h;
    let per_utterance: Vec<Vec<f32>> = a
        .par_chunks_mut(d.t * h)
        .enumerate()
        .map(|(bi, ab)| {
            let parts: Vec<Vec<f32>> = ab
                .par_chunks_mut(FRAMES * h)
                .enumerate()
                .map(|(ci, rows)| {
                    let mut acc = vec![0.0f32; h];
                    let r0 = bi * d.t + ci * FRAMES;
                    bias_gelu_squares_simd(rows, b1, &valid[r0..r0 + rows.len() / h], &mut acc);
                    acc
                })
                .collect();
            column_sums(&parts, h)
        })
        .collect();
    per_utterance.concat()
}

#[inline(always)]
fn grn_in_place_row(a: &mut [f32], n: &[f32], gamma: &[f32], beta: &[f32]) {
    for j in 0..a.len() {
        a[j] = a[j] * (gamma[j] * n[j] + 1.0) + beta[j];
    }
}

simd_fn!(fn grn_in_place_simd(a: &mut [f32], n: &[f32], gamma: &[f32], beta: &[f32]) => grn_in_place_row);

/// The forward for inference: as [`forward`], keeping nothing, with one
/// `[B·T, H]` buffer that takes the product and its GELU in place, and the
/// output in fresh memory that the residual pass writes whole.
///
/// GRN is `r = a·s + β` with `s = γ·n + 1` per hidden channel, so the
/// projection `r·W2` equals `a·(s·W2) + β·W2`: for one utterance the scale
/// goes into a copy of `W2` (H·C floats) and `β·W2` into the bias, where
/// applying GRN would rewrite the T·H activations.
pub fn forward_inference(x: &[f32], valid: &[f32], p: &Params, w: InferencePanels, d: Dims) -> Vec<f32> {
    let (rows, c, h) = (d.rows(), d.c, d.h);
    let mut xn = scratch(rows * c);
    let (mut mean, mut rstd) = (vec![0.0f32; rows], vec![0.0f32; rows]);
    layer_norm(x, p, d, &mut xn, &mut mean, &mut rstd);
    let mut a = panels::product(View::rows(&xn, rows, c), w.expand);
    let sq = bias_gelu_squares(&mut a, valid, p.w.expand_b, d);
    let (mut g, mut n) = (vec![0.0f32; d.b * h], vec![0.0f32; d.b * h]);
    grn_norms(&sq, d, p.grn_eps, &mut g, &mut n);
    let mut out: Vec<f32> = Vec::with_capacity(rows * c);
    if d.b == 1 {
        let (w2, b2) = grn_folded(p, &n, h, c);
        panels::matmul(&mut xn, View::rows(&a, rows, h), &w2, false);
        residual(x, &xn, &b2, d, out.spare_capacity_mut());
    } else {
        a.par_chunks_mut(h).enumerate().with_min_len(16).for_each(|(row, ar)| {
            grn_in_place_simd(ar, &n[(row / d.t) * h..(row / d.t + 1) * h], p.w.gamma, p.w.beta);
        });
        let w2 = w.project.expect("the projection's panels for a batch");
        panels::matmul(&mut xn, View::rows(&a, rows, h), w2, false);
        residual(x, &xn, p.w.project_b, d, out.spare_capacity_mut());
    }
    // SAFETY: `residual` wrote all B·C·T floats.
    unsafe { out.set_len(rows * c) };
    out
}

/// The weights [`forward_inference`] takes in panels: the expanding layer's,
/// and for a batch of more than one utterance the projection's (one
/// utterance's GRN is folded into a copy of it instead).
pub struct InferencePanels<'a> {
    pub expand: &'a Panels,
    pub project: Option<&'a Panels>,
}

/// One utterance's GRN folded into the projection `W2 [H, C]`, written in
/// panels for the product: `w2[j, :] = W2[j, :]·(γ_j·n_j + 1)`, and the
/// returned bias `b2 + Σ_j β_j·W2[j, :]`.
fn grn_folded(p: &Params, n: &[f32], h: usize, c: usize) -> (Panels, Vec<f32>) {
    let w = p.w.project_w;
    let (w2, parts) = Panels::build(
        h,
        c,
        || vec![0.0f32; c],
        |acc, j, row| grn_fold_row_simd(row, &w[j * c..(j + 1) * c], p.w.gamma[j] * n[j] + 1.0, p.w.beta[j], acc),
    );
    let mut b2 = column_sums(&parts, c);
    b2.iter_mut().zip(p.w.project_b).for_each(|(v, &b)| *v += b);
    (w2, b2)
}

/// `dst = src·s`, `acc += β·src`: one row of [`grn_folded`], written in
/// its panels' pieces.
#[inline(always)]
fn grn_fold_row(mut dst: PanelRow, src: &[f32], s: f32, beta: f32, acc: &mut [f32]) {
    for (cols, piece) in dst.pieces() {
        for ((d, &w), a) in piece.iter_mut().zip(&src[cols.clone()]).zip(&mut acc[cols]) {
            *d = w * s;
            *a += beta * w;
        }
    }
}

simd_fn!(fn grn_fold_row_simd(dst: PanelRow, src: &[f32], s: f32, beta: f32, acc: &mut [f32]) => grn_fold_row);

/// The forward: `out [B, C, T]` from `x [B, C, T]`; `valid [B·T]` is 1 for
/// the frames GRN's norm covers and 0 for padding.
pub fn forward(x: &[f32], valid: &[f32], p: &Params, d: Dims, out: &mut [f32], s: Saved) {
    let (rows, c, h) = (d.rows(), d.c, d.h);
    let mut xn = scratch(rows * c);
    layer_norm(x, p, d, &mut xn, s.mean, s.rstd);
    matmul(s.h, View::rows(&xn, rows, c), View::rows(p.w.expand_w, c, h), false);
    bias_gelu(s.h, s.a, p.w.expand_b, h);
    grn_stats(s.a, valid, d, p.grn_eps, s.g, s.n);
    let mut r = scratch(rows * h);
    grn_apply(s.a, s.n, p, d, &mut r);
    // xn's buffer is free again: it takes the second product.
    matmul(&mut xn, View::rows(&r, rows, h), View::rows(p.w.project_w, h, c), false);
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `residual`
    // writes only initialised values.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
    residual(x, &xn, p.w.project_b, d, out);
}

/// Gradients of every input of the forward.
pub struct Grads<'a> {
    pub x: &'a mut [f32],
    pub w: FfnParams<&'a mut [f32]>,
}

/// Each parameter's size, in the order of [`FfnParams`].
fn param_sizes(d: Dims) -> impl Iterator<Item = usize> {
    FfnParams::shapes(d.c, d.h).sizes()
}

/// Number of floats [`Grads`] takes.
pub fn grads_len(d: Dims) -> usize {
    d.b * d.c * d.t + param_sizes(d).sum::<usize>()
}

/// Splits a buffer of [`grads_len`] floats into the gradients.
pub fn split_grads(buf: &mut [f32], d: Dims) -> Grads<'_> {
    let (x, rest) = buf.split_at_mut(d.b * d.c * d.t);
    Grads { x, w: FfnParams::from_values(split_sizes(rest, param_sizes(d)).into_iter()) }
}

/// `dy [B·T, C]` = `dout [B, C, T]` transposed, and `Σ dout` per channel
/// (summed over frames in order).
fn transpose_grad(dout: &[f32], d: Dims, dy: &mut [f32]) -> Vec<f32> {
    let (c, t) = (d.c, d.t);
    let sums: Vec<Vec<f32>> = dy
        .par_chunks_mut(t * c)
        .enumerate()
        .map(|(bi, dyb)| {
            let g = &dout[bi * c * t..(bi + 1) * c * t];
            let mut s = vec![0.0f32; c];
            if c % TILE == 0 {
                for c0 in (0..c).step_by(TILE) {
                    transpose_tile_simd(&g[c0 * t..(c0 + TILE) * t], &mut dyb[c0..], &mut s[c0..c0 + TILE], c, t);
                }
            } else {
                for (ch, sv) in s.iter_mut().enumerate() {
                    for ti in 0..t {
                        let v = g[ch * t + ti];
                        dyb[ti * c + ch] = v;
                        *sv += v;
                    }
                }
            }
            s
        })
        .collect();
    column_sums(&sums, c)
}

/// [`transpose_grad`] for channels `c0..c0 + TILE` of one utterance: `g`
/// `[TILE, T]`, `dy` the utterance's `[T, C]` from channel `c0`, `s` their
/// sums; eight frames at a time through a block in registers.
#[inline(always)]
fn transpose_tile(g: &[f32], dy: &mut [f32], s: &mut [f32], c: usize, t: usize) {
    let main = t - t % BLOCK;
    for t0 in (0..main).step_by(BLOCK) {
        let mut blk = [[0.0f32; BLOCK]; TILE];
        for (k, r) in blk.iter_mut().enumerate() {
            r.copy_from_slice(&g[k * t + t0..k * t + t0 + BLOCK]);
        }
        for (j, frame) in transpose_block(&blk).iter().enumerate() {
            dy[(t0 + j) * c..(t0 + j) * c + TILE].copy_from_slice(frame);
            s.iter_mut().zip(frame).for_each(|(sk, v)| *sk += v);
        }
    }
    for ti in main..t {
        for k in 0..TILE {
            let v = g[k * t + ti];
            dy[ti * c + k] = v;
            s[k] += v;
        }
    }
}
simd_fn!(fn transpose_tile_simd(g: &[f32], dy: &mut [f32], s: &mut [f32], c: usize, t: usize) => transpose_tile);

/// One row of [`grn_gelu_backward`]'s second pass: `g` (∂r) becomes ∂h,
/// added to `acc`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grn_gelu_row<const FMA: bool>(
    g: &mut [f32],
    a: &[f32],
    h: &[f32],
    n: &[f32],
    k: &[f32],
    gamma: &[f32],
    v: f32,
    acc: &mut [f32],
) {
    let w = g.len();
    let (a, h, n, k, gamma, acc) = (&a[..w], &h[..w], &n[..w], &k[..w], &gamma[..w], &mut acc[..w]);
    for j in 0..w {
        let da = g[j] * (gamma[j] * n[j] + 1.0) + v * a[j] * k[j];
        let (cdf, pdf) = cdf_pdf_with::<FMA>(h[j]);
        g[j] = da * (cdf + h[j] * pdf);
        acc[j] += g[j];
    }
}

simd_fn!(
    #[allow(clippy::too_many_arguments)]
    fn grn_gelu_row_simd(g: &mut [f32], a: &[f32], h: &[f32], n: &[f32], k: &[f32], gamma: &[f32], v: f32, acc: &mut [f32]) => fma grn_gelu_row
);

/// GRN and GELU backward in one pass: `dr` (the gradient of GRN's output)
/// becomes the gradient of `h` in place. Returns `(Σ dr·a·n, Σ dr, Σ dh)` per
/// channel, i.e. the gradients of γ, β and b1.
fn grn_gelu_backward(dr: &mut [f32], valid: &[f32], p: &Params, s: &SavedRef, d: Dims) -> [Vec<f32>; 3] {
    let h = d.h;
    let (a, hpre): (&[f32], &[f32]) = (s.a, s.h);
    // Per utterance: S = Σ_t dr·a and Σ_t dr.
    let both = sum_frames(d, 2 * h, dr, a, valid, products_simd);
    let mut dgamma = vec![0.0f32; h];
    let mut dbeta = vec![0.0f32; h];
    // k[b, j] = ∂L/∂g / g: how ‖a‖ feeds back into a.
    let mut k = vec![0.0f32; d.b * h];
    for bi in 0..d.b {
        let (sa, sb) = both[bi * 2 * h..(bi + 1) * 2 * h].split_at(h);
        let (gb, nb) = (&s.g[bi * h..(bi + 1) * h], &s.n[bi * h..(bi + 1) * h]);
        let denom = gb.iter().sum::<f32>() / h as f32 + p.grn_eps;
        // n = g / denom with denom = mean(g) + eps: ∂n_j/∂g_i = δ_ij/denom − g_j/(H·denom²).
        let dn: Vec<f32> = (0..h).map(|j| p.w.gamma[j] * sa[j]).collect();
        let cross = dn.iter().zip(gb).map(|(x, y)| x * y).sum::<f32>() / (h as f32 * denom * denom);
        for j in 0..h {
            dgamma[j] += sa[j] * nb[j];
            dbeta[j] += sb[j];
            let dg = dn[j] / denom - cross;
            k[bi * h + j] = if gb[j] > 0.0 { dg / gb[j] } else { 0.0 };
        }
    }
    let db1: Vec<Vec<f32>> = dr
        .par_chunks_mut(FRAMES * h)
        .enumerate()
        .map(|(chunk, g)| {
            let mut acc = vec![0.0f32; h];
            for (i, gr) in g.chunks_exact_mut(h).enumerate() {
                let row = chunk * FRAMES + i;
                let bi = row / d.t;
                let (nb, kb) = (&s.n[bi * h..(bi + 1) * h], &k[bi * h..(bi + 1) * h]);
                let (ar, hr) = (&a[row * h..(row + 1) * h], &hpre[row * h..(row + 1) * h]);
                grn_gelu_row_simd(gr, ar, hr, nb, kb, p.w.gamma, valid[row], &mut acc);
            }
            acc
        })
        .collect();
    [dgamma, dbeta, column_sums(&db1, h)]
}

/// LayerNorm backward plus the residual: `dx [B, C, T] = dout + ∂LN` from
/// `dxn [B·T, C]`; returns the gradients of the norm's weight and bias.
fn layer_norm_backward(
    x: &[f32],
    dout: &[f32],
    dxn: &[f32],
    p: &Params,
    s: &SavedRef,
    d: Dims,
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let (c, t) = (d.c, d.t);
    let parts: Vec<Vec<f32>> = dx
        .par_chunks_mut(c * t)
        .enumerate()
        .map(|(bi, dxb)| {
            let mut acc = vec![0.0f32; 2 * c];
            let (utt, frames) = (bi * c * t..(bi + 1) * c * t, bi * t..(bi + 1) * t);
            let stats = [&s.mean[frames.clone()], &s.rstd[frames]];
            ln_backward_simd(
                &x[utt.clone()],
                &dout[utt],
                &dxn[bi * t * c..(bi + 1) * t * c],
                stats,
                p.w.norm_w,
                dxb,
                &mut acc,
            );
            acc
        })
        .collect();
    let both = column_sums(&parts, 2 * c);
    (both[..c].to_vec(), both[c..].to_vec())
}

/// [`layer_norm_backward`] for one utterance: `x`, `dout`, `dx` `[C, T]`,
/// `dxn [T, C]`, `stats` its frames' mean and reciprocal deviation; adds
/// `Σ ∂xn·x̂` and `Σ ∂xn` per channel to `acc [2C]`.
#[inline(always)]
fn ln_backward_utt(
    x: &[f32],
    dout: &[f32],
    dxn: &[f32],
    stats: [&[f32]; 2],
    w: &[f32],
    dx: &mut [f32],
    acc: &mut [f32],
) {
    let (c, t) = (w.len(), stats[0].len());
    let (dw, db) = acc.split_at_mut(c);
    let mut gx = vec![0.0f32; c * FRAMES];
    let mut xh = vec![0.0f32; c * FRAMES];
    let inv_c = 1.0 / c as f32;
    for t0 in (0..t).step_by(FRAMES) {
        let n = FRAMES.min(t - t0);
        let (mu, rs) = (&stats[0][t0..t0 + n], &stats[1][t0..t0 + n]);
        // Channel-major tiles of ∂xn·w and x̂ for these frames.
        for ch in 0..c {
            let xr = &x[ch * t + t0..ch * t + t0 + n];
            let (gt, ht) = (&mut gx[ch * FRAMES..ch * FRAMES + n], &mut xh[ch * FRAMES..ch * FRAMES + n]);
            for i in 0..n {
                let g = dxn[(t0 + i) * c + ch];
                let xhat = (xr[i] - mu[i]) * rs[i];
                dw[ch] += g * xhat;
                db[ch] += g;
                gt[i] = g * w[ch];
                ht[i] = xhat;
            }
        }
        let (mut m1, mut m2) = ([0.0f32; FRAMES], [0.0f32; FRAMES]);
        for ch in 0..c {
            let (gt, ht) = (&gx[ch * FRAMES..ch * FRAMES + n], &xh[ch * FRAMES..ch * FRAMES + n]);
            for i in 0..n {
                m1[i] += gt[i];
                m2[i] += gt[i] * ht[i];
            }
        }
        for ch in 0..c {
            let o = ch * t + t0;
            let (gt, ht) = (&gx[ch * FRAMES..ch * FRAMES + n], &xh[ch * FRAMES..ch * FRAMES + n]);
            let (dxr, dor) = (&mut dx[o..o + n], &dout[o..o + n]);
            for i in 0..n {
                dxr[i] = dor[i] + rs[i] * (gt[i] - m1[i] * inv_c - ht[i] * m2[i] * inv_c);
            }
        }
    }
}

simd_fn!(
    fn ln_backward_simd(x: &[f32], dout: &[f32], dxn: &[f32], stats: [&[f32]; 2], w: &[f32], dx: &mut [f32], acc: &mut [f32]) => ln_backward_utt
);

/// The backward: every gradient from `dout [B, C, T]`, the forward's input
/// and what it saved.
pub fn backward(x: &[f32], valid: &[f32], p: &Params, s: &SavedRef, d: Dims, dout: &[f32], gr: Grads) {
    let (rows, c, h) = (d.rows(), d.c, d.h);
    let mut dy = scratch(rows * c);
    gr.w.project_b.copy_from_slice(&transpose_grad(dout, d, &mut dy));
    // ∂W2 = rᵀ·dy, with r recomputed; then r's buffer takes ∂r = dy·W2ᵀ.
    let mut r = scratch(rows * h);
    grn_apply(s.a, s.n, p, d, &mut r);
    matmul(gr.w.project_w, View::rows(&r, rows, h).t(), View::rows(&dy, rows, c), false);
    let w2t = transposed(p.w.project_w, h, c);
    matmul(&mut r, View::rows(&dy, rows, c), View::rows(&w2t, c, h), false);
    let [dgamma, dbeta, db1] = grn_gelu_backward(&mut r, valid, p, s, d);
    gr.w.gamma.copy_from_slice(&dgamma);
    gr.w.beta.copy_from_slice(&dbeta);
    gr.w.expand_b.copy_from_slice(&db1);
    // ∂W1 = xnᵀ·dh needs xn, recomputed from x and the saved statistics.
    let mut xn = scratch(rows * c);
    renormalise(x, p, s, d, &mut xn);
    matmul(gr.w.expand_w, View::rows(&xn, rows, c).t(), View::rows(&r, rows, h), false);
    // dy's buffer takes ∂xn = dh·W1ᵀ.
    let w1t = transposed(p.w.expand_w, c, h);
    matmul(&mut dy, View::rows(&r, rows, h), View::rows(&w1t, h, c), false);
    let (dw, db) = layer_norm_backward(x, dout, &dy, p, s, d, gr.x);
    gr.w.norm_w.copy_from_slice(&dw);
    gr.w.norm_b.copy_from_slice(&db);
}

/// LayerNorm's output from the saved statistics (as [`layer_norm`] computed it).
fn renormalise(x: &[f32], p: &Params, s: &SavedRef, d: Dims, xn: &mut [f32]) {
    let (c, t) = (d.c, d.t);
    xn.par_chunks_mut(t * c).enumerate().for_each(|(bi, xn_b)| {
        let xb = &x[bi * c * t..(bi + 1) * c * t];
        xn_b.par_chunks_mut(FRAMES * c).enumerate().for_each(|(chunk, xn_c)| {
            let frames = bi * t + chunk * FRAMES..bi * t + chunk * FRAMES + xn_c.len() / c;
            let (mu, rs) = (&s.mean[frames.clone()], &s.rstd[frames]);
            write_normalised_simd(xb, chunk * FRAMES, p, c, t, xn_c, mu, rs);
        });
    });
}

simd_fn!(
    #[allow(clippy::too_many_arguments)]
    fn write_normalised_simd(xb: &[f32], t0: usize, p: &Params, c: usize, t: usize, xn: &mut [f32], mu: &[f32], rs: &[f32]) => write_normalised
);
