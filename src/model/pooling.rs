//! Channel-wise attentive statistics pooling and the embedding head (see
//! docs/MODEL.md, 'Pooling head' and 'Embedding layer').

use burn::module::Module;
use burn::tensor::activation::{softmax, tanh};
use burn::tensor::{Device, Tensor};

use super::init::{Init, Scheme};
use super::layers::{BatchNorm, Conv1d, Linear};
use super::mask::FrameMask;
use crate::config::ModelConfig;

/// Attention over time per channel, weighted mean and standard deviation,
/// then BN → FC → BN.
#[derive(Module, Debug)]
pub struct PoolingHead {
    pub attn_conv1: Conv1d,
    pub attn_bn: BatchNorm,
    pub attn_conv2: Conv1d,
    pub stats_bn: BatchNorm,
    pub fc: Linear,
    pub embed_bn: BatchNorm,
    pub var_floor: f64,
}

/// Intermediate tensors of the head, for parity checks.
pub struct PoolingTrace {
    pub attn_conv1: Tensor<3>,
    pub attn_bn: Tensor<3>,
    pub attn_logits: Tensor<3>,
    pub stats: Tensor<2>,
    pub stats_bn: Tensor<2>,
    pub fc: Tensor<2>,
}

impl PoolingHead {
    pub fn new(cfg: &ModelConfig, momentum: f64, init: &mut Init, device: &Device) -> Self {
        let d = cfg.mfa_channels();
        let i = cfg.pool_bottleneck;
        init.scheme = Scheme::KaimingUniform;
        let eps = cfg.batch_norm_eps;
        Self {
            attn_conv1: Conv1d::new(d, i, 1, 0, 1, init, device),
            attn_bn: BatchNorm::new(i, eps, momentum, device),
            attn_conv2: Conv1d::new(i, d, 1, 0, 1, init, device),
            stats_bn: BatchNorm::new(2 * d, eps, momentum, device),
            fc: Linear::new(2 * d, cfg.embedding_dim, init, device),
            embed_bn: BatchNorm::new(cfg.embedding_dim, eps, momentum, device),
            var_floor: cfg.pool_var_floor,
        }
    }

    /// `[B, D, T] -> [B, E]`, optionally keeping the intermediates. With a
    /// `mask`, padded frames get an attention weight of exactly 0.
    pub fn forward(
        &self,
        h: Tensor<3>,
        train: bool,
        mask: Option<&FrameMask>,
        trace: Option<&mut Option<PoolingTrace>>,
    ) -> Tensor<2> {
        let bn3 = |bn: &BatchNorm, x: Tensor<3>| if train { bn.forward_train(x) } else { bn.forward_eval(x) };
        let bn2 = |bn: &BatchNorm, x: Tensor<2>| if train { bn.forward_train(x) } else { bn.forward_eval(x) };
        let mut branch = None;
        let folded = !train && trace.is_none() && crate::ops::fused(&h);
        let a = if folded {
            self.attention_folded(h.clone())
        } else {
            let a1 = self.attn_conv1.forward(h.clone()); // [B, I, T]
            let a2 = bn3(&self.attn_bn, a1.clone());
            branch = Some((a1, a2.clone()));
            if crate::ops::fused(&a2) {
                crate::ops::tanh::tanh(a2)
            } else {
                tanh(a2)
            }
        };
        let e = if folded {
            // Adding a bias per channel shifts each row of logits by a
            // constant, which the softmax over time cancels: the product
            // alone gives the same weights.
            let [d, i, _] = self.attn_conv2.weight.dims();
            crate::ops::pointwise::pointwise_product(a, self.attn_conv2.weight.val().reshape([d, i]))
        } else {
            self.attn_conv2.forward(a)
        }; // [B, D, T]
        let e = match mask {
            Some(m) => m.attention_bias(e),
            None => e,
        };
        let stats = self.statistics(h, e.clone()); // [B, 2D]
        let s_bn = bn2(&self.stats_bn, stats.clone());
        let fc = self.fc.forward(s_bn.clone()); // [B, E]
        let emb = bn2(&self.embed_bn, fc.clone());
        if let Some(slot) = trace {
            let (a1, a2) = branch.expect("a traced forward keeps the attention branch");
            *slot = Some(PoolingTrace { attn_conv1: a1, attn_bn: a2, attn_logits: e, stats, stats_bn: s_bn, fc });
        }
        emb
    }

    /// `tanh(BN(conv1(h)))` `[B, I, T]` at inference, with the BatchNorm's
    /// running statistics folded into the convolution: one product and one
    /// pass through the fused CPU operation, where Burn's path makes five
    /// passes on one thread.
    fn attention_folded(&self, h: Tensor<3>) -> Tensor<3> {
        let (scale, shift) = self.attn_bn.eval_affine();
        let [i, d, _] = self.attn_conv1.weight.dims();
        let w = self.attn_conv1.weight.val().reshape([i, d]) * scale.clone().unsqueeze_dim(1);
        let b = self.attn_conv1.bias.val() * scale + shift;
        crate::ops::pointwise::pointwise_conv_tanh(h, w, b)
    }

    /// `[μ | σ]` `[B, 2D]` of `h [B, D, T]` weighted by the softmax over time
    /// of `logits`: one fused operation on the CPU in float32
    /// (`crate::ops::pooling`), Burn's operations elsewhere.
    pub fn statistics(&self, h: Tensor<3>, logits: Tensor<3>) -> Tensor<2> {
        if crate::ops::fused(&h) {
            return crate::ops::pooling::attentive_stats(h, logits, self.var_floor);
        }
        self.statistics_composite(h, logits)
    }

    /// [`PoolingHead::statistics`] with Burn's operations.
    pub fn statistics_composite(&self, h: Tensor<3>, logits: Tensor<3>) -> Tensor<2> {
        let w = softmax(logits, 2);
        let [b, d, _] = h.dims();
        let mu = (w.clone() * h.clone()).sum_dim(2); // [B, D, 1]
        let m2 = (w * h.powi_scalar(2)).sum_dim(2);
        let sigma = (m2 - mu.clone().powi_scalar(2)).clamp_min(self.var_floor).sqrt();
        Tensor::cat(vec![mu, sigma], 1).reshape([b, 2 * d])
    }
}
