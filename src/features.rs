//! The log-mel front end, on the device (see docs/MODEL.md, 'Front end').
//!
//! waveform `[B, L]` → pre-emphasis (reflect pad 1) → centred STFT (reflect
//! pad n_fft/2, periodic Hamming window zero-padded to n_fft) → power → HTK mel
//! filterbank (no normalisation) → ln(x + offset) → minus the mean over time →
//! `[B, n_mels, T]` with `T = 1 + L / hop`.

use burn::tensor::signal::{stft, StftOptions};
use burn::tensor::{Device, Tensor, TensorData};

use crate::config::FrontendConfig;
use crate::ops::frontend::cpu::CpuFrontend;

/// The front end with its window and filterbank resident on the device.
#[derive(Debug, Clone)]
pub struct Frontend {
    pub cfg: FrontendConfig,
    window: Tensor<1>,
    filterbank: Tensor<2>,
    cpu: CpuFrontend,
    /// For the CubeCL kernels: the window centred in `n_fft` zeros, and each
    /// mel band's non-zero bin range `[n_mels, 2]`.
    window_padded: Tensor<1>,
    bands: Tensor<2>,
}

impl Frontend {
    pub fn new(cfg: &FrontendConfig, device: &Device) -> Self {
        let hamming = hamming_periodic(cfg.win_length);
        let fb = mel_filterbank(cfg);
        let cpu = CpuFrontend::new(cfg, &hamming, &fb);
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
    pub fn host(&self) -> &CpuFrontend {
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
