//! One training step: features, SpecAugment, forward in train mode, AAM loss,
//! backward per micro-batch, the mean gradient, global clipping, AdamW.

use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, RngExt};

use super::collective::Collective;
use super::grads::mean_gradient;
use super::loss::{correct_count, AamOutput, AamSoftmax};
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
    labels: Tensor<1, Int>,
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

/// One micro-batch on the device: crops `[b, samples]` and labels `[b]`.
pub struct MicroBatch {
    pub wav: Tensor<2>,
    pub labels: Tensor<1, Int>,
}

/// What a step leaves on the device for the log: the sum of its micro-batch
/// losses and the number of crops classified correctly, `[1]` each, without
/// autodiff. Nothing is read back.
pub struct StepSums {
    pub loss: Tensor<1>,
    pub correct: Tensor<1>,
}

/// Forward and backward of each micro-batch, their gradients summed on the
/// device, then averaged over all `total` micro-batches of all ranks
/// ([`mean_gradient`]), clipped, and applied by AdamW.
#[allow(clippy::too_many_arguments)]
pub fn accumulated_step(
    model: TrainModel,
    optim: &mut ModuleOptimizer,
    frontend: &Frontend,
    aam: &AamSoftmax,
    micro: Vec<MicroBatch>,
    mask: Option<Tensor<3>>,
    total: usize,
    lr: f64,
    clip: Option<f64>,
    comm: &dyn Collective,
) -> (TrainModel, StepSums) {
    let mut acc = GradientsAccumulator::<TrainModel>::new();
    let mut sums: Option<StepSums> = None;
    for mb in micro {
        let device = mb.wav.device();
        let (loss, correct, grads) = crate::ops::on_pool(&device, || {
            let (_, out) = train_forward(&model, frontend, mb.wav, mb.labels.clone(), aam, mask.clone());
            // Off the autodiff graph and its dispatch: these only add up for the log.
            let correct = correct_count(out.logits.clone().inner(), mb.labels.inner());
            let loss = out.loss.clone().inner();
            (loss, correct, GradientsParams::from_grads(out.loss.backward(), &model))
        });
        sums = Some(match sums {
            Some(s) => StepSums { loss: s.loss + loss, correct: s.correct + correct },
            None => StepSums { loss, correct },
        });
        acc.accumulate(&model, grads);
    }
    let sums = sums.expect("a step has at least one micro-batch");
    let mut grads = mean_gradient(&model, acc.grads(), total, comm);
    if let Some(c) = clip {
        clip_global(&model, &mut grads, c);
    }
    (optim.step(lr, model, grads), sums)
}
