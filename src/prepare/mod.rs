//! Data preparation without Python or ffmpeg: VoxCeleb trees (with AAC
//! `.m4a` decoding), MUSAN splitting, RIR selection and trial-list checks.
//!
//! Every step writes through temporary files and renames, so an interrupted
//! run leaves nothing that looks complete, and a rerun resumes. Existing
//! outputs are only replaced with `force`.

pub mod musan;
pub mod trials;
pub mod voxceleb;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Refuses to replace `path` unless `force`.
pub fn guard(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    Ok(())
}

/// The identity of a file or folder behind any links: device and inode on
/// Unix, the canonical path elsewhere.
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// Files under `dir` (recursively, following links) whose extension is one
/// of `exts`, sorted. Each folder is entered and each file listed once,
/// however many links lead to it, so a link loop ends.
pub fn files_with(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut skipped = 0usize;
    seen.insert(identity(dir));
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| anyhow::anyhow!("cannot list {}: {e}", d.display()))?;
        let mut entries: Vec<PathBuf> = entries.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>()?;
        entries.sort();
        for p in entries {
            let wanted = p.is_dir()
                || p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| exts.iter().any(|e| x.eq_ignore_ascii_case(e)));
            if !wanted {
                continue;
            }
            let id = identity(&p);
            if id.is_some() && !seen.insert(id) {
                skipped += 1;
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    if skipped > 0 {
        log::warn!(
            "{}: {skipped} paths lead (through links) to folders or files already listed; each is used once",
            dir.display()
        );
    }
    out.sort();
    Ok(out)
}

/// Runs `f` over `items` on `jobs` threads, in any order; results come back in input order.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    pb: &dyn crate::progress::Progress,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                out.lock().unwrap()[i] = Some(r);
                pb.inc(1);
            });
        }
    });
    out.into_inner().unwrap().into_iter().map(|r| r.expect("every item ran")).collect()
}
