//! The ConvNeXt-V2 feed-forward block (LayerNorm → C→4C → GELU → GRN →
//! 4C→C → residual) as one operation on the CPU, forward and backward.
//!
//! * Flex (CPU), float32: the fused kernels of [`cpu`].
//! * Autodiff: the forward keeps the pre-activation, the activation, the
//!   LayerNorm statistics and GRN's norms; the backward is one operation that
//!   returns every gradient.
//! * Elsewhere (the CubeCL backends, other precisions, `--ops generic`) the
//!   block is written with Burn's tensor operations (`model::block::Ffn`).
//!
//! A Burn extension returns one tensor, so the training forward returns
//! `[out | saved]` and the backward `[∂x | ∂parameters…]`, flat; the autodiff
//! side slices them (views, no copies).

pub mod cpu;

use burn::backend::flex::FlexTensor;
use burn::backend::{backend_extension, tensor::FloatTensor, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::{Tensor, TensorData};

use super::host_gemm::zeros;

use super::flat::{f32s, f32s_or_empty, host};
use cpu::{Dims, Params};

/// The fused feed-forward block.
#[backend_extension(Flex, Autodiff)]
pub trait FfnOps: Backend {
    /// Inference: `x [B, C, T]` → `[B, C, T]`; `valid [B, T]` is 1 on the
    /// frames GRN's norm covers. Weights as [`crate::model::block::Ffn`].
    #[allow(clippy::too_many_arguments)]
    fn ffn(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        norm_b: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> FloatTensor<Self>;
}

/// The training halves of [`FfnOps`], on the backend the autodiff layer
/// wraps (never called through `Dispatch`).
pub trait FfnTrainOps: Backend {
    /// Training forward: flat `[out (B·C·T) | saved]` (see [`cpu::Saved`]).
    #[allow(clippy::too_many_arguments)]
    fn ffn_train(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        norm_b: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> FloatTensor<Self>;

    /// Backward: flat gradients `[x | norm_w | norm_b | w1 | b1 | gamma |
    /// beta | w2 | b2]` (see [`cpu::Grads`]) from the output gradient `dout`.
    #[allow(clippy::too_many_arguments)]
    fn ffn_backward(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        norm_b: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> FloatTensor<Self>;
}

/// The inputs of one call on the host: the weights in the order of
/// [`Params`], `None` for those a call does not read.
struct Host {
    x: FlexTensor,
    valid: FlexTensor,
    weights: [Option<FlexTensor>; 8],
    dims: Dims,
}

impl Host {
    fn new(x: &FlexTensor, valid: &FlexTensor, weights: [Option<&FlexTensor>; 8]) -> Self {
        let [b, c, t] = x.shape().dims::<3>();
        let h = weights[2].expect("the first layer's weight").shape()[1];
        Self { x: host(x), valid: host(valid), weights: weights.map(|w| w.map(host)), dims: Dims { b, c, t, h } }
    }

    fn params(&self, ln_eps: f64, grn_eps: f64) -> Params<'_> {
        let w = &self.weights;
        Params {
            norm_w: f32s_or_empty(&w[0]),
            norm_b: f32s_or_empty(&w[1]),
            w1: f32s_or_empty(&w[2]),
            b1: f32s_or_empty(&w[3]),
            gamma: f32s_or_empty(&w[4]),
            beta: f32s_or_empty(&w[5]),
            w2: f32s_or_empty(&w[6]),
            b2: f32s_or_empty(&w[7]),
            ln_eps: ln_eps as f32,
            grn_eps: grn_eps as f32,
        }
    }
}

impl FfnOps for Flex {
    fn ffn(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        norm_b: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> FloatTensor<Self> {
        let hs = Host::new(&x, &valid, [&norm_w, &norm_b, &w1, &b1, &gamma, &beta, &w2, &b2].map(Some));
        let d = hs.dims;
        let mut out = zeros(d.b * d.c * d.t);
        let p = hs.params(ln_eps, grn_eps);
        cpu::forward_inference(f32s(&hs.x), f32s(&hs.valid), &p, d, &mut out);
        FlexTensor::from_data(TensorData::new(out, [d.b, d.c, d.t]))
    }
}

impl FfnTrainOps for Flex {
    fn ffn_train(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        norm_b: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> FloatTensor<Self> {
        let hs = Host::new(&x, &valid, [&norm_w, &norm_b, &w1, &b1, &gamma, &beta, &w2, &b2].map(Some));
        let d = hs.dims;
        let n_out = d.b * d.c * d.t;
        let mut packed = zeros(n_out + cpu::saved_len(d));
        let (out, saved) = packed.split_at_mut(n_out);
        let p = hs.params(ln_eps, grn_eps);
        cpu::forward(f32s(&hs.x), f32s(&hs.valid), &p, d, out, cpu::split_saved(saved, d));
        let n = packed.len();
        FlexTensor::from_data(TensorData::new(packed, [n]))
    }

    fn ffn_backward(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        norm_b: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> FloatTensor<Self> {
        let hs = Host::new(
            &x,
            &valid,
            [Some(&norm_w), Some(&norm_b), Some(&w1), None, Some(&gamma), Some(&beta), Some(&w2), None],
        );
        let d = hs.dims;
        let n_out = d.b * d.c * d.t;
        let packed = host(&packed);
        let dout = host(&dout);
        let mut grads = zeros(cpu::grads_len(d));
        let p = hs.params(ln_eps, grn_eps);
        let s = cpu::view_saved(&f32s(&packed)[n_out..], d);
        cpu::backward(f32s(&hs.x), f32s(&hs.valid), &p, &s, d, f32s(&dout), cpu::split_grads(&mut grads, d));
        let n = grads.len();
        FlexTensor::from_data(TensorData::new(grads, [n]))
    }
}

mod autodiff;

/// The fused block: `x [B, C, T]`, `valid [B, T]` (1 on the frames GRN's
/// norm covers); the weights as `model::block::Ffn` holds them. Only where
/// [`super::fused`] says so.
#[allow(clippy::too_many_arguments)]
pub fn ffn(
    x: Tensor<3>,
    valid: Tensor<2>,
    norm: [Tensor<1>; 2],
    w1: Tensor<2>,
    b1: Tensor<1>,
    grn: [Tensor<1>; 2],
    w2: Tensor<2>,
    b2: Tensor<1>,
    eps: [f64; 2],
) -> Tensor<3> {
    let [norm_w, norm_b] = norm;
    let [gamma, beta] = grn;
    Tensor::from_dispatch(<Dispatch as FfnOps>::ffn(
        x.into_dispatch(),
        valid.into_dispatch(),
        norm_w.into_dispatch(),
        norm_b.into_dispatch(),
        w1.into_dispatch(),
        b1.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        w2.into_dispatch(),
        b2.into_dispatch(),
        eps[0],
        eps[1],
    ))
}
