//! Trial-list checks, for the merged or the split VoxCeleb1 layout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::lists::{check_audio, read_trials, trial_files};

/// Checks that every file of `list` exists under one of `roots`. With more
/// than one root (VoxCeleb1 dev and test kept apart), writes a merged tree of
/// links in `merged` so evaluation can take one `--wav-root`. Returns the root
/// to evaluate with and the number of files.
///
/// Every file's WAV header is read too: the sample rate must be
/// `sample_rate` and the length at least `min_samples`, as `eval` checks
/// before it starts.
pub fn check(
    list: &Path,
    roots: &[PathBuf],
    merged: Option<&Path>,
    sample_rate: u32,
    min_samples: usize,
) -> Result<(PathBuf, usize)> {
    use rayon::prelude::*;
    if roots.is_empty() {
        bail!("give at least one --root");
    }
    let trials = read_trials(list)?;
    let files = trial_files(&trials);
    let checked: Vec<std::result::Result<(String, PathBuf), String>> = files
        .par_iter()
        .map(|(f, line)| {
            let at = format!("{}:{line}: {f}", list.display());
            let Some(p) = roots.iter().map(|r| r.join(f)).find(|p| p.is_file()) else {
                return Err(format!("{at}: not found under any root"));
            };
            let listed = check_audio(p.clone(), &at, sample_rate).map_err(|e| format!("{e:#}"))?;
            if listed.samples < min_samples {
                return Err(format!("{at}: {} samples, shorter than the {min_samples} required", listed.samples));
            }
            Ok((f.clone(), p))
        })
        .collect();
    let bad: Vec<&String> = checked.iter().filter_map(|r| r.as_ref().err()).collect();
    if !bad.is_empty() {
        bail!(
            "{} of {} files of {} cannot be evaluated (roots {:?}):\n  {}{}",
            bad.len(),
            files.len(),
            list.display(),
            roots,
            bad.iter().take(20).map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
            if bad.len() > 20 { "\n  ..." } else { "" }
        );
    }
    let found: Vec<(String, PathBuf)> = checked.into_iter().filter_map(|r| r.ok()).collect();
    if roots.len() == 1 {
        return Ok((roots[0].clone(), files.len()));
    }
    let Some(out) = merged else {
        bail!("the files are spread over {} roots: give --merged DIR to build one tree", roots.len());
    };
    for (rel, src) in &found {
        let dst = out.join(rel);
        if dst.exists() {
            continue;
        }
        std::fs::create_dir_all(dst.parent().unwrap())?;
        let abs = std::fs::canonicalize(src)?;
        #[cfg(unix)]
        std::os::unix::fs::symlink(&abs, &dst)?;
        #[cfg(not(unix))]
        std::fs::copy(&abs, &dst)?;
    }
    Ok((out.to_path_buf(), files.len()))
}
