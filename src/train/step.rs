//! One training step: features, SpecAugment, forward in train mode, AAM loss,
//! backward, global clipping, AdamW.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, RngExt};

use super::loss::{AamOutput, AamSoftmax};
use super::model::TrainModel;
use super::optim::clip_global;
use crate::config::SpecAugmentConfig;
use crate::features::Frontend;

/// SpecAugment's two masks, shared by the batch: `[1, F, T]` of 0/1.
///
/// Widths are `floor(U·param)` and starts `floor(U·(size − U·param))`, as
/// torchaudio draws them with `iid_masks=False`.
pub fn spec_augment_mask(
    cfg: &SpecAugmentConfig,
    n_mels: usize,
    frames: usize,
    rng: &mut impl Rng,
    device: &Device,
) -> Tensor<3> {
    let mut draw = |param: usize, size: usize| -> (usize, usize) {
        let value = rng.random::<f64>() * param as f64;
        let min_value = rng.random::<f64>() * (size as f64 - value);
        let start = min_value as usize;
        (start, start + value as usize)
    };
    let (f0, f1) = draw(cfg.freq_mask_param, n_mels);
    let (t0, t1) = draw(cfg.time_mask_param, frames);
    let mut m = vec![1.0f32; n_mels * frames];
    for f in 0..n_mels {
        for t in 0..frames {
            if (f0..f1).contains(&f) || (t0..t1).contains(&t) {
                m[f * frames + t] = 0.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [1, n_mels, frames]), device)
}

/// Forward pass in train mode: embeddings and AAM output.
pub fn train_forward(
    model: &TrainModel,
    frontend: &Frontend,
    wav: Tensor<2>,
    labels: &[usize],
    aam: &AamSoftmax,
    mask: Option<Tensor<3>>,
) -> (Tensor<2>, AamOutput) {
    let feats = frontend.forward(wav);
    let feats = match mask {
        Some(m) => feats * m,
        None => feats,
    };
    let emb = model.net.forward(feats, true);
    let out = aam.forward(emb.clone(), model.aam.val(), labels);
    (emb, out)
}

/// Backward, optional global clipping and an AdamW step. Returns the updated
/// model and the gradient norm before clipping (when clipping is on).
pub fn backward_and_step(
    model: TrainModel,
    optim: &mut ModuleOptimizer,
    loss: Tensor<1>,
    lr: f64,
    clip: Option<f64>,
) -> (TrainModel, Option<Tensor<1>>) {
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    let norm = clip.and_then(|c| clip_global(&model, &mut grads, c));
    (optim.step(lr, model, grads), norm)
}
