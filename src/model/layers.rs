//! Layers shared by the blocks and the head, written to match the reference
//! implementation's numerics (see docs/MODEL.md, 'Normalisation layers' and
//! 'Pooling head').
//!
//! Parameters keep PyTorch's layouts except [`Linear`], which stores its weight
//! as `[in, out]` like Burn (the importer transposes).

use burn::module::{Module, Param, RunningState};
use burn::tensor::module::{batch_norm, batch_norm_train, conv1d, layer_norm};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use super::init::Init;
use super::mask::FrameMask;
use crate::ops::depthwise::depthwise_conv1d;

/// Exact GELU, `0.5·x·(1 + erf(x/√2))`: one fused pass forward and one
/// backward where our extension runs (`crate::ops::gelu`).
pub use crate::ops::gelu::gelu;

/// 1-D convolution with bias; weight `[out, in/groups, k]`, symmetric zero padding.
#[derive(Module, Debug)]
pub struct Conv1d {
    pub weight: Param<Tensor<3>>,
    pub bias: Param<Tensor<1>>,
    pub padding: usize,
    pub groups: usize,
}

impl Conv1d {
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        padding: usize,
        groups: usize,
        init: &mut Init,
        device: &Device,
    ) -> Self {
        let fan_in = c_in / groups * kernel;
        let (w, b) = init.weight_bias([c_out, c_in / groups, kernel], c_out, fan_in);
        Self { weight: Param::from_data(w, device), bias: Param::from_data(b, device), padding, groups }
    }

    /// `[B, C_in, T] -> [B, C_out, T + 2·padding - k + 1]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [c_out, per_group, _] = self.weight.dims();
        if per_group == 1 && self.groups == c_out {
            return depthwise_conv1d(x, self.weight.val(), self.bias.val(), self.padding);
        }
        if self.groups == 1 && self.padding == 0 && crate::ops::fused(&x) {
            return crate::ops::pointwise::pointwise_conv(x, self.weight.val(), self.bias.val());
        }
        conv1d(x, self.weight.val(), Some(self.bias.val()), ConvOptions::new([1], [self.padding], [1], self.groups))
    }
}

/// Fully connected layer, weight `[in, out]`.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>,
}

impl Linear {
    pub fn new(d_in: usize, d_out: usize, init: &mut Init, device: &Device) -> Self {
        let (w, b) = init.weight_bias([d_in, d_out], d_out, d_in);
        Self { weight: Param::from_data(w, device), bias: Param::from_data(b, device) }
    }

    /// `[..., in] -> [..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::linear(x, self.weight.val(), Some(self.bias.val()))
    }
}

/// Layer normalisation with affine parameters and a configurable epsilon.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(channels: usize, eps: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_data(TensorData::new(vec![1.0f32; channels], [channels]), device),
            bias: Param::from_data(TensorData::new(vec![0.0f32; channels], [channels]), device),
            eps,
        }
    }

    /// Normalises the last axis: `[..., C] -> [..., C]`.
    pub fn forward_last<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }

    /// Normalises the channel axis of `[B, C, T]`: one fused operation on
    /// the CPU in float32 (`crate::ops::layer_norm`), Burn's `layer_norm` on
    /// the transposed tensor elsewhere.
    pub fn forward_channels_first(&self, x: Tensor<3>) -> Tensor<3> {
        if crate::ops::fused(&x) {
            return crate::ops::layer_norm::layer_norm_channels_first(x, self.weight.val(), self.bias.val(), self.eps);
        }
        self.forward_last(x.swap_dims(1, 2)).swap_dims(1, 2)
    }
}

/// The square root of sums of squares, with PyTorch's subgradient 0 where
/// the sum is 0 (a channel that is all zeros, as in a silent crop): the
/// plain square root's derivative is infinite there, and the chain rule
/// would make it 0 × ∞ = NaN. Elsewhere values and gradients are the
/// square root's (sums below the smallest normal float32 aside).
pub fn l2_norm_of_squares<const D: usize>(sum_sq: Tensor<D>) -> Tensor<D> {
    let zero = sum_sq.clone().lower_equal_elem(0.0);
    sum_sq.clamp_min(f32::MIN_POSITIVE as f64).sqrt().mask_fill(zero, 0.0)
}

/// Global response normalisation over time (ConvNeXt-V2), channels last.
#[derive(Module, Debug)]
pub struct Grn {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub eps: f64,
}

impl Grn {
    pub fn new(channels: usize, eps: f64, device: &Device) -> Self {
        Self {
            gamma: Param::from_data(TensorData::new(vec![0.0f32; channels], [channels]), device),
            beta: Param::from_data(TensorData::new(vec![0.0f32; channels], [channels]), device),
            eps,
        }
    }

    /// `[B, T, C] -> [B, T, C]`; with a `mask`, the norm covers valid frames only.
    pub fn forward(&self, x: Tensor<3>, mask: Option<&FrameMask>) -> Tensor<3> {
        let c = x.dims()[2];
        // G: L2 norm over time [B, 1, C]; N: divided by its mean over channels.
        // In f32 whatever the input's precision: the sum of squares over time
        // can leave f16's range.
        let valid = match mask {
            Some(m) => m.zero_padding_last(x.clone()),
            None => x.clone(),
        };
        let g = l2_norm_of_squares(valid.cast(FloatDType::F32).powi_scalar(2).sum_dim(1));
        let n = g.clone().div(g.mean_dim(2).add_scalar(self.eps)).cast(x.dtype());
        let gamma = self.gamma.val().reshape([1, 1, c]);
        let beta = self.beta.val().reshape([1, 1, c]);
        x.clone().mul(n).mul(gamma).add(beta).add(x)
    }
}

/// Batch normalisation over `[B, C]` or `[B, C, T]` with PyTorch's conventions:
/// the running variance is updated with the unbiased batch variance, while the
/// batch itself is normalised with the biased one.
#[derive(Module, Debug)]
pub struct BatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm {
    pub fn new(channels: usize, eps: f64, momentum: f64, device: &Device) -> Self {
        let ones = || TensorData::new(vec![1.0f32; channels], [channels]);
        let zeros = || TensorData::new(vec![0.0f32; channels], [channels]);
        Self {
            weight: Param::from_data(ones(), device),
            bias: Param::from_data(zeros(), device),
            running_mean: RunningState::new(Tensor::from_data(zeros(), device)),
            running_var: RunningState::new(Tensor::from_data(ones(), device)),
            eps,
            momentum,
        }
    }

    /// Eval mode as `x·scale + shift` per channel: `(scale, shift)`, for
    /// folding into the layer before.
    pub fn eval_affine(&self) -> (Tensor<1>, Tensor<1>) {
        let scale = self.weight.val() / self.running_var.value().add_scalar(self.eps).sqrt();
        let shift = self.bias.val() - self.running_mean.value() * scale.clone();
        (scale, shift)
    }

    /// Eval mode: normalise with the running statistics.
    pub fn forward_eval<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        batch_norm(x, self.weight.val(), self.bias.val(), self.running_mean.value(), self.running_var.value(), self.eps)
    }

    /// Train mode: normalise with batch statistics and update the running ones.
    pub fn forward_train<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let n: usize = dims.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, d)| d).product();
        let out = batch_norm_train(x, self.weight.val(), self.bias.val(), self.eps);
        let unbiased = out.variance.mul_scalar(n as f64 / (n.max(2) - 1) as f64);
        let m = self.momentum;
        let rm = self.running_mean.value().mul_scalar(1.0 - m).add(out.mean.mul_scalar(m));
        let rv = self.running_var.value().mul_scalar(1.0 - m).add(unbiased.mul_scalar(m));
        self.running_mean.update(rm.detach());
        self.running_var.update(rv.detach());
        out.output
    }
}
