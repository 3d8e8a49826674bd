//! `export --onnx`: a model as an ONNX graph.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::device::SelectedDevice;
use crate::files::{sha256_file, write_atomic, OutputLock, WhenBusy};
use crate::onnx::{export, OnnxInput};
use crate::weights::SpeakerModel;

/// Options of `export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Model file (default: the bundled model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to write the ONNX model.
    #[arg(long)]
    pub onnx: PathBuf,
    /// The graph's input: the 16 kHz waveform (front end inside the graph)
    /// or log-mel features.
    #[arg(long, value_enum, default_value = "waveform")]
    pub input: OnnxInput,
    /// ONNX opset, 17 to 21.
    #[arg(long, default_value_t = 17)]
    pub opset: i64,
}

pub fn run(args: &ExportArgs, dev: &SelectedDevice) -> Result<()> {
    let path = super::model_or_bundled(args.model.as_deref())?;
    let model = SpeakerModel::load(&path, &dev.device)?;
    let mut meta = BTreeMap::new();
    meta.insert("model_sha256".to_string(), sha256_file(&path)?);
    meta.insert("model_content_sha256".to_string(), model.key.clone());
    if let Some(t) = model.meta.threshold {
        meta.insert("threshold".to_string(), format!("{t:?}"));
    }
    if let Some(c) = &model.meta.calibration {
        meta.insert("calibration".to_string(), c.clone());
    }
    if let Some(s) = &model.meta.source {
        meta.insert("source".to_string(), s.clone());
    }
    let bytes = export(&model, args.input, args.opset, meta)?;
    let _lock = OutputLock::acquire(&args.onnx, WhenBusy::Wait)?;
    write_atomic(&args.onnx, &bytes).with_context(|| format!("cannot write {}", args.onnx.display()))?;
    println!(
        "exported {} ({} input, opset {}) to {} ({:.1} MB)",
        model.config.name,
        format!("{:?}", args.input).to_lowercase(),
        args.opset,
        args.onnx.display(),
        bytes.len() as f64 / 1e6
    );
    Ok(())
}
