//! `tanh` as a CPU operation with its backward, for the pooling head's
//! attention branch in training (at inference that `tanh` is applied in the
//! pass after the 1×1 convolution, [`super::pointwise::pointwise_conv_tanh`]).
//!
//! Why: burn-flex's `tanh` calls libm's `tanhf` element by element on one
//! thread, and its autodiff backward computes `tanh` of the input once more
//! before `1 − y²`; at C128, batch 32 that was about 30 ms of a training
//! step with the other core idle. Here the forward is one vectorised pass
//! split over the pool ([`super::fastmath::tanh`]), and the backward reads
//! the saved output: `∂x = ∂y·(1 − y²)`. Conventions as [`super::ffn`].

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{unary, Backward, Ops, OpsKind},
};
use burn::backend::flex::FlexTensor;
use burn::backend::{backend_extension, tensor::FloatTensor, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::{Tensor, TensorData};

use super::fastmath::tanh as tanh_fast;
use super::flat::{f32s, host};
use super::simd::{elementwise, simd_fn};

/// Hyperbolic tangent.
#[backend_extension(Flex, Autodiff)]
pub trait TanhOps: Backend {
    /// `tanh x`, elementwise.
    fn tanh_fused(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The training half of [`TanhOps`], on the backend the autodiff layer wraps
/// (never called through `Dispatch`).
pub trait TanhTrainOps: Backend {
    /// `grad·(1 − y²)` from the forward's output `y`.
    fn tanh_fused_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl TanhOps for Flex {
    fn tanh_fused(x: FlexTensor) -> FlexTensor {
        let shape = x.shape();
        let x = host(&x);
        let mut out = vec![0.0f32; shape.num_elements()];
        elementwise(f32s(&x), None, &mut out, forward_simd, backward_simd);
        FlexTensor::from_data(TensorData::new(out, shape))
    }
}

impl TanhTrainOps for Flex {
    fn tanh_fused_backward(y: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let shape = y.shape();
        let (y, g) = (host(&y), host(&grad));
        let mut out = vec![0.0f32; shape.num_elements()];
        elementwise(f32s(&y), Some(f32s(&g)), &mut out, forward_simd, backward_simd);
        FlexTensor::from_data(TensorData::new(out, shape))
    }
}

#[inline(always)]
fn forward<const FMA: bool>(x: &[f32], out: &mut [f32]) {
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = tanh_fast::<FMA>(v));
}

#[inline(always)]
fn backward(y: &[f32], g: &[f32], out: &mut [f32]) {
    out.iter_mut().zip(y.iter().zip(g)).for_each(|(o, (&y, &g))| *o = g * (1.0 - y * y));
}

simd_fn!(fn forward_simd(x: &[f32], out: &mut [f32]) => fma forward);
simd_fn!(fn backward_simd(y: &[f32], g: &[f32], out: &mut [f32]) => backward);

#[derive(Debug)]
struct TanhBackward;

impl<B: Backend + TanhTrainOps> Backward<B, 1> for TanhBackward {
    /// The forward's output.
    type State = B::FloatTensorPrimitive;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| B::tanh_fused_backward(y, grad));
    }
}

impl<B: Backend + TanhOps + TanhTrainOps, C: CheckpointStrategy> TanhOps for Autodiff<B, C> {
    fn tanh_fused(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match TanhBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::tanh_fused(x.primitive().clone());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::tanh_fused(x.into_primitive())),
        }
    }
}

/// `tanh x` through the CPU operation: only where [`super::fused`] holds for `x`.
pub fn tanh(x: Tensor<3>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as TanhOps>::tanh_fused(x.into_dispatch()))
}
