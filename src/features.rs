//! The log-mel front end, on the device (see docs/MODEL.md, 'Front end').
//!
//! waveform `[B, L]` → pre-emphasis (reflect pad 1) → centred STFT (reflect
//! pad n_fft/2, periodic Hamming window zero-padded to n_fft) → power → HTK mel
//! filterbank (no normalisation) → ln(x + offset) → minus the mean over time →
//! `[B, n_mels, T]` with `T = 1 + L / hop`.

use burn::tensor::signal::{stft, StftOptions};
use burn::tensor::{Device, Tensor, TensorData};

use crate::config::FrontendConfig;

/// The front end with its window and filterbank resident on the device.
#[derive(Debug, Clone)]
pub struct Frontend {
    pub cfg: FrontendConfig,
    window: Tensor<1>,
    filterbank: Tensor<2>,
    cpu: cpu::CpuFrontend,
    /// For the CubeCL kernels: the window centred in `n_fft` zeros, and each
    /// mel band's non-zero bin range `[n_mels, 2]`.
    window_padded: Tensor<1>,
    bands: Tensor<2>,
}

impl Frontend {
    pub fn new(cfg: &FrontendConfig, device: &Device) -> Self {
        let hamming = hamming_periodic(cfg.win_length);
        let fb = mel_filterbank(cfg);
        let cpu = cpu::CpuFrontend::new(cfg, &hamming, &fb);
        let window = Tensor::from_data(TensorData::new(hamming, [cfg.win_length]), device);
        let n_freqs = cfg.n_fft / 2 + 1;
        let filterbank = Tensor::from_data(TensorData::new(fb, [n_freqs, cfg.n_mels]), device);
        let window_padded = Tensor::from_data(TensorData::new(cpu.window().to_vec(), [cfg.n_fft]), device);
        let bands: Vec<f32> =
            cpu.bands().iter().flat_map(|(first, w)| [*first as f32, (first + w.len()) as f32]).collect();
        let bands = Tensor::from_data(TensorData::new(bands, [cfg.n_mels, 2]), device);
        Self { cfg: cfg.clone(), window, filterbank, cpu, window_padded, bands }
    }

    /// The fused CPU front end, for features computed on the host whatever
    /// the device (worker threads of batched embedding).
    pub fn host(&self) -> &cpu::CpuFrontend {
        &self.cpu
    }

    /// Pre-emphasis `y[n] = x[n] - coef·x[n-1]`, with `x[-1] := x[1]`. `[B, L] -> [B, L]`
    pub fn pre_emphasis(&self, wav: Tensor<2>) -> Tensor<2> {
        let [_, l] = wav.dims();
        let prev = Tensor::cat(vec![wav.clone().narrow(1, 1, 1), wav.clone().narrow(1, 0, l - 1)], 1);
        wav - prev.mul_scalar(self.cfg.pre_emphasis)
    }

    /// Power spectrogram `|STFT|²` of an already pre-emphasised signal. `[B, L] -> [B, T, F]`
    pub fn power(&self, pre: Tensor<2>) -> Tensor<3> {
        let opts = StftOptions {
            n_fft: self.cfg.n_fft,
            hop_length: self.cfg.hop_length,
            win_length: Some(self.cfg.win_length),
            center: true,
            onesided: true,
        };
        let spec = stft(pre, Some(self.window.clone()), opts); // [B, T, F, 2]
        let [b, t, f, _] = spec.dims();
        spec.powi_scalar(2).sum_dim(3).reshape([b, t, f])
    }

    /// Mel energies. `[B, T, F] -> [B, T, n_mels]`
    pub fn mel(&self, power: Tensor<3>) -> Tensor<3> {
        power.matmul(self.filterbank.clone().unsqueeze::<3>())
    }

    /// Full front end. `[B, L] -> [B, n_mels, T]`
    ///
    /// On the CPU backend it runs as one fused pass per frame ([`cpu`]), on
    /// the CubeCL backends as our kernels (`shaders/frontend.rs`), elsewhere
    /// as tensor operations on the device.
    pub fn forward(&self, wav: Tensor<2>) -> Tensor<3> {
        let device = wav.device();
        if crate::ops::is_cpu(&device) {
            let [b, l] = wav.dims();
            let samples = wav.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 waveform");
            let (out, t) = self.cpu.logmel(&samples, b, l);
            return Tensor::from_data(TensorData::new(out, [b, self.cfg.n_mels, t]), &device);
        }
        #[cfg(feature = "kernels")]
        if crate::ops::has_kernel(&device) && !crate::ops::generic() {
            let c = &self.cfg;
            let lm = crate::ops::frontend::logmel(
                wav,
                self.window_padded.clone(),
                self.filterbank.clone(),
                self.bands.clone(),
                c.n_fft,
                c.hop_length,
                c.pre_emphasis as f32,
                c.log_offset as f32,
            );
            return lm.clone() - lm.mean_dim(2);
        }
        self.forward_tensor(wav)
    }

    /// The front end as tensor operations, on any device. `[B, L] -> [B, n_mels, T]`
    pub fn forward_tensor(&self, wav: Tensor<2>) -> Tensor<3> {
        let mel = self.mel(self.power(self.pre_emphasis(wav)));
        let logmel = mel.add_scalar(self.cfg.log_offset).log();
        let centred = logmel.clone() - logmel.mean_dim(1);
        centred.swap_dims(1, 2)
    }
}

/// Periodic Hamming window, `0.54 - 0.46·cos(2πn/N)`, n = 0..N-1.
pub fn hamming_periodic(n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.54 - 0.46 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32).collect()
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

/// HTK mel filterbank without normalisation, `[n_fft/2 + 1, n_mels]` row-major.
///
/// `n_mels + 2` points equally spaced on the mel scale between mel(f_min) and
/// mel(f_max), converted back to Hz; triangles of peak 1 over the linearly
/// spaced FFT bins. Computed in float64: the reference builds its buffer in
/// float32, and the two differ by under 1e-5 (see docs/MODEL.md, 'Front end').
pub fn mel_filterbank(cfg: &FrontendConfig) -> Vec<f32> {
    let n_freqs = cfg.n_fft / 2 + 1;
    let n_pts = cfg.n_mels + 2;
    let nyquist = (cfg.sample_rate / 2) as f64;
    let (m_lo, m_hi) = (hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max));
    let f_pts: Vec<f64> = (0..n_pts)
        .map(|i| m_lo + (m_hi - m_lo) * i as f64 / (n_pts - 1) as f64)
        .map(|m| 700.0 * (10f64.powf(m / 2595.0) - 1.0))
        .collect();
    let mut fb = vec![0.0f32; n_freqs * cfg.n_mels];
    for i in 0..n_freqs {
        let f = nyquist * i as f64 / (n_freqs - 1) as f64;
        for m in 0..cfg.n_mels {
            let down = (f - f_pts[m]) / (f_pts[m + 1] - f_pts[m]);
            let up = (f_pts[m + 2] - f) / (f_pts[m + 2] - f_pts[m + 1]);
            fb[i * cfg.n_mels + m] = down.min(up).max(0.0) as f32;
        }
    }
    fb
}

/// The front end fused per frame on the CPU, by hand: as tensor operations it
/// makes a dozen passes over `[B, T, n_fft]`-sized buffers (padding, framing,
/// the FFT's real/imaginary split, squares, a dense product with a filterbank
/// that is mostly zeros); here each frame is windowed, transformed (two real
/// frames per complex FFT, with `rustfft`), squared and reduced to mel bands
/// while it is in cache, and frames run in parallel.
pub mod cpu {
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
                || {
                    (
                        vec![Complex32::default(); n_fft],
                        vec![0.0f32; n_fft],
                        vec![0.0f32; n_fft],
                        vec![0.0f32; 2 * n_freqs],
                    )
                },
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
}
