//! Audio input: reading and checking WAV files.

#[cfg(feature = "cli")]
pub mod augment;
#[cfg(feature = "cli")]
pub mod m4a;
pub mod wav;

pub use wav::{decode_wav, read_file, read_wav, AudioError, Waveform};

/// Below this RMS (-80 dBFS) a recording is taken as (nearly) silent.
pub const SILENCE_RMS: f64 = 1e-4;
/// Above this peak (+60 dBFS) samples are far outside the [-1, 1] of a
/// float WAV: the file was written unscaled, and its power spectrum may
/// overflow float32.
pub const MAX_PEAK: f64 = 1e3;

/// Loudness of a recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub rms: f64,
    pub peak: f64,
}

impl Level {
    pub fn of(samples: &[f32]) -> Self {
        let (mut energy, mut peak) = (0.0f64, 0.0f64);
        for &x in samples {
            energy += (x as f64) * (x as f64);
            peak = peak.max((x as f64).abs());
        }
        Self { rms: (energy / samples.len().max(1) as f64).sqrt(), peak }
    }

    /// Why the recording is unfit for training, if it is: silence or
    /// unscaled samples.
    pub fn problem(&self) -> Option<String> {
        self.silence().or_else(|| self.unscaled())
    }

    /// The recording is (nearly) silent.
    pub fn silence(&self) -> Option<String> {
        (self.rms < SILENCE_RMS).then(|| {
            let db = if self.rms > 0.0 {
                format!("RMS {:.1} dBFS", 20.0 * self.rms.log10())
            } else {
                "digital silence".into()
            };
            format!("the recording is (nearly) silent ({db})")
        })
    }

    /// The samples lie far outside [-1, 1].
    pub fn unscaled(&self) -> Option<String> {
        (self.peak > MAX_PEAK).then(|| {
            format!(
                "the samples reach {:.1e}, far outside [-1, 1]: float WAV samples must be scaled to [-1, 1]",
                self.peak
            )
        })
    }
}
