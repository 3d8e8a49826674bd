//! Our model files: a safetensors file with the network's tensors, the
//! AAM class matrix, the config, provenance, an optional threshold, and a
//! SHA-256 over all of it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::tensor::Device;
use sha2::{Digest, Sha256};

use super::checked::{hash_field, verify_checksum, write_checked_safetensors, CHECKSUM_KEY};
use super::{fill_strict, net_tensors, parse_safetensors, Collect, HostTensor, AAM_KEY};
use crate::config::ExperimentConfig;
use crate::files::{hex, write_atomic};
use crate::model::NextTdnn;

/// Provenance and settings stored with a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelMeta {
    pub source: Option<String>,
    pub source_sha256: Option<String>,
    /// Decision threshold on the cosine score, e.g. from an evaluation's EER point.
    pub threshold: Option<f64>,
    /// A score calibration (`calibrate --store`), as its JSON text; read by
    /// `eval::calibration`.
    pub calibration: Option<String>,
}

/// A network with its configuration: what a model file holds.
#[derive(Debug, Clone)]
pub struct SpeakerModel {
    pub config: ExperimentConfig,
    pub net: NextTdnn,
    /// AAM-softmax class matrix, when known (kept for fine-tuning).
    pub aam: Option<HostTensor>,
    pub meta: ModelMeta,
    /// The model's key ([`model_key`]) for the weights in `net` when the
    /// model was made; replacing `net` calls for a new `SpeakerModel`.
    pub key: String,
}

/// The model's key: SHA-256 over what determines its embeddings, the front
/// end's and the network's config and every tensor of the network (names,
/// shapes and float32 values, in name order), each field length-prefixed.
/// Training-only settings, the AAM class matrix and the file's metadata
/// (threshold, calibration, provenance) leave it unchanged. It keys the
/// embedding cache and the speaker registry, and is computed from host
/// data, so that no device is read for it (a synchronous read is not
/// possible on WebGPU).
pub fn model_key<'a>(
    config: &ExperimentConfig,
    tensors: impl IntoIterator<Item = (&'a String, &'a HostTensor)>,
) -> String {
    let field = hash_field;
    let mut h = Sha256::new();
    let frontend = ron::ser::to_string(&config.frontend).expect("config serialises");
    let model = ron::ser::to_string(&config.model).expect("config serialises");
    field(&mut h, frontend.as_bytes());
    field(&mut h, model.as_bytes());
    let mut sorted: Vec<(&String, &HostTensor)> = tensors.into_iter().filter(|(n, _)| n.as_str() != AAM_KEY).collect();
    sorted.sort_by_key(|(n, _)| n.as_str());
    for (name, t) in sorted {
        field(&mut h, name.as_bytes());
        field(&mut h, &t.shape.iter().flat_map(|d| (*d as u64).to_le_bytes()).collect::<Vec<u8>>());
        field(&mut h, &t.values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    }
    hex(&h.finalize())
}

/// Format tag of our model files.
pub const MODEL_FORMAT: &str = "nexttdnn-model";
/// Version of our model file layout: 2 adds the payload checksum.
pub const MODEL_FORMAT_VERSION: &str = "2";
/// The earlier layout, still read (without a checksum to verify).
const MODEL_FORMAT_VERSION_UNCHECKED: &str = "1";

/// Checks a model file's checksum against its content (format 2), or warns
/// that a format-1 file carries none.
fn verify_model_bytes(path: &Path, bytes: &[u8], meta: &BTreeMap<String, String>) -> Result<()> {
    if !meta.contains_key(CHECKSUM_KEY)
        && meta.get("format_version").map(String::as_str) == Some(MODEL_FORMAT_VERSION_UNCHECKED)
    {
        log::warn!("{}: a format-1 model file, which carries no checksum; re-save it to add one", path.display());
        return Ok(());
    }
    verify_checksum(path, bytes, meta, "restore it from a backup or export it again")
}

impl SpeakerModel {
    /// Writes the model atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut c = Collect { stack: vec![], out: vec![] };
        self.net.visit(&mut c);
        let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, data) in c.out {
            let shape = data.shape().to_vec();
            let v =
                data.convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("parameter {name}: {e:?}"))?;
            named.push((name, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect()));
        }
        if let Some(a) = &self.aam {
            named.push((AAM_KEY.into(), a.shape.clone(), a.values.iter().flat_map(|x| x.to_le_bytes()).collect()));
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), MODEL_FORMAT.to_string());
        meta.insert("format_version".to_string(), MODEL_FORMAT_VERSION.to_string());
        meta.insert("crate_version".to_string(), env!("CARGO_PKG_VERSION").to_string());
        meta.insert("config".to_string(), self.config.to_ron());
        if let Some(s) = &self.meta.source {
            meta.insert("source".into(), s.clone());
        }
        if let Some(s) = &self.meta.source_sha256 {
            meta.insert("source_sha256".into(), s.clone());
        }
        if let Some(c) = &self.meta.calibration {
            meta.insert("calibration".into(), c.clone());
        }
        if let Some(t) = self.meta.threshold {
            meta.insert("threshold".into(), format!("{t:?}"));
        }
        let bytes = write_checked_safetensors(meta, named)?;
        write_atomic(path, &bytes)
    }

    /// A model of a network held in memory (trained, imported or fresh);
    /// its key is computed from the network's tensors, read to the host.
    pub fn from_net(config: ExperimentConfig, net: NextTdnn, aam: Option<HostTensor>, meta: ModelMeta) -> Result<Self> {
        let key = model_key(&config, &net_tensors(&net)?);
        Ok(Self { config, net, aam, meta, key })
    }

    /// Reads a model file written by [`SpeakerModel::save`].
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::from_file(ModelFile::read(path)?, path, device)
    }

    /// A model from the bytes of a model file (fetched in a browser, or
    /// embedded in a program), with every check [`SpeakerModel::load`] makes.
    /// Errors name the model as `model bytes`.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        Self::from_named_bytes("model bytes", bytes, device)
    }

    /// [`SpeakerModel::from_bytes`], naming the model `name` in errors.
    pub fn from_named_bytes(name: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        let path = Path::new(name);
        Self::from_file(read_model_file(path, bytes)?, path, device)
    }

    /// The model of a checked model file's content (`path` is named in errors).
    pub fn from_file(file: ModelFile, path: &Path, device: &Device) -> Result<Self> {
        let ModelFile { mut tensors, config, meta } = file;
        let aam = tensors.remove(AAM_KEY);
        let key = model_key(&config, &tensors);
        let model = NextTdnn::new(&config.model, config.frontend.n_mels, config.train.seed, device);
        let (net, _) = fill_strict(model, tensors, &BTreeMap::new(), vec![], vec![], path)?;
        Ok(Self { config, net, aam, meta, key })
    }
}

/// The checked content of a model file, before any tensor becomes a network.
#[derive(Debug)]
pub struct ModelFile {
    pub tensors: BTreeMap<String, HostTensor>,
    pub config: ExperimentConfig,
    pub meta: ModelMeta,
}

impl ModelFile {
    /// Reads and checks the model file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!("{}: model file not found", path.display());
        }
        let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        read_model_file(path, &bytes)
    }
}

/// Most float values a model file's network may hold: 2^30 (4 GiB of
/// float32), 150 times the largest official NeXt-TDNN.
const MAX_VALUES: u64 = 1 << 30;

/// Checks what a checksum cannot (anyone can recompute one): that the
/// config's network is of a bounded size and holds exactly as many values
/// as the file stores, before a network is allocated (names and shapes are
/// then checked one by one as it is filled), that the AAM matrix matches the
/// embedding size, and that every value is a finite number.
fn check_contents(path: &Path, config: &ExperimentConfig, tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
    let wanted =
        crate::model::value_count(&config.model, config.frontend.n_mels).filter(|&n| n <= MAX_VALUES).with_context(
            || format!("{}: the embedded config describes a network of over {MAX_VALUES} values", path.display()),
        )?;
    let stored: u64 = tensors.iter().filter(|(k, _)| k.as_str() != AAM_KEY).map(|(_, t)| t.values.len() as u64).sum();
    if stored != wanted {
        bail!(
            "{}: the embedded config ({}) describes a network of {wanted} values, but the file holds {stored}",
            path.display(),
            config.name
        );
    }
    if let Some(a) = tensors.get(AAM_KEY) {
        let e = config.model.embedding_dim;
        if a.shape.len() != 2 || a.shape[1] != e {
            bail!("{}: tensor {AAM_KEY} has shape {:?}, expected [classes, {e}]", path.display(), a.shape);
        }
    }
    for (name, t) in tensors {
        if let Some(i) = t.values.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: tensor {name} holds a value that is not a finite number ({} at index {i}); the model is damaged",
                path.display(),
                t.values[i]
            );
        }
    }
    Ok(())
}

/// Parses and checks the bytes of a model file read from `path` (named in
/// errors): the format tag and version, the checksum over metadata and
/// tensors, the embedded config and the threshold.
pub fn read_model_file(path: &Path, bytes: &[u8]) -> Result<ModelFile> {
    let (tensors, meta) =
        parse_safetensors(path, bytes).with_context(|| format!("{}: not a nexttdnn model file", path.display()))?;
    if meta.get("format").map(String::as_str) != Some(MODEL_FORMAT) {
        bail!(
            "{}: not a nexttdnn model file (no '{MODEL_FORMAT}' tag); to use an official checkpoint run `nexttdnn import`",
            path.display()
        );
    }
    match meta.get("format_version").map(String::as_str) {
        Some(MODEL_FORMAT_VERSION | MODEL_FORMAT_VERSION_UNCHECKED) => verify_model_bytes(path, bytes, &meta)?,
        other => bail!(
            "{}: model file version {other:?}; this version of nexttdnn reads versions {MODEL_FORMAT_VERSION_UNCHECKED} and {MODEL_FORMAT_VERSION}",
            path.display()
        ),
    }
    let cfg_text =
        meta.get("config").with_context(|| format!("{}: the model file carries no config", path.display()))?;
    let config = ExperimentConfig::parse(cfg_text)
        .with_context(|| format!("{}: the embedded config is invalid", path.display()))?;
    check_contents(path, &config, &tensors)?;
    let threshold = match meta.get("threshold") {
        Some(t) => Some(
            t.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| format!("{}: bad threshold {t:?}", path.display()))?,
        ),
        None => None,
    };
    let meta = ModelMeta {
        source: meta.get("source").cloned(),
        source_sha256: meta.get("source_sha256").cloned(),
        threshold,
        calibration: meta.get("calibration").cloned(),
    };
    Ok(ModelFile { tensors, config, meta })
}
