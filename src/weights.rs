//! Model weights: import of the official PyTorch checkpoints and our own
//! model files.
//!
//! # Key map
//!
//! Official names (after the `speaker_net.` prefix is stripped) map to ours by
//! the table [`KEY_MAP`]; `{s}`, `{b}` and `{i}` stand for stage, block and
//! branch indices. Loading is strict: every key of the checkpoint must be used,
//! every parameter of the model filled, and every shape must agree.
//!
//! | official | ours | transform |
//! |---|---|---|
//! | `model.stem.0.0.{weight,bias}` | `stem.*` | — |
//! | `model.stem.0.1.{weight,bias}` | `stem_norm.*` | — |
//! | `model.stages.{s}.{b}.projection_linear.*` | `stages.{s}.{b}.msc.projection.*` | — |
//! | `model.stages.{s}.{b}.mscconv.{i}.*` | `stages.{s}.{b}.msc.branches.{i}.*` | — |
//! | `model.stages.{s}.{b}.pwconv_1stage.weight` | `stages.{s}.{b}.msc.pointwise.weight` | transpose |
//! | `model.stages.{s}.{b}.dwconv.*` | `stages.{s}.{b}.depthwise.*` | — |
//! | `model.stages.{s}.{b}.norm.*` | `stages.{s}.{b}.ffn.norm.*` | — |
//! | `model.stages.{s}.{b}.pwconv1.weight` | `stages.{s}.{b}.ffn.expand.weight` | transpose |
//! | `model.stages.{s}.{b}.grn.{gamma,beta}` | `stages.{s}.{b}.ffn.grn.*` | `[1,1,N]` → `[N]` |
//! | `model.stages.{s}.{b}.pwconv2.weight` | `stages.{s}.{b}.ffn.project.weight` | transpose |
//! | `model.MFA.0.*` / `model.MFA.1.*` | `mfa_conv.*` / `mfa_norm.*` | — |
//! | `aggregate.conv_1.*` / `aggregate.conv_2.*` | `head.attn_conv1.*` / `head.attn_conv2.*` | — |
//! | `aggregate.bn1.*` / `bn2.*` / `bn3.*` | `head.attn_bn.*` / `head.stats_bn.*` / `head.embed_bn.*` | — |
//! | `aggregate.fc.weight` | `head.fc.weight` | transpose |
//! | `aggregate.bn{1,2,3}.num_batches_tracked` | — | checked to be a scalar, not needed |
//! | `loss_function.weight` | `aam.weight` (kept for fine-tuning) | — |
//! | `feature_extractor.*` (window, filterbank, pre-emphasis filter) | — | checked against the config's front end |
//!
//! Biases of the transposed layers map without transform.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::config::ExperimentConfig;
use crate::features;
use crate::model::NextTdnn;

/// A host tensor: shape and float32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl HostTensor {
    /// The transpose of a matrix.
    pub fn transpose2(&self) -> Self {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut values = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                values[j * r + i] = self.values[i * c + j];
            }
        }
        Self { shape: vec![c, r], values }
    }
}

/// What to do with an official tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    Copy,
    /// PyTorch Linear `[out, in]` → ours `[in, out]`.
    Transpose,
    /// GRN `[1, 1, N]` → `[N]`.
    Flatten,
    /// BatchNorm step counter: not needed.
    Counter,
    /// Front-end buffer, checked against the configuration.
    Frontend,
}

/// The key map: (official pattern, our name, transform). See the module docs.
const KEY_MAP: &[(&str, &str, Transform)] = &[
    (r"^model\.stem\.0\.0\.(weight|bias)$", "stem.$1", Transform::Copy),
    (r"^model\.stem\.0\.1\.(weight|bias)$", "stem_norm.$1", Transform::Copy),
    (
        r"^model\.stages\.(\d+)\.(\d+)\.projection_linear\.(weight|bias)$",
        "stages.$1.$2.msc.projection.$3",
        Transform::Copy,
    ),
    (
        r"^model\.stages\.(\d+)\.(\d+)\.mscconv\.(\d+)\.(weight|bias)$",
        "stages.$1.$2.msc.branches.$3.$4",
        Transform::Copy,
    ),
    (
        r"^model\.stages\.(\d+)\.(\d+)\.pwconv_1stage\.weight$",
        "stages.$1.$2.msc.pointwise.weight",
        Transform::Transpose,
    ),
    (r"^model\.stages\.(\d+)\.(\d+)\.pwconv_1stage\.bias$", "stages.$1.$2.msc.pointwise.bias", Transform::Copy),
    (r"^model\.stages\.(\d+)\.(\d+)\.dwconv\.(weight|bias)$", "stages.$1.$2.depthwise.$3", Transform::Copy),
    (r"^model\.stages\.(\d+)\.(\d+)\.norm\.(weight|bias)$", "stages.$1.$2.ffn.norm.$3", Transform::Copy),
    (r"^model\.stages\.(\d+)\.(\d+)\.pwconv1\.weight$", "stages.$1.$2.ffn.expand.weight", Transform::Transpose),
    (r"^model\.stages\.(\d+)\.(\d+)\.pwconv1\.bias$", "stages.$1.$2.ffn.expand.bias", Transform::Copy),
    (r"^model\.stages\.(\d+)\.(\d+)\.grn\.(gamma|beta)$", "stages.$1.$2.ffn.grn.$3", Transform::Flatten),
    (r"^model\.stages\.(\d+)\.(\d+)\.pwconv2\.weight$", "stages.$1.$2.ffn.project.weight", Transform::Transpose),
    (r"^model\.stages\.(\d+)\.(\d+)\.pwconv2\.bias$", "stages.$1.$2.ffn.project.bias", Transform::Copy),
    (r"^model\.MFA\.0\.(weight|bias)$", "mfa_conv.$1", Transform::Copy),
    (r"^model\.MFA\.1\.(weight|bias)$", "mfa_norm.$1", Transform::Copy),
    (r"^aggregate\.conv_1\.(weight|bias)$", "head.attn_conv1.$1", Transform::Copy),
    (r"^aggregate\.conv_2\.(weight|bias)$", "head.attn_conv2.$1", Transform::Copy),
    (r"^aggregate\.bn1\.(weight|bias|running_mean|running_var)$", "head.attn_bn.$1", Transform::Copy),
    (r"^aggregate\.bn2\.(weight|bias|running_mean|running_var)$", "head.stats_bn.$1", Transform::Copy),
    (r"^aggregate\.bn3\.(weight|bias|running_mean|running_var)$", "head.embed_bn.$1", Transform::Copy),
    (r"^aggregate\.fc\.weight$", "head.fc.weight", Transform::Transpose),
    (r"^aggregate\.fc\.bias$", "head.fc.bias", Transform::Copy),
    (r"^aggregate\.bn[123]\.num_batches_tracked$", "", Transform::Counter),
    (r"^loss_function\.weight$", AAM_KEY, Transform::Copy),
    (r"^feature_extractor\..*$", "", Transform::Frontend),
];

/// How an official tensor maps to ours: our name, and whether the values are
/// transposed (`Linear`) on the way. `None` for keys that map to no parameter.
pub fn official_to_ours(key: &str) -> Option<(String, bool)> {
    for (pat, rep, t) in KEY_MAP {
        let re = Regex::new(pat).expect("valid key pattern");
        if re.is_match(key) {
            return match t {
                Transform::Copy | Transform::Flatten => Some((re.replace(key, *rep).to_string(), false)),
                Transform::Transpose => Some((re.replace(key, *rep).to_string(), true)),
                Transform::Counter | Transform::Frontend => None,
            };
        }
    }
    None
}

/// Our name of the AAM-softmax class matrix `[n_classes, E]`.
pub const AAM_KEY: &str = "aam.weight";

/// Reads every tensor of a checkpoint: a torch zip pickle (optionally under
/// `state_dict`) or a safetensors file. Integer tensors come back as floats.
pub fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    if !path.exists() {
        bail!("{}: checkpoint not found", path.display());
    }
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let raw = if is_safetensors { read_safetensors(path)?.0 } else { read_torch(path)? };
    Ok(raw)
}

fn open_torch(path: &Path) -> Result<burn::store::pytorch_reader::PytorchReader, String> {
    use burn::store::pytorch_reader::PytorchReader;
    PytorchReader::with_top_level_key(path, "state_dict")
        .or_else(|_| PytorchReader::new(path))
        .map_err(|e| e.to_string())
}

fn read_torch(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let reader = match open_torch(path) {
        Ok(r) => r,
        Err(first) => {
            // torch.save writes a redundant ZIP64 end-of-central-directory record
            // that the zip reader under burn-store rejects ("Invalid Central
            // Directory header"). Where the classic record holds the real values,
            // dropping the ZIP64 one gives an equivalent archive.
            let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            let patched = strip_redundant_zip64(&bytes)
                .ok_or_else(|| anyhow::anyhow!("{}: not a readable PyTorch checkpoint: {first}", path.display()))?;
            let tmp = std::env::temp_dir().join(format!(
                "nexttdnn-ckpt-{}-{}.pt",
                std::process::id(),
                &hex(&Sha256::digest(path.display().to_string().as_bytes()))[..12]
            ));
            std::fs::write(&tmp, patched).with_context(|| format!("cannot write {}", tmp.display()))?;
            let r = open_torch(&tmp);
            std::fs::remove_file(&tmp).ok();
            r.map_err(|e| anyhow::anyhow!("{}: not a readable PyTorch checkpoint: {e}", path.display()))?
        }
    };
    let mut out = BTreeMap::new();
    for (name, t) in reader.into_tensors() {
        let data = burn::store::bridge::into_data(burn::store::bridge::from_pytorch(t))
            .map_err(|e| anyhow::anyhow!("{}: tensor {name}: {e:?}", path.display()))?;
        out.insert(name.clone(), host_from_data(data).with_context(|| format!("{}: tensor {name}", path.display()))?);
    }
    if out.is_empty() {
        bail!("{}: the checkpoint holds no tensors", path.display());
    }
    Ok(out)
}

/// Removes a ZIP64 end-of-central-directory record and locator that only
/// repeat the classic record's values. `None` when the archive does not have
/// that shape (or truly needs ZIP64).
fn strip_redundant_zip64(bytes: &[u8]) -> Option<Vec<u8>> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const EOCD64: &[u8] = b"PK\x06\x06";
    let find_last = |pat: &[u8]| bytes.windows(4).rposition(|w| w == pat);
    let e = find_last(EOCD)?;
    let z = find_last(EOCD64)?;
    if z >= e || bytes.len() < e + 22 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let (entries, cd_size, cd_offset) = (u16_at(e + 10), u32_at(e + 12), u32_at(e + 16));
    if entries == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..z]);
    out.extend_from_slice(&bytes[e..]);
    Some(out)
}

fn host_from_data(data: TensorData) -> Result<HostTensor> {
    let shape = data.shape().to_vec();
    let values =
        data.convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("cannot convert to float32: {e:?}"))?;
    Ok(HostTensor { shape, values })
}

/// Reads a safetensors file: tensors and string metadata.
pub fn read_safetensors(path: &Path) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, String>)> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: corrupt or not a safetensors file: {e}", path.display()))?;
    let metadata: BTreeMap<String, String> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: corrupt or not a safetensors file: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let d = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            Dtype::I64 => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            Dtype::I32 => d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            other => bail!("{}: tensor {name} has unsupported dtype {other:?}", path.display()),
        };
        if values.len() != shape.iter().product::<usize>() {
            bail!("{}: tensor {name} is truncated", path.display());
        }
        out.insert(name, HostTensor { shape, values });
    }
    Ok((out, metadata))
}

/// Result of mapping official keys to ours.
struct Mapped {
    tensors: BTreeMap<String, HostTensor>,
    /// Our name → the official one, for error messages.
    official: BTreeMap<String, String>,
    unexpected: Vec<String>,
    problems: Vec<String>,
}

/// Strips the Lightning prefix, removes the engine's duplicate registration
/// of the AAM matrix, and applies [`KEY_MAP`].
fn map_official(raw: BTreeMap<String, HostTensor>, cfg: &ExperimentConfig) -> Mapped {
    let prefixed = raw.keys().any(|k| k.starts_with("speaker_net."));
    let mut stripped: BTreeMap<String, HostTensor> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut duplicates = Vec::new();
    for (k, v) in raw {
        match k.strip_prefix("speaker_net.") {
            Some(s) => {
                stripped.insert(s.to_string(), v);
            }
            None if prefixed => duplicates.push((k, v)),
            None => {
                stripped.insert(k, v);
            }
        }
    }
    let mut unexpected = Vec::new();
    for (k, v) in duplicates {
        // A Lightning checkpoint registers the loss's weight a second time, on the engine.
        match stripped.get(&k) {
            Some(same) if *same == v => {}
            Some(_) => problems.push(format!("{k}: differs from speaker_net.{k}")),
            None => unexpected.push(k),
        }
    }
    let rules: Vec<(Regex, &str, Transform)> =
        KEY_MAP.iter().map(|(p, r, t)| (Regex::new(p).expect("valid key pattern"), *r, *t)).collect();
    let mut tensors = BTreeMap::new();
    let mut official = BTreeMap::new();
    'keys: for (k, v) in stripped {
        for (re, rep, t) in &rules {
            if !re.is_match(&k) {
                continue;
            }
            let ours = re.replace(&k, *rep).to_string();
            if !ours.is_empty() {
                official.insert(ours.clone(), k.clone());
            }
            match t {
                Transform::Copy => {
                    tensors.insert(ours, v);
                }
                Transform::Transpose if v.shape.len() == 2 => {
                    tensors.insert(ours, v.transpose2());
                }
                Transform::Transpose => problems.push(format!("{k}: expected a matrix, found shape {:?}", v.shape)),
                Transform::Flatten => {
                    let n = v.values.len();
                    tensors.insert(ours, HostTensor { shape: vec![n], values: v.values });
                }
                Transform::Counter => {
                    if v.values.len() != 1 {
                        problems.push(format!("{k}: expected a scalar counter, found shape {:?}", v.shape));
                    }
                }
                Transform::Frontend => {
                    if let Err(e) = check_frontend_buffer(&k, &v, cfg) {
                        problems.push(e);
                    }
                }
            }
            continue 'keys;
        }
        unexpected.push(k);
    }
    Mapped { tensors, official, unexpected, problems }
}

/// The reference stores its front end's constants in the checkpoint; they must
/// agree with the configuration we compute them from.
fn check_frontend_buffer(key: &str, v: &HostTensor, cfg: &ExperimentConfig) -> Result<(), String> {
    let f = &cfg.frontend;
    let expected: Vec<f32> = match key.rsplit('.').next().unwrap_or("") {
        "flipped_filter" => vec![-(f.pre_emphasis as f32), 1.0],
        "window" => features::hamming_periodic(f.win_length),
        "fb" => features::mel_filterbank(f),
        _ => return Err(format!("{key}: unknown front-end buffer")),
    };
    if v.values.len() != expected.len() {
        return Err(format!(
            "{key}: front-end buffer has {} values, the config implies {}",
            v.values.len(),
            expected.len()
        ));
    }
    let max = v.values.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    if max > 1e-4 {
        return Err(format!("{key}: front-end buffer differs from the config's by {max:.2e}"));
    }
    Ok(())
}

/// Visits every float parameter with its dotted path.
struct Collect {
    stack: Vec<String>,
    out: Vec<(String, TensorData)>,
    shapes_only: bool,
    shapes: Vec<(String, Vec<usize>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let path = self.stack.join(".");
        if self.shapes_only {
            self.shapes.push((path, p.lazy_shape().to_vec()));
        } else {
            self.out.push((path, p.val().into_data()));
        }
    }
}

/// The dotted names and shapes of every parameter and buffer of the model.
pub fn parameter_shapes(model: &NextTdnn) -> Vec<(String, Vec<usize>)> {
    let mut c = Collect { stack: vec![], out: vec![], shapes_only: true, shapes: vec![] };
    model.visit(&mut c);
    c.shapes
}

/// Fills parameters by path from a map, recording what is missing or mis-shaped.
struct Fill<'a> {
    stack: Vec<String>,
    source: &'a mut BTreeMap<String, HostTensor>,
    missing: Vec<String>,
    mismatched: Vec<String>,
}

impl ModuleMapper for Fill<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.stack.join(".");
        let want = p.lazy_shape().to_vec();
        match self.source.remove(&path) {
            None => {
                self.missing.push(path);
                p
            }
            Some(t) if t.shape != want => {
                self.mismatched.push(format!("{path}: checkpoint {:?}, model {:?}", t.shape, want));
                p
            }
            Some(t) => p.map(|old| {
                let device = old.device();
                let grad = old.is_require_grad();
                let fresh = Tensor::<D>::from_data(TensorData::new(t.values, t.shape), &device);
                if grad {
                    fresh.require_grad()
                } else {
                    fresh
                }
            }),
        }
    }
}

/// Fills a model from named tensors, strictly.
fn fill_strict(
    model: NextTdnn,
    mut tensors: BTreeMap<String, HostTensor>,
    official: &BTreeMap<String, String>,
    mut unexpected: Vec<String>,
    mut problems: Vec<String>,
    origin: &Path,
) -> Result<(NextTdnn, Option<HostTensor>)> {
    let aam = tensors.remove(AAM_KEY);
    let mut fill = Fill { stack: vec![], source: &mut tensors, missing: vec![], mismatched: vec![] };
    let model = model.map(&mut fill);
    let (missing, mismatched) = (fill.missing, fill.mismatched);
    unexpected.extend(tensors.into_keys().map(|k| match official.get(&k) {
        Some(o) => format!("{o} (ours: {k})"),
        None => k,
    }));
    problems.extend(mismatched);
    if !missing.is_empty() || !unexpected.is_empty() || !problems.is_empty() {
        let mut msg = format!("{}: the checkpoint does not match the model config", origin.display());
        let list = |title: &str, v: &[String]| {
            if v.is_empty() {
                String::new()
            } else {
                format!("\n  {title} ({}):\n    {}", v.len(), v.join("\n    "))
            }
        };
        msg += &list("missing keys", &missing);
        msg += &list("unexpected keys", &unexpected);
        msg += &list("shape or value mismatches", &problems);
        bail!(msg);
    }
    Ok((model, aam))
}

/// Every parameter and buffer of a network, by our dotted names.
pub fn net_tensors(net: &NextTdnn) -> Result<BTreeMap<String, HostTensor>> {
    let mut c = Collect { stack: vec![], out: vec![], shapes_only: false, shapes: vec![] };
    net.visit(&mut c);
    c.out.into_iter().map(|(name, data)| Ok((name, host_from_data(data)?))).collect()
}

/// Copies the weights of `src` into `dst` (same config), keeping `dst`'s
/// device and gradient settings.
pub fn copy_weights(src: &NextTdnn, dst: NextTdnn) -> Result<NextTdnn> {
    let tensors = net_tensors(src)?;
    Ok(fill_strict(dst, tensors, &BTreeMap::new(), vec![], vec![], Path::new("(model)"))?.0)
}

/// Imports an official checkpoint (`.pt` or `.safetensors`) for `cfg`.
pub fn import_official(path: &Path, cfg: &ExperimentConfig, device: &Device) -> Result<SpeakerModel> {
    let raw = read_checkpoint(path)?;
    let mapped = map_official(raw, cfg);
    let model = NextTdnn::new(&cfg.model, cfg.frontend.n_mels, cfg.train.seed, device);
    let (net, aam) = fill_strict(model, mapped.tensors, &mapped.official, mapped.unexpected, mapped.problems, path)?;
    let source_sha256 = sha256_file(path)?;
    Ok(SpeakerModel {
        config: cfg.clone(),
        net,
        aam,
        meta: ModelMeta {
            source: Some(path.display().to_string()),
            source_sha256: Some(source_sha256),
            threshold: None,
        },
    })
}

/// Provenance and settings stored with a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelMeta {
    pub source: Option<String>,
    pub source_sha256: Option<String>,
    /// Decision threshold on the cosine score, e.g. from an evaluation's EER point.
    pub threshold: Option<f64>,
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
/// Version of our model file layout.
pub const MODEL_FORMAT_VERSION: &str = "1";

impl SpeakerModel {
    /// Writes the model atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut c = Collect { stack: vec![], out: vec![], shapes_only: false, shapes: vec![] };
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
        if !path.exists() {
            bail!("{}: model file not found", path.display());
        }
        let (mut tensors, meta) =
            read_safetensors(path).with_context(|| format!("{}: not a nexttdnn model file", path.display()))?;
        if meta.get("format").map(String::as_str) != Some(MODEL_FORMAT) {
            bail!(
                "{}: not a nexttdnn model file (no '{MODEL_FORMAT}' tag); to use an official checkpoint run `nexttdnn import`",
                path.display()
            );
        }
        if meta.get("format_version").map(String::as_str) != Some(MODEL_FORMAT_VERSION) {
            bail!("{}: unsupported model file version {:?}", path.display(), meta.get("format_version"));
        }
        let cfg_text =
            meta.get("config").with_context(|| format!("{}: the model file carries no config", path.display()))?;
        let config = ExperimentConfig::parse(cfg_text)
            .with_context(|| format!("{}: the embedded config is invalid", path.display()))?;
        let threshold = match meta.get("threshold") {
            Some(t) => Some(t.parse::<f64>().with_context(|| format!("{}: bad threshold {t:?}", path.display()))?),
            None => None,
        };
        let aam = tensors.remove(AAM_KEY);
        let model = NextTdnn::new(&config.model, config.frontend.n_mels, config.train.seed, device);
        let (net, _) = fill_strict(model, tensors, &BTreeMap::new(), vec![], vec![], path)?;
        Ok(Self {
            config,
            net,
            aam,
            meta: ModelMeta {
                source: meta.get("source").cloned(),
                source_sha256: meta.get("source_sha256").cloned(),
                threshold,
            },
        })
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that an
/// interrupted write never leaves a file that looks complete.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp: PathBuf = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    Ok(())
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
