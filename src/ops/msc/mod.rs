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

use super::flat::{f32s, f32s_or_empty, host, op_params};
use super::host_gemm::{transposed, zeros};
use super::kept::kept;
use cpu::{Branch, Dims, Params};

op_params! {
    /// The block's parameters, named as in [`crate::model::block::Msc`].
    pub struct MscParams {
        /// The 1×1 projection `[C_out, C_in]`.
        projection_w,
        /// Its bias `[C]`.
        projection_b,
        /// The first branch's taps `[C/2, K_1]`, on channels `0..C/2`.
        branch1_w,
        /// Its bias `[C/2]`.
        branch1_b,
        /// The second branch's taps `[C/2, K_2]`, on channels `C/2..C`.
        branch2_w,
        /// Its bias `[C/2]`.
        branch2_b,
        /// The per-frame linear layer `[C_in, C_out]`, input-major as Burn's `Linear`.
        pointwise_w,
        /// Its bias `[C]`.
        pointwise_b,
    }
}

impl MscParams<Vec<usize>> {
    /// Each parameter's shape, for `C` channels and the branches' kernels.
    pub fn shapes(c: usize, [k1, k2]: [usize; 2]) -> Self {
        MscParams {
            projection_w: vec![c, c],
            projection_b: vec![c],
            branch1_w: vec![c / 2, k1],
            branch1_b: vec![c / 2],
            branch2_w: vec![c / 2, k2],
            branch2_b: vec![c / 2],
            pointwise_w: vec![c, c],
            pointwise_b: vec![c],
        }
    }
}

/// The fused multi-scale convolution, two branches.
#[backend_extension(Flex, Autodiff)]
pub trait MscOps: Backend {
    /// Inference: `x [B, C, T]` → `[B, C, T]`; `valid [B, T]` is 1 on the
    /// frames the depthwise convolutions may read. The weights are those of
    /// [`MscParams`], in its order (a backend extension takes tensors one by
    /// one), and the branches' 'same' paddings `pad1`, `pad2`.
    #[allow(clippy::too_many_arguments)]
    fn msc(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        projection_w: FloatTensor<Self>,
        projection_b: FloatTensor<Self>,
        branch1_w: FloatTensor<Self>,
        branch1_b: FloatTensor<Self>,
        branch2_w: FloatTensor<Self>,
        branch2_b: FloatTensor<Self>,
        pointwise_w: FloatTensor<Self>,
        pointwise_b: FloatTensor<Self>,
        pad1: usize,
        pad2: usize,
    ) -> FloatTensor<Self>;
}

/// The training halves of [`MscOps`], on the backend the autodiff layer
/// wraps (never called through `Dispatch`).
pub trait MscTrainOps: Backend {
    /// Training forward: flat `[out | p | q | a]`.
    fn msc_train(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        w: MscParams<FloatTensor<Self>>,
        pads: [usize; 2],
    ) -> FloatTensor<Self>;

    /// Backward: flat gradients `[x | the parameters in the order of
    /// MscParams]`. The projection's and the linear layer's biases are not
    /// read and may be `None`.
    fn msc_backward(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        packed: FloatTensor<Self>,
        w: MscParams<Option<FloatTensor<Self>>>,
        dout: FloatTensor<Self>,
        pads: [usize; 2],
    ) -> FloatTensor<Self>;
}

/// The inputs of one call on the host, `None` for the weights a call does
/// not read.
struct Host {
    x: FlexTensor,
    valid: FlexTensor,
    w: MscParams<Option<FlexTensor>>,
    dims: Dims,
    pads: [usize; 2],
}

impl Host {
    fn new(x: &FlexTensor, valid: &FlexTensor, w: MscParams<Option<FlexTensor>>, pads: [usize; 2]) -> Self {
        let [b, c, t] = x.shape().dims::<3>();
        Self { x: host(x), valid: host(valid), w: w.map(|w| w.as_ref().map(host)), dims: Dims { b, c, t }, pads }
    }

    fn params(&self) -> Params<'_> {
        let w = self.w.as_ref();
        fn branch<'a>(taps: &'a Option<FlexTensor>, bias: &'a Option<FlexTensor>, pad: usize) -> Branch<'a> {
            let kernel = taps.as_ref().expect("branch weights").shape()[1];
            Branch { w: f32s_or_empty(taps), bias: f32s_or_empty(bias), kernel, pad }
        }
        Params {
            projection_w: f32s_or_empty(w.projection_w),
            projection_b: f32s_or_empty(w.projection_b),
            branches: vec![
                branch(w.branch1_w, w.branch1_b, self.pads[0]),
                branch(w.branch2_w, w.branch2_b, self.pads[1]),
            ],
            pointwise_w: f32s_or_empty(w.pointwise_w),
            pointwise_b: f32s_or_empty(w.pointwise_b),
        }
    }
}

impl MscOps for Flex {
    fn msc(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        projection_w: FloatTensor<Self>,
        projection_b: FloatTensor<Self>,
        branch1_w: FloatTensor<Self>,
        branch1_b: FloatTensor<Self>,
        branch2_w: FloatTensor<Self>,
        branch2_b: FloatTensor<Self>,
        pointwise_w: FloatTensor<Self>,
        pointwise_b: FloatTensor<Self>,
        pad1: usize,
        pad2: usize,
    ) -> FloatTensor<Self> {
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
        let hs = Host::new(&x, &valid, w.map(Some), [pad1, pad2]);
        let d = hs.dims;
        // `Wpwᵀ` row-major, made once per model: read through strides,
        // `gemm` would copy it out in every call.
        let pointwise = hs.w.pointwise_w.as_ref().expect("the pointwise weight");
        let pointwise_t = kept(pointwise, "transposed", [d.c, d.c], |w| transposed(w, d.c, d.c));
        let out = cpu::forward_inference(f32s(&hs.x), f32s(&hs.valid), &hs.params(), &pointwise_t, d);
        FlexTensor::from_data(TensorData::new(out, [d.b, d.c, d.t]))
    }
}

impl MscTrainOps for Flex {
    fn msc_train(
        x: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        w: MscParams<FloatTensor<Self>>,
        pads: [usize; 2],
    ) -> FloatTensor<Self> {
        let hs = Host::new(&x, &valid, w.map(Some), pads);
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
        w: MscParams<Option<FloatTensor<Self>>>,
        dout: FloatTensor<Self>,
        pads: [usize; 2],
    ) -> FloatTensor<Self> {
        let hs = Host::new(&x, &valid, w, pads);
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

/// The fused block: `x [B, C, T]`, `valid [B, T]`, the weights as
/// `model::block::Msc` holds them (the projection's reshaped to `[C, C]`,
/// the branches' to `[C/2, K_i]`) and the branches' 'same' paddings. Only
/// where [`super::fused`] says so.
pub fn msc(x: Tensor<3>, valid: Tensor<2>, w: MscParams<FloatTensor<Dispatch>>, [pad1, pad2]: [usize; 2]) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as MscOps>::msc(
        x.into_dispatch(),
        valid.into_dispatch(),
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
