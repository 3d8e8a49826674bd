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

/// Files under `dir` (recursively) whose extension is one of `exts`, sorted.
pub fn files_with(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| anyhow::anyhow!("cannot list {}: {e}", d.display()))?;
        for e in entries {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.iter().any(|e| x.eq_ignore_ascii_case(e)))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs `f` over `items` on `jobs` threads, in any order; results come back in input order.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    pb: &indicatif::ProgressBar,
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
