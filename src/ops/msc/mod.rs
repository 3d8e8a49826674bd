//! The multi-scale temporal convolution (1×1 projection → depthwise
//! convolutions on channel chunks → GELU → per-frame linear → residual) of a
//! TS-ConvNeXt block with two branches, as one operation on the CPU,
//! forward and backward.
//!
//! * Flex (CPU), float32: the kernels of [`cpu`].
//! * Autodiff: the forward keeps the projection, the convolutions' output
//!   and its GELU; the backward is one operation returning every gradient.
//! * Elsewhere the block is written with Burn's operations
//!   (`model::block::Msc`), as for [`super::ffn`], whose conventions (flat
//!   outputs sliced on the autodiff side) this follows.

pub mod cpu;

mod autodiff;

use burn::backend::flex::FlexTensor;
use burn::backend::{backend_extension, tensor::FloatTensor, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::{Tensor, TensorData};

use super::host_gemm::zeros;

use super::flat::{f32s, f32s_or_empty, host};
use cpu::{Branch, Dims, Params};

/// The fused multi-scale convolution, two branches.
#[backend_extension(Flex, Autodiff)]
pub trait MscOps: Backend {
    /// Inference: `x [B, C, T]` → `[B, C, T]`; `valid [B, T]` is 1 on the
    /// frames the depthwise convolutions may read. `wp [C, C]`, branch
    /// weights `[C/2, K_i]` with 'same' paddings `pads`, `wpw [C, C]`
    /// input-major.
    #[allow(clippy::too_many_arguments)]
    fn msc(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        wp: FloatTensor<Self>,
        bp: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        wpw: FloatTensor<Self>,
        bpw: FloatTensor<Self>,
        pad1: usize,
        pad2: usize,
    ) -> FloatTensor<Self>;
}

/// The training halves of [`MscOps`], on the backend the autodiff layer
/// wraps (never called through `Dispatch`).
pub trait MscTrainOps: Backend {
    /// Training forward: flat `[out | p | q | a]`.
    #[allow(clippy::too_many_arguments)]
    fn msc_train(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        wp: FloatTensor<Self>,
        bp: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        wpw: FloatTensor<Self>,
        bpw: FloatTensor<Self>,
        pad1: usize,
        pad2: usize,
    ) -> FloatTensor<Self>;

    /// Backward: flat gradients `[x | wp | bp | w1 | b1 | w2 | b2 | wpw | bpw]`.
    #[allow(clippy::too_many_arguments)]
    fn msc_backward(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        wp: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        wpw: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        pad1: usize,
        pad2: usize,
    ) -> FloatTensor<Self>;
}

/// The inputs of one call on the host: `[wp, bp, w1, b1, w2, b2, wpw, bpw]`.
struct Host {
    x: FlexTensor,
    valid: FlexTensor,
    w: [Option<FlexTensor>; 8],
    dims: Dims,
    pads: [usize; 2],
}

impl Host {
    fn new(x: &FlexTensor, valid: &FlexTensor, w: [Option<&FlexTensor>; 8], pads: [usize; 2]) -> Self {
        let [b, c, t] = x.shape().dims::<3>();
        Self { x: host(x), valid: host(valid), w: w.map(|w| w.map(host)), dims: Dims { b, c, t }, pads }
    }

    fn params(&self) -> Params<'_> {
        let w = &self.w;
        let branch = |i: usize| Branch {
            w: f32s_or_empty(&w[2 + 2 * i]),
            bias: f32s_or_empty(&w[3 + 2 * i]),
            kernel: w[2 + 2 * i].as_ref().expect("branch weights").shape()[1],
            pad: self.pads[i],
        };
        Params {
            wp: f32s_or_empty(&w[0]),
            bp: f32s_or_empty(&w[1]),
            branches: vec![branch(0), branch(1)],
            wpw: f32s_or_empty(&w[6]),
            bpw: f32s_or_empty(&w[7]),
        }
    }
}

impl MscOps for Flex {
    fn msc(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        wp: FloatTensor<Self>,
        bp: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        wpw: FloatTensor<Self>,
        bpw: FloatTensor<Self>,
        pad1: usize,
        pad2: usize,
    ) -> FloatTensor<Self> {
        let hs = Host::new(&x, &valid, [&wp, &bp, &w1, &b1, &w2, &b2, &wpw, &bpw].map(Some), [pad1, pad2]);
        let d = hs.dims;
        let mut out = zeros(d.b * d.c * d.t);
        // Inference keeps nothing: a buffer for the activation only.
        let mut saved = zeros(d.b * d.c * d.t);
        cpu::forward(f32s(&hs.x), f32s(&hs.valid), &hs.params(), d, &mut out, &mut saved);
        FlexTensor::from_data(TensorData::new(out, [d.b, d.c, d.t]))
    }
}

impl MscTrainOps for Flex {
    fn msc_train(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        wp: FloatTensor<Self>,
        bp: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        wpw: FloatTensor<Self>,
        bpw: FloatTensor<Self>,
        pad1: usize,
        pad2: usize,
    ) -> FloatTensor<Self> {
        let hs = Host::new(&x, &valid, [&wp, &bp, &w1, &b1, &w2, &b2, &wpw, &bpw].map(Some), [pad1, pad2]);
        let d = hs.dims;
        let n_out = d.b * d.c * d.t;
        let mut packed = zeros(n_out + cpu::saved_len(d));
        let (out, saved) = packed.split_at_mut(n_out);
        cpu::forward(f32s(&hs.x), f32s(&hs.valid), &hs.params(), d, out, saved);
        let n = packed.len();
        FlexTensor::from_data(TensorData::new(packed, [n]))
    }

    fn msc_backward(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        wp: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        b1: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        b2: FloatTensor<Self>,
        wpw: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        pad1: usize,
        pad2: usize,
    ) -> FloatTensor<Self> {
        // The biases bp and bpw do not enter the backward (the branch
        // biases give their gradients' sizes).
        let hs = Host::new(
            &x,
            &valid,
            [Some(&wp), None, Some(&w1), Some(&b1), Some(&w2), Some(&b2), Some(&wpw), None],
            [pad1, pad2],
        );
        let d = hs.dims;
        let n_out = d.b * d.c * d.t;
        let packed = host(&packed);
        let dout = host(&dout);
        let p = hs.params();
        let mut grads = zeros(cpu::grads_len(d, &p));
        cpu::backward(f32s(&hs.x), f32s(&hs.valid), &p, d, &f32s(&packed)[n_out..], f32s(&dout), &mut grads);
        let n = grads.len();
        FlexTensor::from_data(TensorData::new(grads, [n]))
    }
}

/// The fused block: `x [B, C, T]`, `valid [B, T]`; `projection` `(weight
/// [C, C], bias)`, two `(weight [C/2, K_i], bias, pad_i)` branches,
/// `pointwise` `(weight [C, C] input-major, bias)`. Only where [`super::fused`] says so.
pub fn msc(
    x: Tensor<3>,
    valid: Tensor<2>,
    projection: (Tensor<2>, Tensor<1>),
    branches: [(Tensor<2>, Tensor<1>, usize); 2],
    pointwise: (Tensor<2>, Tensor<1>),
) -> Tensor<3> {
    let [(w1, b1, pad1), (w2, b2, pad2)] = branches;
    Tensor::from_dispatch(<Dispatch as MscOps>::msc(
        x.into_dispatch(),
        valid.into_dispatch(),
        projection.0.into_dispatch(),
        projection.1.into_dispatch(),
        w1.into_dispatch(),
        b1.into_dispatch(),
        w2.into_dispatch(),
        b2.into_dispatch(),
        pointwise.0.into_dispatch(),
        pointwise.1.into_dispatch(),
        pad1,
        pad2,
    ))
}
