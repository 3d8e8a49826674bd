//! AAC in MP4 (`.m4a`, as VoxCeleb2 ships) decoded with symphonia.

use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::wav::{AudioError, Waveform};

fn bad(path: &Path, reason: impl Into<String>) -> AudioError {
    AudioError::Undecodable { path: path.to_path_buf(), format: "an MP4/AAC (.m4a) file", reason: reason.into() }
}

/// Samples to drop at the start: the encoder's priming, as the MP4 edit list
/// (`moov/trak/edts/elst`) states it, in the track's sample units. symphonia
/// 0.5 parses but does not apply edit lists; ffmpeg does, so without this the
/// audio would start 1024 samples (AAC priming) late compared with the
/// reference's ffmpeg conversion.
fn priming_samples(bytes: &[u8], sample_rate: u32) -> Option<u64> {
    fn boxes(data: &[u8]) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= data.len() {
            let size32 = u32::from_be_bytes(data[i..i + 4].try_into().unwrap()) as usize;
            let kind = &data[i + 4..i + 8];
            let (head, size) = match size32 {
                1 if i + 16 <= data.len() => (16, u64::from_be_bytes(data[i + 8..i + 16].try_into().unwrap()) as usize),
                0 => (8, data.len() - i),
                n => (8, n),
            };
            if size < head || i + size > data.len() {
                break;
            }
            out.push((kind, &data[i + head..i + size]));
            i += size;
        }
        out
    }
    let find = |data: &'_ [u8], kind: &[u8]| -> Option<Vec<u8>> {
        boxes(data).into_iter().find(|(k, _)| *k == kind).map(|(_, b)| b.to_vec())
    };
    let moov = find(bytes, b"moov")?;
    let trak = find(&moov, b"trak")?;
    let elst = find(&find(&trak, b"edts")?, b"elst")?;
    let mdhd = find(&find(&trak, b"mdia")?, b"mdhd")?;
    let u32_at = |b: &[u8], o: usize| b.get(o..o + 4).map(|s| u32::from_be_bytes(s.try_into().unwrap()));
    let timescale = if mdhd.first()? == &1 { u32_at(&mdhd, 20)? } else { u32_at(&mdhd, 12)? };
    let v1 = elst.first()? == &1;
    let count = u32_at(&elst, 4)? as usize;
    let entry = if v1 { 20 } else { 12 };
    for k in 0..count {
        let o = 8 + k * entry;
        let media_time: i64 = if v1 {
            i64::from_be_bytes(elst.get(o + 8..o + 16)?.try_into().unwrap())
        } else {
            u32_at(&elst, o + 4)? as i32 as i64
        };
        if media_time >= 0 {
            return Some(media_time as u64 * sample_rate as u64 / timescale.max(1) as u64);
        }
    }
    None
}

/// Decodes an `.m4a` file to mono float samples at its own sample rate.
/// Multi-channel audio is averaged. A file that ends before the length its
/// header announces is reported as truncated.
pub fn decode_m4a(path: &Path) -> Result<Waveform, AudioError> {
    let mut format = open_container(path)?;
    let track = format.default_track().ok_or_else(|| bad(path, "no audio track"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let rate = params.sample_rate.ok_or_else(|| bad(path, "no sample rate in the track"))?;
    let expected_frames = params.n_frames;
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| bad(path, format!("unsupported codec: {e}")))?;
    let (mut mono, frames) = decode_track(path, format.as_mut(), decoder.as_mut(), track_id)?;
    if let Some(n) = expected_frames {
        // AAC frames are 1024 samples; the header may count a partial last one.
        if frames + 1024 < n {
            return Err(AudioError::Truncated {
                path: path.to_path_buf(),
                reason: format!("decoded {frames} of the {n} samples its header announces"),
            });
        }
    }
    let skip = std::fs::read(path).ok().and_then(|b| priming_samples(&b, rate)).unwrap_or(0) as usize;
    if skip > 0 && skip < mono.len() {
        mono.drain(..skip);
    }
    if mono.is_empty() {
        return Err(AudioError::Empty { path: path.to_path_buf() });
    }
    Ok(Waveform { samples: mono, sample_rate: rate })
}

/// The file's MP4 container, probed (gapless, so that the priming samples
/// are known).
fn open_container(path: &Path) -> Result<Box<dyn FormatReader>, AudioError> {
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
        .format(&hint, mss, &FormatOptions { enable_gapless: true, ..Default::default() }, &MetadataOptions::default())
        .map_err(|e| match e {
            SymError::IoError(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                AudioError::Truncated { path: path.to_path_buf(), reason: "the MP4 container ends early".into() }
            }
            e => bad(path, e.to_string()),
        })?;
    Ok(probed.format)
}

/// Every packet of one track decoded and averaged to mono: the samples and
/// the number of frames decoded.
fn decode_track(
    path: &Path,
    format: &mut dyn FormatReader,
    decoder: &mut dyn Decoder,
    track_id: u32,
) -> Result<(Vec<f32>, u64), AudioError> {
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
    Ok((mono, frames))
}
