//! Online waveform augmentation (see docs/MODEL.md, 'Augmentation'):
//! reverberation with simulated room impulse responses, and additive MUSAN
//! music, babble, noise and "television" (babble + music), each with equal
//! probability as clean.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use rand::{Rng, RngExt};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use super::wav::read_wav;
use crate::config::AugmentConfig;

/// The treatments, drawn uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugKind {
    Clean,
    Reverb,
    Music,
    Babble,
    Noise,
    Television,
}

const KINDS: [AugKind; 6] =
    [AugKind::Clean, AugKind::Reverb, AugKind::Music, AugKind::Babble, AugKind::Noise, AugKind::Television];

/// Noise and impulse-response files.
///
/// MUSAN files are classified by the first path component under the root
/// that is `noise`, `speech` or `music`; this covers the split layout
/// `musan_split/<type>/<source>/<file>/<start>.wav` and flat `<type>/*.wav`
/// trees. Every `.wav` under the RIR root is an impulse response (point it at
/// `RIRS_NOISES/simulated_rirs` or a folder with the chosen rooms).
#[derive(Debug, Clone, Default)]
pub struct NoiseBank {
    pub noise: Vec<PathBuf>,
    pub speech: Vec<PathBuf>,
    pub music: Vec<PathBuf>,
    pub rirs: Vec<PathBuf>,
}

fn wavs_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            wavs_under(&p, out)?;
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("wav")) {
            out.push(p);
        }
    }
    Ok(())
}

impl NoiseBank {
    pub fn scan(musan: &Path, rir: &Path) -> Result<Self> {
        let mut bank = NoiseBank::default();
        let mut files = vec![];
        wavs_under(musan, &mut files)?;
        for f in files {
            let rel = f.strip_prefix(musan).unwrap_or(&f);
            let kind = rel.components().find_map(|c| match c.as_os_str().to_str() {
                Some("noise") => Some(0),
                Some("speech") => Some(1),
                Some("music") => Some(2),
                _ => None,
            });
            match kind {
                Some(0) => bank.noise.push(f),
                Some(1) => bank.speech.push(f),
                Some(2) => bank.music.push(f),
                _ => {}
            }
        }
        wavs_under(rir, &mut bank.rirs)?;
        for (name, v) in [("noise", &bank.noise), ("speech", &bank.speech), ("music", &bank.music)] {
            if v.is_empty() {
                bail!("{}: no '{name}' files found (expected <root>/{name}/... .wav)", musan.display());
            }
        }
        if bank.rirs.is_empty() {
            bail!("{}: no impulse responses (.wav) found", rir.display());
        }
        for v in [&mut bank.noise, &mut bank.speech, &mut bank.music, &mut bank.rirs] {
            v.sort();
        }
        log::info!(
            "augmentation: {} noise, {} speech, {} music files, {} impulse responses",
            bank.noise.len(),
            bank.speech.len(),
            bank.music.len(),
            bank.rirs.len()
        );
        Ok(bank)
    }
}

/// A crop of `len` samples: wrap-padded when the audio is not longer, else
/// starting at `floor(U·(n − len))`.
pub fn crop(audio: &[f32], len: usize, rng: &mut impl Rng) -> Vec<f32> {
    let n = audio.len();
    if n <= len {
        (0..len).map(|i| audio[i % n]).collect()
    } else {
        let start = (rng.random::<f64>() * (n - len) as f64) as usize;
        audio[start..start + len].to_vec()
    }
}

fn energy_db(x: &[f32], floor: f64) -> f64 {
    let mean = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64;
    10.0 * (mean + floor).log10()
}

/// Decoded noise and impulse-response files, kept in memory within a budget
/// and shared by the loader threads: each training crop reads one to seven of
/// them, and the same few thousand files come back all the time.
#[derive(Debug)]
pub struct AudioCache {
    files: Mutex<HashMap<PathBuf, Arc<Vec<f32>>>>,
    /// Bytes of samples still allowed in.
    room: Mutex<usize>,
    /// Longest file kept, in samples.
    max_samples: usize,
}

impl AudioCache {
    /// A cache of at most `budget_bytes` of samples, holding files of at most
    /// `max_samples` samples (longer ones are read at every use).
    pub fn new(budget_bytes: usize, max_samples: usize) -> Self {
        Self { files: Mutex::new(HashMap::new()), room: Mutex::new(budget_bytes), max_samples }
    }

    /// The default for training: 1 GiB, files up to 30 s at `sample_rate`.
    pub fn for_training(sample_rate: u32) -> Self {
        Self::new(1 << 30, 30 * sample_rate as usize)
    }

    fn get(&self, path: &Path, sample_rate: u32) -> Result<Arc<Vec<f32>>> {
        if let Some(v) = self.files.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
            return Ok(v.clone());
        }
        let samples = Arc::new(read_wav(path, sample_rate, 1)?.samples);
        let bytes = samples.len() * std::mem::size_of::<f32>();
        if samples.len() <= self.max_samples {
            let mut room = self.room.lock().unwrap_or_else(|e| e.into_inner());
            if *room >= bytes {
                let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
                if files.insert(path.to_path_buf(), samples.clone()).is_none() {
                    *room -= bytes;
                }
            }
        }
        Ok(samples)
    }
}

/// Applies the augmentation.
pub struct Augmenter {
    pub bank: NoiseBank,
    pub cfg: AugmentConfig,
    pub sample_rate: u32,
    pub cache: AudioCache,
}

impl Augmenter {
    fn load(&self, path: &Path, len: usize, rng: &mut impl Rng) -> Result<Vec<f32>> {
        let w = self.cache.get(path, self.sample_rate)?;
        Ok(crop(&w, len, rng))
    }

    /// Adds `count` files of `pool` at SNRs drawn from `snr`, relative to `x`.
    fn add_noise(
        &self,
        x: &mut [f32],
        pool: &[PathBuf],
        count: usize,
        snr: (f64, f64),
        rng: &mut impl Rng,
    ) -> Result<()> {
        let clean_db = energy_db(x, self.cfg.energy_floor);
        let mut total = vec![0.0f32; x.len()];
        for _ in 0..count {
            let f = &pool[rng.random_range(0..pool.len())];
            let noise = self.load(f, x.len(), rng)?;
            let s = rng.random_range(snr.0..=snr.1);
            let noise_db = energy_db(&noise, self.cfg.energy_floor);
            let gain = (10f64.powf((clean_db - noise_db - s) / 10.0)).sqrt() as f32;
            for (t, n) in total.iter_mut().zip(&noise) {
                *t += gain * n;
            }
        }
        for (v, t) in x.iter_mut().zip(&total) {
            *v += t;
        }
        Ok(())
    }

    fn babble(&self, x: &mut [f32], rng: &mut impl Rng) -> Result<()> {
        let (lo, hi) = self.cfg.babble_speakers;
        let n = rng.random_range(lo..=hi);
        self.add_noise(x, &self.bank.speech, n, self.cfg.babble_snr_db, rng)
    }

    fn music(&self, x: &mut [f32], rng: &mut impl Rng) -> Result<()> {
        self.add_noise(x, &self.bank.music, 1, self.cfg.music_snr_db, rng)
    }

    /// Reverberation: the impulse response scaled to unit energy, full linear
    /// convolution, truncated to the first `len` samples.
    fn reverb(&self, x: &mut [f32], rng: &mut impl Rng) -> Result<()> {
        let f = &self.bank.rirs[rng.random_range(0..self.bank.rirs.len())];
        let rir = self.cache.get(f, self.sample_rate)?;
        let norm = rir.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
        let h: Vec<f32> = rir.iter().map(|v| (*v as f64 / norm) as f32).collect();
        let y = convolve_truncated(x, &h);
        x.copy_from_slice(&y);
        Ok(())
    }

    /// Draws a treatment and applies it in place.
    pub fn apply(&self, x: &mut [f32], rng: &mut impl Rng) -> Result<AugKind> {
        let kind = KINDS[rng.random_range(0..KINDS.len())];
        match kind {
            AugKind::Clean => {}
            AugKind::Reverb => self.reverb(x, rng)?,
            AugKind::Music => self.music(x, rng)?,
            AugKind::Babble => self.babble(x, rng)?,
            AugKind::Noise => self.add_noise(x, &self.bank.noise, 1, self.cfg.noise_snr_db, rng)?,
            AugKind::Television => {
                self.babble(x, rng)?;
                self.music(x, rng)?;
            }
        }
        Ok(kind)
    }
}

thread_local! {
    /// One planner per thread: it keeps the plans of the sizes it has made,
    /// so each loader thread plans each FFT size once.
    static PLANNER: RefCell<FftPlanner<f64>> = RefCell::new(FftPlanner::new());
}

/// First `x.len()` samples of the full convolution `x * h`, through an FFT
/// (direct convolution with second-long responses is too slow per crop).
pub fn convolve_truncated(x: &[f32], h: &[f32]) -> Vec<f32> {
    let n = (x.len() + h.len() - 1).next_power_of_two();
    let (fwd, inv) = PLANNER.with(|p| {
        let mut p = p.borrow_mut();
        (p.plan_fft_forward(n), p.plan_fft_inverse(n))
    });
    let spec = |v: &[f32]| {
        let mut b: Vec<Complex<f64>> = v.iter().map(|&s| Complex::new(s as f64, 0.0)).collect();
        b.resize(n, Complex::new(0.0, 0.0));
        fwd.process(&mut b);
        b
    };
    let (a, b) = (spec(x), spec(h));
    let mut prod: Vec<Complex<f64>> = a.iter().zip(&b).map(|(p, q)| p * q).collect();
    inv.process(&mut prod);
    prod[..x.len()].iter().map(|c| (c.re / n as f64) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn fft_convolution_matches_direct() {
        let x: Vec<f32> = (0..300).map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0).collect();
        let h: Vec<f32> = (0..45).map(|i| (0.9f32).powi(i) * if i % 3 == 0 { 1.0 } else { -0.5 }).collect();
        let y = convolve_truncated(&x, &h);
        for n in 0..x.len() {
            let direct: f64 = (0..h.len()).filter(|&k| k <= n).map(|k| x[n - k] as f64 * h[k] as f64).sum();
            assert!((y[n] as f64 - direct).abs() < 1e-5, "{n}");
        }
    }

    #[test]
    fn crop_wraps_short_audio() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(crop(&[1.0, 2.0, 3.0], 7, &mut rng), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0]);
        let long: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let c = crop(&long, 10, &mut rng);
        assert_eq!(c.len(), 10);
        assert_eq!(c[1] - c[0], 1.0);
    }

    #[test]
    fn snr_is_as_drawn() {
        // The augmenter mixes one noise file at an SNR fixed to 10 dB: the
        // added signal's energy is 10 dB below the speech's (both loud
        // enough for the energy floor to be negligible).
        let dir = std::env::temp_dir().join(format!("nexttdnn-snr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let noise_file = dir.join("noise.wav");
        let noise: Vec<f32> = (0..16000).map(|i| (i * 7919 % 1000) as f32 / 1000.0 - 0.5).collect();
        crate::audio::wav::write_wav_i16(&noise_file, &noise, 16000).unwrap();
        let cfg = AugmentConfig {
            enabled: true,
            music_snr_db: (5.0, 15.0),
            babble_snr_db: (13.0, 20.0),
            babble_speakers: (3, 7),
            noise_snr_db: (10.0, 10.0),
            energy_floor: 1e-4,
        };
        let bank = NoiseBank { noise: vec![noise_file], speech: vec![], music: vec![], rirs: vec![] };
        let aug = Augmenter { bank, cfg, sample_rate: 16000, cache: AudioCache::for_training(16000) };
        let clean: Vec<f32> = (0..16000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let mut x = clean.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        aug.add_noise(&mut x, &aug.bank.noise, 1, aug.cfg.noise_snr_db, &mut rng).unwrap();
        let added: Vec<f32> = x.iter().zip(&clean).map(|(a, b)| a - b).collect();
        let got = energy_db(&clean, 1e-4) - energy_db(&added, 0.0);
        assert!((got - 10.0).abs() < 0.05, "{got}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
