//! Import of the official PyTorch checkpoints (Lightning `.pt` or
//! `.safetensors`) into our network, by the key map.
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
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use regex::Regex;
use sha2::{Digest, Sha256};

use super::{fill_strict, host_from_data, read_safetensors, HostTensor, ModelMeta, SpeakerModel, AAM_KEY};
use crate::config::ExperimentConfig;
use crate::features;
use crate::files::{hex, sha256_file};
use crate::model::NextTdnn;

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

/// The key map's patterns, compiled once.
fn rules() -> &'static [(Regex, &'static str, Transform)] {
    static RULES: OnceLock<Vec<(Regex, &'static str, Transform)>> = OnceLock::new();
    RULES.get_or_init(|| KEY_MAP.iter().map(|(p, r, t)| (Regex::new(p).expect("valid key pattern"), *r, *t)).collect())
}

/// The rule of [`KEY_MAP`] for an official key: our name (empty for keys
/// without a parameter) and the transform. `None` for keys outside the map.
fn lookup(key: &str) -> Option<(String, Transform)> {
    rules().iter().find(|(re, _, _)| re.is_match(key)).map(|(re, rep, t)| (re.replace(key, *rep).to_string(), *t))
}

/// How an official tensor maps to ours: our name, and whether the values are
/// transposed (`Linear`) on the way. `None` for keys that map to no parameter.
pub fn official_to_ours(key: &str) -> Option<(String, bool)> {
    match lookup(key)? {
        (name, Transform::Copy | Transform::Flatten) => Some((name, false)),
        (name, Transform::Transpose) => Some((name, true)),
        (_, Transform::Counter | Transform::Frontend) => None,
    }
}

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
    let mut tensors = BTreeMap::new();
    let mut official = BTreeMap::new();
    for (k, v) in stripped {
        let Some((ours, t)) = lookup(&k) else {
            unexpected.push(k);
            continue;
        };
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

/// Imports an official checkpoint (`.pt` or `.safetensors`) for `cfg`.
pub fn import_official(path: &Path, cfg: &ExperimentConfig, device: &Device) -> Result<SpeakerModel> {
    let raw = read_checkpoint(path)?;
    let mapped = map_official(raw, cfg);
    let model = NextTdnn::new(&cfg.model, cfg.frontend.n_mels, cfg.train.seed, device);
    let (net, aam) = fill_strict(model, mapped.tensors, &mapped.official, mapped.unexpected, mapped.problems, path)?;
    let source_sha256 = sha256_file(path)?;
    let meta = ModelMeta {
        source: Some(path.display().to_string()),
        source_sha256: Some(source_sha256),
        ..Default::default()
    };
    SpeakerModel::from_net(cfg.clone(), net, aam, meta)
}
