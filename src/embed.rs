//! Waveform to speaker embedding, in eval mode, one whole utterance at a time
//! (the reference's protocol: GRN and the attention pool are global over time,
//! so padding to batch several files would change the result).

use std::path::Path;

use anyhow::Result;
use burn::tensor::{Device, Tensor, TensorData};

use crate::audio::{read_wav, AudioError};
use crate::config::ExperimentConfig;
use crate::features::Frontend;
use crate::model::{NextTdnn, Precision};
use crate::weights::SpeakerModel;

/// Fewest samples a model accepts: the centred STFT's reflect padding needs
/// more than `n_fft / 2`, and the unpadded stem needs `stem_kernel` frames.
pub fn min_samples(cfg: &ExperimentConfig) -> usize {
    let f = &cfg.frontend;
    let for_stem = (cfg.model.stem_kernel.saturating_sub(1)) * f.hop_length;
    f.min_samples().max(for_stem)
}

/// A model and its front end on one device.
pub struct Embedder {
    pub config: ExperimentConfig,
    pub frontend: Frontend,
    pub net: NextTdnn,
    pub device: Device,
    pub precision: Precision,
}

impl Embedder {
    pub fn new(model: &SpeakerModel, device: &Device) -> Self {
        Self::with_precision(model, device, Precision::F32)
    }

    /// With the backbone in `precision` (see [`Precision`]).
    pub fn with_precision(model: &SpeakerModel, device: &Device, precision: Precision) -> Self {
        Self {
            config: model.config.clone(),
            frontend: Frontend::new(&model.config.frontend, device),
            net: model.net.clone().with_precision(precision),
            device: device.clone(),
            precision,
        }
    }

    pub fn min_samples(&self) -> usize {
        min_samples(&self.config)
    }

    /// Reads and checks a WAV file for this model.
    pub fn load_audio(&self, path: &Path) -> Result<Vec<f32>, AudioError> {
        Ok(read_wav(path, self.config.frontend.sample_rate, self.min_samples())?.samples)
    }

    /// Log-mel features of one waveform: `[1, n_mels, T]`.
    pub fn features(&self, samples: &[f32]) -> Tensor<3> {
        let wav = Tensor::<2>::from_data(TensorData::new(samples.to_vec(), [1, samples.len()]), &self.device);
        self.frontend.forward(wav)
    }

    /// Embedding of one waveform (eval mode), on the host.
    pub fn embed_samples(&self, samples: &[f32]) -> Result<Vec<f32>> {
        anyhow::ensure!(
            samples.len() >= self.min_samples(),
            "audio too short: {} samples, at least {} needed",
            samples.len(),
            self.min_samples()
        );
        let emb = self.net.forward(self.features(samples), false);
        emb.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read embedding: {e:?}"))
    }

    /// Embedding of one WAV file.
    pub fn embed_file(&self, path: &Path) -> Result<Vec<f32>> {
        let samples = self.load_audio(path)?;
        self.embed_samples(&samples)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}
