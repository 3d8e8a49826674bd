//! Exact GELU, `x·Φ(x)`, as a backend extension with a one-pass derivative.
//!
//! Burn's own `gelu` is exact on the CPU but single-threaded there, and its
//! CubeCL backward is the tanh approximation; writing GELU out of `erf`
//! instead costs about ten element-wise passes per training step. This
//! operation is one pass forward and one backward on every backend:
//!
//! * CubeCL backends: the kernels in `shaders/gelu.rs`.
//! * Flex (CPU): the same formula over slices, vectorisable and split over
//!   threads (below).
//! * Autodiff: `∂x = ∂y · (Φ(x) + x·φ(x))`.
//!
//! Φ uses the Abramowitz–Stegun 7.1.26 erf (absolute error < 1.5e-7) and
//! never forms `1 + erf` by cancellation.

use burn::backend::{
    backend_extension, flex::FlexTensor, ops::ActivationOps, tensor::FloatTensor, Backend, Dispatch, Flex,
    TensorMetadata,
};
use burn::tensor::{DType, Tensor, TensorData};

/// Exact GELU and its gradient.
#[backend_extension(
    Flex,
    Cube: cfg(feature = "kernels"),
    Autodiff,
    Fusion: cfg(feature = "fusion"),
)]
pub trait GeluOps: Backend {
    /// `x·Φ(x)`, elementwise.
    #[fusion(dtype = x, shape = x)]
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `grad · (Φ(x) + x·φ(x))`, elementwise.
    #[fusion(dtype = x, shape = x)]
    fn gelu_exact_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl GeluOps for Flex {
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.dtype() != DType::F32 {
            return Flex::gelu(x);
        }
        let shape = x.shape();
        let x = x.to_contiguous();
        let xs = x.as_slice::<f32>().expect("contiguous f32");
        let mut out = vec![0.0f32; xs.len()];
        cpu::map(xs, None, &mut out);
        FlexTensor::from_data(TensorData::new(out, shape))
    }

    fn gelu_exact_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return Flex::gelu_backward(x, grad);
        }
        let shape = x.shape();
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let xs = x.as_slice::<f32>().expect("contiguous f32");
        let gs = grad.as_slice::<f32>().expect("contiguous f32");
        let mut out = vec![0.0f32; xs.len()];
        cpu::map(xs, Some(gs), &mut out);
        FlexTensor::from_data(TensorData::new(out, shape))
    }
}

/// The CPU loops, by hand: Burn's CPU GELU calls the scalar `libm::erff` on
/// one thread; this is branch-free arithmetic that the compiler vectorises,
/// in parallel chunks.
pub(crate) mod cpu {
    use crate::ops::fastmath::{exp_neg, madd};
    use crate::ops::simd::{elementwise, simd_fn};

    /// `z²` (with `z = |x|/√2`) beyond which the Gaussian tails are flushed
    /// to zero: `e^-80 · 0.025`, the smallest tail Φ kept, is still normal.
    const GAUSS_FLUSH: f32 = 80.0;

    /// `(Φ(x), φ(x))`, as in `shaders/gelu.rs` (which, on GPUs that flush
    /// subnormals themselves, needs no cut-off).
    #[inline(always)]
    pub fn cdf_pdf(x: f32) -> (f32, f32) {
        cdf_pdf_with::<false>(x)
    }

    /// [`cdf_pdf`], with fused multiply-adds when `FMA`.
    #[inline(always)]
    pub fn cdf_pdf_with<const FMA: bool>(x: f32) -> (f32, f32) {
        let m = madd::<FMA>;
        let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
        let t = 1.0 / m(0.327_591_1, z, 1.0);
        let poly = t * m(t, m(t, m(t, m(t, 1.061_405_4, -1.453_152), 1.421_413_8), -0.284_496_74), 0.254_829_6);
        let zz = z * z;
        // Past |x| ≈ 12.6 the tail Φ(-|x|) and φ(x) are written as 0: their
        // products would be subnormal (below 1.2e-38), which every later
        // multiply pays for (BENCHMARKS.md, "Subnormal numbers"); the true values are
        // under 6e-37, invisible next to the other terms.
        let e = if zz > GAUSS_FLUSH { 0.0 } else { exp_neg::<FMA>(-zz) };
        let half_q = 0.5 * poly * e;
        let cdf = if x >= 0.0 { 1.0 - half_q } else { half_q };
        (cdf, e * 0.398_942_3)
    }

    /// `|x|` beyond which [`gelu_inference`] takes `erf(x/√2)` as ±1: its
    /// rational function is fitted on `|x/√2| ≤ 4`, and `1 − erf(4)` is
    /// 1.5e-8, below half an ulp of 1.
    const RATIONAL_CLAMP: f32 = 4.0 * std::f32::consts::SQRT_2;

    /// `x·Φ(x)` for the inference passes, where no derivative is needed:
    /// `erf(x/√2) = x·P(x²)/Q(x²)` with P and Q of degree 5 in `x²` (a
    /// least-squares fit to the minimax error, made for this function), `Φ`
    /// within 2.4e-7 of the exact value (float32 rounding included; `cdf_pdf`: 2.5e-7), in about
    /// half its arithmetic (no `exp`): GELU is the costliest pass left
    /// beside the products. NaN stays NaN.
    #[inline(always)]
    pub fn gelu_inference<const FMA: bool>(x: f32) -> f32 {
        const P: [f32; 6] = [0.797_884_4, 6.938_26e-2, 9.451_62e-3, 3.538_48e-4, 1.272_882e-5, 4.363_477_8e-8];
        const Q: [f32; 6] = [1.0, 0.253_623_8, 2.911_847_8e-2, 1.930_474_5e-3, 7.601_615e-5, 1.171_195_3e-6];
        let m = madd::<FMA>;
        let u = x * x;
        let p = m(m(m(m(m(P[5], u, P[4]), u, P[3]), u, P[2]), u, P[1]), u, P[0]);
        let q = m(m(m(m(m(Q[5], u, Q[4]), u, Q[3]), u, Q[2]), u, Q[1]), u, Q[0]);
        // Near the clamp the rational rounds to within an ulp of ±1; past it
        // its value (NaN once x² overflows) is discarded and `erf` is ±1
        // exactly, so that the negative tail is exactly 0. NaN takes the
        // second arm and stays NaN through `h`.
        let e = if x.abs() < RATIONAL_CLAMP { (x * (p / q)).clamp(-1.0, 1.0) } else { 1.0f32.copysign(x) };
        let h = 0.5 * x;
        m(h, e, h)
    }

    /// `out = GELU(x)`, with fused multiply-adds when `FMA`.
    #[inline(always)]
    pub(crate) fn forward_chunk<const FMA: bool>(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * cdf_pdf_with::<FMA>(v).0;
        }
    }

    #[inline(always)]
    fn forward_plain(x: &[f32], out: &mut [f32]) {
        forward_chunk::<false>(x, out)
    }

    #[inline(always)]
    fn grad_chunk(x: &[f32], g: &[f32], out: &mut [f32]) {
        for ((o, &v), &gv) in out.iter_mut().zip(x).zip(g) {
            let (cdf, pdf) = cdf_pdf(v);
            *o = gv * (cdf + v * pdf);
        }
    }

    // The same loops compiled for AVX2 (8 lanes) where the CPU has it.
    simd_fn!(fn forward_simd(x: &[f32], out: &mut [f32]) => forward_plain);
    simd_fn!(fn grad_simd(x: &[f32], g: &[f32], out: &mut [f32]) => grad_chunk);

    /// `out = gelu(x)`, or `out = grad·gelu'(x)` when `grad` is given.
    pub fn map(x: &[f32], grad: Option<&[f32]>, out: &mut [f32]) {
        elementwise(x, grad, out, forward_simd, grad_simd)
    }
}

#[cfg(feature = "kernels")]
impl GeluOps for burn_cubecl::CubeBackend {
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::shaders::gelu::gelu(x)
    }

    fn gelu_exact_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::shaders::gelu::gelu_grad(x, grad)
    }
}

mod autodiff {
    use super::GeluOps;
    use burn::backend::autodiff::{
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
        NodeId,
    };
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, AutodiffBackend, Backend};

    #[derive(Debug)]
    struct GeluBackward;

    impl<B: Backend + GeluOps> Backward<B, 1> for GeluBackward {
        type State = NodeId;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
            let [node_x] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(ops.state);
            if let Some(node) = node_x {
                grads.register::<B>(node.id, B::gelu_exact_grad(x, grad));
            }
        }
    }

    impl<B: Backend + GeluOps, C: CheckpointStrategy> GeluOps for Autodiff<B, C> {
        fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
            match GeluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = prep.checkpoint(&x);
                    prep.finish(state, B::gelu_exact(x.into_primitive()))
                }
                OpsKind::UnTracked(prep) => prep.finish(B::gelu_exact(x.into_primitive())),
            }
        }

        fn gelu_exact_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            // A gradient is not differentiated again: the result is a constant.
            let out = B::gelu_exact_grad(x.into_primitive(), grad.into_primitive());
            <Autodiff<B, C> as AutodiffBackend>::from_inner(out)
        }
    }
}

/// Exact GELU through the extension where it runs; elsewhere Burn's `gelu`
/// for inference and the `erf` composite when gradients may be needed.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if super::use_extension(&device) {
        return Tensor::from_dispatch(<Dispatch as GeluOps>::gelu_exact(x.into_dispatch()));
    }
    if !device.is_autodiff() {
        return burn::tensor::activation::gelu(x);
    }
    gelu_composite(x)
}

/// The composite `0.5·x·(1 + erf(x/√2))` from Burn's tensor operations: the
/// differentiable fallback, and the reference in comparisons.
pub fn gelu_composite<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let cdf = x.clone().mul_scalar(std::f64::consts::FRAC_1_SQRT_2).erf().add_scalar(1.0);
    x.mul(cdf).mul_scalar(0.5)
}

#[cfg(test)]
mod tests {
    use super::cpu::{cdf_pdf, cdf_pdf_with, gelu_inference, map};

    /// Neither GELU nor its derivative writes a subnormal number for a
    /// normal input, however far into the tails.
    #[test]
    fn no_subnormal_results() {
        let x: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 5e-4).collect();
        let subnormal = |v: &f32| *v != 0.0 && v.abs() < f32::MIN_POSITIVE;
        for fma in [false, true] {
            for &v in &x {
                let (cdf, pdf) = if fma { cdf_pdf_with::<true>(v) } else { cdf_pdf(v) };
                assert!(!subnormal(&cdf) && !subnormal(&pdf), "x {v}: Φ {cdf:e}, φ {pdf:e}");
            }
        }
        let mut out = vec![0.0; x.len()];
        map(&x, None, &mut out);
        assert!(!out.iter().any(subnormal), "GELU wrote a subnormal");
        assert_eq!(out[0], 0.0, "GELU(-100)");
        let ones = vec![1.0; x.len()];
        map(&x, Some(&ones), &mut out);
        assert!(!out.iter().any(subnormal), "GELU's derivative wrote a subnormal");
    }

    /// [`gelu_inference`] against GELU from libm's `erf`, plain and fused:
    /// `Φ` as close as [`cdf_pdf`]'s, the tails exact and never subnormal.
    #[test]
    fn inference_gelu_matches_libm_erf() {
        let mut worst = 0.0f64;
        for i in -1_200_000..=1_200_000 {
            let x = i as f32 * 1e-5;
            let exact = 0.5 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            for g in [gelu_inference::<false>(x), gelu_inference::<true>(x)] {
                // |x|·(Φ error) plus the rounding of 0.5x + 0.5x·erf.
                let err = (g as f64 - x as f64 * exact).abs();
                worst = worst.max(err / (x.abs() as f64).max(1e-30));
                let rounding = 2.0 * f32::EPSILON as f64 * (x.abs() as f64);
                assert!(err <= 2e-7 * x.abs() as f64 + rounding, "GELU({x}) = {g}, exact {}", x as f64 * exact);
                assert!(g == 0.0 || g.abs() >= f32::MIN_POSITIVE, "GELU({x}) = {g:e} is subnormal");
            }
        }
        eprintln!("inference GELU: worst Φ error {worst:e}");
        for fma in [false, true] {
            let g = if fma { gelu_inference::<true> } else { gelu_inference::<false> };
            assert_eq!(g(-100.0), 0.0);
            assert_eq!(g(-6.0), 0.0);
            assert_eq!(g(100.0), 100.0);
            assert_eq!(g(0.0), 0.0);
            assert!(g(f32::NAN).is_nan());
        }
    }

    #[test]
    fn cdf_matches_libm_erf() {
        let mut worst = 0.0f64;
        for i in -12000..=12000 {
            let x = i as f64 / 1000.0;
            let exact = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let (cdf, pdf) = cdf_pdf(x as f32);
            worst = worst.max((cdf as f64 - exact).abs());
            // The fused multiply-add variant of the AVX2 loops.
            let (cdf_fma, pdf_fma) = cdf_pdf_with::<true>(x as f32);
            worst = worst.max((cdf_fma as f64 - exact).abs());
            assert!((pdf_fma as f64 - pdf as f64).abs() < 1e-7, "fused pdf at {x}: {pdf_fma} vs {pdf}");
            let exact_pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!((pdf as f64 - exact_pdf).abs() < 1e-7, "pdf at {x}: {pdf} vs {exact_pdf}");
        }
        // A&S 7.1.26 gives erf within 1.5e-7, Φ within 0.75e-7; f32 rounding adds
        // up to 6e-8 near 1. Measured: 2.5e-7.
        assert!(worst < 3e-7, "Φ error {worst:e}");
    }
}
