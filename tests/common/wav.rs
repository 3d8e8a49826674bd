//! WAV files written by the tests.

use std::path::Path;

/// A deterministic noise-like 16-bit pattern of `n` samples (amplitude 1000).
pub fn pattern(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i * 7919 % 2001) as i32 - 1000) as i16).collect()
}

fn pcm16_spec(rate: u32, channels: u16) -> hound::WavSpec {
    hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int }
}

/// A 16-bit PCM file's bytes (interleaved `samples`).
pub fn pcm16_bytes(samples: &[i16], rate: u32, channels: u16) -> Vec<u8> {
    let mut cur = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut cur, pcm16_spec(rate, channels)).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    cur.into_inner()
}

/// Writes a 16-bit PCM file, creating its folder.
pub fn write_pcm16(path: &Path, samples: &[i16], rate: u32, channels: u16) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, pcm16_bytes(samples, rate, channels)).unwrap();
}

/// Writes a 16 kHz mono file of 32-bit float samples as given (no scaling
/// or clipping: values far outside ±1, NaN and infinities stay).
pub fn write_f32(path: &Path, samples: &[f32]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}
