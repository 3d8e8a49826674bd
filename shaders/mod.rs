//! CubeCL kernels for the CubeCL backends (wgpu/WGSL, Vulkan, Metal, CUDA).
//!
//! Each kernel is launched from a host function taking and returning Burn's
//! `CubeTensor`s; `crate::ops` wires them in as backend-extension operations
//! with an autodiff backward, and keeps Burn's generic path for the other
//! backends.

pub mod depthwise;
pub mod frontend;
pub mod gelu;

use cubecl::prelude::{CubeCount, CubeDim};

/// Cube count and size for elementwise kernels: one unit per element of `n`.
pub(crate) fn elementwise_launch(client: &cubecl::client::Client, n: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(client, n);
    (cubecl::calculate_cube_count_elemwise(client, n, dim), dim)
}
