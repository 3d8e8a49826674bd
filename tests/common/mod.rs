//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod noise;
pub mod train_corpus;
pub mod wav;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use nexttdnn::device::{select, DeviceSpec};
use nexttdnn::weights::{read_safetensors, HostTensor};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Small fixtures committed with the tests.
pub fn fixtures() -> PathBuf {
    root().join("tests").join("fixtures")
}

/// The full reference fixtures, when present next to the checkout
/// (`../shared/fixtures`, or `$NEXTTDNN_SHARED_FIXTURES`).
pub fn shared_fixtures() -> Option<PathBuf> {
    let p = std::env::var_os("NEXTTDNN_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("..").join("shared").join("fixtures"));
    p.join("C256_B3_K65_7.pt").exists().then_some(p)
}

pub fn config(name: &str) -> PathBuf {
    root().join("configs").join(format!("{name}.ron"))
}

pub fn load(path: &Path) -> BTreeMap<String, HostTensor> {
    read_safetensors(path).unwrap_or_else(|e| panic!("{e:#}")).0
}

/// The devices parity tests run on: always `cpu`; `wgpu` when built with it
/// and an adapter (a GPU, or lavapipe on CI) exists. `NEXTTDNN_TEST_DEVICES`
/// (comma-separated) overrides.
pub fn test_devices() -> Vec<(String, Device)> {
    let specs: Vec<String> = match std::env::var("NEXTTDNN_TEST_DEVICES") {
        Ok(v) => v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        Err(_) => {
            let mut v = vec!["cpu".to_string()];
            if cfg!(feature = "wgpu") && nexttdnn::device::available().len() > 1 {
                v.push("wgpu".into());
            } else {
                skip_unless_required(
                    "NEXTTDNN_REQUIRE_WGPU",
                    "wgpu parity: no wgpu adapter found; parity runs on cpu only",
                );
            }
            v
        }
    };
    specs
        .into_iter()
        .map(|s| {
            let spec: DeviceSpec = s.parse().expect("device spec");
            let sel = select(Some(spec)).unwrap_or_else(|e| panic!("{e:#}"));
            (s, sel.device)
        })
        .collect()
}

/// A fresh random seed every run, printed with `what`; `NEXTTDNN_TEST_SEED=S`
/// replays one.
pub fn seed(what: &str) -> u64 {
    let s = match std::env::var("NEXTTDNN_TEST_SEED") {
        Ok(v) => v.parse().expect("NEXTTDNN_TEST_SEED is a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    eprintln!("{what} seed {s} (replay with NEXTTDNN_TEST_SEED={s})");
    s
}

/// The CPU device (the `flex` backend).
pub fn cpu() -> Device {
    select(Some("cpu".parse().expect("device spec"))).unwrap_or_else(|e| panic!("{e:#}")).device
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// Max absolute difference; panics on length mismatch.
pub fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max)
}

pub fn max_ref(b: &[f32]) -> f64 {
    b.iter().map(|x| (*x as f64).abs()).fold(0.0, f64::max)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    nexttdnn::eval::score::cosine(a, b)
}

/// Transposes a row-major `[r, c]` matrix.
pub fn transpose(v: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    out
}

pub const UTTS: [&str; 4] = ["utt_0p500s", "utt_1p370s", "utt_3p015s", "utt_7p900s"];

/// The `nexttdnn` binary, quiet except for warnings.
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_nexttdnn"));
    c.env("RUST_LOG", "warn");
    c
}

/// A temporary folder for one test, removed when dropped. It is kept when
/// the test fails (for a look inside; its path is printed) or when
/// `NEXTTDNN_KEEP_TEST_DIRS=1`.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var("NEXTTDNN_KEEP_TEST_DIRS").is_ok_and(|v| v == "1") {
            skip(&format!("kept test folder {}", self.0.display()));
        } else {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }
}

/// A fresh temporary folder for one test (see [`TempDir`]).
pub fn tmpdir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("nexttdnn-test-{}-{tag}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// `nexttdnn import` of a committed tiny fixture checkpoint (`variant` is
/// also its config's name) to `out`, on the CPU.
pub fn import_cmd(variant: &str, out: &Path) -> std::process::Command {
    let mut c = bin();
    c.args(["--device", "cpu", "import"])
        .arg(fixtures().join(format!("{variant}.pt")))
        .arg("--config")
        .arg(config(variant))
        .arg("--out")
        .arg(out);
    c
}

/// Runs a command: (success, stdout, stderr). A program file the test has
/// just written can be briefly "busy": another test thread's child, between
/// its fork and exec, still holds the descriptor the copy was written through.
/// That spawn is retried.
pub fn run_cmd(c: &mut std::process::Command) -> (bool, String, String) {
    let mut tries = 0;
    let out = loop {
        match c.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => break r.unwrap(),
        }
    };
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs a command that must succeed; its stdout.
pub fn run_ok(c: &mut std::process::Command) -> String {
    let (ok, out, err) = run_cmd(c);
    assert!(ok, "failed: {out}\n{err}");
    out
}

/// Runs a command that must fail; its stderr.
pub fn run_err(c: &mut std::process::Command) -> String {
    let (ok, out, err) = run_cmd(c);
    assert!(!ok, "unexpected success: {out}");
    err
}

/// Reports a skipped check on the real stderr, past the test harness's output
/// capture, so that a skip is never silent.
pub fn skip(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {message}");
}

/// A skip for want of something that `$require=1` says must be there (CI
/// sets it): then the skip is a failure.
pub fn skip_unless_required(require: &str, message: &str) {
    if std::env::var(require).is_ok_and(|v| v == "1") {
        panic!("{message}, and {require}=1 requires it");
    }
    skip(message);
}

/// The full reference fixtures are missing: a skip, or a failure under
/// `NEXTTDNN_REQUIRE_SHARED=1`.
pub fn no_shared_fixtures(test: &str) {
    skip_unless_required(
        "NEXTTDNN_REQUIRE_SHARED",
        &format!("{test}: ../shared/fixtures is absent (set NEXTTDNN_SHARED_FIXTURES)"),
    );
}

/// Every file below `dir`, recursively, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
