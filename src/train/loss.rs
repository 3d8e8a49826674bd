//! Additive angular margin softmax (see docs/MODEL.md, 'AAM-softmax loss').

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::config::{LossConfig, MarginIncrease, MarginSchedule};

/// AAM-softmax with the cos(π − m) fallback (not "easy margin").
#[derive(Debug, Clone)]
pub struct AamSoftmax {
    pub margin: f64,
    pub scale: f64,
}

/// Loss, logits and accuracy of one batch.
pub struct AamOutput {
    /// Mean cross-entropy, `[1]`.
    pub loss: Tensor<1>,
    /// Scaled logits with the margin on the target class, `[B, N]`.
    pub logits: Tensor<2>,
}

/// Rows divided by their L2 norm (clamped at 1e-12, as `F.normalize`).
fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = crate::model::layers::l2_norm_of_squares(x.clone().powi_scalar(2).sum_dim(1)).clamp_min(1e-12);
    x / norm
}

/// The margin of global optimiser step `step` (0-based), with
/// `steps_per_epoch` steps per epoch: the fixed margin, or the schedule's.
pub fn margin_at(cfg: &LossConfig, step: usize, steps_per_epoch: usize) -> f64 {
    match &cfg.margin_schedule {
        None => cfg.margin,
        Some(m) => scheduled_margin(m, step, steps_per_epoch),
    }
}

fn scheduled_margin(m: &MarginSchedule, step: usize, steps_per_epoch: usize) -> f64 {
    let start = (m.increase_start_epoch - 1) * steps_per_epoch;
    let fix = (m.fix_start_epoch - 1) * steps_per_epoch;
    if step >= fix {
        return m.final_margin;
    }
    if step < start {
        return m.initial_margin;
    }
    let progress = (step - start) as f64 / (fix - start) as f64;
    let ratio = match m.increase {
        // 1 at the start, 1e-3 at the end, as WeSpeaker's (its 1e-6 included).
        MarginIncrease::Exp => 1.0 - (progress * (1e-3f64 / (1.0 + 1e-6)).ln()).exp(),
        MarginIncrease::Linear => progress,
    };
    m.initial_margin + (m.final_margin - m.initial_margin) * ratio
}

/// Integer labels as a device tensor `[B]` (an upload, no read-back).
pub fn labels_tensor(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

/// One-hot `[B, N]` of integer labels `[B]`, built on the device.
pub fn one_hot(labels: Tensor<1, Int>, n: usize) -> Tensor<2> {
    let [b] = labels.dims();
    let device = labels.device();
    let ones = Tensor::<2>::ones([b, 1], &device);
    Tensor::<2>::zeros([b, n], &device).scatter(1, labels.reshape([b, 1]), ones, IndexingUpdateOp::Add)
}

/// Number of rows whose largest logit is the label's, `[1]`, on the device.
pub fn correct_count(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [b] = labels.dims();
    logits.argmax(1).equal(labels.reshape([b, 1])).float().sum()
}

impl AamSoftmax {
    pub fn new(cfg: &LossConfig) -> Self {
        Self { margin: cfg.margin, scale: cfg.scale }
    }

    /// `x`: embeddings `[B, E]`; `weight`: class matrix `[N, E]`; `labels`: `[B]`.
    pub fn forward(&self, x: Tensor<2>, weight: Tensor<2>, labels: Tensor<1, Int>) -> AamOutput {
        let [b, _] = x.dims();
        let [n, _] = weight.dims();
        let m = self.margin;
        let (cos_m, sin_m) = (m.cos(), m.sin());
        let th = (std::f64::consts::PI - m).cos();
        let mm = (std::f64::consts::PI - m).sin() * m;

        let cosine = l2_normalize(x).matmul(l2_normalize(weight).transpose()); // [B, N]
        let sine = cosine.clone().powi_scalar(2).neg().add_scalar(1.0).clamp(0.0, 1.0).sqrt();
        let phi = cosine.clone().mul_scalar(cos_m) - sine.mul_scalar(sin_m);
        let keep = cosine.clone().sub_scalar(th).greater_elem(0.0);
        let phi = cosine.clone().sub_scalar(mm).mask_where(keep, phi);
        let hot = one_hot(labels, n);
        let logits = (hot.clone() * phi + (hot.clone().neg().add_scalar(1.0)) * cosine).mul_scalar(self.scale);
        let nll = (log_softmax(logits.clone(), 1) * hot).sum().neg().div_scalar(b as f64);
        AamOutput { loss: nll.reshape([1]), logits }
    }
}

/// Top-1 accuracy in percent.
pub fn accuracy_percent(logits: &[f32], n: usize, labels: &[usize]) -> f64 {
    let correct = logits
        .chunks(n)
        .zip(labels)
        .filter(|(row, &l)| {
            let arg = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc })
                .0;
            arg == l
        })
        .count();
    100.0 * correct as f64 / labels.len().max(1) as f64
}
