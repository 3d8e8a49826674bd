//! Gradient accumulation and the flat gradient buffer that ranks exchange:
//! the mean gradient over micro-batches equals the gradient of the mean loss
//! (each micro-batch with its own BatchNorm statistics), and packing into one
//! buffer and back changes nothing.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use nexttdnn::config::ExperimentConfig;
use nexttdnn::features::Frontend;
use nexttdnn::train::collective::{micro_positions, Collective, Single};
use nexttdnn::train::grads::{average_buffers, mean_gradient, parameter_hash};
use nexttdnn::train::loss::{labels_tensor, AamSoftmax};
use nexttdnn::train::model::TrainModel;
use nexttdnn::train::step::train_forward;

/// Every gradient of `model`, in parameter order.
struct Collect<'a> {
    grads: &'a GradientsParams,
    out: Vec<Vec<f32>>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(p.id) {
            self.out.push(to_vec(g));
        }
    }
}

fn collect(model: &TrainModel, grads: &GradientsParams) -> Vec<Vec<f32>> {
    let mut c = Collect { grads, out: vec![] };
    model.visit(&mut c);
    c.out
}

/// A stand-in for a job of two ranks whose other rank holds the same
/// buffers: sums double every value. It drives the multi-rank code path
/// (flat buffer out, all-reduce, buffer back) without MPI.
struct Twin;

impl Collective for Twin {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        2
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn sum_f32(&self, buf: &mut [f32]) {
        buf.iter_mut().for_each(|v| *v *= 2.0);
    }
    fn sum_f64(&self, buf: &mut [f64]) {
        buf.iter_mut().for_each(|v| *v *= 2.0);
    }
    fn all_equal(&self, _: u64) -> bool {
        true
    }
}

struct Setup {
    cfg: ExperimentConfig,
    device: Device,
    frontend: Frontend,
    aam: AamSoftmax,
    crops: Vec<f32>,
    labels: Vec<usize>,
}

fn setup(plain: Device) -> Setup {
    let mut cfg = ExperimentConfig::load(&config("tiny_C32_B1_K65_7")).unwrap();
    // One-second crops keep the test quick on lavapipe.
    cfg.train.crop_samples = 16000;
    let device = plain.autodiff();
    let len = cfg.train.crop_samples;
    let crops: Vec<f32> = (0..4 * len).map(|i| ((i as f32 * 0.37).sin() + (i as f32 * 0.011).cos()) * 0.1).collect();
    Setup {
        frontend: Frontend::new(&cfg.frontend, &device),
        aam: AamSoftmax::new(&cfg.train.loss),
        labels: vec![0, 3, 1, 2],
        cfg,
        device,
        crops,
    }
}

/// The loss of micro-batch `m` of 2 (crops m and m + 2).
fn micro_loss(s: &Setup, model: &TrainModel, m: usize) -> Tensor<1> {
    let len = s.cfg.train.crop_samples;
    let pos: Vec<usize> = micro_positions(m, 2, 4).collect();
    let wav: Vec<f32> = pos.iter().flat_map(|&p| s.crops[p * len..(p + 1) * len].to_vec()).collect();
    let labels: Vec<usize> = pos.iter().map(|&p| s.labels[p]).collect();
    let x = Tensor::<2>::from_data(TensorData::new(wav, [pos.len(), len]), &s.device);
    train_forward(model, &s.frontend, x, labels_tensor(&labels, &s.device), &s.aam, None).1.loss
}

#[test]
fn accumulated_gradient_is_the_gradient_of_the_mean_loss() {
    for (name, plain) in test_devices() {
        let s = setup(plain);
        let model = TrainModel::new(&s.cfg, &s.device);

        // Both micro-batches' mean loss in one graph.
        let joint = (micro_loss(&s, &model, 0) + micro_loss(&s, &model, 1)).div_scalar(2.0);
        let want = collect(&model, &GradientsParams::from_grads(joint.backward(), &model));

        // One backward per micro-batch, summed, then the mean.
        let mut acc = GradientsAccumulator::<TrainModel>::new();
        for m in 0..2 {
            acc.accumulate(&model, GradientsParams::from_grads(micro_loss(&s, &model, m).backward(), &model));
        }
        let got = collect(&model, &mean_gradient(&model, acc.grads(), 2, &Single));

        // The two differ only in the order of float32 sums. On the GPU
        // backends that order is a reduction tree that autotuning may pick
        // differently for the two graphs: up to about 1e-4 of the largest
        // gradient was seen. A wrong mean (a lost micro-batch, a missing
        // division) is off by a third or more.
        let tol = if name == "cpu" { 1e-5 } else { 1e-3 };
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = max_abs(g, w);
            let scale = max_ref(w).max(1e-6);
            assert!(err <= tol * scale + 1e-9, "[{name}] parameter {i}: {err:e} against {scale:e}");
        }
    }
}

/// The buffer's packing is the same code on every backend; the CPU checks it.
#[test]
fn gradients_survive_the_flat_buffer_exactly() {
    let s = setup(Device::flex());
    let model = TrainModel::new(&s.cfg, &s.device);
    let grads = GradientsParams::from_grads(micro_loss(&s, &model, 0).backward(), &model);
    let want = collect(&model, &grads);
    // Two identical ranks, one micro-batch each: the mean is the gradient itself.
    let got = collect(&model, &mean_gradient(&model, grads, 2, &Twin));
    assert_eq!(got, want, "gradients changed through the flat buffer");

    // Averaging identical BatchNorm statistics leaves them as they are,
    // and parameters are not touched.
    let before = parameter_hash(&model);
    let bn_before = to_vec(model.net.head.embed_bn.running_var.value());
    let model = average_buffers(model, &Twin);
    assert_eq!(parameter_hash(&model), before);
    assert_eq!(to_vec(model.net.head.embed_bn.running_var.value()), bn_before);
}

#[test]
fn parameter_hash_sees_one_changed_value() {
    let s = setup(Device::flex());
    let a = TrainModel::new(&s.cfg, &s.device);
    let b = TrainModel::new(&s.cfg, &s.device);
    assert_eq!(parameter_hash(&a), parameter_hash(&b), "the same seed gives the same parameters");
    let mut w = to_vec(b.aam.val());
    w[7] = f32::from_bits(w[7].to_bits() ^ 1);
    let [n, e] = b.aam.val().dims();
    let b = TrainModel { aam: Param::from_data(TensorData::new(w, [n, e]), &s.device), ..b };
    assert_ne!(parameter_hash(&a), parameter_hash(&b));
}
