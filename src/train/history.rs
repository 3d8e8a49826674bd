//! The run's history on disk: `steps.csv` (one row per log interval) and
//! `metrics.csv` (one row per epoch), appended as the run goes and never
//! rewritten, and the curves plotted from `metrics.csv`.
//!
//! A checkpoint records both files' lengths; a resumed run cuts them back to
//! those lengths, so rows logged after the checkpoint are written again
//! exactly once.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::checkpoint::EpochRow;

pub const STEPS_HEADER: &str = "global_step,epoch,steps,loss,accuracy_percent,lr\n";
pub const METRICS_HEADER: &str = "epoch,steps,loss,accuracy_percent,lr,eer_percent,crops_per_sec,loader_wait_secs,step_secs,rss_mib,device_in_use_mib,device_reserved_mib\n";

/// One append-only CSV file.
pub struct CsvLog {
    path: PathBuf,
    file: File,
    len: u64,
}

impl CsvLog {
    /// Creates the file with its header, or, when resuming, opens it and cuts
    /// it back to `resume_len` bytes.
    pub fn open(path: &Path, header: &str, resume_len: Option<u64>) -> Result<Self> {
        let file = match resume_len {
            None => {
                let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
                f.write_all(header.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
                f
            }
            Some(len) => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .with_context(|| format!("{}: cannot open the run's log to resume", path.display()))?;
                let have = f.metadata()?.len();
                if have < len {
                    bail!(
                        "{}: {have} bytes, but the checkpoint was taken at {len}: the log was cut or replaced",
                        path.display()
                    );
                }
                f.set_len(len).with_context(|| format!("cannot truncate {}", path.display()))?;
                f
            }
        };
        let len = file.metadata()?.len();
        let mut log = Self { path: path.to_path_buf(), file, len };
        log.seek_end()?;
        Ok(log)
    }

    fn seek_end(&mut self) -> Result<()> {
        use std::io::Seek;
        self.file
            .seek(std::io::SeekFrom::Start(self.len))
            .with_context(|| format!("cannot seek {}", self.path.display()))?;
        Ok(())
    }

    /// Appends one line (with its newline).
    pub fn append(&mut self, line: &str) -> Result<()> {
        self.file.write_all(line.as_bytes()).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Flushes to stable storage and returns the length, for a checkpoint.
    pub fn sync(&mut self) -> Result<u64> {
        self.file.sync_data().with_context(|| format!("cannot sync {}", self.path.display()))?;
        Ok(self.len)
    }
}

/// A `steps.csv` row.
pub fn step_line(global_step: usize, epoch: usize, steps: usize, loss: f64, accuracy: f64, lr: f64) -> String {
    format!("{global_step},{epoch},{steps},{loss},{accuracy},{lr}\n")
}

/// A `metrics.csv` row.
pub fn epoch_line(r: &EpochRow) -> String {
    let opt = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{}\n",
        r.epoch,
        r.steps,
        r.loss,
        r.accuracy,
        r.lr,
        opt(r.eer),
        r.crops_per_sec,
        r.loader_wait_secs,
        r.step_secs,
        opt(r.rss_mib),
        opt(r.device_in_use_mib),
        opt(r.device_reserved_mib)
    )
}

/// Columns of `metrics.csv` for the curves: epoch, loss, accuracy, lr and
/// EER (empty where there was no validation).
type CurveRow = (f64, f64, f64, f64, Option<f64>);

fn read_metrics(path: &Path) -> Result<Vec<CurveRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = vec![];
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |k: usize| -> Result<f64> {
            f.get(k)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{}:{}: malformed row {line:?}", path.display(), i + 1))
        };
        let eer = f.get(5).and_then(|v| v.parse().ok());
        rows.push((num(0)?, num(2)?, num(3)?, num(4)?, eer));
    }
    Ok(rows)
}

/// Plots `curves.png` and `curves.svg` in `out` from its `metrics.csv`.
pub fn plot_curves(out: &Path) -> Result<()> {
    let rows = read_metrics(&out.join("metrics.csv"))?;
    let col = |f: &dyn Fn(&CurveRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter().filter_map(|r| f(r).map(|v| (r.0, v))).collect()
    };
    crate::eval::plot::panels(
        &out.join("curves"),
        "Training",
        &[
            ("loss", col(&|r| Some(r.1))),
            ("accuracy (%)", col(&|r| Some(r.2))),
            ("learning rate", col(&|r| Some(r.3))),
            ("validation EER (%)", col(&|r| r.4)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_cuts_back_to_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("nexttdnn-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("steps.csv");
        let mut log = CsvLog::open(&p, "h\n", None).unwrap();
        log.append("a\n").unwrap();
        let at = log.sync().unwrap();
        log.append("b\n").unwrap();
        drop(log);
        let mut log = CsvLog::open(&p, "h\n", Some(at)).unwrap();
        log.append("c\n").unwrap();
        drop(log);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "h\na\nc\n");
        assert!(CsvLog::open(&p, "h\n", Some(100)).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
