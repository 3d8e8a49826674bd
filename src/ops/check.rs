//! A start-up check of our CubeCL kernels on one device against the CPU.
//!
//! On wasm, CubeCL logs a WGSL validation failure and goes on, returning
//! whatever the buffer held (cubecl issue 1641), so a kernel that a
//! browser's shader compiler rejects would give wrong embeddings quietly.
//! [`check_kernels`] runs each inference kernel on small random inputs
//! through the extension on `device` and through Burn's generic operations
//! on the CPU backend, and reports the first that disagrees. It reads back
//! only with `into_data_async`, so it runs in a browser.

use anyhow::{ensure, Result};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};

use super::depthwise::depthwise_conv1d;
use super::gelu::gelu;
use super::{with_route, Route};

/// Largest difference allowed between a kernel and the CPU path, relative
/// to the largest reference value (float32 sums of up to 65 products).
const TOLERANCE: f32 = 1e-5;

/// One case: a name, and the computation on a device.
type Case = (&'static str, Vec<usize>, fn(&[Tensor<3>]) -> Tensor<3>);

/// The kernels the network's inference runs on a CubeCL device, each with
/// shapes that cover a partial workgroup: GELU, and the depthwise
/// convolution with the kernel sizes of the official configurations.
fn cases() -> Vec<Case> {
    vec![
        ("gelu", vec![2, 24, 151], |t| gelu(t[0].clone())),
        ("depthwise convolution, kernel 7", vec![2, 24, 151, 7], depthwise),
        ("depthwise convolution, kernel 65", vec![2, 24, 151, 65], depthwise),
    ]
}

/// The convolution as the network runs it: same length, with a bias.
fn depthwise(t: &[Tensor<3>]) -> Tensor<3> {
    let [c, _, k] = t[1].dims();
    let bias = t[1].clone().slice([0..c, 0..1, 0..1]).reshape([c]).mul_scalar(0.5);
    depthwise_conv1d(t[0].clone(), t[1].clone(), bias, (k - 1) / 2)
}

/// The inputs of a case: `x [B, C, T]` and, for a convolution, `w [C, 1, K]`.
fn inputs(shape: &[usize], rng: &mut rand::rngs::StdRng) -> Vec<(Vec<f32>, [usize; 3])> {
    let mut random = |n: usize| (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect::<Vec<_>>();
    let x = [shape[0], shape[1], shape[2]];
    let mut out = vec![(random(x.iter().product()), x)];
    if let Some(&k) = shape.get(3) {
        out.push((random(shape[1] * k), [shape[1], 1, k]));
    }
    out
}

async fn read(t: Tensor<3>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(|e| anyhow::anyhow!("cannot read back: {e:?}"))?;
    data.convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("cannot read back: {e:?}"))
}

/// Runs every inference kernel on `device` and on the CPU, and fails naming
/// the first kernel whose output differs by more than [`TOLERANCE`] (or
/// has another shape). On a device without our kernels it checks Burn's
/// operations there instead, which is as useful.
pub async fn check_kernels(device: &Device) -> Result<()> {
    let cpu = Device::flex();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1641);
    for (name, shape, run) in cases() {
        let data = inputs(&shape, &mut rng);
        let on = |d: &Device| -> Vec<Tensor<3>> {
            data.iter().map(|(v, s)| Tensor::from_data(TensorData::new(v.clone(), *s), d)).collect()
        };
        let ours = read(with_route(Route::Extension, || run(&on(device)))).await?;
        let reference = read(with_route(Route::Generic, || run(&on(&cpu)))).await?;
        ensure!(ours.len() == reference.len(), "the {name} kernel gave {} values, not {}", ours.len(), reference.len());
        let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        // A NaN compares false, so it counts as infinitely far.
        let worst = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, |m, d| {
            if d <= m {
                m
            } else if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        });
        ensure!(
            worst <= TOLERANCE * scale,
            "the {name} kernel differs from the CPU by {worst:e} (largest value {scale}): this device's shader compiler did not run it as written"
        );
    }
    Ok(())
}
