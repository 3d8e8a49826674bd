//! Optimiser pieces the recipe needs beyond Burn's AdamW: global L2-norm
//! gradient clipping (as torch's `clip_grad_norm_`; Burn's own clipping is per
//! tensor) and the learning-rate schedules.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::config::{OptimizerConfig, SchedulerConfig};

/// AdamW with every setting taken from the config (Burn's defaults differ:
/// epsilon 1e-5 and weight decay 1e-4). Decay applies to every parameter.
pub fn adamw(cfg: &OptimizerConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(cfg.beta1 as f32)
        .with_beta_2(cfg.beta2 as f32)
        .with_epsilon(cfg.epsilon as f32)
        .with_weight_decay(cfg.weight_decay as f32)
        .init()
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            let s = g.powi_scalar(2).sum();
            self.acc = Some(match self.acc.take() {
                Some(a) => a + s,
                None => s,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    coef: Tensor<1>,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(p.id) {
            let c = self.coef.clone().reshape([1; D]);
            self.grads.register::<D>(p.id, g * c);
        }
    }
}

/// Global L2 norm of all gradients of `model`, `[1]`.
pub fn grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> Option<Tensor<1>> {
    let mut v = SquaredNorm { grads, acc: None };
    model.visit(&mut v);
    v.acc.map(|a| a.sqrt())
}

/// Scales all gradients by `min(1, max_norm / (norm + 1e-6))` and returns the
/// norm before clipping, like `torch.nn.utils.clip_grad_norm_`.
pub fn clip_global<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> Option<Tensor<1>> {
    let total = grad_norm(model, grads)?;
    let coef = total.clone().add_scalar(1e-6).recip().mul_scalar(max_norm).clamp_max(1.0);
    model.visit(&mut Scale { grads, coef });
    Some(total)
}

/// The recipe's learning-rate schedules, as one resumable scheduler.
///
/// `StepLr` advances once per epoch, `CyclicTriangular2` once per optimiser
/// step; [`Schedule::per_step`] says which. [`Schedule::lr_at`] gives the
/// rate of a period as torch's `get_last_lr()` does after that many
/// `scheduler.step()` calls, so the run's position alone determines it.
#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: SchedulerConfig,
    base_lr: f64,
    /// Optimiser steps per epoch and epochs, for the schedules set in epochs.
    steps_per_epoch: usize,
    epochs: usize,
}

impl Schedule {
    pub fn new(cfg: &SchedulerConfig, base_lr: f64, steps_per_epoch: usize, epochs: usize) -> Self {
        Self { cfg: cfg.clone(), base_lr, steps_per_epoch, epochs }
    }

    /// Whether the schedule advances per optimiser step (else per epoch).
    pub fn per_step(&self) -> bool {
        !matches!(self.cfg, SchedulerConfig::StepLr { .. })
    }

    /// The learning rate of period `k` (0-based).
    pub fn lr_at(&self, k: usize) -> f64 {
        match &self.cfg {
            SchedulerConfig::StepLr { step_size, gamma } => {
                // Cumulative products, as torch computes them.
                let mut lr = self.base_lr;
                for e in 1..=k {
                    if e % step_size == 0 {
                        lr *= gamma;
                    }
                }
                lr
            }
            SchedulerConfig::CyclicTriangular2 { base_lr, max_lr, step_size_up, step_size_down } => {
                let total = (*step_size_up + *step_size_down) as f64;
                let ratio = *step_size_up as f64 / total;
                let cycle = (1.0 + k as f64 / total).floor();
                let x = 1.0 + k as f64 / total - cycle;
                let scale = if x <= ratio { x / ratio } else { (x - 1.0) / (ratio - 1.0) };
                let height = (max_lr - base_lr) * scale;
                base_lr + height * (1.0 / 2f64.powf(cycle - 1.0))
            }
            SchedulerConfig::WarmupCosine { warmup_start_lr, max_lr, min_lr, warmup_epochs, decay_end_epoch } => {
                let spe = self.steps_per_epoch as f64;
                let (warm, end, k) = (warmup_epochs * spe, decay_end_epoch * spe, k as f64);
                if k < warm {
                    warmup_start_lr + (max_lr - warmup_start_lr) * k / warm
                } else if k < end {
                    min_lr + 0.5 * (max_lr - min_lr) * (1.0 + (std::f64::consts::PI * (k - warm) / (end - warm)).cos())
                } else {
                    *min_lr
                }
            }
            SchedulerConfig::ExponentialDecrease { initial_lr, final_lr, warmup_epochs, warm_from_zero } => {
                let spe = self.steps_per_epoch as f64;
                let (warm, total, k) = (warmup_epochs * spe, (self.epochs * self.steps_per_epoch) as f64, k as f64);
                let coeff = if *warm_from_zero && k < warm { k / warm } else { 1.0 };
                coeff * initial_lr * ((k / total) * (final_lr / initial_lr).ln()).exp()
            }
        }
    }
}
