//! The fused CPU blocks (`ops::ffn`, `ops::msc`) against the same blocks
//! written with Burn's tensor operations: outputs and every gradient, with
//! and without a frame mask, on fresh random inputs (the seed is printed).

mod common;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use common::{cpu, max_abs, to_vec};
use nexttdnn::model::block::{Ffn, Msc};
use nexttdnn::model::layers::{Conv1d, Grn, LayerNorm, Linear};
use nexttdnn::model::mask::FrameMask;
use nexttdnn::ops::fused;
use rand::{RngExt, SeedableRng};

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
    vec![
        (2, 16, 70, None),
        (1, 8, 5, None),
        (3, 32, 130, None),
        (1, 24, 200, None),
        (1, 32, 100, None),
        (3, 16, 90, Some(vec![90, 41, 7])),
    ]
}

#[test]
fn fused_forward_matches_composite() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("fused block"));
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
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("fused block"));
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

fn conv(rng: &mut rand::rngs::StdRng, c_out: usize, c_in: usize, k: usize, groups: usize, device: &Device) -> Conv1d {
    Conv1d {
        weight: param(rng, [c_out, c_in / groups, k], 0.4, device),
        bias: param(rng, [c_out], 0.2, device),
        padding: (k - 1) / 2,
        groups,
    }
}

/// A multi-scale block with the models' kernels 7 and 65 (or `kernels`).
fn msc_block(rng: &mut rand::rngs::StdRng, c: usize, kernels: [usize; 2], device: &Device) -> Msc {
    let half = c / 2;
    Msc {
        projection: conv(rng, c, c, 1, 1, device),
        branches: kernels.iter().map(|&k| conv(rng, half, half, k, half, device)).collect(),
        pointwise: Linear { weight: param(rng, [c, c], 0.3, device), bias: param(rng, [c], 0.2, device) },
    }
}

/// (batch, channels, frames, kernels, valid frames per utterance or none)
type MscCase = (usize, usize, usize, [usize; 2], Option<Vec<usize>>);

fn msc_cases() -> Vec<MscCase> {
    vec![
        (2, 16, 70, [7, 65], None),
        (1, 8, 5, [7, 65], None),
        (3, 32, 130, [7, 65], None),
        (1, 24, 300, [3, 9], None),
        (3, 16, 90, [7, 65], Some(vec![90, 41, 7])),
    ]
}

fn random3(rng: &mut rand::rngs::StdRng, [b, c, t]: [usize; 3], device: &Device) -> Tensor<3> {
    let v: Vec<f32> = (0..b * c * t).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    Tensor::from_data(TensorData::new(v, [b, c, t]), device)
}

#[test]
fn fused_msc_forward_matches_composite() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("fused block"));
    let device = cpu();
    for (b, c, t, kernels, valid) in msc_cases() {
        let m = msc_block(&mut rng, c, kernels, &device);
        let x = random3(&mut rng, [b, c, t], &device);
        assert!(fused(&x), "the CPU float32 path must be the fused one");
        let mask = valid.as_ref().and_then(|v| FrameMask::new(v, t, burn::tensor::DType::F32, &device));
        let ours = to_vec(m.forward(x.clone(), mask.as_ref()));
        let reference = to_vec(m.forward_composite(x, mask.as_ref()));
        let scale = reference.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
        let err = max_abs(&ours, &reference);
        eprintln!("msc [{b}, {c}, {t}] {kernels:?} output: {err:e} (scale {scale:e})");
        assert!(err < 2e-6 * scale, "[{b}, {c}, {t}] {kernels:?} {valid:?}: output differs by {err:e} (scale {scale})");
    }
}

#[test]
fn fused_msc_gradients_match_composite() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("fused block"));
    let device = cpu().autodiff();
    let names = [
        "x",
        "projection.weight",
        "projection.bias",
        "branch 1 weight",
        "branch 1 bias",
        "branch 2 weight",
        "branch 2 bias",
        "pointwise.weight",
        "pointwise.bias",
    ];
    for (b, c, t, kernels, valid) in msc_cases() {
        let m = msc_block(&mut rng, c, kernels, &device);
        let x = random3(&mut rng, [b, c, t], &device);
        let r = random3(&mut rng, [b, c, t], &device);
        let mask = valid.as_ref().and_then(|v| FrameMask::new(v, t, burn::tensor::DType::F32, &device));
        let mut results = vec![];
        for fused_path in [true, false] {
            let x = x.clone().require_grad();
            let y = if fused_path {
                m.forward(x.clone(), mask.as_ref())
            } else {
                m.forward_composite(x.clone(), mask.as_ref())
            };
            let grads = (y * r.clone()).sum().backward();
            let flat3 = |t: Option<Tensor<3>>| {
                t.map(|t| {
                    let n: usize = t.dims().iter().product();
                    t.reshape([n])
                })
            };
            let flat2 = |t: Option<Tensor<2>>| {
                t.map(|t| {
                    let n: usize = t.dims().iter().product();
                    t.reshape([n])
                })
            };
            let gs = [
                flat3(x.grad(&grads)),
                flat3(m.projection.weight.val().grad(&grads)),
                m.projection.bias.val().grad(&grads),
                flat3(m.branches[0].weight.val().grad(&grads)),
                m.branches[0].bias.val().grad(&grads),
                flat3(m.branches[1].weight.val().grad(&grads)),
                m.branches[1].bias.val().grad(&grads),
                flat2(m.pointwise.weight.val().grad(&grads)),
                m.pointwise.bias.val().grad(&grads),
            ];
            results.push(
                gs.into_iter()
                    .zip(names)
                    .map(|(g, n)| to_vec(g.unwrap_or_else(|| panic!("no gradient for {n}"))))
                    .collect::<Vec<_>>(),
            );
        }
        for (i, name) in names.iter().enumerate() {
            let (ours, reference) = (&results[0][i], &results[1][i]);
            assert_eq!(ours.len(), reference.len(), "{name} gradient length");
            let scale = reference.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
            let err = max_abs(ours, reference);
            eprintln!("msc [{b}, {c}, {t}] {name}: {err:e} (scale {scale:e})");
            assert!(
                err < 1e-5 * scale,
                "[{b}, {c}, {t}] {kernels:?} {valid:?}: the {name} gradient differs by {err:e} (scale {scale})"
            );
        }
    }
}

#[test]
fn fused_channels_first_layer_norm_matches_composite() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("fused block"));
    let device = cpu().autodiff();
    for (b, c, t) in [(2, 16, 70), (1, 8, 5), (3, 384, 130), (1, 24, 300)] {
        let n = LayerNorm {
            weight: param(&mut rng, [c], 1.0, &device),
            bias: param(&mut rng, [c], 0.5, &device),
            eps: 1e-6,
        };
        let x = random3(&mut rng, [b, c, t], &device);
        let r = random3(&mut rng, [b, c, t], &device);
        let mut results = vec![];
        for fused_path in [true, false] {
            let x = x.clone().require_grad();
            let y = if fused_path {
                n.forward_channels_first(x.clone())
            } else {
                n.forward_last(x.clone().swap_dims(1, 2)).swap_dims(1, 2)
            };
            let out = to_vec(y.clone());
            let grads = (y * r.clone()).sum().backward();
            let gx = x.grad(&grads).expect("x gradient");
            let gw = n.weight.val().grad(&grads).expect("weight gradient");
            let gb = n.bias.val().grad(&grads).expect("bias gradient");
            let n_x: usize = gx.dims().iter().product();
            results.push([out, to_vec(gx.reshape([n_x])), to_vec(gw), to_vec(gb)]);
        }
        for (i, name) in ["output", "x gradient", "weight gradient", "bias gradient"].iter().enumerate() {
            let (ours, reference) = (&results[0][i], &results[1][i]);
            let scale = reference.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
            let err = max_abs(ours, reference);
            eprintln!("layer norm [{b}, {c}, {t}] {name}: {err:e} (scale {scale:e})");
            assert!(err < 1e-5 * scale, "[{b}, {c}, {t}]: the {name} differs by {err:e} (scale {scale})");
        }
    }
}

#[test]
fn fused_attentive_statistics_match_composite() {
    use nexttdnn::model::init::Init;
    use nexttdnn::model::pooling::PoolingHead;
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("fused block"));
    let device = cpu().autodiff();
    let cfg = nexttdnn::config::ExperimentConfig::load(&common::config("NeXt_TDNN_C128_B3_K65_7")).expect("config");
    let head = PoolingHead::new(&cfg.model, 0.1, &mut Init::new(1, 0.02), &device);
    // The last case has rows of (almost) constant features: σ at the floor.
    for (b, d, t, masked, constant) in
        [(2, 16, 70, false, false), (1, 8, 5, false, false), (3, 48, 130, true, false), (2, 8, 40, false, true)]
    {
        let mut h = random3(&mut rng, [b, d, t], &device);
        if constant {
            h = h.clone().slice([0..b, 0..d, 0..1]).repeat_dim(2, t);
        }
        let mut logits = random3(&mut rng, [b, d, t], &device);
        if masked {
            let mask = FrameMask::new(
                &vec![t; b - 1].into_iter().chain([t / 3]).collect::<Vec<_>>(),
                t,
                burn::tensor::DType::F32,
                &device,
            )
            .expect("a padded batch");
            logits = mask.attention_bias(logits);
        }
        let r: Tensor<2> = Tensor::from_data(
            TensorData::new((0..b * 2 * d).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>(), [b, 2 * d]),
            &device,
        );
        let mut results = vec![];
        for fused_path in [true, false] {
            let (h, e) = (h.clone().detach().require_grad(), logits.clone().detach().require_grad());
            let s = if fused_path {
                head.statistics(h.clone(), e.clone())
            } else {
                head.statistics_composite(h.clone(), e.clone())
            };
            let out = to_vec(s.clone());
            let grads = (s * r.clone()).sum().backward();
            let n = b * d * t;
            let gh = h.grad(&grads).expect("h gradient").reshape([n]);
            let ge = e.grad(&grads).expect("logit gradient").reshape([n]);
            results.push([out, to_vec(gh), to_vec(ge)]);
        }
        for (i, name) in ["stats", "h gradient", "logit gradient"].iter().enumerate() {
            let (ours, reference) = (&results[0][i], &results[1][i]);
            // Gradients that vanish (σ at its floor) are compared on an absolute scale.
            let scale = reference.iter().fold(1e-2f64, |m, v| m.max(v.abs() as f64));
            let err = max_abs(ours, reference);
            eprintln!("pooling [{b}, {d}, {t}] {name}: {err:e} (scale {scale:e})");
            assert!(
                err < 1e-5 * scale,
                "[{b}, {d}, {t}] masked {masked}: the {name} differs by {err:e} (scale {scale})"
            );
        }
    }
}

#[test]
fn fused_unpadded_conv_matches_burn_conv1d() {
    use burn::tensor::module::conv1d;
    use burn::tensor::ops::ConvOptions;
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("fused block"));
    let device = cpu().autodiff();
    // 1×1 (MFA, pooling head) and the stem's unpadded taps, down to a
    // single output frame.
    let shapes = [(2, 16, 8, 70, 1), (1, 384, 384, 5, 1), (3, 48, 384, 130, 1), (32, 8, 4, 3, 1)];
    let stems = [(2, 80, 32, 50, 4), (1, 80, 384, 9, 4), (3, 5, 7, 4, 4), (2, 6, 10, 20, 3)];
    for (b, ci, co, t, k) in shapes.into_iter().chain(stems) {
        let layer = Conv1d { padding: 0, ..conv(&mut rng, co, ci, k, 1, &device) };
        let x = random3(&mut rng, [b, ci, t], &device);
        let r = random3(&mut rng, [b, co, t + 1 - k], &device);
        let mut results = vec![];
        for fused_path in [true, false] {
            let x = x.clone().require_grad();
            let y = if fused_path {
                layer.forward(x.clone())
            } else {
                conv1d(x.clone(), layer.weight.val(), Some(layer.bias.val()), ConvOptions::new([1], [0], [1], 1))
            };
            let out = to_vec(y.clone());
            let grads = (y * r.clone()).sum().backward();
            let gx = x.grad(&grads).expect("x gradient").reshape([b * ci * t]);
            let gw = layer.weight.val().grad(&grads).expect("weight gradient").reshape([co * ci * k]);
            let gb = layer.bias.val().grad(&grads).expect("bias gradient");
            results.push([out, to_vec(gx), to_vec(gw), to_vec(gb)]);
        }
        for (i, name) in ["output", "x gradient", "weight gradient", "bias gradient"].iter().enumerate() {
            let (ours, reference) = (&results[0][i], &results[1][i]);
            let scale = reference.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
            let err = max_abs(ours, reference);
            eprintln!("conv k={k} [{b}, {ci}->{co}, {t}] {name}: {err:e} (scale {scale:e})");
            assert!(err < 1e-5 * scale, "k={k} [{b}, {ci}->{co}, {t}]: the {name} differs by {err:e} (scale {scale})");
        }
    }
}

/// The MFA layer's convolution of the stage outputs without concatenating
/// them: the same output as Burn's `conv1d` of the concatenation, on the
/// CPU backend and (with the gradients) on autodiff.
#[test]
fn convolution_of_parts_matches_conv1d_of_their_concatenation() {
    use burn::tensor::module::conv1d;
    use burn::tensor::ops::ConvOptions;
    use nexttdnn::ops::pointwise::pointwise_conv_concat;
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("fused block"));
    for (b, parts, co, t) in [(2, vec![16, 8, 24], 20, 37), (1, vec![384; 3], 1152, 9), (3, vec![5], 7, 1)] {
        let ci: usize = parts.iter().sum();
        for tracked in [false, true] {
            let device = if tracked { cpu().autodiff() } else { cpu() };
            let layer = conv(&mut rng, co, ci, 1, 1, &device);
            let xs: Vec<Tensor<3>> = parts.iter().map(|&i| random3(&mut rng, [b, i, t], &device)).collect();
            let r = random3(&mut rng, [b, co, t], &device);
            let mut results = vec![];
            for ours in [true, false] {
                let xs: Vec<Tensor<3>> =
                    xs.iter().map(|x| if tracked { x.clone().detach().require_grad() } else { x.clone() }).collect();
                let y = if ours {
                    pointwise_conv_concat(&xs, layer.weight.val(), layer.bias.val())
                } else {
                    let cat = Tensor::cat(xs.clone(), 1);
                    conv1d(cat, layer.weight.val(), Some(layer.bias.val()), ConvOptions::new([1], [0], [1], 1))
                };
                let mut got = vec![to_vec(y.clone())];
                if tracked {
                    let grads = (y * r.clone()).sum().backward();
                    for x in &xs {
                        got.push(to_vec(x.grad(&grads).expect("input gradient").flatten::<1>(0, 2)));
                    }
                    let gw = layer.weight.val().grad(&grads).expect("weight gradient");
                    got.push(to_vec(gw.reshape([co * ci])));
                    got.push(to_vec(layer.bias.val().grad(&grads).expect("bias gradient")));
                }
                results.push(got);
            }
            for (i, (ours, reference)) in results[0].iter().zip(&results[1]).enumerate() {
                let scale = reference.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
                let err = max_abs(ours, reference);
                eprintln!("parts {parts:?} [{b}, ->{co}, {t}] tracked {tracked} #{i}: {err:e} (scale {scale:e})");
                assert!(err < 1e-5 * scale, "parts {parts:?}, tracked {tracked}: result {i} differs by {err:e}");
            }
        }
    }
}

#[test]
fn fused_tanh_matches_burn_tanh() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("fused block"));
    let device = cpu().autodiff();
    // Inputs up to ±12 (beyond the polynomial near 0 and into saturation),
    // lengths around the parallel chunk of 2^14 elements.
    for [b, c, t] in [[2, 16, 70], [1, 3, 5], [4, 128, 40], [3, 64, 300]] {
        let x: Tensor<3> = random3(&mut rng, [b, c, t], &device) * 6.0;
        assert!(fused(&x), "the CPU operation applies");
        let r = random3(&mut rng, [b, c, t], &device);
        let mut results = vec![];
        for fused_path in [true, false] {
            let x = x.clone().detach().require_grad();
            let y = if fused_path {
                nexttdnn::ops::tanh::tanh(x.clone())
            } else {
                burn::tensor::activation::tanh(x.clone())
            };
            let out = to_vec(y.clone());
            let grads = (y * r.clone()).sum().backward();
            results.push([out, to_vec(x.grad(&grads).expect("x gradient").reshape([b * c * t]))]);
        }
        // fastmath's tanh is within 2e-7 of libm's; the gradient's upstream
        // factor is below 2 in magnitude.
        for (i, name, bound) in [(0, "output", 5e-7), (1, "x gradient", 2e-6)] {
            let err = max_abs(&results[0][i], &results[1][i]);
            eprintln!("tanh [{b}, {c}, {t}] {name}: {err:e}");
            assert!(err < bound, "[{b}, {c}, {t}]: the {name} differs by {err:e}");
        }
    }
}
