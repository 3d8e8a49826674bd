//! Custom tensor operations, below the model, each with an autodiff backward:
//!
//! * on every backend: the depthwise convolution, GELU and the front end,
//!   with our CubeCL kernels (`shaders/`) on the CubeCL backends and Burn's
//!   generic path elsewhere;
//! * on the CPU in float32 only: whole blocks fused into one operation each
//!   (`ffn`, `msc`, `layer_norm`, `pointwise`, `pooling`, and `tanh` in
//!   training), where Burn's CPU backend would run dozens of single-threaded
//!   element-wise passes. Other backends keep the blocks written with Burn's
//!   operations in `model/`.

#[cfg(not(target_arch = "wasm32"))]
pub mod awake;
pub mod check;
pub mod depthwise;
pub(crate) mod fastmath;
pub mod ffn;
pub(crate) mod flat;
#[cfg(feature = "kernels")]
pub mod frontend;
pub mod gelu;
pub(crate) mod host_gemm;
pub(crate) mod kept;
pub mod layer_norm;
pub mod msc;
pub(crate) mod panels;
pub mod pointwise;
pub mod pooling;
pub(crate) mod scratch;
pub(crate) mod simd;
pub(crate) mod sums;
pub mod tanh;

use std::cell::Cell;

use burn::backend::DispatchDevice;
use burn::tensor::{DType, Device, Tensor};

/// Which implementation the operations here take, where they have a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route {
    /// Ours: the CubeCL kernels on the CubeCL backends, and the custom and
    /// fused CPU operations on flex (float32).
    #[default]
    Extension,
    /// Burn's own operations everywhere (`bench --ops generic`, and the
    /// comparisons in the tests).
    Generic,
}

thread_local! {
    /// The route of the computation running on this thread ([`with_route`]).
    static ROUTE: Cell<Route> = const { Cell::new(Route::Extension) };
}

/// Runs `f` with every operation it calls on this thread taking `route`,
/// then restores the previous route. The choice is made where a model is
/// run (the [`crate::embed::Embedder`] holds its route), not for the whole
/// process: one process can run a network both ways and compare. The
/// operations decide on the calling thread; work they hand to the rayon
/// pool has already been routed.
pub fn with_route<R>(route: Route, f: impl FnOnce() -> R) -> R {
    let before = ROUTE.with(|r| r.replace(route));
    let out = f();
    ROUTE.with(|r| r.set(before));
    out
}

pub(crate) fn generic() -> bool {
    ROUTE.with(|r| r.get()) == Route::Generic
}

/// Whether tensors on `device` live in this process's memory (the `flex` CPU
/// backend, with or without autodiff).
pub fn is_cpu(device: &Device) -> bool {
    matches!(device.as_dispatch().clone().inner(), DispatchDevice::Flex(_))
}

/// `f` on the rayon pool with its other workers awake
/// ([`awake::with_pool_awake`]) where `device` is the CPU, natively, and the
/// caller is not already a worker (whose loops start as local tasks anyway);
/// `f` as it is elsewhere (the GPU backends, wasm32's single thread).
pub fn on_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    #[cfg(not(target_arch = "wasm32"))]
    if is_cpu(device) && rayon::current_thread_index().is_none() {
        return awake::with_pool_awake(f);
    }
    let _ = device;
    f()
}

/// Whether our CubeCL kernels run on `device` (a CubeCL backend in a build
/// with them).
pub fn has_kernel(device: &Device) -> bool {
    #[cfg(feature = "kernels")]
    {
        matches!(device.as_dispatch().clone().inner(), DispatchDevice::Cube(_))
    }
    #[cfg(not(feature = "kernels"))]
    {
        let _ = device;
        false
    }
}

/// Whether the extension operations run on `device` at all (the CPU backend
/// and the CubeCL backends).
pub fn supported(device: &Device) -> bool {
    has_kernel(device) || is_cpu(device)
}

/// Whether the fused CPU operations (`ffn`, `msc`, `layer_norm`,
/// `pointwise`, `pooling`) take `x`: on the CPU backend, in float32, and not
/// switched off by [`with_route`].
pub fn fused(x: &Tensor<3>) -> bool {
    !generic() && is_cpu(&x.device()) && x.dtype() == DType::F32
}

/// Whether to take the extension path on `device`: supported there, and not
/// switched off by [`with_route`].
pub(crate) fn use_extension(device: &Device) -> bool {
    !generic() && supported(device)
}
