//! Custom tensor operations, below the model: each has our CubeCL kernels
//! (`shaders/`) on the CubeCL backends, Burn's generic path elsewhere, and an
//! autodiff backward.

pub mod depthwise;
pub mod gelu;
