//! TS-ConvNeXt and TS-ConvNeXt-l blocks (see docs/MODEL.md, 'TS-ConvNeXt block'
//! and 'Light block').

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::init::{Init, Scheme};
use super::layers::{gelu, Conv1d, Grn, LayerNorm, Linear};
use super::mask::{zero_padding, FrameMask};
use crate::config::{BlockKind, ModelConfig};

/// Multi-scale temporal convolution: 1×1 projection, depthwise convolutions on
/// contiguous channel chunks, GELU, a per-frame linear and a residual.
#[derive(Module, Debug)]
pub struct Msc {
    pub projection: Conv1d,
    pub branches: Vec<Conv1d>,
    pub pointwise: Linear,
}

impl Msc {
    /// `[B, C, T] -> [B, C, T]`; `mask` marks the valid frames of a padded batch.
    pub fn forward(&self, x: Tensor<3>, mask: Option<&FrameMask>) -> Tensor<3> {
        if self.branches.len() == 2 && crate::ops::fused(&x) {
            return self.forward_fused(x, mask);
        }
        self.forward_composite(x, mask)
    }

    /// [`Msc::forward`] as one operation (`crate::ops::msc`).
    fn forward_fused(&self, x: Tensor<3>, mask: Option<&FrameMask>) -> Tensor<3> {
        let [b, c, t] = x.dims();
        let valid = match mask {
            Some(m) => m.valid_frames(),
            None => Tensor::ones([b, t], &x.device()),
        };
        let taps = |conv: &Conv1d| {
            let [ch, _, k] = conv.weight.dims();
            conv.weight.val().reshape([ch, k]).into_dispatch()
        };
        let [one, two] = [&self.branches[0], &self.branches[1]];
        let w = crate::ops::msc::MscParams {
            projection_w: self.projection.weight.val().reshape([c, c]).into_dispatch(),
            projection_b: self.projection.bias.val().into_dispatch(),
            branch1_w: taps(one),
            branch1_b: one.bias.val().into_dispatch(),
            branch2_w: taps(two),
            branch2_b: two.bias.val().into_dispatch(),
            pointwise_w: self.pointwise.weight.val().into_dispatch(),
            pointwise_b: self.pointwise.bias.val().into_dispatch(),
        };
        crate::ops::msc::msc(x, valid, w, [one.padding, two.padding])
    }

    /// [`Msc::forward`] written with Burn's tensor operations: the path of
    /// every backend but the CPU's float32, and the reference of the fused one.
    pub fn forward_composite(&self, x: Tensor<3>, mask: Option<&FrameMask>) -> Tensor<3> {
        let r = x.clone();
        // The depthwise convolutions must read zeros past each utterance's end.
        let y = zero_padding(mask, self.projection.forward(x));
        let n = self.branches.len();
        let chunk = y.dims()[1] / n;
        let parts: Vec<Tensor<3>> = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, conv)| conv.forward(y.clone().narrow(1, i * chunk, chunk)))
            .collect();
        let y = if n == 1 { parts.into_iter().next().unwrap() } else { Tensor::cat(parts, 1) };
        let y = gelu(y);
        // [B, C, T] -> [B, T, C] -> linear -> [B, C, T]
        let y = self.pointwise.forward(y.swap_dims(1, 2)).swap_dims(1, 2);
        r + y
    }
}

/// ConvNeXt-V2 feed-forward: LN, C→4C, GELU, GRN, 4C→C, residual. Channels last inside.
#[derive(Module, Debug)]
pub struct Ffn {
    pub norm: LayerNorm,
    pub expand: Linear,
    pub grn: Grn,
    pub project: Linear,
}

impl Ffn {
    /// `[B, C, T] -> [B, C, T]`
    pub fn forward(&self, x: Tensor<3>, mask: Option<&FrameMask>) -> Tensor<3> {
        if crate::ops::fused(&x) {
            return self.forward_fused(x, mask);
        }
        self.forward_composite(x, mask)
    }

    /// [`Ffn::forward`] written with Burn's tensor operations: the path of
    /// every backend but the CPU's float32, and the reference of the fused one.
    pub fn forward_composite(&self, x: Tensor<3>, mask: Option<&FrameMask>) -> Tensor<3> {
        let r = x.clone();
        let y = x.swap_dims(1, 2); // [B, T, C]
        let y = self.norm.forward_last(y);
        let y = gelu(self.expand.forward(y)); // [B, T, 4C]
        let y = self.grn.forward(y, mask);
        let y = self.project.forward(y); // [B, T, C]
        r + y.swap_dims(1, 2)
    }
}

impl Ffn {
    /// [`Ffn::forward`] as one operation (`crate::ops::ffn`).
    fn forward_fused(&self, x: Tensor<3>, mask: Option<&FrameMask>) -> Tensor<3> {
        let [b, _, t] = x.dims();
        let valid = match mask {
            Some(m) => m.valid_frames(),
            None => Tensor::ones([b, t], &x.device()),
        };
        let w = crate::ops::ffn::FfnParams {
            norm_w: self.norm.weight.val().into_dispatch(),
            norm_b: self.norm.bias.val().into_dispatch(),
            expand_w: self.expand.weight.val().into_dispatch(),
            expand_b: self.expand.bias.val().into_dispatch(),
            gamma: self.grn.gamma.val().into_dispatch(),
            beta: self.grn.beta.val().into_dispatch(),
            project_w: self.project.weight.val().into_dispatch(),
            project_b: self.project.bias.val().into_dispatch(),
        };
        crate::ops::ffn::ffn(x, valid, w, [self.norm.eps, self.grn.eps])
    }
}

/// One block of a stage: either the multi-scale TS-ConvNeXt block (`msc`) or
/// the light block (`depthwise`), followed by the FFN.
#[derive(Module, Debug)]
pub struct Block {
    pub msc: Option<Msc>,
    pub depthwise: Option<Conv1d>,
    pub ffn: Ffn,
}

impl Block {
    pub fn new(cfg: &ModelConfig, init: &mut Init, device: &Device) -> Self {
        let c = cfg.channels;
        init.scheme = Scheme::TruncNormal;
        let (msc, depthwise) = match cfg.block {
            BlockKind::TsConvNeXt => {
                let chunk = c / cfg.kernels.len();
                let projection = Conv1d::new(c, c, 1, 0, 1, init, device);
                let branches = cfg
                    .kernels
                    .iter()
                    .map(|&k| Conv1d::new(chunk, chunk, k, (k - 1) / 2, chunk, init, device))
                    .collect();
                let pointwise = Linear::new(c, c, init, device);
                (Some(Msc { projection, branches, pointwise }), None)
            }
            BlockKind::Light => {
                let k = cfg.kernels[0];
                (None, Some(Conv1d::new(c, c, k, (k - 1) / 2, c, init, device)))
            }
        };
        let hidden = cfg.ffn_expansion * c;
        let norm = LayerNorm::new(c, cfg.layer_norm_eps, device);
        let expand = Linear::new(c, hidden, init, device);
        let grn = Grn::new(hidden, cfg.grn_eps, device);
        let project = Linear::new(hidden, c, init, device);
        Self { msc, depthwise, ffn: Ffn { norm, expand, grn, project } }
    }

    /// `[B, C, T] -> [B, C, T]`; `mask` marks the valid frames of a padded batch.
    pub fn forward(&self, x: Tensor<3>, mask: Option<&FrameMask>) -> Tensor<3> {
        let x = match (&self.msc, &self.depthwise) {
            (Some(msc), _) => msc.forward(x, mask),
            (None, Some(dw)) => x.clone() + dw.forward(zero_padding(mask, x)),
            (None, None) => x,
        };
        self.ffn.forward(x, mask)
    }
}
