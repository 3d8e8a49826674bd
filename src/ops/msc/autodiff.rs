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
use super::{MscOps, MscTrainOps};

/// The forward's inputs the backward reads, and its flat output.
#[derive(Debug, Clone)]
struct State<T> {
    x: T,
    valid: T,
    packed: T,
    wp: T,
    w1: T,
    b1: T,
    w2: T,
    b2: T,
    wpw: T,
    pads: [usize; 2],
}

#[derive(Debug)]
struct MscBackward;

impl<B: Backend + MscTrainOps> Backward<B, 9> for MscBackward {
    type State = State<B::FloatTensorPrimitive>;

    fn backward(self, ops: Ops<Self::State, 9>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let s = ops.state;
        // The order of `cpu::grads_len`: x, wp, bp, w1, b1, w2, b2, wpw, bpw.
        let shapes = [
            s.x.shape(),
            s.wp.shape(),
            Shape::new([s.wp.shape()[0]]),
            s.w1.shape(),
            s.b1.shape(),
            s.w2.shape(),
            s.b2.shape(),
            s.wpw.shape(),
            Shape::new([s.wpw.shape()[1]]),
        ];
        let all =
            B::msc_backward(s.x, s.valid, s.packed, s.wp, s.w1, s.b1, s.w2, s.b2, s.wpw, dout, s.pads[0], s.pads[1]);
        register_flat::<B>(grads, &all, ops.parents.iter().map(|p| p.as_ref().map(|n| n.id)), shapes);
    }
}

type T<B, C> = FloatTensor<Autodiff<B, C>>;

impl<B: Backend + MscOps + MscTrainOps, C: CheckpointStrategy> MscOps for Autodiff<B, C> {
    fn msc(
        x: T<B, C>,
        valid: T<B, C>,
        wp: T<B, C>,
        bp: T<B, C>,
        w1: T<B, C>,
        b1: T<B, C>,
        w2: T<B, C>,
        b2: T<B, C>,
        wpw: T<B, C>,
        bpw: T<B, C>,
        pad1: usize,
        pad2: usize,
    ) -> T<B, C> {
        let parents =
            [x.node(), wp.node(), bp.node(), w1.node(), b1.node(), w2.node(), b2.node(), wpw.node(), bpw.node()];
        match MscBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let p = |t: &T<B, C>| t.primitive().clone();
                let packed = B::msc_train(
                    p(&x),
                    p(&valid),
                    p(&wp),
                    p(&bp),
                    p(&w1),
                    p(&b1),
                    p(&w2),
                    p(&b2),
                    p(&wpw),
                    p(&bpw),
                    pad1,
                    pad2,
                );
                let out = part::<B>(&packed, 0, x.primitive().shape());
                let state = State {
                    x: p(&x),
                    valid: p(&valid),
                    packed,
                    wp: p(&wp),
                    w1: p(&w1),
                    b1: p(&b1),
                    w2: p(&w2),
                    b2: p(&b2),
                    wpw: p(&wpw),
                    pads: [pad1, pad2],
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::msc(
                x.into_primitive(),
                valid.into_primitive(),
                wp.into_primitive(),
                bp.into_primitive(),
                w1.into_primitive(),
                b1.into_primitive(),
                w2.into_primitive(),
                b2.into_primitive(),
                wpw.into_primitive(),
                bpw.into_primitive(),
                pad1,
                pad2,
            )),
        }
    }
}
