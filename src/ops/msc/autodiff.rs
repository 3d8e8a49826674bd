//! The fused multi-scale convolution under autodiff: one forward node with
//! nine differentiable parents, whose backward is [`MscOps::msc_backward`].

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, TensorMetadata};
use burn::tensor::Shape;

use super::super::flat::{part, register_flat};
use super::{MscOps, MscParams, MscTrainOps};

/// The forward's inputs the backward reads (the projection's and the
/// linear layer's biases are not), and its flat output.
#[derive(Debug, Clone)]
struct State<T> {
    x: T,
    valid: T,
    packed: T,
    w: MscParams<Option<T>>,
    pads: [usize; 2],
}

#[derive(Debug)]
struct MscBackward;

impl<B: Backend + MscTrainOps> Backward<B, 9> for MscBackward {
    type State = State<B::FloatTensorPrimitive>;

    fn backward(self, ops: Ops<Self::State, 9>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let x_shape = s.x.shape();
        let kernel = |w: &Option<B::FloatTensorPrimitive>| w.as_ref().expect("branch weights").shape()[1];
        let shapes = MscParams::shapes(x_shape[1], [kernel(&s.w.branch1_w), kernel(&s.w.branch2_w)]);
        let shapes = std::iter::once(x_shape).chain(shapes.into_vec().into_iter().map(Shape::from));
        let all = B::msc_backward(s.x, s.valid, s.packed, s.w, dout, s.pads);
        register_flat::<B>(grads, &all, ops.parents.iter().map(|p| p.as_ref().map(|n| n.id)), shapes);
    }
}

type T<B, C> = FloatTensor<Autodiff<B, C>>;

impl<B: Backend + MscOps + MscTrainOps, C: CheckpointStrategy> MscOps for Autodiff<B, C> {
    fn msc(
        x: T<B, C>,
        valid: T<B, C>,
        projection_w: T<B, C>,
        projection_b: T<B, C>,
        branch1_w: T<B, C>,
        branch1_b: T<B, C>,
        branch2_w: T<B, C>,
        branch2_b: T<B, C>,
        pointwise_w: T<B, C>,
        pointwise_b: T<B, C>,
        pad1: usize,
        pad2: usize,
    ) -> T<B, C> {
        let w = MscParams {
            projection_w,
            projection_b,
            branch1_w,
            branch1_b,
            branch2_w,
            branch2_b,
            pointwise_w,
            pointwise_b,
        };
        let pads = [pad1, pad2];
        let parents = w.as_ref().map(|t| t.node()).after(x.node());
        match MscBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let p = |t: &T<B, C>| t.primitive().clone();
                let wp = w.as_ref().map(p);
                let packed = B::msc_train(p(&x), p(&valid), wp.clone(), pads);
                let out = part::<B>(&packed, 0, x.primitive().shape());
                let w = MscParams { projection_b: None, pointwise_b: None, ..wp.map(Some) };
                let state = State { x: p(&x), valid: p(&valid), packed, w, pads };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                let w = w.map(|t| t.into_primitive());
                prep.finish(B::msc(
                    x.into_primitive(),
                    valid.into_primitive(),
                    w.projection_w,
                    w.projection_b,
                    w.branch1_w,
                    w.branch1_b,
                    w.branch2_w,
                    w.branch2_b,
                    w.pointwise_w,
                    w.pointwise_b,
                    pad1,
                    pad2,
                ))
            }
        }
    }
}
