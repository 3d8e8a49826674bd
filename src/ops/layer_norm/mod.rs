//! LayerNorm over the channel axis of `[B, C, T]` as one CPU operation,
//! forward and backward (kernels in [`cpu`]); other backends and precisions
//! keep Burn's `layer_norm` on the transposed tensor
//! (`model::layers::LayerNorm::forward_channels_first`). Conventions as
//! [`super::ffn`]: the training forward returns `[out | stats]`, flat.

pub mod cpu;

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::flex::FlexTensor;
use burn::backend::{backend_extension, tensor::FloatTensor, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::{Shape, Tensor, TensorData};

use super::flat::{f32s, host, part, register_flat};
use super::host_gemm::zeros;

/// Channels-first LayerNorm.
#[backend_extension(Flex, Autodiff)]
pub trait LayerNormOps: Backend {
    /// `x [B, C, T]` normalised over `C` per frame, `weight`, `bias` `[C]`.
    fn layer_norm_cf(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
}

/// The training halves of [`LayerNormOps`], on the backend the autodiff layer
/// wraps (never called through `Dispatch`).
pub trait LayerNormTrainOps: Backend {
    /// Training forward: flat `[out (B·C·T) | stats (B·2·T)]`.
    fn layer_norm_cf_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// Backward: flat `[∂x | ∂weight | ∂bias]`.
    fn layer_norm_cf_backward(
        x: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// `(x, weight, bias)` on the host, `(out, stats)` written into `buf`.
fn run(x: &FlexTensor, w: &FlexTensor, b: &FlexTensor, eps: f64, buf: &mut [f32]) {
    let [bs, c, t] = x.shape().dims::<3>();
    let (x, w, b) = (host(x), host(w), host(b));
    let (out, stats) = buf.split_at_mut(bs * c * t);
    cpu::forward(f32s(&x), f32s(&w), f32s(&b), eps as f32, t, out, stats);
}

impl LayerNormOps for Flex {
    fn layer_norm_cf(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, eps: f64) -> FlexTensor {
        let [bs, c, t] = x.shape().dims::<3>();
        let mut buf = zeros(bs * (c + 2) * t);
        run(&x, &weight, &bias, eps, &mut buf);
        buf.truncate(bs * c * t);
        FlexTensor::from_data(TensorData::new(buf, [bs, c, t]))
    }
}

impl LayerNormTrainOps for Flex {
    fn layer_norm_cf_train(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, eps: f64) -> FlexTensor {
        let [bs, c, t] = x.shape().dims::<3>();
        let mut buf = zeros(bs * (c + 2) * t);
        run(&x, &weight, &bias, eps, &mut buf);
        let n = buf.len();
        FlexTensor::from_data(TensorData::new(buf, [n]))
    }

    fn layer_norm_cf_backward(x: FlexTensor, packed: FlexTensor, weight: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let [bs, c, t] = x.shape().dims::<3>();
        let (x, packed, w, g) = (host(&x), host(&packed), host(&weight), host(&grad));
        let mut out = zeros(bs * c * t + 2 * c);
        let (dx, dwb) = out.split_at_mut(bs * c * t);
        let stats = &f32s(&packed)[bs * c * t..];
        dwb.copy_from_slice(&cpu::backward(f32s(&x), f32s(&g), stats, f32s(&w), t, dx));
        let n = out.len();
        FlexTensor::from_data(TensorData::new(out, [n]))
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: Backend + LayerNormTrainOps> Backward<B, 3> for LayerNormBackward {
    /// `(x, packed forward output, weight)`.
    type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, B::FloatTensorPrimitive);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, packed, w) = ops.state;
        let (x_shape, c) = (x.shape(), w.shape()[0]);
        let all = B::layer_norm_cf_backward(x, packed, w, grad);
        let shapes = [x_shape, Shape::new([c]), Shape::new([c])];
        register_flat::<B>(grads, &all, ops.parents.iter().map(|p| p.as_ref().map(|n| n.id)), shapes);
    }
}

type T<B, C> = FloatTensor<Autodiff<B, C>>;

impl<B: Backend + LayerNormOps + LayerNormTrainOps, C: CheckpointStrategy> LayerNormOps for Autodiff<B, C> {
    fn layer_norm_cf(x: T<B, C>, weight: T<B, C>, bias: T<B, C>, eps: f64) -> T<B, C> {
        match LayerNormBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
                let packed = B::layer_norm_cf_train(xp.clone(), wp.clone(), bias.into_primitive(), eps);
                let out = part::<B>(&packed, 0, xp.shape());
                prep.finish((xp, packed, wp), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::layer_norm_cf(x.into_primitive(), weight.into_primitive(), bias.into_primitive(), eps))
            }
        }
    }
}

/// Channels-first LayerNorm through the fused CPU operation: only where
/// [`super::fused`] holds for `x`.
pub fn layer_norm_channels_first(x: Tensor<3>, weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as LayerNormOps>::layer_norm_cf(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        eps,
    ))
}
