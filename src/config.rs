//! Experiment configuration, read from RON files in `configs/`.
//!
//! Every number of the recipe (front end, network, loss, optimiser, schedules,
//! augmentation, metrics) lives in these files. Parsing is strict: an unknown
//! key or a missing key is an error naming the file and the field.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

/// Deserialises an `Option` field while keeping the key mandatory: a missing
/// key is an error, `None` must be written out.
fn required<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// A complete experiment: one file per official configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Name of the configuration, e.g. `NeXt_TDNN_C256_B3_K65_7`.
    pub name: String,
    pub frontend: FrontendConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

/// The log-mel front end (see docs/MODEL.md, 'Front end').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendConfig {
    pub sample_rate: u32,
    /// Pre-emphasis coefficient: y[n] = x[n] - coef * x[n-1].
    pub pre_emphasis: f64,
    pub n_fft: usize,
    pub win_length: usize,
    pub hop_length: usize,
    pub n_mels: usize,
    pub f_min: f64,
    pub f_max: f64,
    /// Added to the mel energies before the natural log.
    pub log_offset: f64,
}

/// Which block the three stages are built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// TS-ConvNeXt: multi-scale depthwise convolutions + ConvNeXt-V2 FFN
    /// (see docs/MODEL.md, 'TS-ConvNeXt block').
    TsConvNeXt,
    /// TS-ConvNeXt-l: one depthwise convolution + FFN (see docs/MODEL.md, 'Light block').
    Light,
}

/// The network (see docs/MODEL.md, 'Overview' and 'Configurations').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub block: BlockKind,
    /// Channel width C of every stage.
    pub channels: usize,
    /// Blocks per stage; one entry per stage.
    pub depths: Vec<usize>,
    /// Depthwise kernel sizes: one per MSC branch (TS-ConvNeXt) or a single one (light).
    pub kernels: Vec<usize>,
    /// Kernel of the stem convolution (unpadded).
    pub stem_kernel: usize,
    /// Expansion ratio of the FFN's hidden layer.
    pub ffn_expansion: usize,
    /// Bottleneck width of the attention in the pooling layer.
    pub pool_bottleneck: usize,
    pub embedding_dim: usize,
    pub layer_norm_eps: f64,
    pub grn_eps: f64,
    pub batch_norm_eps: f64,
    /// Lower clamp on the weighted variance before its square root in the pooling.
    pub pool_var_floor: f64,
}

/// Learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum SchedulerConfig {
    /// Multiply the rate by `gamma` every `step_size` epochs (stepped per epoch).
    StepLr { step_size: usize, gamma: f64 },
    /// Triangular-2 cyclic rate, stepped per optimiser step.
    CyclicTriangular2 { base_lr: f64, max_lr: f64, step_size_up: usize, step_size_down: usize },
    /// Per step: linear warm-up from `warmup_start_lr` to `max_lr` over
    /// `warmup_epochs`, cosine decay to `min_lr` at `decay_end_epoch`, then
    /// `min_lr` (the WarmupCosineScheduler of WeSpeaker, which warms up from
    /// 0, and of 3D-Speaker, which warms up from `min_lr`).
    WarmupCosine { warmup_start_lr: f64, max_lr: f64, min_lr: f64, warmup_epochs: f64, decay_end_epoch: f64 },
    /// Per step: `initial_lr · (final_lr / initial_lr)^(step / total steps)`
    /// over `train.max_epochs`, times `step / warm-up steps` during the first
    /// `warmup_epochs` when `warm_from_zero` (WeSpeaker's ExponentialDecrease
    /// on one process).
    ExponentialDecrease { initial_lr: f64, final_lr: f64, warmup_epochs: f64, warm_from_zero: bool },
}

/// How the margin rises between its two epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum MarginIncrease {
    /// `1 - 1000^(-progress)`, scaled to reach the final margin (WeSpeaker's `exp`).
    Exp,
    Linear,
}

/// A margin that rises during training, updated every step (WeSpeaker's
/// MarginScheduler). Epochs count from 1: the margin is `initial_margin`
/// before epoch `increase_start_epoch`, rises until epoch
/// `fix_start_epoch`, and is `final_margin` from then on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarginSchedule {
    pub initial_margin: f64,
    pub final_margin: f64,
    pub increase_start_epoch: usize,
    pub fix_start_epoch: usize,
    pub increase: MarginIncrease,
}

/// AdamW settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
    /// Global L2-norm gradient clipping over all parameters; `None` disables it.
    #[serde(deserialize_with = "required")]
    pub grad_clip_norm: Option<f64>,
}

/// Additive angular margin softmax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    pub n_classes: usize,
    /// The margin, unless `margin_schedule` is given.
    pub margin: f64,
    pub scale: f64,
    /// A rising margin instead of the fixed `margin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_schedule: Option<MarginSchedule>,
}

/// SpecAugment: one frequency and one time mask shared by the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecAugmentConfig {
    /// Whether training masks the features (`train --no-spec-augment` writes
    /// false into the run's config). Written only when false, so that files
    /// of runs with the default stay readable by earlier versions.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    pub freq_mask_param: usize,
    pub time_mask_param: usize,
}

/// Online waveform augmentation (see docs/MODEL.md, 'Augmentation').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Whether training adds noise and reverberation. A run started without
    /// `--musan`/`--rir` has false written into its config, and a run whose
    /// config says true (or nothing) resumes only with them. Written only
    /// when false, as `spec_augment.enabled`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    pub music_snr_db: (f64, f64),
    pub babble_snr_db: (f64, f64),
    /// Number of babble speakers, inclusive range.
    pub babble_speakers: (usize, usize),
    pub noise_snr_db: (f64, f64),
    /// Added to the mean energy before taking decibels.
    pub energy_floor: f64,
}

/// Training recipe (see docs/MODEL.md, 'SpecAugment', 'Training data',
/// 'Augmentation', 'AAM-softmax loss', 'Optimiser' and 'Learning-rate schedules').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Crops per optimiser step (the global batch, over all ranks and micro-batches).
    pub batch_size: usize,
    /// Micro-batches per optimiser step on each process (gradient accumulation):
    /// the batch is split among them and their gradients averaged.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub accumulate: usize,
    pub max_epochs: usize,
    /// Crop length in samples (frames * hop + win - hop).
    pub crop_samples: usize,
    pub seed: u64,
    pub loss: LossConfig,
    pub optimizer: OptimizerConfig,
    pub scheduler: SchedulerConfig,
    pub spec_augment: SpecAugmentConfig,
    pub augment: AugmentConfig,
    /// Number of best checkpoints (by validation EER) to keep.
    pub keep_best: usize,
}

/// Evaluation settings (see docs/MODEL.md, 'Scoring', 'AS-norm' and 'Metrics').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Target priors of the detection cost functions.
    pub p_targets: Vec<f64>,
    pub c_miss: f64,
    pub c_fa: f64,
    /// Cohort scores kept per side in adaptive score normalisation.
    pub asnorm_top_k: usize,
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

impl ExperimentConfig {
    /// Reads and validates a RON config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::files::read_text(path).context("cannot read the config file")?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates RON text.
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = ron::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Serialises to pretty RON.
    pub fn to_ron(&self) -> String {
        let pretty = ron::ser::PrettyConfig::new().depth_limit(4);
        ron::ser::to_string_pretty(self, pretty).expect("config serialises")
    }

    /// Checks relations between fields that the types cannot express.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let f = &self.frontend;
        anyhow::ensure!(m.channels > 0, "model.channels must be positive");
        anyhow::ensure!(!m.depths.is_empty(), "model.depths must list at least one stage");
        anyhow::ensure!(m.depths.iter().all(|&d| d > 0), "model.depths entries must be positive");
        match m.block {
            BlockKind::TsConvNeXt => {
                anyhow::ensure!(!m.kernels.is_empty(), "model.kernels must not be empty");
                anyhow::ensure!(
                    m.channels.is_multiple_of(m.kernels.len()),
                    "model.channels ({}) must divide into {} branches",
                    m.channels,
                    m.kernels.len()
                );
            }
            BlockKind::Light => {
                anyhow::ensure!(m.kernels.len() == 1, "model.kernels must hold exactly one kernel for the light block")
            }
        }
        anyhow::ensure!(
            m.kernels.iter().all(|k| k % 2 == 1),
            "model.kernels must be odd (zero padding (k-1)/2 keeps the length)"
        );
        anyhow::ensure!(m.stem_kernel >= 1, "model.stem_kernel must be at least 1");
        anyhow::ensure!(f.win_length <= f.n_fft, "frontend.win_length must not exceed n_fft");
        anyhow::ensure!(f.n_fft.is_power_of_two(), "frontend.n_fft must be a power of two");
        anyhow::ensure!(f.hop_length > 0, "frontend.hop_length must be positive");
        anyhow::ensure!(
            f.f_min >= 0.0 && f.f_min < f.f_max && f.f_max <= f.sample_rate as f64 / 2.0,
            "frontend needs 0 <= f_min < f_max <= sample_rate / 2"
        );
        self.validate_values()?;
        let t = &self.train;
        anyhow::ensure!(t.batch_size > 0, "train.batch_size must be positive");
        anyhow::ensure!(
            t.crop_samples >= self.min_samples(),
            "train.crop_samples ({}) must be at least {} samples: the front end's padding and the model's stem need them",
            t.crop_samples,
            self.min_samples()
        );
        anyhow::ensure!(t.accumulate > 0, "train.accumulate must be at least 1");
        anyhow::ensure!(
            t.batch_size.is_multiple_of(t.accumulate),
            "train.batch_size ({}) must divide into train.accumulate ({}) micro-batches",
            t.batch_size,
            t.accumulate
        );
        anyhow::ensure!(
            !self.eval.p_targets.is_empty() && self.eval.p_targets.iter().all(|p| *p > 0.0 && *p < 1.0),
            "eval.p_targets must be non-empty, each in (0, 1)"
        );
        Ok(())
    }
}

/// `name` holds a finite number above `min` (or at least `min` when `inclusive`).
fn check_number(name: &str, v: f64, min: f64, inclusive: bool) -> Result<()> {
    let ok = v.is_finite() && if inclusive { v >= min } else { v > min };
    let bound = if inclusive { "at least" } else { "above" };
    anyhow::ensure!(ok, "{name} must be a finite number {bound} {min}, found {v}");
    Ok(())
}

/// `name` is an ordered range of finite numbers.
fn check_range(name: &str, (lo, hi): (f64, f64)) -> Result<()> {
    anyhow::ensure!(
        lo.is_finite() && hi.is_finite() && lo <= hi,
        "{name} must be finite with low <= high, found ({lo}, {hi})"
    );
    Ok(())
}

impl ExperimentConfig {
    /// Fewest samples the model accepts: the centred STFT's reflect padding
    /// needs more than `n_fft / 2`, and the unpadded stem needs
    /// `stem_kernel` frames.
    pub fn min_samples(&self) -> usize {
        let f = &self.frontend;
        let for_stem = self.model.stem_kernel.saturating_sub(1) * f.hop_length;
        f.min_samples().max(for_stem)
    }

    /// Ranges of the single values: counts positive, rates, epsilons and
    /// costs finite and positive, probabilities inside (0, 1).
    fn validate_values(&self) -> Result<()> {
        let (f, m, t, e) = (&self.frontend, &self.model, &self.train, &self.eval);
        for (name, v) in [
            ("frontend.sample_rate", f.sample_rate as usize),
            ("frontend.n_fft", f.n_fft),
            ("frontend.win_length", f.win_length),
            ("frontend.n_mels", f.n_mels),
            ("model.ffn_expansion", m.ffn_expansion),
            ("model.pool_bottleneck", m.pool_bottleneck),
            ("model.embedding_dim", m.embedding_dim),
            ("train.max_epochs", t.max_epochs),
            ("train.loss.n_classes", t.loss.n_classes),
            ("eval.asnorm_top_k", e.asnorm_top_k),
        ] {
            anyhow::ensure!(v > 0, "{name} must be positive");
        }
        self.validate_sizes()?;
        check_number("frontend.pre_emphasis", f.pre_emphasis, 0.0, true)?;
        check_number("frontend.log_offset", f.log_offset, 0.0, false)?;
        for (name, v) in [
            ("model.layer_norm_eps", m.layer_norm_eps),
            ("model.grn_eps", m.grn_eps),
            ("model.batch_norm_eps", m.batch_norm_eps),
            ("model.pool_var_floor", m.pool_var_floor),
            ("train.loss.scale", t.loss.scale),
            ("train.optimizer.lr", t.optimizer.lr),
            ("train.optimizer.epsilon", t.optimizer.epsilon),
            ("eval.c_miss", e.c_miss),
            ("eval.c_fa", e.c_fa),
        ] {
            check_number(name, v, 0.0, false)?;
        }
        check_number("train.loss.margin", t.loss.margin, 0.0, true)?;
        if let Some(m) = &t.loss.margin_schedule {
            m.validate()?;
        }
        t.optimizer.validate()?;
        t.scheduler.validate()?;
        t.augment.validate()
    }
}

impl OptimizerConfig {
    fn validate(&self) -> Result<()> {
        check_number("train.optimizer.weight_decay", self.weight_decay, 0.0, true)?;
        for (name, v) in [("train.optimizer.beta1", self.beta1), ("train.optimizer.beta2", self.beta2)] {
            anyhow::ensure!((0.0..1.0).contains(&v), "{name} must be in [0, 1), found {v}");
        }
        if let Some(c) = self.grad_clip_norm {
            check_number("train.optimizer.grad_clip_norm", c, 0.0, false)?;
        }
        Ok(())
    }
}

impl SchedulerConfig {
    fn validate(&self) -> Result<()> {
        match self {
            SchedulerConfig::StepLr { step_size, gamma } => {
                anyhow::ensure!(*step_size > 0, "train.scheduler.step_size must be positive");
                check_number("train.scheduler.gamma", *gamma, 0.0, false)?;
            }
            SchedulerConfig::CyclicTriangular2 { base_lr, max_lr, step_size_up, step_size_down } => {
                check_number("train.scheduler.base_lr", *base_lr, 0.0, false)?;
                check_number("train.scheduler.max_lr", *max_lr, *base_lr, true)?;
                anyhow::ensure!(
                    *step_size_up > 0 && *step_size_down > 0,
                    "train.scheduler.step_size_up and step_size_down must be positive"
                );
            }
            SchedulerConfig::WarmupCosine { warmup_start_lr, max_lr, min_lr, warmup_epochs, decay_end_epoch } => {
                check_number("train.scheduler.min_lr", *min_lr, 0.0, true)?;
                check_number("train.scheduler.max_lr", *max_lr, *min_lr, true)?;
                check_number("train.scheduler.warmup_start_lr", *warmup_start_lr, 0.0, true)?;
                check_number("train.scheduler.warmup_epochs", *warmup_epochs, 0.0, true)?;
                check_number("train.scheduler.decay_end_epoch", *decay_end_epoch, *warmup_epochs, false)?;
            }
            SchedulerConfig::ExponentialDecrease { initial_lr, final_lr, warmup_epochs, .. } => {
                check_number("train.scheduler.initial_lr", *initial_lr, 0.0, false)?;
                check_number("train.scheduler.final_lr", *final_lr, 0.0, false)?;
                check_number("train.scheduler.warmup_epochs", *warmup_epochs, 0.0, true)?;
            }
        }
        Ok(())
    }
}

impl MarginSchedule {
    fn validate(&self) -> Result<()> {
        check_number("train.loss.margin_schedule.initial_margin", self.initial_margin, 0.0, true)?;
        check_number("train.loss.margin_schedule.final_margin", self.final_margin, 0.0, true)?;
        anyhow::ensure!(
            self.increase_start_epoch >= 1 && self.increase_start_epoch <= self.fix_start_epoch,
            "train.loss.margin_schedule: need 1 <= increase_start_epoch <= fix_start_epoch, found {} and {}",
            self.increase_start_epoch,
            self.fix_start_epoch
        );
        Ok(())
    }
}

impl AugmentConfig {
    fn validate(&self) -> Result<()> {
        check_range("train.augment.music_snr_db", self.music_snr_db)?;
        check_range("train.augment.babble_snr_db", self.babble_snr_db)?;
        check_range("train.augment.noise_snr_db", self.noise_snr_db)?;
        let (b0, b1) = self.babble_speakers;
        anyhow::ensure!(
            b0 >= 1 && b0 <= b1,
            "train.augment.babble_speakers must be 1 <= low <= high, found ({b0}, {b1})"
        );
        check_number("train.augment.energy_floor", self.energy_floor, 0.0, true)
    }
}

/// Upper bounds on the sizes a config may give. A config arrives inside
/// downloaded model files, and its sizes decide what is allocated: without
/// bounds, `channels: 1000000000` asks for a terabyte and `depths:
/// [1000000]` builds blocks until memory runs out. Each bound is 8-64 times
/// the largest value of any published speaker-embedding network, so no real
/// model meets one; within them every size product fits 64 bits, and model
/// files are further checked against the value count their config implies
/// (`model::value_count`) before a network is built.
const SIZE_LIMITS: [(&str, usize); 12] = [
    ("frontend.sample_rate", 384_000),
    ("frontend.n_fft", 1 << 16),
    ("frontend.n_mels", 1024),
    ("model.channels", 8192),
    ("model.stem_kernel", 1025),
    ("model.ffn_expansion", 64),
    ("model.pool_bottleneck", 8192),
    ("model.embedding_dim", 8192),
    ("model.depths (stages)", 16),
    ("model.depths (blocks per stage)", 256),
    ("model.kernels (branches)", 64),
    ("model.kernels (kernel size)", 4097),
];

impl ExperimentConfig {
    /// Every size within [`SIZE_LIMITS`].
    fn validate_sizes(&self) -> Result<()> {
        let (f, m) = (&self.frontend, &self.model);
        let largest = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
        let values = [
            f.sample_rate as usize,
            f.n_fft,
            f.n_mels,
            m.channels,
            m.stem_kernel,
            m.ffn_expansion,
            m.pool_bottleneck,
            m.embedding_dim,
            m.depths.len(),
            largest(&m.depths),
            m.kernels.len(),
            largest(&m.kernels),
        ];
        for ((name, limit), v) in SIZE_LIMITS.iter().zip(values) {
            anyhow::ensure!(v <= *limit, "{name} is {v}, over the limit of {limit}");
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Width of the multi-layer feature aggregation: the stage outputs concatenated.
    pub fn mfa_channels(&self) -> usize {
        self.channels * self.depths.len()
    }
}

impl FrontendConfig {
    /// Number of frames the centred STFT yields for `samples` samples.
    pub fn num_frames(&self, samples: usize) -> usize {
        1 + samples / self.hop_length
    }

    /// Fewest samples the front end accepts: the reflect padding of the
    /// centred STFT needs more than `n_fft / 2` samples.
    pub fn min_samples(&self) -> usize {
        self.n_fft / 2 + 1
    }
}
