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

/// The temporary files [`write_atomic`] leaves beside `name` while it
/// writes are this prefix and the writer's PID: `.NAME.tmpPID`.
fn temporary_prefix(name: &str) -> String {
    format!(".{name}.tmp")
}

#[cfg(test)]
fn temporary_name(name: &str, pid: u32) -> String {
    format!("{}{pid}", temporary_prefix(name))
}

/// A temporary path beside `path`, unique to this process.
fn temporary_beside(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = format!("{}{}", temporary_prefix(&name.to_string_lossy()), std::process::id());
    Ok((dir.to_path_buf(), dir.join(tmp)))
}

/// Whether process `pid` is gone, where that can be told (Linux's `/proc`);
/// elsewhere every process counts as alive and nothing is removed.
fn process_gone(pid: u32) -> bool {
    pid != std::process::id() && Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// The entries of `dir` named `PREFIX` + a PID whose process is gone: what
/// runs that were killed before they could clean up left behind.
fn left_by_dead_processes(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(prefix).and_then(|p| p.parse::<u32>().ok()).is_some_and(process_gone)
        })
        .map(|e| e.path())
        .collect()
}

/// Where [`write_atomic`] writes for `path`, and the permissions to give the
/// new file. A symbolic link is written through: its target is replaced and
/// the link stays (as `cp` and editors do), so that a link into a model
/// store keeps pointing at the new content. A device, FIFO or socket is
/// refused: replacing it with a regular file would break whatever uses it.
/// An existing file's permission bits are kept.
fn resolve_target(path: &Path) -> Result<(PathBuf, Option<std::fs::Permissions>)> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling link is written through to the missing target.
            let target = match std::fs::read_link(path) {
                Ok(t) if t.is_relative() => path.parent().unwrap_or(Path::new(".")).join(t),
                Ok(t) => t,
                Err(_) => path.to_path_buf(),
            };
            return Ok((target, None));
        }
        Err(e) => return Err(e).with_context(|| format!("{}: cannot inspect", path.display())),
    };
    if meta.is_dir() {
        bail!("{}: is a directory; give a file name", path.display());
    }
    if !meta.is_file() {
        bail!("{}: not a regular file (a device, FIFO or socket); refusing to replace it", path.display());
    }
    let target = std::fs::canonicalize(path).with_context(|| format!("{}: cannot resolve", path.display()))?;
    Ok((target, Some(meta.permissions())))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that an
/// interrupted write never leaves a file that looks complete. On failure the
/// temporary file is removed; temporary files of killed earlier writes to
/// the same path are removed first. See [`resolve_target`] for links,
/// special files and permissions.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let (target, permissions) = resolve_target(path)?;
    let (dir, tmp) = temporary_beside(&target)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(name) = target.file_name() {
        for orphan in left_by_dead_processes(&dir, &temporary_prefix(&name.to_string_lossy())) {
            log::info!("removing {}, left by an interrupted write", orphan.display());
            std::fs::remove_file(orphan).ok();
        }
    }
    let written = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        if let Some(p) = permissions {
            f.set_permissions(p).with_context(|| format!("cannot set the permissions of {}", tmp.display()))?;
        }
        f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
        f.sync_all().with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::rename(&tmp, &target).with_context(|| format!("cannot move {} to {}", tmp.display(), target.display()))
    })();
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    written
}

/// A test-only pause point: with `NEXTTDNN_TEST_PAUSE=POINT:MS`, the process
/// says `test pause: POINT` on stderr and sleeps MS milliseconds the first
/// time it reaches `point` (`locked`: just after taking an output lock;
/// `commit`: between the moves of a staged folder's files). Tests use it to make a race between two runs
/// happen every time instead of now and then.
pub fn test_pause(point: &str) {
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(spec) = std::env::var("NEXTTDNN_TEST_PAUSE") else { return };
    let Some((p, ms)) = spec.split_once(':') else { return };
    if p == point && !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        if let Ok(ms) = ms.parse::<u64>() {
            eprintln!("test pause: {point}");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

/// What a second run does when another holds the lock of its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenBusy {
    /// Wait for the other run to finish, saying so (short commands).
    Wait,
    /// Stop with an error naming the other process (training, which runs for hours).
    Fail,
}

/// An advisory lock on an output (a folder or a file), held until dropped.
///
/// The lock is taken on a separate lock file, `.NAME.lock` beside the
/// output, never on the output itself: an output replaced by a rename would
/// drop a lock held on it. The lock file holds the PID of the process that
/// holds it, for the message of a second run. The OS releases the lock when
/// the process ends, however it ends, so a killed run never leaves a stale
/// lock (a PID file alone would).
#[derive(Debug)]
pub struct OutputLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl OutputLock {
    /// Locks the output `target` (a folder or a file, which need not exist).
    pub fn acquire(target: &Path, when_busy: WhenBusy) -> Result<Self> {
        use std::io::{Read, Seek, Write};
        let path = lock_path(target)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                file.read_to_string(&mut holder).ok();
                let holder = holder.trim();
                let holder =
                    if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
                if when_busy == WhenBusy::Fail {
                    bail!("{} is in use by {holder}; wait for it to finish or choose another output", target.display());
                }
                log::warn!("{} is in use by {holder}, waiting", target.display());
                file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0).and_then(|_| file.rewind()).and_then(|_| write!(file, "{}", std::process::id())).ok();
        test_pause("locked");
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `.NAME.lock` beside `target` (for `out/` or `out`: `.out.lock` in its parent).
fn lock_path(target: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(target).with_context(|| format!("{}: bad path", target.display()))?;
    let normal: PathBuf = absolute.components().collect();
    let name = normal.file_name().with_context(|| format!("{}: cannot lock the root folder", target.display()))?;
    let dir = normal.parent().unwrap_or(Path::new("/"));
    Ok(dir.join(format!(".{}.lock", name.to_string_lossy())))
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
        for (i, src) in entries.into_iter().enumerate() {
            if i > 0 {
                test_pause("commit");
            }
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
    for folder in left_by_dead_processes(target, ".partial") {
        log::info!("removing {}, left by an interrupted run", folder.display());
        std::fs::remove_dir_all(folder).ok();
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

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nexttdnn-files-{tag}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[cfg(unix)]
    #[test]
    fn atomic_writes_keep_the_mode_and_follow_links() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = scratch("modes");
        for mode in [0o600, 0o444] {
            let p = dir.join(format!("m{mode:o}"));
            std::fs::write(&p, "old").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            write_atomic(&p, b"new").unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), b"new");
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, mode);
        }
        // A link is written through: the target changes, the link stays.
        let target = dir.join("target.onnx");
        std::fs::write(&target, "old").unwrap();
        let link = dir.join("link.onnx");
        symlink("target.onnx", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.join("dangling");
        symlink("made.bin", &dangling).unwrap();
        write_atomic(&dangling, b"x").unwrap();
        assert_eq!(std::fs::read(dir.join("made.bin")).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn atomic_writes_refuse_devices_and_fifos() {
        let e = write_atomic(Path::new("/dev/null"), b"x").unwrap_err().to_string();
        assert!(e.contains("/dev/null") && e.contains("not a regular file"), "{e}");
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
        let dir = scratch("fifo");
        let fifo = dir.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let e = write_atomic(&fifo, b"x").unwrap_err().to_string();
        assert!(e.contains("pipe") && e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn temporaries_of_killed_writes_are_removed() {
        let dir = scratch("orphans");
        let p = dir.join("model.safetensors");
        // No process has this PID (above the kernel's pid_max).
        let orphan = dir.join(temporary_name("model.safetensors", 999_999_999));
        std::fs::write(&orphan, vec![0u8; 1000]).unwrap();
        // A live process's temporary (this one's parent) stays.
        let live = dir.join(temporary_name("model.safetensors", std::os::unix::process::parent_id()));
        std::fs::write(&live, "x").unwrap();
        write_atomic(&p, b"model").unwrap();
        assert!(!orphan.exists(), "the orphan stays");
        assert!(live.exists(), "a running writer's file was removed");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_output_lock_is_exclusive_and_names_its_holder() {
        let dir = scratch("lock");
        let out = dir.join("out");
        let held = OutputLock::acquire(&out, WhenBusy::Fail).unwrap();
        assert_eq!(held.path(), dir.join(".out.lock"));
        // File locks are per open file description: a second open in the
        // same process conflicts like another process would.
        let e = OutputLock::acquire(&out, WhenBusy::Fail).unwrap_err().to_string();
        assert!(e.contains(&format!("in use by process {}", std::process::id())), "{e}");
        // The same folder written with a trailing slash is the same lock.
        let e = OutputLock::acquire(&dir.join("out/"), WhenBusy::Fail).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        drop(held);
        OutputLock::acquire(&out, WhenBusy::Fail).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}
