//! AAC in MP4 (`.m4a`, as VoxCeleb2 ships) decoded with symphonia.

use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::DecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::wav::{AudioError, Waveform};

fn bad(path: &Path, reason: impl Into<String>) -> AudioError {
    AudioError::NotWav { path: path.to_path_buf(), reason: reason.into() }
}

/// Decodes an `.m4a` file to mono float samples at its own sample rate.
/// Multi-channel audio is averaged. A file that ends before the length its
/// header announces is reported as truncated.
pub fn decode_m4a(path: &Path) -> Result<Waveform, AudioError> {
    let file = std::fs::File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            AudioError::NotFound { path: path.to_path_buf() }
        } else {
            AudioError::Io { path: path.to_path_buf(), source }
        }
    })?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(bad(path, "the file is empty (0 bytes)"));
    }
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    hint.with_extension("m4a");
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(|e| match e {
            SymError::IoError(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                AudioError::Truncated { path: path.to_path_buf(), reason: "the MP4 container ends early".into() }
            }
            e => bad(path, format!("not a readable MP4/AAC file: {e}")),
        })?;
    let mut format = probed.format;
    let track = format.default_track().ok_or_else(|| bad(path, "no audio track"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let rate = params.sample_rate.ok_or_else(|| bad(path, "no sample rate in the track"))?;
    let expected_frames = params.n_frames;
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| AudioError::Unsupported { path: path.to_path_buf(), reason: format!("codec: {e}") })?;
    let mut mono: Vec<f32> = Vec::new();
    let mut frames: u64 = 0;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(bad(path, format!("cannot read packet: {e}"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let buf = decoder.decode(&packet).map_err(|e| AudioError::Truncated {
            path: path.to_path_buf(),
            reason: format!("undecodable AAC data ({e})"),
        })?;
        let spec = *buf.spec();
        let channels = spec.channels.count().max(1);
        let mut sb = SampleBuffer::<f32>::new(buf.capacity() as u64, spec);
        sb.copy_interleaved_ref(buf);
        for frame in sb.samples().chunks_exact(channels) {
            mono.push(frame.iter().sum::<f32>() / channels as f32);
        }
        frames += (sb.samples().len() / channels) as u64;
    }
    if let Some(n) = expected_frames {
        // AAC frames are 1024 samples; the header may count a partial last one.
        if frames + 1024 < n {
            return Err(AudioError::Truncated {
                path: path.to_path_buf(),
                reason: format!("decoded {frames} of the {n} samples its header announces"),
            });
        }
    }
    if mono.is_empty() {
        return Err(AudioError::Empty { path: path.to_path_buf() });
    }
    Ok(Waveform { samples: mono, sample_rate: rate })
}
