//! Exact GELU and its derivative, one pass each.
//!
//! `gelu(x) = x·Φ(x)` and `gelu'(x) = Φ(x) + x·φ(x)`, with `Φ` from the
//! Abramowitz–Stegun 7.1.26 form of erf (absolute error below 1.5e-7),
//! written so that `1 + erf` never cancels in the negative tail. The CPU
//! path (`src/ops/gelu.rs`) uses the same formula, so every backend computes
//! the same function.

use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::elementwise_launch;
use burn::backend::TensorMetadata;
use cubecl::prelude::*;

/// `(Φ(x), φ(x))`.
#[cube]
fn cdf_pdf<F: Float>(x: F) -> (F, F) {
    let z = F::abs(x) * F::new(core::f32::consts::FRAC_1_SQRT_2);
    let t = F::new(1.0) / (F::new(1.0) + F::new(0.327_591_1) * z);
    let poly = t
        * (F::new(0.254_829_6)
            + t * (F::new(-0.284_496_74)
                + t * (F::new(1.421_413_8) + t * (F::new(-1.453_152) + t * F::new(1.061_405_4)))));
    // exp(-z²) = exp(-x²/2)
    let e = F::exp(F::new(0.0) - z * z);
    let q = poly * e; // 1 - erf(|z|)
    let mut cdf = F::new(0.5) * q;
    if x >= F::new(0.0) {
        cdf = F::new(1.0) - cdf;
    }
    (cdf, e * F::new(0.398_942_3))
}

#[cube(launch_unchecked)]
fn gelu_kernel<F: Float>(x: &Tensor<F>, out: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    let i = ABSOLUTE_POS;
    if i >= x.len() {
        terminate!();
    }
    let v = x[i];
    let (cdf, _pdf) = cdf_pdf::<F>(v);
    out[i] = v * cdf;
}

#[cube(launch_unchecked)]
fn gelu_grad_kernel<F: Float>(x: &Tensor<F>, grad: &Tensor<F>, out: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    let i = ABSOLUTE_POS;
    if i >= x.len() {
        terminate!();
    }
    let v = x[i];
    let (cdf, pdf) = cdf_pdf::<F>(v);
    out[i] = grad[i] * (cdf + v * pdf);
}

/// `gelu(x)`, elementwise.
pub fn gelu(x: CubeTensor) -> CubeTensor {
    let x = into_contiguous(x);
    let n = x.meta.num_elements();
    let client = x.client.clone();
    let out = empty_device_dtype(client.clone(), x.device.clone(), x.shape(), x.dtype);
    if n == 0 {
        return out;
    }
    let (cube_count, cube_dim) = elementwise_launch(&client, n);
    let dtype = x.dtype;
    // SAFETY: each unit reads and writes index ABSOLUTE_POS < len, checked in the kernel.
    unsafe {
        gelu_kernel::launch_unchecked(
            &client,
            cube_count,
            cube_dim,
            x.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            dtype_to_storage_type(dtype),
        );
    }
    out
}

/// `grad · gelu'(x)`, elementwise; `x` and `grad` have one shape.
pub fn gelu_grad(x: CubeTensor, grad: CubeTensor) -> CubeTensor {
    let x = into_contiguous(x);
    let grad = into_contiguous(grad);
    assert_eq!(x.shape(), grad.shape(), "gelu_grad: shapes differ");
    let n = x.meta.num_elements();
    let client = x.client.clone();
    let out = empty_device_dtype(client.clone(), x.device.clone(), x.shape(), x.dtype);
    if n == 0 {
        return out;
    }
    let (cube_count, cube_dim) = elementwise_launch(&client, n);
    let dtype = x.dtype;
    // SAFETY: as for `gelu`.
    unsafe {
        gelu_grad_kernel::launch_unchecked(
            &client,
            cube_count,
            cube_dim,
            x.into_tensor_arg(),
            grad.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            dtype_to_storage_type(dtype),
        );
    }
    out
}
