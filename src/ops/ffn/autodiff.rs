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
use super::{FfnOps, FfnParams, FfnTrainOps};

/// What the backward needs: the forward's inputs (no gradient flows to
/// `valid`, and the biases are not read) and its flat output with the saved
/// tensors.
#[derive(Debug, Clone)]
struct State<T> {
    x: T,
    valid: T,
    packed: T,
    w: FfnParams<Option<T>>,
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
        let [c, h] = s.w.expand_w.as_ref().expect("the expanding layer's weight").shape().dims::<2>();
        let all = B::ffn_backward(s.x, s.valid, s.packed, s.w, dout, s.eps);
        let shapes = std::iter::once(x_shape).chain(FfnParams::shapes(c, h).into_vec().into_iter().map(Shape::from));
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
        expand_w: T<B, C>,
        expand_b: T<B, C>,
        gamma: T<B, C>,
        beta: T<B, C>,
        project_w: T<B, C>,
        project_b: T<B, C>,
        ln_eps: f64,
        grn_eps: f64,
    ) -> T<B, C> {
        let w = FfnParams { norm_w, norm_b, expand_w, expand_b, gamma, beta, project_w, project_b };
        let eps = [ln_eps, grn_eps];
        let parents = w.as_ref().map(|t| t.node()).after(x.node());
        match FfnBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let p = |t: &T<B, C>| t.primitive().clone();
                let wp = w.as_ref().map(p);
                let packed = B::ffn_train(p(&x), p(&valid), wp.clone(), eps);
                let out = part::<B>(&packed, 0, x.primitive().shape());
                let w = FfnParams { expand_b: None, project_b: None, ..wp.map(Some) };
                let state = State { x: p(&x), valid: p(&valid), packed, w, eps };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                let w = w.map(|t| t.into_primitive());
                prep.finish(B::ffn(
                    x.into_primitive(),
                    valid.into_primitive(),
                    w.norm_w,
                    w.norm_b,
                    w.expand_w,
                    w.expand_b,
                    w.gamma,
                    w.beta,
                    w.project_w,
                    w.project_b,
                    ln_eps,
                    grn_eps,
                ))
            }
        }
    }
}
