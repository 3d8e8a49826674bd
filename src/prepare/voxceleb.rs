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

fn process(file: &Path, args: &VoxArgs, has_m4a: bool) -> Outcome {
    let rel = file.strip_prefix(&args.root).unwrap_or(file).to_path_buf();
    let Some(speaker) = speaker_of(&rel) else {
        return Outcome::Bad { path: file.into(), reason: "not under <speaker>/<video>/".into() };
    };
    if rel.to_string_lossy().chars().any(char::is_whitespace) {
        return Outcome::Bad {
            path: file.into(),
            reason: "the path holds whitespace, which separates the fields of a train list: rename it".into(),
        };
    }
    let min = (args.min_seconds * args.sample_rate as f64) as usize;
    let is_m4a = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("m4a"));
    let rel_wav = rel.with_extension("wav");
    let rel_str = rel_wav.to_string_lossy().replace('\\', "/");
    if !is_m4a {
        return match read_wav(file, args.sample_rate, min.max(1)) {
            Ok(w) => {
                if let Some(problem) = Level::of(&w.samples).problem() {
                    return Outcome::Bad { path: file.into(), reason: problem };
                }
                if has_m4a {
                    // One list root: link the WAV into the converted tree.
                    let dst = args.out.join("wav").join(&rel_wav);
                    if !dst.exists() {
                        if let Err(e) = link(file, &dst) {
                            return Outcome::Bad {
                                path: file.into(),
                                reason: format!("cannot link into {}: {e}", dst.display()),
                            };
                        }
                    }
                }
                Outcome::Good { speaker, rel: rel_str, samples: w.samples.len(), converted: false, sha256: None }
            }
            Err(e) => Outcome::Bad { path: file.into(), reason: e.to_string() },
        };
    }
    let dst = args.out.join("wav").join(&rel_wav);
    if dst.exists() && !args.force {
        // Written by an earlier run (complete: writes are atomic); check it reads.
        return match read_wav(&dst, args.sample_rate, min.max(1)) {
            Ok(w) => Outcome::Good {
                speaker,
                rel: rel_str,
                samples: w.samples.len(),
                converted: false,
                sha256: sha256_file(&dst).ok(),
            },
            Err(e) => {
                Outcome::Bad { path: dst, reason: format!("earlier output unreadable ({e}); rerun with --force") }
            }
        };
    }
    let w = match decode_m4a(file) {
        Ok(w) => w,
        Err(e) => return Outcome::Bad { path: file.into(), reason: e.to_string() },
    };
    if w.sample_rate != args.sample_rate {
        return Outcome::Bad {
            path: file.into(),
            reason: format!("sample rate {} Hz, expected {}", w.sample_rate, args.sample_rate),
        };
    }
    if let Some(problem) = Level::of(&w.samples).problem() {
        return Outcome::Bad { path: file.into(), reason: problem };
    }
    if w.samples.len() < min {
        return Outcome::Bad {
            path: file.into(),
            reason: format!("too short: {} samples, at least {min} needed", w.samples.len()),
        };
    }
    if let Some(parent) = dst.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            return Outcome::Bad { path: dst, reason: e.to_string() };
        }
    }
    let tmp = dst.with_extension("wav.partial");
    if let Err(e) = write_wav_i16(&tmp, &w.samples, w.sample_rate) {
        return Outcome::Bad { path: dst, reason: format!("cannot write: {e}") };
    }
    // Verify what was written before it takes its final name.
    match read_wav(&tmp, args.sample_rate, 1) {
        Ok(back) if back.samples.len() == w.samples.len() => {}
        Ok(back) => {
            return Outcome::Bad {
                path: dst,
                reason: format!("wrote {} samples, decoded {}", back.samples.len(), w.samples.len()),
            }
        }
        Err(e) => return Outcome::Bad { path: dst, reason: format!("written file unreadable: {e}") },
    }
    let sha = sha256_file(&tmp).ok();
    if let Err(e) = std::fs::rename(&tmp, &dst) {
        return Outcome::Bad { path: dst, reason: e.to_string() };
    }
    Outcome::Good { speaker, rel: rel_str, samples: w.samples.len(), converted: true, sha256: sha }
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
