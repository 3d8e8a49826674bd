//! The NeXt-TDNN network: stem, stages, multi-layer feature aggregation (MFA)
//! and the pooling head (see docs/MODEL.md, 'Overview').

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
    /// A freshly initialised network (see docs/MODEL.md, 'Initialisation'),
    /// seeded for reproducibility.
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
        let mfa_conv = self.mfa(&outs, train); // [B, 3C, T']
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

    /// The MFA layer's convolution of the stage outputs `[B, C, T']` each,
    /// concatenated over channels: `[B, 3C, T']`. At inference on the CPU
    /// the concatenation is not built (one product per stage).
    fn mfa(&self, outs: &[Tensor<3>], train: bool) -> Tensor<3> {
        if !train && crate::ops::fused(&outs[0]) {
            let conv = &self.mfa_conv;
            return crate::ops::pointwise::pointwise_conv_concat(outs, conv.weight.val(), conv.bias.val());
        }
        self.mfa_conv.forward(Tensor::cat(outs.to_vec(), 1))
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

/// How many float values the network of `cfg` holds (parameters and
/// BatchNorm running statistics: what a model file stores), computed from
/// the config alone so that a file can be checked before anything is
/// allocated. `None` when the count overflows 64 bits. `tests/model_shape.rs`
/// checks it against the built network of every shipped config.
pub fn value_count(cfg: &ModelConfig, n_mels: usize) -> Option<u64> {
    let n = |v: usize| v as u64;
    let (c, h, d, i, e) = (
        n(cfg.channels),
        n(cfg.channels).checked_mul(n(cfg.ffn_expansion))?,
        n(cfg.mfa_channels()),
        n(cfg.pool_bottleneck),
        n(cfg.embedding_dim),
    );
    // A convolution or linear layer with a bias: in·out/groups·k + out.
    let layer = |inp: u64, out: u64, k: u64| inp.checked_mul(out)?.checked_mul(k)?.checked_add(out);
    let mixer = match cfg.block {
        crate::config::BlockKind::TsConvNeXt => {
            let chunk = c / n(cfg.kernels.len());
            let branches = cfg.kernels.iter().try_fold(0u64, |acc, &k| acc.checked_add(layer(1, chunk, n(k))?))?;
            layer(c, c, 1)?.checked_add(branches)?.checked_add(layer(c, c, 1)?)?
        }
        crate::config::BlockKind::Light => layer(1, c, n(cfg.kernels[0]))?,
    };
    // FFN: LayerNorm, C→H, GRN, H→C.
    let ffn = (2 * c).checked_add(layer(c, h, 1)?)?.checked_add(h.checked_mul(2)?)?.checked_add(layer(h, c, 1)?)?;
    let blocks = n(cfg.depths.iter().try_fold(0usize, |a, &b| a.checked_add(b))?);
    let stages = blocks.checked_mul(mixer.checked_add(ffn)?)?;
    let stem = layer(n(n_mels), c, n(cfg.stem_kernel))?.checked_add(2 * c)?;
    let mfa = layer(d, d, 1)?.checked_add(d.checked_mul(2)?)?;
    // Pooling: D→I, BatchNorm(I), I→D, BatchNorm(2D), 2D→E, BatchNorm(E); a
    // BatchNorm holds four values per channel.
    let head = layer(d, i, 1)?
        .checked_add(i.checked_mul(4)?)?
        .checked_add(layer(i, d, 1)?)?
        .checked_add(d.checked_mul(8)?)?
        .checked_add(layer(d.checked_mul(2)?, e, 1)?)?
        .checked_add(e.checked_mul(4)?)?;
    stem.checked_add(stages)?.checked_add(mfa)?.checked_add(head)
}

/// Fewest mel frames the network accepts: the unpadded stem must leave one frame.
pub fn min_frames(cfg: &ModelConfig) -> usize {
    cfg.stem_kernel
}
