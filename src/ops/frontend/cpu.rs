//! The front end fused per frame on the CPU, by hand: as tensor operations it
//! makes a dozen passes over `[B, T, n_fft]`-sized buffers (padding, framing,
//! the FFT's real/imaginary split, squares, a dense product with a filterbank
//! that is mostly zeros); here each frame is windowed, transformed (two real
//! frames per complex FFT, with `rustfft`), squared and reduced to mel bands
//! while it is in cache, and frames run in parallel.

use std::sync::Arc;

use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

use crate::config::FrontendConfig;
use crate::ops::fastmath::ln_pos;
use crate::ops::simd::simd_fn;

/// Plans, the padded window and the filterbank's non-zero bands.
#[derive(Clone)]
pub struct CpuFrontend {
    cfg: FrontendConfig,
    fft: Arc<dyn Fft<f32>>,
    /// The window centred in `n_fft` zeros.
    window: Vec<f32>,
    /// Per mel band: first bin and the weights of its bins.
    bands: Vec<(usize, Vec<f32>)>,
}

impl std::fmt::Debug for CpuFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuFrontend").field("n_fft", &self.cfg.n_fft).finish()
    }
}

impl CpuFrontend {
    /// `window` of `win_length`, `filterbank` `[n_fft/2+1, n_mels]` row-major.
    pub fn new(cfg: &FrontendConfig, window: &[f32], filterbank: &[f32]) -> Self {
        let n_fft = cfg.n_fft;
        let mut padded = vec![0.0f32; n_fft];
        let left = (n_fft - window.len()) / 2;
        padded[left..left + window.len()].copy_from_slice(window);
        let n_freqs = n_fft / 2 + 1;
        let bands = (0..cfg.n_mels)
            .map(|m| {
                let col: Vec<f32> = (0..n_freqs).map(|k| filterbank[k * cfg.n_mels + m]).collect();
                let first = col.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = col.iter().rposition(|&w| w != 0.0).map_or(first, |i| i + 1);
                (first, col[first..last.max(first)].to_vec())
            })
            .collect();
        let fft = FftPlanner::new().plan_fft_forward(n_fft);
        Self { cfg: cfg.clone(), fft, window: padded, bands }
    }

    /// The window centred in `n_fft` zeros.
    pub fn window(&self) -> &[f32] {
        &self.window
    }

    /// Per mel band: its first non-zero bin and the weights from there.
    pub fn bands(&self) -> &[(usize, Vec<f32>)] {
        &self.bands
    }

    /// Frame `t` of the pre-emphasised, reflect-padded signal `y` (not yet
    /// windowed): a slice of `y` itself where the frame lies inside it, else
    /// gathered with the reflection into `edge`.
    fn frame<'a>(&self, y: &'a [f32], t: usize, edge: &'a mut [f32]) -> &'a [f32] {
        let (n_fft, pad) = (self.cfg.n_fft, self.cfg.n_fft / 2);
        let start = t * self.cfg.hop_length;
        if start >= pad && start - pad + n_fft <= y.len() {
            return &y[start - pad..start - pad + n_fft];
        }
        let l = y.len() as isize;
        for (n, o) in edge.iter_mut().enumerate().take(n_fft) {
            let mut j = (start + n) as isize - pad as isize;
            if j < 0 {
                j = -j;
            } else if j >= l {
                j = 2 * (l - 1) - j;
            }
            *o = y[j as usize];
        }
        edge
    }

    /// Log-mel energies of one power spectrum, into `out[m]`.
    fn mel(&self, power: &[f32], out: &mut [f32]) {
        for (o, (first, w)) in out.iter_mut().zip(&self.bands) {
            let e: f32 = power[*first..*first + w.len()].iter().zip(w).map(|(p, w)| p * w).sum();
            *o = e + self.cfg.log_offset as f32;
        }
        ln_in_place_simd(out);
    }

    /// `[B, L]` row-major waveforms → (`[B, n_mels, T]` row-major, `T`).
    pub fn logmel(&self, wav: &[f32], batch: usize, len: usize) -> (Vec<f32>, usize) {
        let cfg = &self.cfg;
        let (n_fft, n_mels) = (cfg.n_fft, cfg.n_mels);
        let n_freqs = n_fft / 2 + 1;
        let t = self.cfg.num_frames(len);
        let pre = pre_emphasis(wav, len, cfg.pre_emphasis as f32);
        // Frame pairs (p = 2i, 2i+1 over all rows' frames) → [B·T, n_mels] log-mel.
        let total = batch * t;
        let mut logmel = vec![0.0f32; total * n_mels];
        logmel.par_chunks_mut(2 * n_mels).enumerate().for_each_init(
            || (vec![Complex32::default(); n_fft], vec![0.0f32; n_fft], vec![0.0f32; n_fft], vec![0.0f32; 2 * n_freqs]),
            |(buf, ea, eb, power), (pair, out)| {
                let first = 2 * pair;
                let has_second = first + 1 < total;
                let fa = self.frame(&pre[(first / t) * len..(first / t + 1) * len], first % t, ea);
                if has_second {
                    let s = first + 1;
                    let fb = self.frame(&pre[(s / t) * len..(s / t + 1) * len], s % t, eb);
                    for (((z, &a), &b), &w) in buf.iter_mut().zip(fa).zip(fb).zip(&self.window) {
                        *z = Complex32::new(a * w, b * w);
                    }
                } else {
                    for ((z, &a), &w) in buf.iter_mut().zip(fa).zip(&self.window) {
                        *z = Complex32::new(a * w, 0.0);
                    }
                }
                self.fft.process(buf);
                // Split Z = FFT(a + ib): A_k = (Z_k + conj Z_{N-k})/2, B_k = (Z_k - conj Z_{N-k})/2i.
                let (pa, pb) = power.split_at_mut(n_freqs);
                // Z_{N-k} for k = 0..=N/2: Z_0, then Z_{N-1} down to Z_{N/2}.
                let mirror = std::iter::once(buf[0]).chain(buf[n_fft / 2..].iter().rev().copied());
                for ((k, &z), zn) in buf[..n_freqs].iter().enumerate().zip(mirror) {
                    let zc = zn.conj();
                    let a = (z + zc) * 0.5;
                    let d = z - zc;
                    let bk = Complex32::new(d.im * 0.5, -d.re * 0.5);
                    pa[k] = a.norm_sqr();
                    pb[k] = bk.norm_sqr();
                }
                let (oa, ob) = out.split_at_mut(n_mels.min(out.len()));
                self.mel(pa, oa);
                if has_second {
                    self.mel(pb, ob);
                }
            },
        );
        // Subtract each band's mean over time; transpose to [B, n_mels, T].
        let mut out = vec![0.0f32; total * n_mels];
        out.par_chunks_mut(t * n_mels).zip(logmel.par_chunks(t * n_mels)).for_each(|(ob, rows)| {
            let mut mean = vec![0.0f64; n_mels];
            for row in rows.chunks(n_mels) {
                mean.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
            }
            ob.par_chunks_mut(t).zip(mean).enumerate().with_min_len(8).for_each(|(m, (band, s))| {
                let mean = (s / t as f64) as f32;
                band.iter_mut().zip(rows[m..].iter().step_by(n_mels)).for_each(|(o, &v)| *o = v - mean);
            });
        });
        (out, t)
    }
}

/// `y[n] = x[n] − c·x[n−1]` per row of `L` samples, with `x[−1] := x[1]`.
fn pre_emphasis(wav: &[f32], len: usize, coef: f32) -> Vec<f32> {
    let mut pre = vec![0.0f32; wav.len()];
    pre.par_chunks_mut(len).zip(wav.par_chunks(len)).for_each(|(y, x)| {
        y[0] = x[0] - coef * x[1];
        y[1..].iter_mut().zip(x[1..].iter().zip(x)).for_each(|(o, (&v, &prev))| *o = v - coef * prev);
    });
    pre
}

#[inline(always)]
fn ln_in_place<const FMA: bool>(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = ln_pos::<FMA>(*v));
}

simd_fn!(fn ln_in_place_simd(x: &mut [f32]) => fma ln_in_place);
