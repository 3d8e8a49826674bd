//! Depthwise 1-D convolution (`groups == channels`, stride 1, symmetric zero
//! padding) as a Burn backend extension.
//!
//! * CubeCL backends: the shared-memory kernels in `shaders/depthwise.rs`.
//! * Flex (CPU), float32: a forward and a weight gradient of our own (`cpu`
//!   below). The forward zero-pads each (batch, channel) row once and keeps
//!   tiles of 64 outputs in registers across the taps (AVX2 with FMA where
//!   the CPU has it, AVX-512 CPUs included), rows in parallel; the weight
//!   gradient is `K` dot products per row, parallel over channels. Other
//!   precisions take Burn's grouped `conv1d` and its generic weight
//!   backward.
//! * Autodiff: a backward written with the same two operations: the input
//!   gradient is the forward with the taps reversed and padding `K-1-pad`,
//!   the weight gradient is its own operation, the bias gradient a sum.
//!
//! [`depthwise_conv1d`] takes this path on the devices above and Burn's
//! generic grouped convolution elsewhere; [`super::with_route`] with `Route::Generic` forces the
//! generic path for comparisons.

use burn::backend::flex::FlexTensor;
use burn::backend::{
    backend_extension,
    ops::{FloatTensorOps, ModuleOps},
    tensor::FloatTensor,
    Backend, Dispatch, Flex, TensorMetadata,
};
use burn::tensor::module::conv1d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape, Tensor, TensorData};

/// Depthwise convolution primitives.
#[backend_extension(
    Flex,
    Cube: cfg(feature = "kernels"),
    Autodiff,
    Fusion: cfg(feature = "fusion"),
)]
pub trait DepthwiseOps: Backend {
    /// `x [B, C, T]`, `weight [C, K]`, `bias [C]` → `[B, C, T + 2·pad - K + 1]`:
    /// `out[b, c, t] = bias[c] + Σ_k w[c, k] · x[b, c, t - pad + k]`, with the
    /// taps read in reverse order when `flip` is set.
    #[fusion(dtype = x, shape = conv_shape(x, weight, pad))]
    fn depthwise_conv1d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
        flip: bool,
    ) -> FloatTensor<Self>;

    /// Gradient `[C, K]` of the unflipped forward's weight, given its input
    /// `x [B, C, T]` and the output gradient `grad [B, C, T + 2·pad - K + 1]`.
    #[fusion(dtype = x, shape = Shape::new([x[1], *kernel]))]
    fn depthwise_conv1d_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        pad: usize,
        kernel: usize,
    ) -> FloatTensor<Self>;
}

/// Output shape of [`DepthwiseOps::depthwise_conv1d`].
#[allow(dead_code)] // used by the fusion build only
fn conv_shape(x: &Shape, weight: &Shape, pad: &usize) -> Shape {
    Shape::new([x[0], x[1], x[2] + 2 * pad + 1 - weight[1]])
}

fn options(pad: usize, channels: usize) -> ConvOptions<1> {
    ConvOptions::new([1], [pad], [1], channels)
}

impl DepthwiseOps for Flex {
    fn depthwise_conv1d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
        flip: bool,
    ) -> FloatTensor<Self> {
        let [c, k] = weight.shape().dims::<2>();
        if [x.dtype(), weight.dtype(), bias.dtype()] == [DType::F32; 3] {
            let [b, _, t_in] = x.shape().dims::<3>();
            let t_out = t_in + 2 * pad + 1 - k;
            let (x, weight, bias) = (x.to_contiguous(), weight.to_contiguous(), bias.to_contiguous());
            fn f32s(t: &FlexTensor) -> &[f32] {
                t.as_slice::<f32>().expect("contiguous f32")
            }
            let out = cpu::forward(f32s(&x), f32s(&weight), f32s(&bias), [b, c, t_in, t_out], k, pad, flip);
            return FlexTensor::from_data(TensorData::new(out, [b, c, t_out]));
        }
        // Other precisions: Burn's grouped convolution.
        let mut w = Self::float_reshape(weight, Shape::new([c, 1, k]));
        if flip {
            w = Self::float_flip(w, &[2]);
        }
        Self::conv1d(x, w, Some(bias), options(pad, c))
    }

    fn depthwise_conv1d_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        pad: usize,
        kernel: usize,
    ) -> FloatTensor<Self> {
        let [b, c, t_in] = x.shape().dims::<3>();
        let t_out = grad.shape()[2];
        if x.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            // Other precisions: Burn's generic weight backward.
            let device = x.device();
            let like = Self::float_zeros(Shape::new([c, 1, kernel]), &device, x.dtype().into());
            let w = Self::conv1d_weight_backward(x, like, grad, options(pad, c));
            return Self::float_reshape(w, Shape::new([c, kernel]));
        }
        let x = x.to_contiguous();
        let grad = grad.to_contiguous();
        let xs = x.as_slice::<f32>().expect("contiguous f32");
        let gs = grad.as_slice::<f32>().expect("contiguous f32");
        let w = cpu::weight_grad(xs, gs, [b, c, t_in, t_out], kernel, pad);
        FlexTensor::from_data(TensorData::new(w, [c, kernel]))
    }
}

/// The CPU forward and weight gradient, by hand. Burn's generic
/// `conv1d_weight_backward` treats a depthwise convolution as `C` separate
/// grouped GEMMs and is about 20× slower than the forward; written directly
/// it is `K` dot products per (batch, channel) row, parallel over channels.
/// Burn's grouped forward runs a scalar loop per output; here each row is
/// zero-padded once and a tile of outputs stays in registers across the
/// taps (one load and one fused multiply-add per tap and vector).
pub(crate) mod cpu {
    use rayon::prelude::*;

    use crate::ops::sums::lane_dot;

    /// Outputs per register tile: 8 accumulators of 8 floats.
    const TILE: usize = 64;

    /// `out[t] = bias + Σ_k w[k]·xp[t + k]` for the whole tiles of `out`
    /// (`xp` holds `out.len() + K - 1` samples).
    #[inline(always)]
    fn row_tiles<const FMA: bool>(xp: &[f32], w: &[f32], bias: f32, out: &mut [f32]) {
        for (ti, o) in out.chunks_exact_mut(TILE).enumerate() {
            let t0 = ti * TILE;
            let mut acc = [bias; TILE];
            for (k, &wk) in w.iter().enumerate() {
                let xs = &xp[t0 + k..t0 + k + TILE];
                for i in 0..TILE {
                    // `mul_add` is one instruction only where FMA is enabled.
                    acc[i] = if FMA { wk.mul_add(xs[i], acc[i]) } else { acc[i] + wk * xs[i] };
                }
            }
            o.copy_from_slice(&acc);
        }
    }

    crate::ops::simd::simd_fn! {
        /// [`row_tiles`] in 8-wide vectors where the CPU has AVX2 (AVX-512
        /// included: its shifted windows are unaligned loads, see `simd_fn`).
        fn row(xp: &[f32], w: &[f32], bias: f32, out: &mut [f32]) => fma narrow row_tiles
    }

    /// `out[b, c, t] = bias[c] + Σ_k w[c, k]·x[b, c, t - pad + k]` (taps
    /// reversed with `flip`), for contiguous `x [B, C, T_in]`, `w [C, K]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        [b, c, t_in, t_out]: [usize; 4],
        kernel: usize,
        pad: usize,
        flip: bool,
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; b * c * t_out];
        out.par_chunks_mut(t_out).enumerate().for_each_init(
            || (Row::default(), vec![0.0f32; kernel]),
            |(scratch, taps), (row, o)| {
                let ch = row % c;
                taps.copy_from_slice(&w[ch * kernel..(ch + 1) * kernel]);
                if flip {
                    taps.reverse();
                }
                scratch.conv(&x[row * t_in..(row + 1) * t_in], taps, bias[ch], pad, o);
            },
        );
        out
    }

    /// One row of the forward with its scratch buffers, reused between rows.
    #[derive(Default)]
    pub struct Row {
        xp: Vec<f32>,
        tile: Vec<f32>,
    }

    impl Row {
        /// `out[t] = bias + Σ_k taps[k]·x[t - pad + k]` (zeros outside `x`).
        pub fn conv(&mut self, x: &[f32], taps: &[f32], bias: f32, pad: usize, out: &mut [f32]) {
            let t_out = out.len();
            out.copy_from_slice(
                self.conv_with(x.len(), t_out, taps, bias, pad, |xp| xp.copy_from_slice(&x[..xp.len()])),
            );
        }

        /// As [`Row::conv`] for a row of `t_in` samples that `fill` writes
        /// (the first `xp.len()` of them, all that the outputs read), with
        /// the `t_out` outputs left in the row's own buffer.
        pub fn conv_with(
            &mut self,
            t_in: usize,
            t_out: usize,
            taps: &[f32],
            bias: f32,
            pad: usize,
            fill: impl FnOnce(&mut [f32]),
        ) -> &[f32] {
            let padded_out = t_out.div_ceil(TILE) * TILE;
            // xp[j] = x[j - pad] inside the row, zero outside: only the
            // margins are cleared, `fill` writes the rest.
            let len = padded_out + taps.len() - 1;
            self.xp.resize(len, 0.0);
            self.tile.resize(padded_out, 0.0);
            let n = t_in.min(len - pad);
            self.xp[..pad].fill(0.0);
            self.xp[pad + n..].fill(0.0);
            fill(&mut self.xp[pad..pad + n]);
            row(&self.xp, taps, bias, &mut self.tile);
            &self.tile[..t_out]
        }
    }

    /// `w[c, k] = Σ_b Σ_t g[b, c, t] · x[b, c, t - pad + k]` for
    /// `x [B, C, T_in]` and `g [B, C, T_out]`, both contiguous.
    pub fn weight_grad(x: &[f32], g: &[f32], [b, c, t_in, t_out]: [usize; 4], kernel: usize, pad: usize) -> Vec<f32> {
        let mut w = vec![0.0f32; c * kernel];
        w.par_chunks_mut(kernel).enumerate().for_each(|(ci, wc)| {
            for bi in 0..b {
                let row = bi * c + ci;
                weight_grad_row(&x[row * t_in..(row + 1) * t_in], &g[row * t_out..(row + 1) * t_out], pad, wc);
            }
        });
        w
    }

    crate::ops::simd::simd_fn! {
        /// `w[k] += Σ_t g[t]·x[t - pad + k]` for one row (`x` zero outside).
        /// Compiled for AVX2 where the CPU has it, so that each tap's eight
        /// partial sums fill one register: the same operations in the same
        /// order, so the same result.
        pub fn weight_grad_row(x: &[f32], g: &[f32], pad: usize, w: &mut [f32]) => weight_grad_lanes
    }

    #[inline(always)]
    fn weight_grad_lanes(x: &[f32], g: &[f32], pad: usize, w: &mut [f32]) {
        let (t_in, t_out) = (x.len(), g.len());
        for (k, wk) in w.iter_mut().enumerate() {
            // Output steps t whose input index t - pad + k is inside 0..T_in.
            let lo = pad.saturating_sub(k);
            let hi = t_out.min((t_in + pad).saturating_sub(k));
            if lo < hi {
                let shift = lo + k - pad;
                *wk += lane_dot(&g[lo..hi], &x[shift..shift + hi - lo]);
            }
        }
    }
}

#[cfg(feature = "kernels")]
impl DepthwiseOps for burn_cubecl::CubeBackend {
    fn depthwise_conv1d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
        flip: bool,
    ) -> FloatTensor<Self> {
        crate::shaders::depthwise::depthwise_conv1d(x, weight, bias, pad, flip)
    }

    fn depthwise_conv1d_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        pad: usize,
        kernel: usize,
    ) -> FloatTensor<Self> {
        let c = x.shape()[1];
        let partial = crate::shaders::depthwise::depthwise_conv1d_weight_grad_partials(x, grad, pad, kernel);
        Self::float_reshape(Self::float_sum_dim(partial, 0), Shape::new([c, kernel]))
    }
}

mod autodiff {
    use super::DepthwiseOps;
    use burn::backend::autodiff::{
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
        NodeId,
    };
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, AutodiffBackend, Backend, TensorMetadata};
    use burn::tensor::Shape;

    #[derive(Debug)]
    struct DepthwiseBackward;

    impl<B: Backend + DepthwiseOps> Backward<B, 3> for DepthwiseBackward {
        // (x, weight) checkpoints, padding, flip.
        type State = (NodeId, NodeId, usize, bool);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
            let [node_x, node_w, node_b] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (x_state, w_state, pad, flip) = ops.state;
            let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
            let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(w_state);
            let [c, k] = w.shape().dims::<2>();

            if let Some(node) = node_b {
                let g = B::float_sum_dim(B::float_sum_dim(grad.clone(), 0), 2);
                grads.register::<B>(node.id, B::float_reshape(g, Shape::new([c])));
            }
            if let Some(node) = node_x {
                // out[t] = Σ_k w'[k] x[t - pad + k]  ⇒  ∂x[s] = Σ_k w'[K-1-k] ∂out[s - (K-1-pad) + k].
                let device = grad.device();
                let zero = B::float_zeros(Shape::new([c]), &device, grad.dtype().into());
                let gx = B::depthwise_conv1d(grad.clone(), w, zero, k - 1 - pad, !flip);
                grads.register::<B>(node.id, gx);
            }
            if let Some(node) = node_w {
                let mut gw = B::depthwise_conv1d_weight_grad(x, grad, pad, k);
                if flip {
                    gw = B::float_flip(gw, &[1]);
                }
                grads.register::<B>(node.id, gw);
            }
        }
    }

    impl<B: Backend + DepthwiseOps, C: CheckpointStrategy> DepthwiseOps for Autodiff<B, C> {
        fn depthwise_conv1d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            pad: usize,
            flip: bool,
        ) -> FloatTensor<Self> {
            match DepthwiseBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let w_state = prep.checkpoint(&weight);
                    let out = B::depthwise_conv1d(
                        x.into_primitive(),
                        weight.into_primitive(),
                        bias.into_primitive(),
                        pad,
                        flip,
                    );
                    prep.finish((x_state, w_state, pad, flip), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::depthwise_conv1d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    pad,
                    flip,
                )),
            }
        }

        fn depthwise_conv1d_weight_grad(
            x: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            pad: usize,
            kernel: usize,
        ) -> FloatTensor<Self> {
            // A gradient is not differentiated again: the result is a constant.
            let out = B::depthwise_conv1d_weight_grad(x.into_primitive(), grad.into_primitive(), pad, kernel);
            <Autodiff<B, C> as AutodiffBackend>::from_inner(out)
        }
    }
}

/// Depthwise convolution: `x [B, C, T]`, `weight [C, 1, K]`, `bias [C]`,
/// symmetric zero padding → `[B, C, T + 2·pad - K + 1]`.
pub fn depthwise_conv1d(x: Tensor<3>, weight: Tensor<3>, bias: Tensor<1>, pad: usize) -> Tensor<3> {
    if !super::use_extension(&x.device()) {
        let c = weight.dims()[0];
        return conv1d(x, weight, Some(bias), options(pad, c));
    }
    depthwise_conv1d_extension(x, weight, bias, pad)
}

/// [`depthwise_conv1d`] through the extension, on a device where it is
/// implemented (see [`super::supported`]).
pub fn depthwise_conv1d_extension(x: Tensor<3>, weight: Tensor<3>, bias: Tensor<1>, pad: usize) -> Tensor<3> {
    let [c, _, k] = weight.dims();
    let weight = weight.reshape([c, k]);
    Tensor::from_dispatch(<Dispatch as DepthwiseOps>::depthwise_conv1d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        pad,
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::cpu::Row;

    /// `bias + Σ_k taps[k]·x[t - pad + k]` for `t < t_out`, zeros outside `x`.
    fn naive(x: &[f32], taps: &[f32], bias: f32, pad: usize, t_out: usize) -> Vec<f32> {
        (0..t_out)
            .map(|t| {
                let at = |k: usize| (t + k).checked_sub(pad).and_then(|j| x.get(j)).copied().unwrap_or(0.0);
                bias + taps.iter().enumerate().map(|(k, &w)| w * at(k)).sum::<f32>()
            })
            .collect()
    }

    /// One row buffer serves rows of other kernels, paddings and lengths in
    /// turn, as the multi-scale block's branches share it: each output is
    /// its own row's convolution, with nothing left from the row before.
    /// Small integers times quarters keep every sum exact.
    #[test]
    fn a_row_buffer_serves_rows_of_any_kernel() {
        let mut row = Row::default();
        let cases = [
            (65, 32, 798, 798),
            (7, 3, 798, 798),
            (65, 32, 100, 100),
            (7, 3, 30, 24),
            (7, 3, 200, 10),
            (65, 32, 798, 798),
            (3, 0, 50, 48),
        ];
        for (i, &(k, pad, t_in, t_out)) in cases.iter().enumerate() {
            let x: Vec<f32> = (0..t_in).map(|j| ((j * 37 + i * 11) % 23) as f32 - 11.0).collect();
            let taps: Vec<f32> = (0..k).map(|j| ((j * 13 + i) % 7) as f32 * 0.25 - 0.75).collect();
            let mut out = vec![f32::NAN; t_out];
            row.conv(&x, &taps, 0.5, pad, &mut out);
            assert_eq!(out, naive(&x, &taps, 0.5, pad, t_out), "case {i}: K {k}, pad {pad}, {t_in} -> {t_out}");
        }
    }
}
