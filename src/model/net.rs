//! The NeXt-TDNN network: stem, stages, multi-layer feature aggregation (MFA)
//! and the pooling head (spec §3.1).

use burn::module::Module;
use burn::tensor::{Device, FloatDType, Tensor};

use super::block::Block;
use super::init::{Init, Scheme};
use super::layers::{Conv1d, LayerNorm};
use super::mask::FrameMask;
use super::pooling::{PoolingHead, PoolingTrace};
use crate::config::ModelConfig;

/// Standard deviation of the truncated-normal init of the stem and the blocks.
const TRUNC_NORMAL_STD: f64 = 0.02;
/// PyTorch's BatchNorm momentum (not part of the recipe's tunables).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// NeXt-TDNN from log-mel features to the speaker embedding.
#[derive(Module, Debug)]
pub struct NextTdnn {
    pub stem: Conv1d,
    pub stem_norm: LayerNorm,
    pub stages: Vec<Vec<Block>>,
    pub mfa_conv: Conv1d,
    pub mfa_norm: LayerNorm,
    pub head: PoolingHead,
}

/// Intermediate tensors, for parity checks against the reference.
pub struct Trace {
    pub stem_conv: Tensor<3>,
    pub stem: Tensor<3>,
    pub stages: Vec<Tensor<3>>,
    pub mfa_conv: Tensor<3>,
    pub mfa: Tensor<3>,
    pub pooling: PoolingTrace,
    pub embedding: Tensor<2>,
}

impl NextTdnn {
    /// A freshly initialised network (spec §3.7), seeded for reproducibility.
    pub fn new(cfg: &ModelConfig, n_mels: usize, seed: u64, device: &Device) -> Self {
        let mut init = Init::new(seed, TRUNC_NORMAL_STD);
        let c = cfg.channels;
        init.scheme = Scheme::TruncNormal;
        let stem = Conv1d::new(n_mels, c, cfg.stem_kernel, 0, 1, &mut init, device);
        let stem_norm = LayerNorm::new(c, cfg.layer_norm_eps, device);
        let stages =
            cfg.depths.iter().map(|&depth| (0..depth).map(|_| Block::new(cfg, &mut init, device)).collect()).collect();
        let d = cfg.mfa_channels();
        init.scheme = Scheme::KaimingUniform;
        let mfa_conv = Conv1d::new(d, d, 1, 0, 1, &mut init, device);
        let mfa_norm = LayerNorm::new(d, cfg.layer_norm_eps, device);
        let head = PoolingHead::new(cfg, BATCH_NORM_MOMENTUM, &mut init, device);
        Self { stem, stem_norm, stages, mfa_conv, mfa_norm, head }
    }

    /// `[B, n_mels, T] -> [B, E]`. `train` selects batch statistics in the head.
    pub fn forward(&self, feats: Tensor<3>, train: bool) -> Tensor<2> {
        self.run(feats, train, None, false).0
    }

    /// Eval mode on a zero-padded batch `[B, n_mels, T]` whose utterance `b`
    /// has `frames[b]` feature frames: `-> [B, E]`, each row what
    /// [`NextTdnn::forward`] gives for that utterance alone.
    pub fn forward_padded(&self, feats: Tensor<3>, frames: &[usize]) -> Tensor<2> {
        let [b, _, t] = feats.dims();
        assert_eq!(b, frames.len(), "one length per utterance");
        let k = self.stem.weight.dims()[2];
        assert!(frames.iter().all(|&f| f >= k && f <= t), "frames {frames:?} outside {k}..={t}");
        // Valid frames after the unpadded stem.
        let valid: Vec<usize> = frames.iter().map(|&f| f + 1 - k).collect();
        let dtype = self.stem.weight.val().dtype();
        let mask = FrameMask::new(&valid, t + 1 - k, dtype, &feats.device());
        self.run(feats, false, mask.as_ref(), false).0
    }

    /// Eval-mode forward that keeps every intermediate.
    pub fn forward_trace(&self, feats: Tensor<3>) -> Trace {
        self.run(feats, false, None, true).1.expect("trace requested")
    }

    fn run(&self, feats: Tensor<3>, train: bool, mask: Option<&FrameMask>, keep: bool) -> (Tensor<2>, Option<Trace>) {
        // The backbone runs in its parameters' precision (`with_precision`).
        let feats = feats.cast(self.stem.weight.val().dtype());
        let stem_conv = self.stem.forward(feats); // [B, C, T-3]
        let mut x = self.stem_norm.forward_channels_first(stem_conv.clone());
        let stem = x.clone();
        let mut outs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            for block in stage {
                x = block.forward(x, mask);
            }
            outs.push(x.clone());
        }
        let cat = Tensor::cat(outs.clone(), 1); // [B, 3C, T']
        let mfa_conv = self.mfa_conv.forward(cat);
        let mfa = self.mfa_norm.forward_channels_first(mfa_conv.clone()).cast(FloatDType::F32);
        let mut ptrace = None;
        let emb = self.head.forward(mfa.clone(), train, mask, if keep { Some(&mut ptrace) } else { None });
        let trace = keep.then(|| Trace {
            stem_conv,
            stem,
            stages: outs,
            mfa_conv,
            mfa,
            pooling: ptrace.expect("pooling trace"),
            embedding: emb.clone(),
        });
        (emb, trace)
    }

    /// Number of trainable parameters (BatchNorm running statistics excluded),
    /// the count the paper reports.
    pub fn num_trainable_params(&self) -> usize {
        // `num_params` visits running statistics too; subtract them.
        let running: usize = self.head.attn_bn.running_mean.value().dims()[0] * 2
            + self.head.stats_bn.running_mean.value().dims()[0] * 2
            + self.head.embed_bn.running_mean.value().dims()[0] * 2;
        self.num_params() - running
    }
}

/// Fewest mel frames the network accepts: the unpadded stem must leave one frame.
pub fn min_frames(cfg: &ModelConfig) -> usize {
    cfg.stem_kernel
}
