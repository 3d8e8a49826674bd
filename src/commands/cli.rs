//! Command-line definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::device::DeviceSpec;

#[derive(Debug, Parser)]
#[command(name = "nexttdnn", version, about = "Speaker verification with NeXt-TDNN on any GPU or the CPU")]
pub struct Cli {
    /// Device: cpu, wgpu[:N], vulkan[:N], metal or cuda[:N]. Default: the best GPU, else cpu.
    #[arg(long, global = true)]
    pub device: Option<DeviceSpec>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import an official PyTorch checkpoint (.pt or .safetensors) into a model file.
    Import(super::import::ImportArgs),
    /// Write embeddings of WAV files: DIR/embeddings.npy and DIR/index.txt.
    Embed(super::embed::EmbedArgs),
    /// Score two recordings: cosine similarity, the LLR with a calibration, and a decision.
    Verify(super::verify::VerifyArgs),
    /// Enroll a speaker (or a list of `name path` lines) into a registry file.
    Enroll(super::enroll::EnrollArgs),
    /// Identify recordings against a registry: ranked speakers, or `unknown`.
    Identify(super::enroll::IdentifyArgs),
    /// List, remove, rename, export or import the speakers of a registry.
    Registry {
        #[command(subcommand)]
        what: super::enroll::RegistryCommand,
    },
    /// Time embedding extraction and the front end (median of repeats) and report peak memory.
    Bench(super::bench::BenchArgs),
    /// Train a model (or resume a run) on a train list, with validation EER per epoch.
    Train(super::train::TrainArgs),
    /// Evaluate on a trial list: EER, minDCF, optional AS-norm and calibration, scores, summary and plots.
    Eval(super::eval::EvalArgs),
    /// Fit a calibration (scores and quality measures → log-likelihood ratios) on a trial list.
    Calibrate(super::calibrate::CalibrateArgs),
    /// Average model files (checkpoint averaging): given files, or a run's last or best epochs.
    Average(super::average::AverageArgs),
    /// Export a model as an ONNX graph (waveform or features in, embedding out).
    Export(super::export::ExportArgs),
    /// Run one model on several devices and compare results, deviations and speed.
    Compare(super::compare::CompareArgs),
    /// Prepare data: VoxCeleb trees (with .m4a decoding), MUSAN, RIRs, trial lists.
    Prepare {
        #[command(subcommand)]
        what: PrepareCommand,
    },
    /// List the devices this build can use on this machine.
    Devices,
}

#[derive(Debug, Subcommand)]
pub enum PrepareCommand {
    /// Scan a VoxCeleb tree (<speaker>/<video>/<utt>.wav|.m4a), validate every file,
    /// decode .m4a to WAV, and write train_list.txt, speakers.txt and report.tsv.
    Voxceleb {
        /// Root of the tree.
        root: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 16000)]
        sample_rate: u32,
        /// Shortest usable file, in seconds.
        #[arg(long, default_value_t = 0.5)]
        min_seconds: f64,
        /// Worker threads (default: all cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Replace existing outputs.
        #[arg(long)]
        force: bool,
    },
    /// Split MUSAN into 5 s chunks every 3 s: OUT/<type>/<source>/<file>/<start>.wav.
    Musan {
        /// The MUSAN root (music/, noise/, speech/).
        root: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 16000)]
        sample_rate: u32,
        #[arg(long, default_value_t = 5.0)]
        chunk_seconds: f64,
        #[arg(long, default_value_t = 3.0)]
        hop_seconds: f64,
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long)]
        force: bool,
    },
    /// Select the simulated small and medium rooms of RIRS_NOISES.
    Rir {
        /// The RIRS_NOISES root (or its simulated_rirs folder).
        root: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Rooms to keep.
        #[arg(long, value_delimiter = ',', default_value = "smallroom,mediumroom")]
        rooms: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Check that every file of a trial list exists; with several roots
    /// (VoxCeleb1 dev and test apart), build a merged tree of links.
    Trials {
        list: PathBuf,
        /// Audio roots, searched in order.
        #[arg(long = "root", required = true)]
        roots: Vec<PathBuf>,
        /// Where to build the merged tree (needed with several roots).
        #[arg(long)]
        merged: Option<PathBuf>,
        /// The sample rate every file must have.
        #[arg(long, default_value_t = 16000)]
        sample_rate: u32,
        /// Shortest accepted file, in seconds (the official models need 0.03 s).
        #[arg(long, default_value_t = 0.03, value_parser = non_negative)]
        min_seconds: f64,
    },
}

/// A number option that must be finite (`NaN` and `inf` are refused).
pub fn finite(text: &str) -> Result<f64, String> {
    let v: f64 = text.trim().parse().map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{text:?} is not a finite number"))
    }
}

/// A probability strictly between 0 and 1 (a prior).
pub fn probability(text: &str) -> Result<f64, String> {
    let v = finite(text)?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not in (0, 1)"))
    }
}

/// A finite number of zero or more (seconds, tolerances).
pub fn non_negative(text: &str) -> Result<f64, String> {
    let v = finite(text)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} is negative"))
    }
}

/// A memory size: bytes, or a number with K, M, G or T (powers of 1024),
/// e.g. `8G` or `1.5G`.
pub fn memory_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, scale) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let p = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{text:?}: the unit must be K, M, G or T")),
            };
            (&t[..i], (1u64 << p) as f64)
        }
        _ => (t, 1.0),
    };
    let v = non_negative(num)? * scale;
    if v >= 1.0 && v < u64::MAX as f64 {
        Ok(v as u64)
    } else {
        Err(format!("{text:?} is not a memory size"))
    }
}

/// `--max-memory`, else half of the memory available now (Linux's
/// `MemAvailable`), else 4 GiB where that cannot be read.
pub fn memory_budget(max: Option<u64>) -> u64 {
    max.or_else(|| crate::device::available_bytes().map(|b| b / 2)).unwrap_or(4 << 30)
}
