//! Model weights: import of the official PyTorch checkpoints
//! ([`import`], with the key map) and our own model files ([`model_file`]),
//! over what both share: host tensors, safetensors reading, and strict
//! filling of a network by parameter names.

pub mod average;
pub mod checked;
#[cfg(feature = "cli")]
pub mod import;
pub mod model_file;

pub use average::average_model_files;
pub use checked::{read_checked_safetensors, write_checked_safetensors, CHECKSUM_KEY};
#[cfg(feature = "cli")]
pub use import::{import_official, official_to_ours, read_checkpoint};
pub use model_file::{
    model_key, read_model_file, ModelFile, ModelMeta, SpeakerModel, MODEL_FORMAT, MODEL_FORMAT_VERSION,
};

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

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

/// Our name of the AAM-softmax class matrix `[n_classes, E]`.
pub const AAM_KEY: &str = "aam.weight";

/// Reads a safetensors file: tensors and string metadata.
pub fn read_safetensors(path: &Path) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_safetensors(path, &bytes)
}

/// [`read_safetensors`] of bytes read from `path` (named in errors).
pub fn parse_safetensors(
    path: &Path,
    bytes: &[u8],
) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, String>)> {
    use safetensors::{Dtype, SafeTensors};
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("{}: corrupt or not a safetensors file: {e}", path.display()))?;
    let metadata: BTreeMap<String, String> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let st = SafeTensors::deserialize(bytes)
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

/// Visits every float parameter with its dotted path.
pub(crate) struct Collect {
    pub(crate) stack: Vec<String>,
    pub(crate) out: Vec<(String, TensorData)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.out.push((self.stack.join("."), p.val().into_data()));
    }
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
pub(crate) fn fill_strict(
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
    let mut c = Collect { stack: vec![], out: vec![] };
    net.visit(&mut c);
    c.out.into_iter().map(|(name, data)| Ok((name, host_from_data(data)?))).collect()
}

/// Copies the weights of `src` into `dst` (same config), keeping `dst`'s
/// device and gradient settings.
pub fn copy_weights(src: &NextTdnn, dst: NextTdnn) -> Result<NextTdnn> {
    let tensors = net_tensors(src)?;
    Ok(fill_strict(dst, tensors, &BTreeMap::new(), vec![], vec![], Path::new("(model)"))?.0)
}

/// A tensor read back to the host as float32.
pub(crate) fn host_from_data(data: TensorData) -> Result<HostTensor> {
    let shape = data.shape().to_vec();
    let values =
        data.convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("cannot convert to float32: {e:?}"))?;
    Ok(HostTensor { shape, values })
}
