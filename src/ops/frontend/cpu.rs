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

    /// Windowed frame `t` of the pre-emphasised, reflect-padded signal `y`.
    fn frame(&self, y: &[f32], t: usize, out: &mut [f32]) {
        let (n_fft, pad) = (self.cfg.n_fft, self.cfg.n_fft / 2);
        let l = y.len() as isize;
        let start = (t * self.cfg.hop_length) as isize - pad as isize;
        for (n, o) in out.iter_mut().enumerate().take(n_fft) {
            let mut j = start + n as isize;
            if j < 0 {
                j = -j;
            } else if j >= l {
                j = 2 * (l - 1) - j;
            }
            *o = y[j as usize] * self.window[n];
        }
    }

    /// Log-mel energies of one power spectrum, into `out[m]`.
    fn mel(&self, power: &[f32], out: &mut [f32]) {
        for (o, (first, w)) in out.iter_mut().zip(&self.bands) {
            let e: f32 = power[*first..*first + w.len()].iter().zip(w).map(|(p, w)| p * w).sum();
            *o = (e + self.cfg.log_offset as f32).ln();
        }
    }

    /// `[B, L]` row-major waveforms → (`[B, n_mels, T]` row-major, `T`).
    pub fn logmel(&self, wav: &[f32], batch: usize, len: usize) -> (Vec<f32>, usize) {
        let cfg = &self.cfg;
        let (n_fft, n_mels) = (cfg.n_fft, cfg.n_mels);
        let n_freqs = n_fft / 2 + 1;
        let t = self.cfg.num_frames(len);
        let coef = cfg.pre_emphasis as f32;
        // Pre-emphasis with x[-1] := x[1].
        let pre: Vec<f32> = (0..batch)
            .flat_map(|b| {
                let x = &wav[b * len..(b + 1) * len];
                (0..len).map(move |n| x[n] - coef * x[if n == 0 { 1 } else { n - 1 }])
            })
            .collect();
        // Frame pairs (p = 2i, 2i+1 over all rows' frames) → [B·T, n_mels] log-mel.
        let total = batch * t;
        let mut logmel = vec![0.0f32; total * n_mels];
        logmel.par_chunks_mut(2 * n_mels).enumerate().for_each_init(
            || (vec![Complex32::default(); n_fft], vec![0.0f32; n_fft], vec![0.0f32; n_fft], vec![0.0f32; 2 * n_freqs]),
            |(buf, fa, fb, power), (pair, out)| {
                let first = 2 * pair;
                let has_second = first + 1 < total;
                self.frame(&pre[(first / t) * len..(first / t + 1) * len], first % t, fa);
                if has_second {
                    let s = first + 1;
                    self.frame(&pre[(s / t) * len..(s / t + 1) * len], s % t, fb);
                } else {
                    fb.iter_mut().for_each(|v| *v = 0.0);
                }
                for n in 0..n_fft {
                    buf[n] = Complex32::new(fa[n], fb[n]);
                }
                self.fft.process(buf);
                // Split Z = FFT(a + ib): A_k = (Z_k + conj Z_{N-k})/2, B_k = (Z_k - conj Z_{N-k})/2i.
                let (pa, pb) = power.split_at_mut(n_freqs);
                for k in 0..n_freqs {
                    let z = buf[k];
                    let zc = buf[(n_fft - k) % n_fft].conj();
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
        out.par_chunks_mut(t * n_mels).enumerate().for_each(|(b, ob)| {
            let rows = &logmel[b * t * n_mels..(b + 1) * t * n_mels];
            for m in 0..n_mels {
                let mean = (0..t).map(|i| rows[i * n_mels + m] as f64).sum::<f64>() / t as f64;
                for i in 0..t {
                    ob[m * t + i] = rows[i * n_mels + m] - mean as f32;
                }
            }
        });
        (out, t)
    }
}
