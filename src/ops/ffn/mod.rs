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

use super::flat::{f32s, f32s_or_empty, host, op_params};
use super::host_gemm::zeros;
use super::panels::Panels;
use cpu::{Dims, Params};

op_params! {
    /// The block's parameters, named as in [`crate::model::block::Ffn`].
    pub struct FfnParams {
        /// LayerNorm's scale `[C]`.
        norm_w,
        /// LayerNorm's shift `[C]`.
        norm_b,
        /// The expanding linear layer `[C, H]`, input-major as Burn's `Linear`.
        expand_w,
        /// Its bias `[H]`.
        expand_b,
        /// GRN's scale `[H]`.
        gamma,
        /// GRN's shift `[H]`.
        beta,
        /// The projecting linear layer `[H, C]`.
        project_w,
        /// Its bias `[C]`.
        project_b,
    }
}

impl FfnParams<Vec<usize>> {
    /// Each parameter's shape, for `C` channels and `H` hidden units.
    pub fn shapes(c: usize, h: usize) -> Self {
        FfnParams {
            norm_w: vec![c],
            norm_b: vec![c],
            expand_w: vec![c, h],
            expand_b: vec![h],
            gamma: vec![h],
            beta: vec![h],
            project_w: vec![h, c],
            project_b: vec![c],
        }
    }
}

/// The fused feed-forward block.
#[backend_extension(Flex, Autodiff)]
pub trait FfnOps: Backend {
    /// Inference: `x [B, C, T]` → `[B, C, T]`; `valid [B, T]` is 1 on the
    /// frames GRN's norm covers. The weights are those of [`FfnParams`], in
    /// its order (a backend extension takes tensors one by one).
    #[allow(clippy::too_many_arguments)]
    fn ffn(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        norm_b: FloatTensor<Self>,
        expand_w: FloatTensor<Self>,
        expand_b: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        project_w: FloatTensor<Self>,
        project_b: FloatTensor<Self>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> FloatTensor<Self>;
}

/// The training halves of [`FfnOps`], on the backend the autodiff layer
/// wraps (never called through `Dispatch`).
pub trait FfnTrainOps: Backend {
    /// Training forward: flat `[out (B·C·T) | saved]` (see [`cpu::Saved`]).
    fn ffn_train(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        w: FfnParams<FloatTensor<Self>>,
        eps: [f64; 2],
    ) -> FloatTensor<Self>;

    /// Backward: flat gradients `[x | the parameters in the order of
    /// FfnParams]` (see [`cpu::Grads`]) from the output gradient `dout`. The
    /// biases are not read and may be `None`.
    fn ffn_backward(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        w: FfnParams<Option<FloatTensor<Self>>>,
        dout: FloatTensor<Self>,
        eps: [f64; 2],
    ) -> FloatTensor<Self>;
}

/// The inputs of one call on the host, `None` for the weights a call does
/// not read.
struct Host {
    x: FlexTensor,
    valid: FlexTensor,
    weights: FfnParams<Option<FlexTensor>>,
    dims: Dims,
}

impl Host {
    fn new(x: &FlexTensor, valid: &FlexTensor, weights: FfnParams<Option<FlexTensor>>) -> Self {
        let [b, c, t] = x.shape().dims::<3>();
        let h = weights.expand_w.as_ref().expect("the expanding layer's weight").shape()[1];
        Self {
            x: host(x),
            valid: host(valid),
            weights: weights.map(|w| w.as_ref().map(host)),
            dims: Dims { b, c, t, h },
        }
    }

    fn params(&self, [ln_eps, grn_eps]: [f64; 2]) -> Params<'_> {
        Params { w: self.weights.as_ref().map(f32s_or_empty), ln_eps: ln_eps as f32, grn_eps: grn_eps as f32 }
    }
}

impl FfnOps for Flex {
    fn ffn(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        norm_b: FloatTensor<Self>,
        expand_w: FloatTensor<Self>,
        expand_b: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        project_w: FloatTensor<Self>,
        project_b: FloatTensor<Self>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> FloatTensor<Self> {
        let w = FfnParams { norm_w, norm_b, expand_w, expand_b, gamma, beta, project_w, project_b };
        let hs = Host::new(&x, &valid, w.map(Some));
        let d = hs.dims;
        let p = hs.params([ln_eps, grn_eps]);
        let (expand_w, project_w) = (&hs.weights.expand_w, &hs.weights.project_w);
        let expand = Panels::of_weight(expand_w.as_ref().expect("the expanding weight"), d.c, d.h);
        let project =
            (d.b > 1).then(|| Panels::of_weight(project_w.as_ref().expect("the projection's weight"), d.h, d.c));
        let w = cpu::InferencePanels { expand: &expand, project: project.as_deref() };
        let out = cpu::forward_inference(f32s(&hs.x), f32s(&hs.valid), &p, w, d);
        FlexTensor::from_data(TensorData::new(out, [d.b, d.c, d.t]))
    }
}

impl FfnTrainOps for Flex {
    fn ffn_train(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        w: FfnParams<FloatTensor<Self>>,
        eps: [f64; 2],
    ) -> FloatTensor<Self> {
        let hs = Host::new(&x, &valid, w.map(Some));
        let d = hs.dims;
        let n_out = d.b * d.c * d.t;
        let mut packed = zeros(n_out + cpu::saved_len(d));
        let (out, saved) = packed.split_at_mut(n_out);
        let p = hs.params(eps);
        cpu::forward(f32s(&hs.x), f32s(&hs.valid), &p, d, out, cpu::split_saved(saved, d));
        let n = packed.len();
        FlexTensor::from_data(TensorData::new(packed, [n]))
    }

    fn ffn_backward(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        w: FfnParams<Option<FloatTensor<Self>>>,
        dout: FloatTensor<Self>,
        eps: [f64; 2],
    ) -> FloatTensor<Self> {
        let hs = Host::new(&x, &valid, w);
        let d = hs.dims;
        let n_out = d.b * d.c * d.t;
        let packed = host(&packed);
        let dout = host(&dout);
        let mut grads = zeros(cpu::grads_len(d));
        let p = hs.params(eps);
        let s = cpu::view_saved(&f32s(&packed)[n_out..], d);
        cpu::backward(f32s(&hs.x), f32s(&hs.valid), &p, &s, d, f32s(&dout), cpu::split_grads(&mut grads, d));
        let n = grads.len();
        FlexTensor::from_data(TensorData::new(grads, [n]))
    }
}

mod autodiff;

/// The fused block: `x [B, C, T]`, `valid [B, T]` (1 on the frames GRN's
/// norm covers); the weights as `model::block::Ffn` holds them, with
/// LayerNorm's and GRN's epsilons. Only where [`super::fused`] says so.
pub fn ffn(x: Tensor<3>, valid: Tensor<2>, w: FfnParams<FloatTensor<Dispatch>>, eps: [f64; 2]) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FfnOps>::ffn(
        x.into_dispatch(),
        valid.into_dispatch(),
        w.norm_w,
        w.norm_b,
        w.expand_w,
        w.expand_b,
        w.gamma,
        w.beta,
        w.project_w,
        w.project_b,
        eps[0],
        eps[1],
    ))
}
