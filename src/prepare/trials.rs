//! Trial-list checks, for the merged or the split VoxCeleb1 layout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::lists::{read_trials, trial_files};

/// Checks that every file of `list` exists under one of `roots`. With more
/// than one root (VoxCeleb1 dev and test kept apart), writes a merged tree of
/// links in `merged` so evaluation can take one `--wav-root`. Returns the root
/// to evaluate with and the number of files.
pub fn check(list: &Path, roots: &[PathBuf], merged: Option<&Path>) -> Result<(PathBuf, usize)> {
    if roots.is_empty() {
        bail!("give at least one --root");
    }
    let trials = read_trials(list)?;
    let files = trial_files(&trials);
    let mut found = Vec::with_capacity(files.len());
    let mut missing = Vec::new();
    for (f, line) in &files {
        match roots.iter().map(|r| r.join(f)).find(|p| p.is_file()) {
            Some(p) => found.push((f.clone(), p)),
            None => missing.push(format!("{}:{line}: {f}", list.display())),
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&String> = missing.iter().take(20).collect();
        bail!(
            "{} of {} files of {} are missing under {:?}:\n  {}{}",
            missing.len(),
            files.len(),
            list.display(),
            roots,
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
            if missing.len() > 20 { "\n  ..." } else { "" }
        );
    }
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
