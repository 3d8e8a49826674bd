//! VoxCeleb trees: scan, validate, decode `.m4a`, and write the train list.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::audio::m4a::decode_m4a;
use crate::audio::wav::{read_wav, write_wav_i16};
use crate::audio::Level;
use crate::files::{sha256_file, write_atomic};
use crate::progress::Reporter;

/// What happened to one file.
#[derive(Debug, Clone)]
enum Outcome {
    /// Usable: (speaker, path relative to the list root, samples).
    Good {
        speaker: String,
        rel: String,
        samples: usize,
        converted: bool,
        sha256: Option<String>,
    },
    Bad {
        path: PathBuf,
        reason: String,
    },
}

/// Summary of a run.
#[derive(Debug, Clone, Default)]
pub struct VoxSummary {
    pub files: usize,
    pub good: usize,
    pub converted: usize,
    pub resumed: usize,
    pub bad: usize,
    pub seconds: f64,
    pub list: PathBuf,
    pub wav_root: PathBuf,
}

/// Options of `prepare voxceleb`.
#[derive(Debug, Clone)]
pub struct VoxArgs {
    pub root: PathBuf,
    pub out: PathBuf,
    pub sample_rate: u32,
    /// Shortest usable file, in seconds.
    pub min_seconds: f64,
    pub jobs: usize,
    pub force: bool,
}

fn speaker_of(rel: &Path) -> Option<String> {
    let mut c = rel.components();
    let spk = c.next()?.as_os_str().to_str()?.to_string();
    c.next()?; // at least speaker/…/file
    Some(spk)
}

/// A file that cannot be used: the path to name, and why.
type Bad = (PathBuf, String);

fn process(file: &Path, args: &VoxArgs, has_m4a: bool) -> Outcome {
    match classify(file, args, has_m4a) {
        Ok(good) => good,
        Err((path, reason)) => Outcome::Bad { path, reason },
    }
}

/// One file of the tree: a WAV is checked (and linked where the tree also
/// holds `.m4a` files), an `.m4a` converted, or its earlier conversion reused.
fn classify(file: &Path, args: &VoxArgs, has_m4a: bool) -> Result<Outcome, Bad> {
    let bad = |reason: &str| (file.to_path_buf(), reason.to_string());
    let rel = file.strip_prefix(&args.root).unwrap_or(file).to_path_buf();
    let speaker = speaker_of(&rel).ok_or_else(|| bad("not under <speaker>/<video>/"))?;
    if rel.to_string_lossy().chars().any(char::is_whitespace) {
        return Err(bad("the path holds whitespace, which separates the fields of a train list: rename it"));
    }
    let min = (args.min_seconds * args.sample_rate as f64) as usize;
    let rel_wav = rel.with_extension("wav");
    let dst = args.out.join("wav").join(&rel_wav);
    let is_m4a = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("m4a"));
    let (samples, converted, sha256) = if !is_m4a {
        (check_wav(file, &dst, args, has_m4a, min)?, false, None)
    } else if dst.exists() && !args.force {
        let (samples, sha) = reuse_converted(&dst, args, min)?;
        (samples, false, sha)
    } else {
        let (samples, sha) = convert(file, &dst, args, min)?;
        (samples, true, sha)
    };
    let rel = rel_wav.to_string_lossy().replace('\\', "/");
    Ok(Outcome::Good { speaker, rel, samples, converted, sha256 })
}

/// A WAV of the tree: checked, and linked into the converted tree when the
/// tree also holds `.m4a` files (so that the list has one root).
fn check_wav(file: &Path, dst: &Path, args: &VoxArgs, has_m4a: bool, min: usize) -> Result<usize, Bad> {
    let bad = |reason: String| (file.to_path_buf(), reason);
    let w = read_wav(file, args.sample_rate, min.max(1)).map_err(|e| bad(e.to_string()))?;
    if let Some(problem) = Level::of(&w.samples).problem() {
        return Err(bad(problem));
    }
    if has_m4a && !dst.exists() {
        link(file, dst).map_err(|e| bad(format!("cannot link into {}: {e}", dst.display())))?;
    }
    Ok(w.samples.len())
}

/// A WAV written by an earlier run (complete, since writes are atomic),
/// checked that it reads: its length and checksum.
fn reuse_converted(dst: &Path, args: &VoxArgs, min: usize) -> Result<(usize, Option<String>), Bad> {
    let w = read_wav(dst, args.sample_rate, min.max(1))
        .map_err(|e| (dst.to_path_buf(), format!("earlier output unreadable ({e}); rerun with --force")))?;
    Ok((w.samples.len(), sha256_file(dst).ok()))
}

/// Decodes and checks an `.m4a` and writes it as a WAV: its length and the
/// WAV's checksum.
fn convert(file: &Path, dst: &Path, args: &VoxArgs, min: usize) -> Result<(usize, Option<String>), Bad> {
    let bad = |reason: String| (file.to_path_buf(), reason);
    let w = decode_m4a(file).map_err(|e| bad(e.to_string()))?;
    if w.sample_rate != args.sample_rate {
        return Err(bad(format!("sample rate {} Hz, expected {}", w.sample_rate, args.sample_rate)));
    }
    if let Some(problem) = Level::of(&w.samples).problem() {
        return Err(bad(problem));
    }
    if w.samples.len() < min {
        return Err(bad(format!("too short: {} samples, at least {min} needed", w.samples.len())));
    }
    let sha = write_verified(dst, &w.samples, w.sample_rate)?;
    Ok((w.samples.len(), sha))
}

/// Writes a WAV under a temporary name and reads it back before it takes its
/// final name: the file's checksum.
fn write_verified(dst: &Path, samples: &[f32], sample_rate: u32) -> Result<Option<String>, Bad> {
    let bad = |reason: String| (dst.to_path_buf(), reason);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
    }
    let tmp = dst.with_extension("wav.partial");
    write_wav_i16(&tmp, samples, sample_rate).map_err(|e| bad(format!("cannot write: {e}")))?;
    let back = read_wav(&tmp, sample_rate, 1).map_err(|e| bad(format!("written file unreadable: {e}")))?;
    if back.samples.len() != samples.len() {
        return Err(bad(format!("wrote {} samples, read back {}", samples.len(), back.samples.len())));
    }
    let sha = sha256_file(&tmp).ok();
    std::fs::rename(&tmp, dst).map_err(|e| bad(e.to_string()))?;
    Ok(sha)
}

fn link(src: &Path, dst: &Path) -> std::io::Result<()> {
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p)?;
    }
    let abs = std::fs::canonicalize(src)?;
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(abs, dst)
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(abs, dst).map(|_| ())
    }
}

/// Scans `root` (`<speaker>/<video>/<utt>.{wav,m4a}`), validates every file,
/// decodes `.m4a` to 16-bit WAV under `out/wav/`, and writes `out/train_list.txt`
/// (voxceleb_trainer format), `out/speakers.txt`, `out/manifest.tsv` (samples
/// and SHA-256 of each converted file) and `out/report.tsv` (the bad files).
pub fn prepare(args: &VoxArgs, reporter: &dyn Reporter) -> Result<VoxSummary> {
    let t = Instant::now();
    if !args.root.is_dir() {
        bail!("{}: not a directory", args.root.display());
    }
    let files = super::files_with(&args.root, &["wav", "m4a"])?;
    if files.is_empty() {
        bail!("{}: no .wav or .m4a files", args.root.display());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let list = args.out.join("train_list.txt");
    super::guard(&list, args.force)?;
    let has_m4a = files.iter().any(|f| f.extension().is_some_and(|e| e.eq_ignore_ascii_case("m4a")));
    let pb = reporter.bar(files.len() as u64, "preparing");
    let outcomes = super::parallel(&files, args.jobs, pb.as_ref(), |f| process(f, args, has_m4a));
    pb.finish();

    let mut summary = VoxSummary { files: files.len(), ..Default::default() };
    let (mut lines, mut report, mut manifest) =
        (String::new(), String::from("path\treason\n"), String::from("path\tsamples\tsha256\n"));
    let mut speakers: Vec<String> = Vec::new();
    for o in &outcomes {
        match o {
            Outcome::Good { speaker, rel, samples, converted, sha256 } => {
                summary.good += 1;
                if *converted {
                    summary.converted += 1;
                } else if sha256.is_some() {
                    summary.resumed += 1;
                }
                if let Some(s) = sha256 {
                    manifest.push_str(&format!("{rel}\t{samples}\t{s}\n"));
                }
                if speakers.last() != Some(speaker) && !speakers.contains(speaker) {
                    speakers.push(speaker.clone());
                }
                lines.push_str(&format!("{speaker} {rel}\n"));
            }
            Outcome::Bad { path, reason } => {
                summary.bad += 1;
                report.push_str(&format!("{}\t{reason}\n", path.display()));
            }
        }
    }
    if summary.good == 0 {
        write_atomic(&args.out.join("report.tsv"), report.as_bytes())?;
        bail!("no usable files in {} (see {})", args.root.display(), args.out.join("report.tsv").display());
    }
    let spk: String = speakers.iter().enumerate().map(|(i, s)| format!("{s} {i}\n")).collect();
    write_atomic(&args.out.join("speakers.txt"), spk.as_bytes())?;
    write_atomic(&args.out.join("report.tsv"), report.as_bytes())?;
    if has_m4a {
        write_atomic(&args.out.join("manifest.tsv"), manifest.as_bytes())?;
    }
    write_atomic(&list, lines.as_bytes())?;
    summary.seconds = t.elapsed().as_secs_f64();
    summary.list = list;
    summary.wav_root = if has_m4a { args.out.join("wav") } else { args.root.clone() };
    Ok(summary)
}
