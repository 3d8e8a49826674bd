//! Checkpoint averaging: the element-wise mean of several model files'
//! tensors (the network's parameters, its BatchNorm running statistics and
//! the classifier), as WeSpeaker's `average_model.py` computes it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::{HostTensor, ModelFile, ModelMeta};

/// The mean of the model files at `paths`, which must share one config and
/// one set of tensor names and shapes; errors name the file that differs.
pub fn average_model_files(paths: &[PathBuf]) -> Result<ModelFile> {
    let Some(first_path) = paths.first() else { bail!("no model files to average") };
    let first = ModelFile::read(first_path)?;
    let mut sums: BTreeMap<String, Vec<f64>> =
        first.tensors.iter().map(|(k, t)| (k.clone(), t.values.iter().map(|&v| v as f64).collect())).collect();
    for path in &paths[1..] {
        let m = ModelFile::read(path)?;
        if m.config != first.config {
            bail!(
                "{}: its config ({}) differs from {}'s ({}); averaged models must share one config",
                path.display(),
                m.config.name,
                first_path.display(),
                first.config.name
            );
        }
        if m.tensors.len() != first.tensors.len() {
            bail!(
                "{}: {} tensors where {} has {}",
                path.display(),
                m.tensors.len(),
                first_path.display(),
                first.tensors.len()
            );
        }
        for (name, t) in &m.tensors {
            let Some(f) = first.tensors.get(name) else {
                bail!("{}: tensor {name} is not in {}", path.display(), first_path.display())
            };
            if f.shape != t.shape {
                bail!(
                    "{}: tensor {name} has shape {:?}, {:?} in {}",
                    path.display(),
                    t.shape,
                    f.shape,
                    first_path.display()
                );
            }
            for (s, &v) in sums.get_mut(name).expect("same names").iter_mut().zip(&t.values) {
                *s += v as f64;
            }
        }
    }
    let n = paths.len() as f64;
    let tensors = first
        .tensors
        .iter()
        .map(|(k, t)| {
            (k.clone(), HostTensor { shape: t.shape.clone(), values: sums[k].iter().map(|s| (s / n) as f32).collect() })
        })
        .collect();
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let meta = ModelMeta { source: Some(format!("average of {}", names.join(", "))), ..Default::default() };
    Ok(ModelFile { tensors, config: first.config, meta })
}
