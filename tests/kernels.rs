//! The depthwise-convolution extension (our CubeCL kernels on wgpu, our row
//! kernel of `src/ops/depthwise.rs` on the CPU, our autodiff backward on
//! both): the forward against the sum written out on the host, the gradients
//! against Burn's generic grouped `conv1d`, on fresh random inputs every run
//! (the seed is printed).

mod common;

use burn::tensor::module::conv1d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use common::{max_abs, test_devices, to_vec};
use nexttdnn::ops::depthwise::depthwise_conv1d_extension;
use nexttdnn::ops::supported;
use rand::{RngExt, SeedableRng};

fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// The depthwise convolution written out on the host, in float64: the
/// reference that neither backend's code path shares.
fn naive(x: &[f32], w: &[f32], bias: &[f32], (b, c, t, k, pad): (usize, usize, usize, usize, usize)) -> Vec<f32> {
    let t_out = t + 2 * pad + 1 - k;
    let mut out = Vec::with_capacity(b * c * t_out);
    for bi in 0..b {
        for ci in 0..c {
            for to in 0..t_out {
                let mut acc = bias[ci] as f64;
                for ki in 0..k {
                    let ti = (to + ki) as isize - pad as isize;
                    if ti >= 0 && (ti as usize) < t {
                        acc += w[ci * k + ki] as f64 * x[(bi * c + ci) * t + ti as usize] as f64;
                    }
                }
                out.push(acc as f32);
            }
        }
    }
    out
}

/// Shapes of the models (kernels 7 and 65, 'same' padding) plus odd lengths,
/// a length below one tile, a multi-tile length and an input shorter than
/// the kernel.
const CASES: &[(usize, usize, usize, usize, usize)] = &[
    // (batch, channels, time, kernel, pad)
    (1, 32, 301, 65, 32),
    (3, 16, 517, 7, 3),
    (2, 8, 40, 65, 32),
    (1, 4, 1000, 65, 32),
    (2, 5, 64, 7, 0),
    (1, 3, 9, 5, 4),
    (2, 6, 300, 3, 1),
];

fn tensors(
    rng: &mut rand::rngs::StdRng,
    (b, c, t, k, _): (usize, usize, usize, usize, usize),
    device: &Device,
) -> (Tensor<3>, Tensor<3>, Tensor<1>) {
    let x = Tensor::from_data(TensorData::new(random(rng, b * c * t), [b, c, t]), device);
    let w = Tensor::from_data(TensorData::new(random(rng, c * k), [c, 1, k]), device);
    let bias = Tensor::from_data(TensorData::new(random(rng, c), [c]), device);
    (x, w, bias)
}

fn generic(x: Tensor<3>, w: Tensor<3>, b: Tensor<1>, pad: usize) -> Tensor<3> {
    let c = w.dims()[0];
    conv1d(x, w, Some(b), ConvOptions::new([1], [pad], [1], c))
}

#[test]
fn depthwise_forward_matches_generic_conv1d() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("kernel comparison"));
    for (name, device) in test_devices() {
        assert!(supported(&device), "{name}: the depthwise extension must run here");
        for &case in CASES {
            let (x, w, b) = tensors(&mut rng, case, &device);
            let reference = naive(&to_vec(x.clone()), &to_vec(w.clone()), &to_vec(b.clone()), case);
            let ours = to_vec(depthwise_conv1d_extension(x.clone(), w.clone(), b.clone(), case.4));
            let generic = to_vec(generic(x, w, b, case.4));
            for (what, got) in [("extension", &ours), ("generic conv1d", &generic)] {
                assert_eq!(got.len(), reference.len(), "{name} {case:?}: {what} output length");
                let err = max_abs(got, &reference);
                assert!(err < 1e-5, "{name} {case:?}: the {what} differs from the written-out sum by {err:e}");
            }
        }
    }
}

#[test]
fn depthwise_gradients_match_generic_conv1d() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("kernel comparison"));
    for (name, device) in test_devices() {
        let device = device.autodiff();
        for &case in CASES {
            let (x, w, b) = tensors(&mut rng, case, &device);
            let (bb, c, t, k, pad) = case;
            let t_out = t + 2 * pad + 1 - k;
            let r: Tensor<3> =
                Tensor::from_data(TensorData::new(random(&mut rng, bb * c * t_out), [bb, c, t_out]), &device);
            let mut results = Vec::new();
            for extension in [true, false] {
                let (x, w, b) = (x.clone().require_grad(), w.clone().require_grad(), b.clone().require_grad());
                let y = if extension {
                    depthwise_conv1d_extension(x.clone(), w.clone(), b.clone(), pad)
                } else {
                    generic(x.clone(), w.clone(), b.clone(), pad)
                };
                let grads = (y * r.clone()).sum().backward();
                results.push([
                    to_vec(x.grad(&grads).expect("x grad")),
                    to_vec(w.grad(&grads).expect("w grad")),
                    to_vec(b.grad(&grads).expect("b grad")),
                ]);
            }
            for (i, what) in ["input", "weight", "bias"].iter().enumerate() {
                let (ours, reference) = (&results[0][i], &results[1][i]);
                assert_eq!(ours.len(), reference.len(), "{name} {case:?}: {what} gradient length");
                let scale = reference.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
                let err = max_abs(ours, reference);
                assert!(err < 1e-5 * scale, "{name} {case:?}: {what} gradient differs by {err:e} (scale {scale})");
            }
        }
    }
}

#[test]
fn gelu_matches_erf_composite() {
    use nexttdnn::ops::gelu::{gelu, gelu_composite};
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("kernel comparison"));
    for (name, device) in test_devices() {
        let device = device.autodiff();
        for &n in &[1usize, 1000, 70_001] {
            // Mostly the bulk of activations, plus the tails.
            let mut v: Vec<f32> = random(&mut rng, n).into_iter().map(|x| x * 6.0).collect();
            for (i, extreme) in [-30.0f32, -9.0, -5.5, 0.0, 5.5, 9.0, 30.0].iter().enumerate() {
                if i < n {
                    v[i] = *extreme;
                }
            }
            let x: Tensor<1> = Tensor::from_data(TensorData::new(v, [n]), &device);
            let r: Tensor<1> = Tensor::from_data(TensorData::new(random(&mut rng, n), [n]), &device);
            let mut results = Vec::new();
            for fused in [true, false] {
                let x = x.clone().require_grad();
                let y = if fused { gelu(x.clone()) } else { gelu_composite(x.clone()) };
                let grads = (y.clone() * r.clone()).sum().backward();
                results.push((to_vec(y), to_vec(x.grad(&grads).expect("x grad"))));
            }
            let fwd = max_abs(&results[0].0, &results[1].0);
            let bwd = max_abs(&results[0].1, &results[1].1);
            assert!(fwd < 3e-6, "{name} n={n}: GELU differs by {fwd:e}");
            assert!(bwd < 3e-6, "{name} n={n}: GELU gradient differs by {bwd:e}");
        }
    }
}

/// The start-up check the browser page runs before it uses WebGPU passes on
/// every device our kernels run on here.
#[test]
fn the_start_up_kernel_check_passes() {
    for (name, device) in test_devices() {
        futures_lite::future::block_on(nexttdnn::ops::check::check_kernels(&device))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
}
