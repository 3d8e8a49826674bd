//! List files: audio lists, VoxCeleb train lists and trial lists.
//!
//! The grammar, shared by every list: UTF-8 text (a leading byte-order mark
//! is dropped), one record per line; blank lines and lines starting with `#`
//! are skipped; fields are separated by runs of spaces or tabs, so a field,
//! and therefore a path, cannot hold a space or a tab (VoxCeleb's own lists
//! have the same rule). Every malformed line is reported with the list's
//! name and line number.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The non-empty, non-comment lines of a text, trimmed, numbered from 1. A
/// byte-order mark starting a line is dropped too: lists concatenated from
/// files written on Windows carry one at each file's first line.
pub fn lines_of(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            (i + 1, l.trim_start_matches(|c: char| c == '\u{feff}' || c.is_whitespace()).trim_end().to_string())
        })
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// An audio list: one path per line, resolved against `root` when relative.
/// A VoxCeleb train-list line (`speaker path`) is accepted too; the path is
/// the last field.
pub fn read_audio_list(path: &Path, root: Option<&Path>) -> Result<Vec<PathBuf>> {
    parse_audio_list(path, &crate::files::read_text(path)?, root)
}

/// [`read_audio_list`] of a text read from `path` (named in errors).
pub fn parse_audio_list(path: &Path, text: &str, root: Option<&Path>) -> Result<Vec<PathBuf>> {
    Ok(audio_list_entries(path, text, root)?.into_iter().map(|(p, _)| p).collect())
}

/// The files of an audio list with the line that names each. A line whose
/// whole text names an existing file while its fields say `speaker path` is
/// refused: the file's name holds a space or a tab, which the list grammar
/// reads as a field separator.
pub fn audio_list_entries(path: &Path, text: &str, root: Option<&Path>) -> Result<Vec<(PathBuf, usize)>> {
    let mut out = Vec::new();
    for (n, line) in lines_of(text) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let file = match fields.as_slice() {
            [p] => *p,
            [_, p] if !resolve(root, &line).is_file() => *p,
            [_, _] => bail!(
                "{}:{n}: {line:?} names a file whose name holds a space or a tab, which lists read as `speaker path`; rename the file",
                path.display()
            ),
            _ => bail!("{}:{n}: malformed line {line:?}: expected a path, or `speaker path`", path.display()),
        };
        out.push((resolve(root, file), n));
    }
    if out.is_empty() {
        bail!("{}: the list holds no files", path.display());
    }
    Ok(out)
}

/// Joins a relative path to the root.
pub fn resolve(root: Option<&Path>, file: &str) -> PathBuf {
    let p = Path::new(file);
    match root {
        Some(r) if p.is_relative() => r.join(p),
        _ => p.to_path_buf(),
    }
}

/// One verification trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub target: bool,
    pub enroll: String,
    pub test: String,
    /// 1-based line in the trial list.
    pub line: usize,
}

/// A trial list in VoxCeleb format: `label enroll test`, label 1 = same speaker.
pub fn read_trials(path: &Path) -> Result<Vec<Trial>> {
    parse_trials(path, &crate::files::read_text(path)?)
}

/// [`read_trials`] of a text read from `path` (named in errors).
pub fn parse_trials(path: &Path, text: &str) -> Result<Vec<Trial>> {
    let mut out = Vec::new();
    for (n, line) in lines_of(text) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [label, enroll, test] = f.as_slice() else {
            bail!("{}:{n}: malformed trial {line:?}: expected `label enroll test`", path.display())
        };
        let target = match *label {
            "1" => true,
            "0" => false,
            _ => bail!("{}:{n}: trial label must be 0 or 1, found {label:?}", path.display()),
        };
        out.push(Trial { target, enroll: enroll.to_string(), test: test.to_string(), line: n });
    }
    if out.is_empty() {
        bail!("{}: the trial list holds no trials", path.display());
    }
    Ok(out)
}

/// One line of a score file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredTrial {
    pub enroll: String,
    pub test: String,
    pub score: f64,
    pub target: bool,
    /// Line number in the file, from 1.
    pub line: usize,
}

/// A score file as `eval` writes it: `enroll test score label` per line.
pub fn read_scores(path: &Path) -> Result<Vec<ScoredTrial>> {
    parse_scores(path, &crate::files::read_text(path)?)
}

/// [`read_scores`] of a text read from `path` (named in errors).
pub fn parse_scores(path: &Path, text: &str) -> Result<Vec<ScoredTrial>> {
    let mut out = Vec::new();
    for (n, line) in lines_of(text) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [enroll, test, score, label] = f.as_slice() else {
            bail!("{}:{n}: malformed score line {line:?}: expected `enroll test score label`", path.display())
        };
        let score: f64 = score
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .with_context(|| format!("{}:{n}: the score {score:?} is not a finite number", path.display()))?;
        let target = match *label {
            "1" => true,
            "0" => false,
            _ => bail!("{}:{n}: label must be 0 or 1, found {label:?}", path.display()),
        };
        out.push(ScoredTrial { enroll: enroll.to_string(), test: test.to_string(), score, target, line: n });
    }
    if out.is_empty() {
        bail!("{}: the score file holds no scores", path.display());
    }
    Ok(out)
}

/// The distinct files of a trial list, in order of first appearance, each
/// with the line that first names it.
pub fn trial_files(trials: &[Trial]) -> Vec<(String, usize)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for t in trials {
        for f in [&t.enroll, &t.test] {
            if seen.insert(f.clone()) {
                out.push((f.clone(), t.line));
            }
        }
    }
    out
}

/// An audio file of a list, checked by [`preflight`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub path: PathBuf,
    /// Samples per channel, from the WAV header.
    pub samples: usize,
}

/// The paths of checked files.
pub fn paths(files: &[ListedFile]) -> Vec<PathBuf> {
    files.iter().map(|f| f.path.clone()).collect()
}

/// Checks, before any long work, that every file exists and has a readable
/// WAV header at the expected sample rate, and reads its length. The error
/// names the list, the line and the file.
pub fn preflight(
    list: &Path,
    files: &[(String, usize)],
    root: Option<&Path>,
    sample_rate: u32,
) -> Result<Vec<ListedFile>> {
    files
        .iter()
        .map(|(f, line)| {
            let p = resolve(root, f);
            let at = format!("{}:{line}: {}", list.display(), p.display());
            check_audio(p, &at, sample_rate)
        })
        .collect()
}

/// Checks that an audio file exists and has a readable WAV header at
/// `sample_rate`, and reads its length. Errors start with `at` (the file, or
/// the list, line and file).
pub fn check_audio(path: PathBuf, at: &str, sample_rate: u32) -> Result<ListedFile> {
    if path.is_dir() {
        bail!("{at}: is a directory, not an audio file");
    }
    if !path.is_file() {
        bail!("{at}: file not found");
    }
    let reader = hound::WavReader::open(&path).map_err(|e| anyhow::anyhow!("{at}: not a readable WAV file: {e}"))?;
    let spec = reader.spec();
    if spec.sample_rate != sample_rate {
        bail!("{at}: sample rate {} Hz, the model expects {sample_rate} Hz", spec.sample_rate);
    }
    Ok(ListedFile { samples: reader.duration() as usize, path })
}

/// A cohort list for score normalisation: one file per line, or the
/// reference's CSV (header `file_name`, ids without the `.wav` suffix).
pub fn read_cohort(path: &Path) -> Result<Vec<(String, usize)>> {
    parse_cohort(path, &crate::files::read_text(path)?)
}

/// [`read_cohort`] of a text read from `path` (named in errors).
pub fn parse_cohort(path: &Path, text: &str) -> Result<Vec<(String, usize)>> {
    let mut out = Vec::new();
    for (n, line) in lines_of(text) {
        if n == 1 && line == "file_name" {
            continue;
        }
        let fields: Vec<&str> = line.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).collect();
        let file = match fields.as_slice() {
            [p] | [_, p] => p.to_string(),
            _ => bail!("{}:{n}: malformed cohort line {line:?}", path.display()),
        };
        let file = if file.ends_with(".wav") { file } else { format!("{file}.wav") };
        out.push((file, n));
    }
    if out.is_empty() {
        bail!("{}: the cohort list holds no files", path.display());
    }
    Ok(out)
}
