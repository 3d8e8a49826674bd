//! One file per subcommand; each composes the library's stages.

pub mod average;
pub mod bench;
pub mod bench_train;
pub mod bundle;
pub mod calibrate;
pub mod cli;
pub mod compare;
pub mod devices;
pub mod embed;
pub mod enroll;
pub mod eval;
pub mod export;
pub mod import;
pub mod prepare;
pub mod timing;
pub mod train;
pub mod trial_embeddings;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::device::SelectedDevice;
use crate::weights::SpeakerModel;

/// Directory of the bundled assets (small model, recordings, trial list).
pub fn assets_dir() -> Result<PathBuf> {
    Ok(bundle::root()?.join("assets"))
}

/// The configurations shipped with the crate.
pub fn configs_dir() -> Result<PathBuf> {
    Ok(bundle::root()?.join("configs"))
}

/// `--model`, or the bundled demonstration model when none is given.
pub fn model_or_bundled(model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(p) => Ok(p.to_path_buf()),
        None => Ok(assets_dir()?.join("model").join("demo.nexttdnn.safetensors")),
    }
}

/// Loads `--model`, or the bundled model when none is given.
pub fn load_model(path: Option<&Path>, dev: &SelectedDevice) -> Result<SpeakerModel> {
    let path = model_or_bundled(path)?;
    log::info!("loading model {}", path.display());
    SpeakerModel::load(&path, &dev.device)
}

/// A progress bar in the project's style.
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .expect("valid template"),
    );
    pb.set_message(what.to_string());
    pb
}

/// Progress bars on the terminal, for library code that reports through
/// [`crate::progress::Reporter`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Terminal;

struct TerminalBar(indicatif::ProgressBar);

impl crate::progress::Progress for TerminalBar {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn message(&self, text: String) {
        self.0.set_message(text);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl crate::progress::Reporter for Terminal {
    fn bar(&self, len: u64, what: &str) -> Box<dyn crate::progress::Progress> {
        Box::new(TerminalBar(progress(len, what)))
    }
}
