//! MUSAN splitting and RIR selection, in the layouts training expects.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::audio::wav::{read_wav, write_wav_i16};
use crate::progress::Reporter;

/// How [`split_musan`] cuts the recordings and runs.
#[derive(Debug, Clone, Copy)]
pub struct SplitSpec {
    pub sample_rate: u32,
    pub chunk_seconds: f64,
    pub hop_seconds: f64,
    pub jobs: usize,
    /// Write chunks again even where they exist.
    pub force: bool,
}

/// Splits every MUSAN file into `chunk`-second pieces every `hop` seconds:
/// `out/<type>/<source>/<file>/<start seconds, 5 digits>.wav`. Returns the
/// number of chunks written (existing chunks are kept unless `force`).
pub fn split_musan(root: &Path, out: &Path, spec: &SplitSpec, reporter: &dyn Reporter) -> Result<usize> {
    let SplitSpec { sample_rate, chunk_seconds: chunk, hop_seconds: hop, jobs, force } = *spec;
    let files = super::files_with(root, &["wav"])?;
    if files.is_empty() {
        bail!("{}: no .wav files (expected musan/<type>/<source>/*.wav)", root.display());
    }
    let (len, step) = ((chunk * sample_rate as f64) as usize, (hop * sample_rate as f64) as usize);
    let pb = reporter.bar(files.len() as u64, "splitting MUSAN");
    let results = super::parallel(&files, jobs, pb.as_ref(), |f| -> Result<usize> {
        let rel = f.strip_prefix(root).unwrap_or(f).with_extension("");
        let dir = out.join(&rel);
        let audio = read_wav(f, sample_rate, 1)?.samples;
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut n = 0;
        let mut start = 0;
        // Starts 0, hop, 2·hop, … while a whole chunk and more remain.
        while start + len < audio.len() {
            let dst = dir.join(format!("{:05}.wav", start / sample_rate as usize));
            if force || !dst.exists() {
                let tmp = dst.with_extension("wav.partial");
                write_wav_i16(&tmp, &audio[start..start + len], sample_rate)?;
                std::fs::rename(&tmp, &dst)?;
            }
            n += 1;
            start += step;
        }
        Ok(n)
    });
    pb.finish();
    results.into_iter().sum()
}

/// Copies the small and medium simulated rooms of RIRS_NOISES (or any
/// folders named by `rooms`) to `out/<room>/...`.
pub fn select_rirs(root: &Path, out: &Path, rooms: &[&str], force: bool) -> Result<usize> {
    let base = [root.join("simulated_rirs"), root.to_path_buf()]
        .into_iter()
        .find(|b| rooms.iter().any(|r| b.join(r).is_dir()));
    let Some(base) = base else {
        bail!("{}: none of {rooms:?} found (expected RIRS_NOISES/simulated_rirs/<room>/...)", root.display());
    };
    let mut n = 0;
    for room in rooms {
        let src = base.join(room);
        if !src.is_dir() {
            bail!("{}: missing", src.display());
        }
        for f in super::files_with(&src, &["wav"])? {
            let dst: PathBuf = out.join(room).join(f.strip_prefix(&src).unwrap_or(&f));
            if dst.exists() && !force {
                n += 1;
                continue;
            }
            std::fs::create_dir_all(dst.parent().unwrap())?;
            let tmp = dst.with_extension("wav.partial");
            std::fs::copy(&f, &tmp).with_context(|| format!("cannot copy {}", f.display()))?;
            std::fs::rename(&tmp, &dst)?;
            n += 1;
        }
    }
    Ok(n)
}
