//! Attentive statistics (softmax over time, weighted mean and standard
//! deviation) as one CPU operation, forward and backward (kernels in
//! [`cpu`]); elsewhere `model::pooling::PoolingHead` writes them with Burn's
//! operations. Conventions as [`super::ffn`].

pub mod cpu;

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::flex::FlexTensor;
use burn::backend::{backend_extension, tensor::FloatTensor, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::{Tensor, TensorData};

use super::flat::{f32s, host, register_flat};
use super::host_gemm::zeros;

/// Attentive statistics pooling.
#[backend_extension(Flex, Autodiff)]
pub trait PoolingOps: Backend {
    /// `h`, `logits` `[B, D, T]` → `[B, 2D]`: per row the softmax `w` of the
    /// logits over time, `μ = Σ w·h` and `σ = √max(Σ w·h² − μ², floor)`.
    fn attentive_stats(h: FloatTensor<Self>, logits: FloatTensor<Self>, floor: f64) -> FloatTensor<Self>;
}

/// The training halves of [`PoolingOps`], on the backend the autodiff layer
/// wraps (never called through `Dispatch`).
pub trait PoolingTrainOps: Backend {
    /// Backward: flat `[∂h | ∂logits]` from the gradient of the stats.
    fn attentive_stats_backward(
        h: FloatTensor<Self>,
        logits: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        floor: f64,
    ) -> FloatTensor<Self>;
}

impl PoolingOps for Flex {
    fn attentive_stats(h: FlexTensor, logits: FlexTensor, floor: f64) -> FlexTensor {
        let [b, d, t] = h.shape().dims::<3>();
        let (h, e) = (host(&h), host(&logits));
        let out = cpu::forward(f32s(&h), f32s(&e), t, d, floor as f32);
        FlexTensor::from_data(TensorData::new(out, [b, 2 * d]))
    }
}

impl PoolingTrainOps for Flex {
    fn attentive_stats_backward(h: FlexTensor, logits: FlexTensor, grad: FlexTensor, floor: f64) -> FlexTensor {
        let [b, d, t] = h.shape().dims::<3>();
        let (h, e, g) = (host(&h), host(&logits), host(&grad));
        let n = b * d * t;
        let mut out = zeros(2 * n);
        let (dh, de) = out.split_at_mut(n);
        cpu::backward(f32s(&h), f32s(&e), t, d, floor as f32, f32s(&g), dh, de);
        FlexTensor::from_data(TensorData::new(out, [2 * n]))
    }
}

#[derive(Debug)]
struct StatsBackward;

impl<B: Backend + PoolingTrainOps> Backward<B, 2> for StatsBackward {
    /// `(h, logits, floor)`.
    type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (h, e, floor) = ops.state;
        let shape = h.shape();
        let all = B::attentive_stats_backward(h, e, grad, floor);
        register_flat::<B>(grads, &all, ops.parents.iter().map(|p| p.as_ref().map(|n| n.id)), [shape.clone(), shape]);
    }
}

impl<B: Backend + PoolingOps + PoolingTrainOps, C: CheckpointStrategy> PoolingOps for Autodiff<B, C> {
    fn attentive_stats(h: FloatTensor<Self>, logits: FloatTensor<Self>, floor: f64) -> FloatTensor<Self> {
        match StatsBackward.prepare::<C>([h.node(), logits.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (hp, ep) = (h.primitive().clone(), logits.primitive().clone());
                let out = B::attentive_stats(hp.clone(), ep.clone(), floor);
                prep.finish((hp, ep, floor), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::attentive_stats(h.into_primitive(), logits.into_primitive(), floor))
            }
        }
    }
}

/// `[μ | σ]` `[B, 2D]` of `h` under the softmax over time of `logits`, both
/// `[B, D, T]`, through the fused CPU operation: only where
/// [`super::fused`] holds for `h`.
pub fn attentive_stats(h: Tensor<3>, logits: Tensor<3>, floor: f64) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as PoolingOps>::attentive_stats(h.into_dispatch(), logits.into_dispatch(), floor))
}
