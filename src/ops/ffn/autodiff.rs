//! The fused feed-forward block under autodiff: one forward node with nine
//! differentiable parents, whose backward is [`FfnOps::ffn_backward`].

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, TensorMetadata};
use burn::tensor::Shape;

use super::super::flat::{part, register_flat};
use super::{FfnOps, FfnTrainOps};

/// What the backward needs: the forward's inputs (no gradient flows to
/// `valid`) and its flat output with the saved tensors.
#[derive(Debug, Clone)]
struct State<T> {
    x: T,
    valid: T,
    packed: T,
    norm_w: T,
    norm_b: T,
    w1: T,
    gamma: T,
    beta: T,
    w2: T,
    eps: [f64; 2],
}

#[derive(Debug)]
struct FfnBackward;

impl<B: Backend + FfnTrainOps> Backward<B, 9> for FfnBackward {
    type State = State<B::FloatTensorPrimitive>;

    fn backward(self, ops: Ops<Self::State, 9>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let x_shape = s.x.shape();
        let [c, h] = s.w1.shape().dims::<2>();
        let all = B::ffn_backward(
            s.x, s.valid, s.packed, s.norm_w, s.norm_b, s.w1, s.gamma, s.beta, s.w2, dout, s.eps[0], s.eps[1],
        );
        // The order of `cpu::Grads`.
        let shapes = [
            x_shape.clone(),
            Shape::new([c]),
            Shape::new([c]),
            Shape::new([c, h]),
            Shape::new([h]),
            Shape::new([h]),
            Shape::new([h]),
            Shape::new([h, c]),
            Shape::new([c]),
        ];
        register_flat::<B>(grads, &all, ops.parents.iter().map(|p| p.as_ref().map(|n| n.id)), shapes);
    }
}

type T<B, C> = FloatTensor<Autodiff<B, C>>;

impl<B: Backend + FfnOps + FfnTrainOps, C: CheckpointStrategy> FfnOps for Autodiff<B, C> {
    fn ffn(
        x: T<B, C>,
        valid: T<B, C>,
        norm_w: T<B, C>,
        norm_b: T<B, C>,
        w1: T<B, C>,
        b1: T<B, C>,
        gamma: T<B, C>,
        beta: T<B, C>,
        w2: T<B, C>,
        b2: T<B, C>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> T<B, C> {
        let parents = [
            x.node(),
            norm_w.node(),
            norm_b.node(),
            w1.node(),
            b1.node(),
            gamma.node(),
            beta.node(),
            w2.node(),
            b2.node(),
        ];
        match FfnBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let p = |t: &T<B, C>| t.primitive().clone();
                let packed = B::ffn_train(
                    p(&x),
                    p(&valid),
                    p(&norm_w),
                    p(&norm_b),
                    p(&w1),
                    p(&b1),
                    p(&gamma),
                    p(&beta),
                    p(&w2),
                    p(&b2),
                    ln_eps,
                    grn_eps,
                );
                let shape = x.primitive().shape();
                let out = part::<B>(&packed, 0, shape);
                let state = State {
                    x: p(&x),
                    valid: p(&valid),
                    packed,
                    norm_w: p(&norm_w),
                    norm_b: p(&norm_b),
                    w1: p(&w1),
                    gamma: p(&gamma),
                    beta: p(&beta),
                    w2: p(&w2),
                    eps: [ln_eps, grn_eps],
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::ffn(
                x.into_primitive(),
                valid.into_primitive(),
                norm_w.into_primitive(),
                norm_b.into_primitive(),
                w1.into_primitive(),
                b1.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                w2.into_primitive(),
                b2.into_primitive(),
                ln_eps,
                grn_eps,
            )),
        }
    }
}
