//! File helpers shared by every stage: reading text without a byte-order
//! mark, atomic writes of files and of whole output folders, and SHA-256.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The text of a list or config file, without the UTF-8 byte-order mark
/// that some Windows editors put first (it would otherwise become part of
/// the first field). A file that is not UTF-8 is an error naming it and
/// the line.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode_text(path, &bytes)
}

/// [`read_text`] of bytes read from `path` (named in errors).
pub fn decode_text(path: &Path, bytes: &[u8]) -> Result<String> {
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match std::str::from_utf8(body) {
        Ok(text) => Ok(text.to_string()),
        Err(e) => {
            let line = 1 + body[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
            bail!("{}:{line}: not UTF-8 text", path.display())
        }
    }
}

/// A temporary path beside `path`, unique to this process.
fn temporary_beside(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?;
    Ok((dir.to_path_buf(), dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()))))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that an
/// interrupted write never leaves a file that looks complete. On failure the
/// temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    if path.is_dir() {
        bail!("{}: is a directory; give a file name", path.display());
    }
    let (dir, tmp) = temporary_beside(path)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let written = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
        f.sync_all().with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    written
}

/// An output folder filled under a temporary name and put in place whole by
/// [`StagedDir::commit`]: readers never see one run's files beside another
/// run's, and a failed run leaves the previous outputs as they were.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Starts staging outputs for the folder `target`, in a hidden folder
    /// inside it (so that the final moves stay on one file system).
    pub fn new(target: &Path) -> Result<Self> {
        remove_abandoned(target);
        let staging = target.join(format!(".partial{}", std::process::id()));
        std::fs::remove_dir_all(&staging).ok();
        std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
        Ok(Self { target: target.to_path_buf(), staging, committed: false })
    }

    /// Where the file `name` is written before the commit.
    pub fn path(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    /// Where `name` will be once committed (for messages).
    pub fn final_path(&self, name: &str) -> PathBuf {
        self.target.join(name)
    }

    /// Moves every staged file into the target folder. Files of the target
    /// that this run also wrote are replaced; others (such as caches) stay.
    /// Outputs of an earlier run that this run does not write are removed
    /// when listed in `stale`.
    pub fn commit(mut self, stale: &[&str]) -> Result<()> {
        std::fs::create_dir_all(&self.target).with_context(|| format!("cannot create {}", self.target.display()))?;
        for name in stale {
            let p = self.target.join(name);
            if p.is_file() && !self.staging.join(name).exists() {
                std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&self.staging)
            .with_context(|| format!("cannot list {}", self.staging.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        // Anything in the way is found before the first file moves.
        for src in &entries {
            let dst = self.target.join(src.file_name().expect("listed entry"));
            if dst.is_dir() {
                bail!("cannot write {}: a folder of that name is in the way", dst.display());
            }
        }
        // summary.json last: its presence marks a complete set.
        entries.sort_by_key(|p| p.file_name().is_some_and(|n| n == "summary.json"));
        for src in entries {
            let dst = self.target.join(src.file_name().expect("listed entry"));
            std::fs::rename(&src, &dst)
                .with_context(|| format!("cannot move {} to {}", src.display(), dst.display()))?;
        }
        std::fs::remove_dir(&self.staging).ok();
        self.committed = true;
        Ok(())
    }
}

/// Removes staging folders of runs that ended without cleaning up (killed):
/// those whose process no longer exists.
fn remove_abandoned(target: &Path) {
    let Ok(entries) = std::fs::read_dir(target) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(".partial").and_then(|p| p.parse::<u32>().ok()) else { continue };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && Path::new("/proc/self").exists() {
            log::info!("removing {}, left by an interrupted run", e.path().display());
            std::fs::remove_dir_all(e.path()).ok();
        }
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            std::fs::remove_dir_all(&self.staging).ok();
        }
    }
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_mark_is_dropped() {
        let dir = std::env::temp_dir().join(format!("nexttdnn-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bom.txt");
        std::fs::write(&p, b"\xef\xbb\xbf1 a b\n").unwrap();
        assert_eq!(read_text(&p).unwrap(), "1 a b\n");
        std::fs::write(&p, b"ok\n\xff\n").unwrap();
        let e = read_text(&p).unwrap_err().to_string();
        assert!(e.contains("bom.txt:2: not UTF-8"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn staged_dir_replaces_outputs_whole() {
        let dir = std::env::temp_dir().join(format!("nexttdnn-staged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("summary.json"), "old").unwrap();
        std::fs::write(dir.join("det.png"), "old").unwrap();
        std::fs::write(dir.join("keep"), "cache").unwrap();
        // A killed run's staging folder (no such process) goes.
        std::fs::create_dir_all(dir.join(".partial999999999")).unwrap();
        std::fs::write(dir.join(".partial999999999").join("scores.txt"), "x").unwrap();
        {
            let s = StagedDir::new(&dir).unwrap();
            std::fs::write(s.path("summary.json"), "half").unwrap();
            // Dropped without a commit: the old outputs stay.
        }
        assert_eq!(std::fs::read_to_string(dir.join("summary.json")).unwrap(), "old");
        let s = StagedDir::new(&dir).unwrap();
        std::fs::write(s.path("summary.json"), "new").unwrap();
        s.commit(&["det.png"]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("summary.json")).unwrap(), "new");
        assert!(!dir.join("det.png").exists());
        assert!(dir.join("keep").exists());
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["keep", "summary.json"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
