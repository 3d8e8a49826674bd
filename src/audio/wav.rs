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
    #[error("{path}: cannot decode {format}: {reason}")]
    Undecodable { path: PathBuf, format: &'static str, reason: String },
    #[error("{path}: truncated audio file: {reason}")]
    Truncated { path: PathBuf, reason: String },
    #[error("{path}: unsupported WAV format: {reason} (supported: 8/16/24/32-bit integer PCM and 32-bit float)")]
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
            | AudioError::Undecodable { path, .. }
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
    let repacked = riff::check(path, bytes)?;
    let bytes = repacked.as_deref().unwrap_or(bytes);
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

/// A look at the RIFF chunks before hound reads the file, for two things
/// hound does not do: naming an unsupported encoding (hound reports most as
/// an inconsistent or unsupported format), and stepping over the pad byte
/// that follows a chunk of odd size (RIFF requires it, libsndfile honours
/// it, hound does not).
mod riff {
    use std::path::Path;

    use super::AudioError;

    const CONVERT: &str = "convert it to 16-bit PCM, e.g. `sox IN.wav -e signed-integer -b 16 OUT.wav`";

    fn u16_at(b: &[u8], i: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
    }

    fn u32_at(b: &[u8], i: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
    }

    /// The encoding of a `fmt ` chunk body: format tag (the sub-format of
    /// WAVE_FORMAT_EXTENSIBLE) and bits per sample.
    fn encoding(fmt: &[u8]) -> Option<(u16, u16)> {
        let tag = u16_at(fmt, 0)?;
        let bits = u16_at(fmt, 14)?;
        if tag == 0xFFFE {
            return Some((u16_at(fmt, 24)?, bits));
        }
        Some((tag, bits))
    }

    fn name(tag: u16) -> String {
        match tag {
            0x0002 => "Microsoft ADPCM".into(),
            0x0006 => "A-law".into(),
            0x0007 => "µ-law".into(),
            0x0011 => "IMA ADPCM".into(),
            0x0031 => "GSM 6.10".into(),
            0x0055 => "MPEG layer 3".into(),
            other => format!("format tag 0x{other:04x}"),
        }
    }

    fn unsupported(path: &Path, reason: String) -> AudioError {
        AudioError::Unsupported { path: path.to_path_buf(), reason }
    }

    /// Refuses encodings we do not decode with a message that names them,
    /// and returns the file rewritten without pad bytes when a chunk before
    /// `data` has an odd size. Files that are not RIFF/WAVE pass through
    /// for hound to report.
    pub fn check(path: &Path, bytes: &[u8]) -> Result<Option<Vec<u8>>, AudioError> {
        if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Ok(None);
        }
        let mut at = 12;
        let mut fmt: Option<&[u8]> = None;
        let mut padded = false;
        while let (Some(id), Some(size)) = (bytes.get(at..at + 4), u32_at(bytes, at + 4)) {
            let body = at + 8;
            let size = size as usize;
            if id == b"data" {
                let Some(fmt) = fmt else { return Ok(None) };
                if !padded {
                    return Ok(None);
                }
                // A canonical file: header, the format chunk, then the data.
                let data = &bytes[body..(body + size).min(bytes.len())];
                let mut out = Vec::with_capacity(28 + fmt.len() + data.len());
                out.extend_from_slice(b"RIFF");
                out.extend_from_slice(&((20 + fmt.len() + size) as u32).to_le_bytes());
                out.extend_from_slice(b"WAVEfmt ");
                out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
                out.extend_from_slice(fmt);
                out.extend_from_slice(b"data");
                out.extend_from_slice(&(size as u32).to_le_bytes());
                out.extend_from_slice(data);
                return Ok(Some(out));
            }
            let Some(chunk) = bytes.get(body..body + size) else { return Ok(None) };
            if id == b"fmt " {
                if let Some((tag, bits)) = encoding(chunk) {
                    refuse(path, tag, bits)?;
                }
                fmt = Some(chunk);
            }
            padded |= size % 2 == 1;
            at = body + size + size % 2;
        }
        Ok(None)
    }

    /// The encodings that hound decodes and we accept pass; others are
    /// named, with a conversion command.
    fn refuse(path: &Path, tag: u16, bits: u16) -> Result<(), AudioError> {
        match (tag, bits) {
            (0x0001, 8 | 16 | 24 | 32) | (0x0003, 32) => Ok(()),
            (0x0003, bits) => Err(unsupported(path, format!("{bits}-bit float samples; {CONVERT}"))),
            (0x0001, bits) => Err(unsupported(path, format!("{bits}-bit integer samples; {CONVERT}"))),
            (tag, _) => Err(unsupported(path, format!("the {} encoding is not supported; {CONVERT}", name(tag)))),
        }
    }
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
