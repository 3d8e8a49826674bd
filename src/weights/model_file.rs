//! Our model files: a safetensors file with the network's tensors, the
//! AAM class matrix, the config, provenance, an optional threshold, and a
//! SHA-256 over all of it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::tensor::Device;
use sha2::{Digest, Sha256};

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
}

/// Format tag of our model files.
pub const MODEL_FORMAT: &str = "nexttdnn-model";
/// Version of our model file layout: 2 adds the payload checksum.
pub const MODEL_FORMAT_VERSION: &str = "2";
/// The earlier layout, still read (without a checksum to verify).
const MODEL_FORMAT_VERSION_UNCHECKED: &str = "1";
/// Metadata key of the SHA-256 over the metadata and tensors.
pub const CHECKSUM_KEY: &str = "payload_sha256";

/// SHA-256 over a model file's content: every metadata entry but the
/// checksum itself, then every tensor's name, dtype, shape and bytes, in
/// name order, each field length-prefixed. A flipped byte in the tensor
/// data or an edited config in the header changes it.
fn payload_digest<'a>(
    meta: &BTreeMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, &'a str, &'a [usize], &'a [u8])>,
) -> String {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    for (k, v) in meta.iter().filter(|(k, _)| k.as_str() != CHECKSUM_KEY) {
        field(&mut h, k.as_bytes());
        field(&mut h, v.as_bytes());
    }
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_by_key(|t| t.0);
    for (name, dtype, shape, data) in tensors {
        field(&mut h, name.as_bytes());
        field(&mut h, dtype.as_bytes());
        let dims: Vec<u8> = shape.iter().flat_map(|d| (*d as u64).to_le_bytes()).collect();
        field(&mut h, &dims);
        field(&mut h, data);
    }
    hex(&h.finalize())
}

/// Checks a model file's checksum against its content (format 2), or warns
/// that a format-1 file carries none.
fn verify_model_bytes(path: &Path, bytes: &[u8], meta: &BTreeMap<String, String>) -> Result<()> {
    use safetensors::SafeTensors;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("{}: corrupt or not a safetensors file: {e}", path.display()))?;
    let Some(stored) = meta.get(CHECKSUM_KEY) else {
        if meta.get("format_version").map(String::as_str) == Some(MODEL_FORMAT_VERSION_UNCHECKED) {
            log::warn!("{}: a format-1 model file, which carries no checksum; re-save it to add one", path.display());
            return Ok(());
        }
        bail!("{}: the model file carries no checksum ({CHECKSUM_KEY})", path.display());
    };
    let dtypes: Vec<(String, String, Vec<usize>, &[u8])> =
        st.tensors().into_iter().map(|(n, v)| (n, format!("{:?}", v.dtype()), v.shape().to_vec(), v.data())).collect();
    let actual = payload_digest(meta, dtypes.iter().map(|(n, d, s, b)| (n.as_str(), d.as_str(), s.as_slice(), *b)));
    // A fuzzer cannot forge SHA-256: under fuzzing the readers behind the
    // check are reached anyway.
    if &actual != stored && !cfg!(fuzzing) {
        bail!(
            "{}: the model file is corrupt: its content does not match its checksum ({CHECKSUM_KEY} {stored}, content {actual}); restore it from a backup or export it again",
            path.display()
        );
    }
    Ok(())
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
        let mut meta = std::collections::HashMap::new();
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
        let views: Vec<(String, safetensors::tensor::TensorView)> = named
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("valid view"),
                )
            })
            .collect();
        let sorted: BTreeMap<String, String> = meta.clone().into_iter().collect();
        let digest = payload_digest(&sorted, named.iter().map(|(n, s, b)| (n.as_str(), "F32", s.as_slice(), &b[..])));
        meta.insert(CHECKSUM_KEY.into(), digest);
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| anyhow::anyhow!("cannot serialise model: {e}"))?;
        write_atomic(path, &bytes)
    }

    /// SHA-256 over the config and every tensor of the network (names,
    /// shapes and float32 values), but not the file's metadata: the key of
    /// the model's embedding cache, which a stored threshold leaves intact.
    pub fn content_hash(&self) -> Result<String> {
        let mut h = Sha256::new();
        let cfg = self.config.to_ron();
        h.update((cfg.len() as u64).to_le_bytes());
        h.update(cfg.as_bytes());
        for (name, t) in net_tensors(&self.net)? {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((t.shape.len() as u64).to_le_bytes());
            for d in &t.shape {
                h.update((*d as u64).to_le_bytes());
            }
            for v in &t.values {
                h.update(v.to_le_bytes());
            }
        }
        Ok(hex(&h.finalize()))
    }

    /// Reads a model file written by [`SpeakerModel::save`].
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::from_file(ModelFile::read(path)?, path, device)
    }

    /// The model of a checked model file's content (`path` is named in errors).
    pub fn from_file(file: ModelFile, path: &Path, device: &Device) -> Result<Self> {
        let ModelFile { mut tensors, config, meta } = file;
        let aam = tensors.remove(AAM_KEY);
        let model = NextTdnn::new(&config.model, config.frontend.n_mels, config.train.seed, device);
        let (net, _) = fill_strict(model, tensors, &BTreeMap::new(), vec![], vec![], path)?;
        Ok(Self { config, net, aam, meta })
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
