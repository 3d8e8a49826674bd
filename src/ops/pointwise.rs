//! The unpadded convolution of stride 1, `y[b] = Σ_k W_k·x[b][:, k..] + bias`
//! of `[B, C_in, T]`, as a CPU operation, forward and backward: one `gemm`
//! product per utterance on the input unfolded to `[C_in·K, T - K + 1]`
//! (the input itself for the 1×1 convolutions of the MFA layer and the
//! pooling head; a copy of K shifted rows per channel for the stem). Burn's
//! CPU `conv1d` takes its general convolution path for these, largely on one
//! thread. Conventions as [`super::ffn`].

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::flex::FlexTensor;
use burn::backend::{
    backend_extension, ops::FloatTensorOps, tensor::FloatTensor, Autodiff, Backend, Dispatch, Flex, TensorMetadata,
};
use burn::tensor::{Shape, Slice, Tensor, TensorData};
use rayon::prelude::*;

use super::fastmath::tanh;
use super::flat::{f32s, host, register_flat};
use super::host_gemm::{from_rows, per_utterance, per_utterance_new, sum_over_utterances, transposed, zeros, View};
use super::simd::simd_fn;
use super::sums::channel_sums;

/// Unpadded convolution of stride 1 with a bias.
#[backend_extension(Flex, Autodiff)]
pub trait PointwiseOps: Backend {
    /// `x [B, I, T]`, `weight [O, I·taps]` (Burn's `[O, I, taps]` flattened),
    /// `bias [O]` → `[B, O, T - taps + 1]`.
    fn pointwise_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        taps: usize,
    ) -> FloatTensor<Self>;

    /// `W·x` without a bias, `x [B, I, T]`, `weight [O, I]` → `[B, O, T]`,
    /// written by the product alone: the pooling head's second attention
    /// convolution at inference, whose bias the softmax over time cancels.
    fn pointwise_product(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `tanh(W·x + bias)`, the product and one pass: the pooling head's
    /// attention branch at inference, with its BatchNorm folded into
    /// `weight` and `bias`.
    fn pointwise_conv_tanh(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// One part of a 1×1 convolution whose input is several tensors
    /// concatenated over channels, without the concatenation: `acc +
    /// W[:, offset..offset + I]·x` for `x [B, I, T]`, `weight [O, K]` (the
    /// whole weight) and `acc [B, O, T]`, or the bias `[O]` for the first
    /// part. `acc`'s memory is reused when nothing else holds it.
    fn pointwise_conv_part(
        acc: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        offset: usize,
    ) -> FloatTensor<Self>;
}

/// The training halves of [`PointwiseOps`], on the backend the autodiff layer
/// wraps (never called through `Dispatch`).
pub trait PointwiseTrainOps: Backend {
    /// Backward: flat `[∂x | ∂weight | ∂bias]`.
    fn pointwise_conv_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        taps: usize,
    ) -> FloatTensor<Self>;
}

impl PointwiseOps for Flex {
    /// The output starts as the bias, in fresh memory, and the product adds
    /// itself to it: no zero-filling and no second pass over the output.
    fn pointwise_conv(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, taps: usize) -> FlexTensor {
        let ([b, ci, t], [co, _]) = (x.shape().dims::<3>(), weight.shape().dims::<2>());
        let (x, w, bias) = (host(&x), host(&weight), host(&bias));
        let (cols, t_out) = unfolded(f32s(&x), [b, ci, t], taps);
        assert_eq!(bias.shape().dims::<1>(), [co], "one bias per output channel");
        let mut out = bias_rows(f32s(&bias), b, t_out);
        per_utterance(&mut out, View::rows(f32s(&w), co, ci * taps), &cols, b, t_out, true);
        FlexTensor::from_data(TensorData::new(out, [b, co, t_out]))
    }

    fn pointwise_product(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let ([b, ci, t], [co, _]) = (x.shape().dims::<3>(), weight.shape().dims::<2>());
        let (x, w) = (host(&x), host(&weight));
        let out = per_utterance_new(View::rows(f32s(&w), co, ci), f32s(&x), b, t);
        FlexTensor::from_data(TensorData::new(out, [b, co, t]))
    }

    fn pointwise_conv_tanh(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        product_then(x, weight, bias, add_bias_tanh_simd)
    }

    fn pointwise_conv_part(acc: FlexTensor, x: FlexTensor, weight: FlexTensor, offset: usize) -> FlexTensor {
        let ([b, ci, t], [co, k]) = (x.shape().dims::<3>(), weight.shape().dims::<2>());
        assert!(offset + ci <= k, "input channels {offset}..{} of a weight with {k}", offset + ci);
        let (x, w) = (host(&x), host(&weight));
        let mut acc = if acc.shape().num_dims() == 1 {
            let bias = host(&acc);
            assert_eq!(bias.shape().dims::<1>(), [co], "one bias per output channel");
            FlexTensor::from_data(TensorData::new(bias_rows(f32s(&bias), b, t), [b, co, t]))
        } else {
            assert_eq!(acc.shape().dims::<3>(), [b, co, t], "the sum so far");
            owned(acc)
        };
        let dst = acc.try_storage_mut::<f32>().expect("an owned tensor");
        let lhs = View { data: &f32s(&w)[offset..], rows: co, cols: ci, rs: k, cs: 1 };
        per_utterance(dst, lhs, f32s(&x), b, t, true);
        acc
    }
}

/// `[B, O, T]` with every row of channel `o` equal to `bias[o]`, written
/// once in fresh memory: the output the products add themselves to.
fn bias_rows(bias: &[f32], b: usize, t: usize) -> Vec<f32> {
    let co = bias.len();
    from_rows(b * co * t, t, |row| std::iter::repeat_n(bias[row % co], t))
}

/// `t` as a tensor that alone holds its buffer, contiguous from its start:
/// itself when it is, else a copy.
fn owned(t: FlexTensor) -> FlexTensor {
    let n = t.shape().num_elements();
    if t.is_unique() && t.layout().contiguous_offsets() == Some((0, n)) && t.storage::<f32>().len() == n {
        return t;
    }
    let c = host(&t);
    FlexTensor::from_data(TensorData::new(f32s(&c).to_vec(), t.shape()))
}

/// `W·x[b]` per utterance (one tap), then `pass(row, bias)` on each output row.
fn product_then(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, pass: fn(&mut [f32], f32)) -> FlexTensor {
    let ([b, ci, t], [co, _]) = (x.shape().dims::<3>(), weight.shape().dims::<2>());
    let (x, w, bias) = (host(&x), host(&weight), host(&bias));
    let mut out = per_utterance_new(View::rows(f32s(&w), co, ci), f32s(&x), b, t);
    let bias = f32s(&bias);
    out.par_chunks_mut(t).enumerate().with_min_len(8).for_each(|(row, o)| pass(o, bias[row % co]));
    FlexTensor::from_data(TensorData::new(out, [b, co, t]))
}

/// `x [B, I, T]` unfolded for `taps` taps: `[B, I·taps, T']` with row
/// `i·taps + k` of utterance `b` holding `x[b, i, k..k + T']`, `T' = T -
/// taps + 1`, the layout of Burn's flattened weight `[O, I·taps]`; `x` itself
/// (borrowed) for one tap.
fn unfolded(x: &[f32], [b, ci, t]: [usize; 3], taps: usize) -> (std::borrow::Cow<'_, [f32]>, usize) {
    assert!((1..=t).contains(&taps), "{taps} taps on {t} frames");
    let t_out = t - taps + 1;
    if taps == 1 {
        return (x.into(), t);
    }
    let mut cols = vec![0.0f32; b * ci * taps * t_out];
    cols.par_chunks_mut(taps * t_out).zip(x.par_chunks(t)).for_each(|(rows, xr)| {
        for (k, row) in rows.chunks_mut(t_out).enumerate() {
            row.copy_from_slice(&xr[k..k + t_out]);
        }
    });
    (cols.into(), t_out)
}

/// The adjoint of [`unfolded`]: `dx [B, I, T]` += the sum over taps of the
/// unfolded gradient `dcols [B, I·taps, T']` shifted back into place.
fn fold_into(dx: &mut [f32], dcols: &[f32], t: usize, taps: usize) {
    let t_out = t - taps + 1;
    dx.par_chunks_mut(t).zip(dcols.par_chunks(taps * t_out)).for_each(|(dr, rows)| {
        for (k, row) in rows.chunks(t_out).enumerate() {
            dr[k..k + t_out].iter_mut().zip(row).for_each(|(d, g)| *d += g);
        }
    });
}

#[inline(always)]
fn add_bias_tanh<const FMA: bool>(row: &mut [f32], v: f32) {
    row.iter_mut().for_each(|y| *y = tanh::<FMA>(*y + v));
}

simd_fn!(fn add_bias_tanh_simd(row: &mut [f32], v: f32) => fma add_bias_tanh);

impl PointwiseTrainOps for Flex {
    fn pointwise_conv_backward(x: FlexTensor, weight: FlexTensor, grad: FlexTensor, taps: usize) -> FlexTensor {
        let ([b, ci, t], [co, _]) = (x.shape().dims::<3>(), weight.shape().dims::<2>());
        let (x, w, g) = (host(&x), host(&weight), host(&grad));
        let (cols, t_out) = unfolded(f32s(&x), [b, ci, t], taps);
        let ck = ci * taps;
        let mut out = zeros(b * ci * t + co * ck + co);
        let (dx, rest) = out.split_at_mut(b * ci * t);
        let (dw, db) = rest.split_at_mut(co * ck);
        if taps == 1 {
            backward_host(&cols, f32s(&w), f32s(&g), [b, ck, co, t_out], [dx, dw, db], false);
        } else {
            let mut dcols = zeros(b * ck * t_out);
            backward_host(&cols, f32s(&w), f32s(&g), [b, ck, co, t_out], [&mut dcols, dw, db], false);
            fold_into(dx, &dcols, t, taps);
        }
        let n = out.len();
        FlexTensor::from_data(TensorData::new(out, [n]))
    }
}

/// Gradients of `y[b] = W·x[b] + bias` (`x [B, I, T]`, `W [O, I]`) from
/// `g [B, O, T]`: `dx = Wᵀ·g` per utterance (added to `dx` with
/// `accumulate`), `dW = Σ g·xᵀ`, `dbias = Σ g`. Shared with the projection of
/// the fused multi-scale block.
pub(crate) fn backward_host(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    [b, ci, co, t]: [usize; 4],
    [dx, dw, db]: [&mut [f32]; 3],
    accumulate: bool,
) {
    let wt = transposed(w, co, ci);
    per_utterance(dx, View::rows(&wt, ci, co), g, b, t, accumulate);
    sum_over_utterances(dw, g, x, co, ci, b, t);
    db.copy_from_slice(&channel_sums(g, co, t));
}

/// The backward of a convolution of this many taps.
#[derive(Debug)]
struct PointwiseBackward(usize);

impl<B: Backend + PointwiseTrainOps> Backward<B, 3> for PointwiseBackward {
    /// `(x, weight)`.
    type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        let shapes = [x.shape(), w.shape(), Shape::new([w.shape()[0]])];
        let all = B::pointwise_conv_backward(x, w, grad, self.0);
        register_flat::<B>(grads, &all, ops.parents.iter().map(|p| p.as_ref().map(|n| n.id)), shapes);
    }
}

impl<B: Backend + PointwiseOps + PointwiseTrainOps, C: CheckpointStrategy> PointwiseOps for Autodiff<B, C> {
    fn pointwise_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        taps: usize,
    ) -> FloatTensor<Self> {
        let prepared = PointwiseBackward(taps).prepare::<C>([x.node(), weight.node(), bias.node()]);
        match prepared.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
                let out = B::pointwise_conv(xp.clone(), wp.clone(), bias.into_primitive(), taps);
                prep.finish((xp, wp), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::pointwise_conv(x.into_primitive(), weight.into_primitive(), bias.into_primitive(), taps))
            }
        }
    }

    /// The tracked product with a bias of zeros.
    fn pointwise_product(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let co = weight.shape().dims::<2>()[0];
        let zeros = Self::float_zeros([co].into(), &weight.device(), weight.dtype().into());
        Self::pointwise_conv(x, weight, zeros, 1)
    }

    /// The tracked product, then Autodiff's own `tanh`.
    fn pointwise_conv_tanh(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_tanh(Self::pointwise_conv(x, weight, bias, 1))
    }

    /// The tracked product of the weight's columns (a slice), then Autodiff's
    /// own addition.
    fn pointwise_conv_part(
        acc: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        offset: usize,
    ) -> FloatTensor<Self> {
        let ([_, ci, _], [co, _]) = (x.shape().dims::<3>(), weight.shape().dims::<2>());
        let part = [Slice::new(0, Some(co as isize), 1), Slice::new(offset as isize, Some((offset + ci) as isize), 1)];
        let w = Self::float_slice(weight, &part);
        if acc.shape().num_dims() == 1 {
            return Self::pointwise_conv(x, w, acc, 1);
        }
        let zero = Self::float_zeros(Shape::new([co]), &w.device(), acc.dtype().into());
        Self::float_add(acc, Self::pointwise_conv(x, w, zero, 1))
    }
}

/// `x [B, I, T]`, `weight [O, I, K]`, `bias [O]` → `[B, O, T - K + 1]`
/// (unpadded, stride 1) through the fused CPU operation: only where
/// [`super::fused`] holds for `x`.
pub fn pointwise_conv(x: Tensor<3>, weight: Tensor<3>, bias: Tensor<1>) -> Tensor<3> {
    let [o, i, taps] = weight.dims();
    Tensor::from_dispatch(<Dispatch as PointwiseOps>::pointwise_conv(
        x.into_dispatch(),
        weight.reshape([o, i * taps]).into_dispatch(),
        bias.into_dispatch(),
        taps,
    ))
}

/// The 1×1 convolution (`weight [O, ΣI, 1]`, `bias [O]`) of the
/// concatenation over channels of `xs` (each `[B, I, T]`), as one product
/// per part added into one output: the MFA layer at inference, where
/// concatenating the stage outputs first was a single-threaded copy.
pub fn pointwise_conv_concat(xs: &[Tensor<3>], weight: Tensor<3>, bias: Tensor<1>) -> Tensor<3> {
    let [o, k, taps] = weight.dims();
    assert_eq!(taps, 1, "a 1×1 convolution");
    assert!(!xs.is_empty(), "at least one input");
    let w = weight.reshape([o, k]).into_dispatch();
    let (mut acc, mut offset) = (bias.into_dispatch(), 0);
    for x in xs {
        let i = x.dims()[1];
        acc = <Dispatch as PointwiseOps>::pointwise_conv_part(acc, x.clone().into_dispatch(), w.clone(), offset);
        offset += i;
    }
    assert_eq!(offset, k, "the inputs' channels make up the weight's");
    Tensor::from_dispatch(acc)
}

/// `W·x` (`x [B, I, T]`, `weight [O, I]`) without a bias, through the fused
/// CPU operation: only where [`super::fused`] holds for `x`.
pub fn pointwise_product(x: Tensor<3>, weight: Tensor<2>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as PointwiseOps>::pointwise_product(x.into_dispatch(), weight.into_dispatch()))
}

/// `tanh(W·x + bias)` of [`pointwise_conv`], in one pass after the product.
pub fn pointwise_conv_tanh(x: Tensor<3>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as PointwiseOps>::pointwise_conv_tanh(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}
