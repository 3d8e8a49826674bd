//! The fused CPU feed-forward block (`ops::ffn`) against the same block
//! written with Burn's tensor operations: outputs and every gradient, with
//! and without a frame mask, on fresh random inputs (the seed is printed).

mod common;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use common::{cpu, max_abs, to_vec};
use nexttdnn::model::block::Ffn;
use nexttdnn::model::layers::{Grn, LayerNorm, Linear};
use nexttdnn::model::mask::FrameMask;
use nexttdnn::ops::ffn::fused;
use rand::{RngExt, SeedableRng};

fn seed() -> u64 {
    let s = match std::env::var("NEXTTDNN_TEST_SEED") {
        Ok(v) => v.parse().expect("NEXTTDNN_TEST_SEED is a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    eprintln!("fused block seed {s} (replay with NEXTTDNN_TEST_SEED={s})");
    s
}

fn param<const D: usize>(
    rng: &mut rand::rngs::StdRng,
    shape: [usize; D],
    scale: f32,
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| scale * rng.random_range(-1.0f32..1.0)).collect();
    Param::from_data(TensorData::new(v, shape), device)
}

/// A block with every parameter random (GRN's γ and β start at 0 in a
/// fresh model, which would hide their paths).
fn block(rng: &mut rand::rngs::StdRng, c: usize, device: &Device) -> Ffn {
    let h = 4 * c;
    let norm = LayerNorm { weight: param(rng, [c], 1.0, device), bias: param(rng, [c], 0.5, device), eps: 1e-6 };
    let expand = Linear { weight: param(rng, [c, h], 0.3, device), bias: param(rng, [h], 0.2, device) };
    let grn = Grn { gamma: param(rng, [h], 0.8, device), beta: param(rng, [h], 0.3, device), eps: 1e-6 };
    let project = Linear { weight: param(rng, [h, c], 0.2, device), bias: param(rng, [c], 0.2, device) };
    Ffn { norm, expand, grn, project }
}

const NAMES: [&str; 9] = [
    "x",
    "norm.weight",
    "norm.bias",
    "expand.weight",
    "expand.bias",
    "gamma",
    "beta",
    "project.weight",
    "project.bias",
];

/// (batch, channels, frames, valid frames per utterance or none)
type Case = (usize, usize, usize, Option<Vec<usize>>);

fn cases() -> Vec<Case> {
    vec![(2, 16, 70, None), (1, 8, 5, None), (3, 32, 130, None), (1, 24, 200, None), (3, 16, 90, Some(vec![90, 41, 7]))]
}

#[test]
fn fused_forward_matches_composite() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let device = cpu();
    for (b, c, t, valid) in cases() {
        let f = block(&mut rng, c, &device);
        let x: Tensor<3> = Tensor::from_data(
            TensorData::new((0..b * c * t).map(|_| rng.random_range(-2.0f32..2.0)).collect::<Vec<_>>(), [b, c, t]),
            &device,
        );
        assert!(fused(&x), "the CPU float32 path must be the fused one");
        let mask = valid.as_ref().and_then(|v| FrameMask::new(v, t, burn::tensor::DType::F32, &device));
        let ours = to_vec(f.forward(x.clone(), mask.as_ref()));
        let reference = to_vec(f.forward_composite(x, mask.as_ref()));
        let scale = reference.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
        let err = max_abs(&ours, &reference);
        eprintln!("[{b}, {c}, {t}] output: {err:e} (scale {scale:e})");
        assert!(err < 2e-6 * scale, "[{b}, {c}, {t}] {valid:?}: output differs by {err:e} (scale {scale})");
    }
}

#[test]
fn fused_gradients_match_composite() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let device = cpu().autodiff();
    for (b, c, t, valid) in cases() {
        let f = block(&mut rng, c, &device);
        let x: Tensor<3> = Tensor::from_data(
            TensorData::new((0..b * c * t).map(|_| rng.random_range(-2.0f32..2.0)).collect::<Vec<_>>(), [b, c, t]),
            &device,
        );
        let r: Tensor<3> = Tensor::from_data(
            TensorData::new((0..b * c * t).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>(), [b, c, t]),
            &device,
        );
        assert!(fused(&x), "the CPU float32 path must be the fused one");
        let mask = valid.as_ref().and_then(|v| FrameMask::new(v, t, burn::tensor::DType::F32, &device));
        let mut results = vec![];
        for fused_path in [true, false] {
            let x = x.clone().require_grad();
            let y = if fused_path {
                f.forward(x.clone(), mask.as_ref())
            } else {
                f.forward_composite(x.clone(), mask.as_ref())
            };
            let grads = (y * r.clone()).sum().backward();
            let mut g = vec![to_vec(x.grad(&grads).expect("x gradient"))];
            let ps = [
                f.norm.weight.val().grad(&grads).map(|t| t.reshape([c])),
                f.norm.bias.val().grad(&grads),
                f.expand.weight.val().grad(&grads).map(|t| t.reshape([c * 4 * c])),
                f.expand.bias.val().grad(&grads),
                f.grn.gamma.val().grad(&grads),
                f.grn.beta.val().grad(&grads),
                f.project.weight.val().grad(&grads).map(|t| t.reshape([c * 4 * c])),
                f.project.bias.val().grad(&grads),
            ];
            for (p, name) in ps.into_iter().zip(&NAMES[1..]) {
                g.push(to_vec(p.unwrap_or_else(|| panic!("no gradient for {name}"))));
            }
            results.push(g);
        }
        for (i, name) in NAMES.iter().enumerate() {
            let (ours, reference) = (&results[0][i], &results[1][i]);
            assert_eq!(ours.len(), reference.len(), "{name} gradient length");
            let scale = reference.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
            let err = max_abs(ours, reference);
            eprintln!("[{b}, {c}, {t}] {name}: {err:e} (scale {scale:e})");
            assert!(
                err < 1e-5 * scale,
                "[{b}, {c}, {t}] {valid:?}: the {name} gradient differs by {err:e} (scale {scale})"
            );
        }
    }
}
