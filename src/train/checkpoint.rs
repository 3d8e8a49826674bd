//! Training checkpoints: model (with BatchNorm statistics), optimiser state,
//! schedule and progress, written atomically as one directory.
//!
//! A checkpoint is written under a temporary name and renamed when complete,
//! so an interrupted write never leaves a directory that looks complete.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use super::model::TrainModel;
use crate::files::sha256_file;

/// Floats as their shortest exact decimal strings: serde_json's float parser
/// may be off by one unit in the last place, and a resumed run must see the
/// history bit for bit.
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }

    pub mod opt {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(x) => s.serialize_some(&format!("{x:?}")),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            Option::<String>::deserialize(d)?.map(|t| t.parse().map_err(serde::de::Error::custom)).transpose()
        }
    }
}

/// One row of the per-epoch history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRow {
    pub epoch: usize,
    pub steps: usize,
    #[serde(with = "exact")]
    pub loss: f64,
    #[serde(with = "exact")]
    pub accuracy: f64,
    #[serde(with = "exact")]
    pub lr: f64,
    #[serde(with = "exact::opt")]
    pub eer: Option<f64>,
    #[serde(with = "exact")]
    pub crops_per_sec: f64,
    #[serde(with = "exact")]
    pub loader_wait_secs: f64,
    #[serde(with = "exact")]
    pub step_secs: f64,
    #[serde(with = "exact::opt")]
    pub rss_mib: Option<f64>,
    /// Device memory held by live tensors and reserved by the allocator, on
    /// backends that report it (the GPU backends).
    #[serde(with = "exact::opt")]
    pub device_in_use_mib: Option<f64>,
    #[serde(with = "exact::opt")]
    pub device_reserved_mib: Option<f64>,
}

/// Sums of the log interval in progress, exactly as the device held them
/// (this rank's, or all ranks' summed when written by a job of several).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct IntervalSums {
    /// Sum of micro-batch losses.
    #[serde(with = "exact")]
    pub loss: f64,
    /// Crops classified correctly.
    #[serde(with = "exact")]
    pub correct: f64,
    /// Steps taken in the interval.
    pub steps: usize,
}

/// Sums over the steps of the epoch in progress.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct EpochSums {
    /// Sum of micro-batch losses over all ranks.
    #[serde(with = "exact")]
    pub loss: f64,
    #[serde(with = "exact")]
    pub correct: f64,
    pub steps: usize,
}

/// The format of `state.json` this version writes and reads.
pub const STATE_FORMAT: u32 = 2;

/// Everything besides tensors that a resumed run needs. Its size does not
/// grow with the run: the history is in the appended CSV files, whose
/// lengths at the checkpoint are kept so that a resume cuts off what was
/// logged after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    #[serde(default)]
    pub format: u32,
    pub config_name: String,
    /// Epoch in progress and steps of it already done.
    pub epoch: usize,
    pub step_in_epoch: usize,
    pub global_step: usize,
    pub epoch_sums: EpochSums,
    pub interval: IntervalSums,
    /// Bytes of `steps.csv` and `metrics.csv` at the checkpoint.
    pub steps_csv_bytes: u64,
    pub metrics_csv_bytes: u64,
    /// Kept models: (EER, path), best first.
    pub best: Vec<(f64, PathBuf)>,
}

fn dir_name(global_step: usize) -> String {
    format!("step-{global_step:09}")
}

/// Writes a checkpoint into `root/step-N/` and removes older ones.
pub fn save(root: &Path, model: &TrainModel, optim: &ModuleOptimizer, state: &TrainState) -> Result<PathBuf> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let name = dir_name(state.global_step);
    let tmp = root.join(format!(".{name}.partial"));
    std::fs::remove_dir_all(&tmp).ok();
    std::fs::create_dir_all(&tmp)?;
    model.clone().save_file(tmp.join("model.bpk")).map_err(|e| anyhow::anyhow!("saving model: {e:?}"))?;
    optim.save(tmp.join("optim.bpk")).map_err(|e| anyhow::anyhow!("saving optimiser: {e:?}"))?;
    std::fs::write(tmp.join("state.json"), serde_json::to_string_pretty(state)?)?;
    write_sums(&tmp)?;
    let done = root.join(&name);
    std::fs::remove_dir_all(&done).ok();
    std::fs::rename(&tmp, &done).with_context(|| format!("cannot complete checkpoint {}", done.display()))?;
    // Older checkpoints are superseded.
    for e in std::fs::read_dir(root)? {
        let p = e?.path();
        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() && n.starts_with("step-") && n != name {
            std::fs::remove_dir_all(&p).ok();
        }
    }
    Ok(done)
}

/// The files of a checkpoint, each listed with its SHA-256 in `SHA256SUMS`.
const FILES: [&str; 3] = ["model.bpk", "optim.bpk", "state.json"];
/// The checksum list, in `sha256sum`'s format (`sha256sum -c SHA256SUMS` checks it).
const SUMS: &str = "SHA256SUMS";

fn write_sums(dir: &Path) -> Result<()> {
    let mut text = String::new();
    for name in FILES {
        text.push_str(&format!("{}  {name}\n", sha256_file(&dir.join(name))?));
    }
    let f = dir.join(SUMS);
    std::fs::write(&f, text).with_context(|| format!("cannot write {}", f.display()))?;
    // The files must be on disk before the directory's rename publishes them.
    for name in FILES.iter().chain([&SUMS]) {
        std::fs::File::open(dir.join(name)).and_then(|f| f.sync_all()).ok();
    }
    Ok(())
}

/// Checks every file of a checkpoint against `SHA256SUMS`. A checkpoint of
/// an earlier version, written without one, is resumed with a warning.
fn verify_sums(dir: &Path) -> Result<()> {
    let list = dir.join(SUMS);
    if !list.is_file() {
        log::warn!("{}: no {SUMS} (written by an earlier version); its files are not verified", dir.display());
        return Ok(());
    }
    for (sum, name) in parse_sums(&list, &crate::files::read_text(&list)?)? {
        let actual = sha256_file(&dir.join(&name))?;
        if actual != sum {
            anyhow::bail!(
                "{}: the checkpoint is corrupt: {name} does not match its SHA-256 in {SUMS}; resume from another checkpoint or start again",
                dir.join(&name).display()
            );
        }
    }
    Ok(())
}

/// The (SHA-256, file) lines of a checkpoint's `SHA256SUMS` read from `list`
/// (named in errors): each file of the checkpoint exactly once.
pub fn parse_sums(list: &Path, text: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some((sum, name)) = line.split_once("  ") else {
            anyhow::bail!("{}:{}: malformed line {line:?}", list.display(), n + 1);
        };
        if !FILES.contains(&name) || out.iter().any(|(_, seen)| seen == name) {
            anyhow::bail!("{}:{}: unexpected file {name:?}", list.display(), n + 1);
        }
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            anyhow::bail!("{}:{}: not a SHA-256: {sum:?}", list.display(), n + 1);
        }
        out.push((sum.to_ascii_lowercase(), name.to_string()));
    }
    anyhow::ensure!(
        out.len() == FILES.len(),
        "{}: lists {} files, expected {}",
        list.display(),
        out.len(),
        FILES.len()
    );
    Ok(out)
}

/// The state of a checkpoint from the text of its `state.json` in `dir`.
pub fn parse_state(dir: &Path, text: &str) -> Result<TrainState> {
    let state: TrainState = serde_json::from_str(text).with_context(|| {
        format!("{}: state.json is corrupt or was written by an older version of nexttdnn", dir.display())
    })?;
    if state.format != STATE_FORMAT {
        anyhow::bail!(
            "{}: checkpoint format {} (this version reads format {STATE_FORMAT}); resume it with the version that wrote it",
            dir.display(),
            state.format
        );
    }
    Ok(state)
}

/// The newest complete checkpoint under `root`.
pub fn latest(root: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-")))
        .filter(|p| p.join("state.json").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Restores model, optimiser and state from a checkpoint directory.
pub fn load(
    dir: &Path,
    model: TrainModel,
    optim: ModuleOptimizer,
) -> Result<(TrainModel, ModuleOptimizer, TrainState)> {
    verify_sums(dir)?;
    let text =
        std::fs::read_to_string(dir.join("state.json")).with_context(|| format!("{}: no state.json", dir.display()))?;
    let state = parse_state(dir, &text)?;
    let model = model
        .try_load_file(dir.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("{}: cannot load model.bpk: {e:?}", dir.display()))?;
    let optim = optim
        .load(dir.join("optim.bpk"))
        .map_err(|e| anyhow::anyhow!("{}: cannot load optim.bpk: {e:?}", dir.display()))?;
    Ok((model, optim, state))
}
