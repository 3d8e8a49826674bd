//! The trainable model: the network plus the AAM-softmax class matrix.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::config::ExperimentConfig;
use crate::model::NextTdnn;
use crate::weights::{HostTensor, ModelMeta, SpeakerModel};

/// Network and classifier, trained together.
#[derive(Module, Debug)]
pub struct TrainModel {
    pub net: NextTdnn,
    /// AAM-softmax class matrix `[n_classes, E]`.
    pub aam: Param<Tensor<2>>,
}

impl TrainModel {
    /// A fresh model (see docs/MODEL.md, 'Initialisation'); the class matrix is Xavier-normal.
    pub fn new(cfg: &ExperimentConfig, device: &Device) -> Self {
        let net = NextTdnn::new(&cfg.model, cfg.frontend.n_mels, cfg.train.seed, device);
        let (n, e) = (cfg.train.loss.n_classes, cfg.model.embedding_dim);
        let std = (2.0 / (n + e) as f64).sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.train.seed ^ 0xAA4D);
        let normal = Normal::new(0.0, std).expect("valid std");
        let w: Vec<f32> = (0..n * e).map(|_| normal.sample(&mut rng) as f32).collect();
        Self { net, aam: Param::from_data(TensorData::new(w, [n, e]), device) }
    }

    /// Starts from an existing model (fine-tuning). The network must match
    /// the config's exactly; the class matrix is kept when it has the
    /// configured number of classes and started afresh otherwise (new
    /// speakers), with a log line saying so.
    pub fn from_model(m: &SpeakerModel, cfg: &ExperimentConfig, device: &Device) -> anyhow::Result<Self> {
        anyhow::ensure!(
            m.config.model == cfg.model && m.config.frontend == cfg.frontend,
            "its network or front end ({}) differs from the config's ({}): only the training settings may change",
            m.config.name,
            cfg.name
        );
        let fresh = Self::new(cfg, device);
        let net = crate::weights::copy_weights(&m.net, fresh.net)?;
        let want = [cfg.train.loss.n_classes, cfg.model.embedding_dim];
        let aam = match &m.aam {
            Some(a) if a.shape == want => {
                log::info!("fine-tuning: the classifier's {} classes are kept", want[0]);
                Param::from_data(TensorData::new(a.values.clone(), [a.shape[0], a.shape[1]]), device)
            }
            Some(a) => {
                log::warn!(
                    "fine-tuning on new speakers: the classifier is started afresh ({} classes in the model, {} in this run); every other parameter is the model's",
                    a.shape[0],
                    want[0]
                );
                fresh.aam
            }
            None => {
                log::warn!("fine-tuning: the model carries no classifier; it is started afresh ({} classes)", want[0]);
                fresh.aam
            }
        };
        Ok(Self { net, aam })
    }

    /// The inference model (no autodiff), with its config, for saving or validation.
    pub fn to_speaker_model(&self, cfg: &ExperimentConfig, meta: ModelMeta) -> SpeakerModel {
        let v = self.valid();
        let shape = v.aam.val().dims();
        let values = v.aam.val().into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 data");
        let aam = Some(HostTensor { shape: shape.to_vec(), values });
        SpeakerModel::from_net(cfg.clone(), v.net, aam, meta).expect("float32 parameters read back")
    }
}
