//! The log-mel front end as a backend extension on the CubeCL backends
//! (kernels in `shaders/frontend.rs`). The CPU backend has its own fused
//! front end ([`cpu`]); other backends use tensor operations.
//! Features carry no gradient: on an autodiff device the result is a
//! constant.

pub mod cpu;

use burn::backend::{backend_extension, tensor::FloatTensor, Backend, Dispatch};
#[allow(unused_imports)] // the fusion build's shape expression
use burn::tensor::Shape;
use burn::tensor::Tensor;

/// Log-mel energies before mean removal.
#[backend_extension(Cube, Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait FrontendOps: Backend {
    /// `wav [B, L]` → `[B, n_mels, 1 + L/hop]`, see `shaders::frontend::logmel`.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = wav, shape = Shape::new([wav[0], filterbank[1], 1 + wav[1] / *hop]))]
    fn logmel(
        wav: FloatTensor<Self>,
        window: FloatTensor<Self>,
        filterbank: FloatTensor<Self>,
        bands: FloatTensor<Self>,
        n_fft: usize,
        hop: usize,
        pre_emphasis: f32,
        log_offset: f32,
    ) -> FloatTensor<Self>;
}

impl FrontendOps for burn_cubecl::CubeBackend {
    fn logmel(
        wav: FloatTensor<Self>,
        window: FloatTensor<Self>,
        filterbank: FloatTensor<Self>,
        bands: FloatTensor<Self>,
        n_fft: usize,
        hop: usize,
        pre_emphasis: f32,
        log_offset: f32,
    ) -> FloatTensor<Self> {
        crate::shaders::frontend::logmel(wav, window, filterbank, bands, n_fft, hop, pre_emphasis, log_offset)
    }
}

mod autodiff {
    use super::FrontendOps;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, AutodiffBackend, Backend};

    impl<B: Backend + FrontendOps, C: CheckpointStrategy> FrontendOps for Autodiff<B, C> {
        fn logmel(
            wav: FloatTensor<Self>,
            window: FloatTensor<Self>,
            filterbank: FloatTensor<Self>,
            bands: FloatTensor<Self>,
            n_fft: usize,
            hop: usize,
            pre_emphasis: f32,
            log_offset: f32,
        ) -> FloatTensor<Self> {
            let out = B::logmel(
                wav.into_primitive(),
                window.into_primitive(),
                filterbank.into_primitive(),
                bands.into_primitive(),
                n_fft,
                hop,
                pre_emphasis,
                log_offset,
            );
            <Autodiff<B, C> as AutodiffBackend>::from_inner(out)
        }
    }
}

/// [`FrontendOps::logmel`] on tensors.
#[allow(clippy::too_many_arguments)]
pub fn logmel(
    wav: Tensor<2>,
    window: Tensor<1>,
    filterbank: Tensor<2>,
    bands: Tensor<2>,
    n_fft: usize,
    hop: usize,
    pre_emphasis: f32,
    log_offset: f32,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FrontendOps>::logmel(
        wav.into_dispatch(),
        window.into_dispatch(),
        filterbank.into_dispatch(),
        bands.into_dispatch(),
        n_fft,
        hop,
        pre_emphasis,
        log_offset,
    ))
}
