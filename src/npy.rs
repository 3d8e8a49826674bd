//! Float32 matrices in NumPy's `.npy` format (via npyz), for numpy users.

use std::path::Path;

use anyhow::{Context, Result};
use npyz::WriterBuilder;

/// Encodes a row-major `[rows, cols]` float32 matrix as `.npy` bytes.
pub fn encode_f32(values: &[f32], rows: usize, cols: usize) -> Result<Vec<u8>> {
    anyhow::ensure!(values.len() == rows * cols, "matrix has {} values, expected {rows}×{cols}", values.len());
    let mut buf = Vec::new();
    {
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[rows as u64, cols as u64])
            .writer(&mut buf)
            .begin_nd()?;
        w.extend(values.iter().copied())?;
        w.finish()?;
    }
    Ok(buf)
}

/// Reads a 2-D float32 `.npy` file: (values, rows, cols).
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{}: not a .npy file", path.display()))?;
    let shape = npy.shape().to_vec();
    anyhow::ensure!(shape.len() == 2, "{}: expected a 2-D array, found shape {shape:?}", path.display());
    let values: Vec<f32> = npy.into_vec().with_context(|| format!("{}: corrupt .npy data", path.display()))?;
    anyhow::ensure!(values.len() as u64 == shape[0] * shape[1], "{}: truncated .npy data", path.display());
    Ok((values, shape[0] as usize, shape[1] as usize))
}
