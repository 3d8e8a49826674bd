//! WAV reading with hound.
//!
//! Samples are scaled to [-1, 1) exactly as libsndfile does for the official
//! loader (`int16 / 32768`, `int24 / 2^23`, ...). Stereo and multi-channel
//! files are down-mixed to mono by averaging, with a warning. Files at another
//! sample rate are rejected with a message that says how to convert them:
//! resampling silently would change the features the model was trained on.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Mono audio at a known sample rate.
#[derive(Debug, Clone)]
pub struct Waveform {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

/// Everything that can be wrong with an audio file.
#[derive(Debug, Error)]
pub enum AudioError {
    #[error("{path}: file not found")]
    NotFound { path: PathBuf },
    #[error("{path}: cannot read file: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a WAV file ({reason})")]
    NotWav { path: PathBuf, reason: String },
    #[error("{path}: truncated WAV file: {reason}")]
    Truncated { path: PathBuf, reason: String },
    #[error("{path}: unsupported WAV format: {reason}; supported are 8/16/24/32-bit integer PCM and 32-bit float")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: sample rate is {found} Hz but the model expects {expected} Hz; convert it first, e.g. `sox {path} -r {expected} out.wav` or `ffmpeg -i {path} -ar {expected} out.wav`")]
    SampleRate { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: the file holds no audio samples")]
    Empty { path: PathBuf },
    #[error("{path}: audio too short: {samples} samples ({seconds:.3} s), at least {min_samples} are needed")]
    TooShort { path: PathBuf, samples: usize, seconds: f64, min_samples: usize },
    #[error("{path}: sample {index} is not a finite number ({value})")]
    NonFinite { path: PathBuf, index: usize, value: f32 },
}

impl AudioError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            AudioError::NotFound { path }
            | AudioError::Io { path, .. }
            | AudioError::NotWav { path, .. }
            | AudioError::Truncated { path, .. }
            | AudioError::Unsupported { path, .. }
            | AudioError::SampleRate { path, .. }
            | AudioError::Empty { path }
            | AudioError::TooShort { path, .. }
            | AudioError::NonFinite { path, .. } => path,
        }
    }
}

/// hound reports a short read as `ErrorKind::Other` with this text.
const HOUND_SHORT_READ: &str = "Failed to read enough bytes";

fn is_short_read(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::UnexpectedEof || e.to_string().contains(HOUND_SHORT_READ)
}

fn classify_hound(path: &Path, err: hound::Error) -> AudioError {
    let path = path.to_path_buf();
    match err {
        hound::Error::IoError(e) if is_short_read(&e) => {
            AudioError::Truncated { path, reason: "the file ends before the data its header announces".into() }
        }
        hound::Error::IoError(source) => AudioError::Io { path, source },
        hound::Error::FormatError(reason) => {
            // hound reports a short header as a format error about a missing chunk.
            AudioError::NotWav { path, reason: reason.to_string() }
        }
        hound::Error::Unsupported => AudioError::Unsupported { path, reason: "encoding not handled".into() },
        hound::Error::TooWide => AudioError::Unsupported { path, reason: "sample width too wide".into() },
        hound::Error::InvalidSampleFormat => AudioError::Unsupported { path, reason: "invalid sample format".into() },
        other => AudioError::NotWav { path, reason: other.to_string() },
    }
}

/// Reads a WAV file as mono f32 and checks it.
///
/// * `expected_rate`: the model's sample rate; any other rate is an error.
/// * `min_samples`: the fewest samples the front end and model accept.
pub fn read_wav(path: &Path, expected_rate: u32, min_samples: usize) -> Result<Waveform, AudioError> {
    let bytes = read_file(path)?;
    decode_wav(path, &bytes, expected_rate, min_samples)
}

/// The bytes of an audio file, with the error kinds of [`AudioError`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, AudioError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            AudioError::NotFound { path: path.to_path_buf() }
        } else {
            AudioError::Io { path: path.to_path_buf(), source }
        }
    })
}

/// Decodes and checks the bytes of a WAV file read from `path` (named in errors),
/// as [`read_wav`] does.
pub fn decode_wav(path: &Path, bytes: &[u8], expected_rate: u32, min_samples: usize) -> Result<Waveform, AudioError> {
    let pb = path.to_path_buf();
    if bytes.is_empty() {
        return Err(AudioError::NotWav { path: pb, reason: "the file is empty (0 bytes)".into() });
    }
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| match e {
        hound::Error::IoError(ref io) if is_short_read(io) => {
            AudioError::Truncated { path: pb.clone(), reason: "the header is incomplete".into() }
        }
        e => classify_hound(path, e),
    })?;
    let spec = reader.spec();
    if spec.sample_rate != expected_rate {
        return Err(AudioError::SampleRate { path: pb, found: spec.sample_rate, expected: expected_rate });
    }
    let channels = spec.channels as usize;
    if channels == 0 {
        return Err(AudioError::Unsupported { path: pb, reason: "zero channels".into() });
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => collect(path, reader.into_samples::<f32>(), |s| s)?,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            collect(path, reader.into_samples::<i32>(), |s| (s as f64 * scale) as f32)?
        }
        (fmt, bits) => return Err(AudioError::Unsupported { path: pb, reason: format!("{bits}-bit {fmt:?}") }),
    };
    if !interleaved.len().is_multiple_of(channels) {
        return Err(AudioError::Truncated { path: pb, reason: "the last frame is incomplete".into() });
    }
    let samples = if channels == 1 {
        interleaved
    } else {
        log::warn!("{}: {} channels, down-mixing to mono by averaging", path.display(), channels);
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().map(|&v| v as f64).sum::<f64>() as f32 / channels as f32)
            .collect()
    };
    if samples.is_empty() {
        return Err(AudioError::Empty { path: pb });
    }
    if let Some((index, &value)) = samples.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(AudioError::NonFinite { path: pb, index, value });
    }
    if samples.len() < min_samples {
        return Err(AudioError::TooShort {
            path: pb,
            samples: samples.len(),
            seconds: samples.len() as f64 / expected_rate as f64,
            min_samples,
        });
    }
    Ok(Waveform { samples, sample_rate: spec.sample_rate })
}

fn collect<S, I, F>(path: &Path, iter: I, convert: F) -> Result<Vec<f32>, AudioError>
where
    I: Iterator<Item = hound::Result<S>>,
    F: Fn(S) -> f32,
{
    let mut out = Vec::with_capacity(iter.size_hint().0);
    for s in iter {
        match s {
            Ok(v) => out.push(convert(v)),
            Err(e) => return Err(classify_hound(path, e)),
        }
    }
    Ok(out)
}

/// Writes mono 16-bit PCM (used by tests and the bundled assets).
pub fn write_wav_i16(path: &Path, samples: &[f32], sample_rate: u32) -> std::io::Result<()> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).map_err(std::io::Error::other)?;
    for &s in samples {
        let v = (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        w.write_sample(v).map_err(std::io::Error::other)?;
    }
    w.finalize().map_err(std::io::Error::other)
}
