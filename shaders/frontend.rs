//! The log-mel front end in two kernels around CubeCL's real FFT.
//!
//! * `frames`: pre-emphasis (`x[-1] := x[1]`), the centred STFT's reflect
//!   padding, framing and the window (centred in `n_fft` zeros), in one pass
//!   from the waveform to `[B, T, n_fft]`.
//! * the real FFT of each frame (`burn_cubecl::kernel::fft::rfft`).
//! * `logmel`: power, the mel band sums over each band's non-zero bins only,
//!   and `ln(· + offset)`, written directly in the network's `[B, n_mels, T]`
//!   layout.
//!
//! As tensor operations the same front end is a dozen kernels and several
//! `[B, T, n_fft]`-sized intermediates; the mean over time is left to the
//! caller (two small passes over `[B, n_mels, T]`).

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::TensorMetadata;
use burn::tensor::Shape;
use burn_cubecl::kernel::fft::rfft;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::elementwise_launch;
use cubecl::prelude::*;

// The reflection stays a comparison, the form the kernel tests cover.
#[allow(clippy::manual_abs_diff)]
#[cube(launch_unchecked)]
fn frames_kernel<F: Float>(
    wav: &Tensor<F>,     // [B, L]
    window: &Tensor<F>,  // [n_fft], zero outside the window
    out: &mut Tensor<F>, // [B, T, n_fft]
    coef: f32,
    hop: u32,
    #[comptime] n_fft: usize,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let len = wav.shape(1);
    let frames = out.shape(1);
    let n = i % n_fft;
    let t = (i / n_fft) % frames;
    let b = i / (n_fft * frames);
    let pad = n_fft / 2;
    // Sample index j = t·hop + n − pad of the signal, reflected at both ends.
    let pos = t * hop as usize + n;
    let mut j = if pos < pad { pad - pos } else { pos - pad };
    if j >= len {
        j = 2 * (len - 1) - j;
    }
    let mut prev = 1usize;
    if j > 0 {
        prev = j - 1;
    }
    let base = b * len;
    let y = wav[base + j] - F::cast_from(coef) * wav[base + prev];
    out[i] = y * window[n];
}

#[cube(launch_unchecked)]
fn logmel_kernel<F: Float>(
    re: &Tensor<F>,         // [B, T, n_freqs]
    im: &Tensor<F>,         // [B, T, n_freqs]
    filterbank: &Tensor<F>, // [n_freqs, n_mels]
    bands: &Tensor<F>,      // [n_mels, 2]: first bin, end bin (exact small integers)
    out: &mut Tensor<F>,    // [B, n_mels, T]
    offset: f32,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let frames = out.shape(2);
    let mels = out.shape(1);
    let n_freqs = re.shape(2);
    let t = i % frames;
    let m = (i / frames) % mels;
    let b = i / (frames * mels);
    let row = (b * frames + t) * n_freqs;
    let first = u32::cast_from(bands[m * 2]) as usize;
    let end = u32::cast_from(bands[m * 2 + 1]) as usize;
    let mut e = F::new(0.0);
    for k in first..end {
        let r = re[row + k];
        let q = im[row + k];
        e += (r * r + q * q) * filterbank[k * mels + m];
    }
    out[i] = F::ln(e + F::cast_from(offset));
}

/// Log-mel energies before mean removal: `wav [B, L]` → `[B, n_mels, 1 + L/hop]`.
/// `window` is `[n_fft]` (already centred in zeros), `filterbank`
/// `[n_fft/2 + 1, n_mels]`, `bands` `[n_mels, 2]` each band's non-zero bin
/// range; `n_fft` must be a power of two.
#[allow(clippy::too_many_arguments)]
pub fn logmel(
    wav: CubeTensor,
    window: CubeTensor,
    filterbank: CubeTensor,
    bands: CubeTensor,
    n_fft: usize,
    hop: usize,
    pre_emphasis: f32,
    log_offset: f32,
) -> CubeTensor {
    let wav = into_contiguous(wav);
    let window = into_contiguous(window);
    let filterbank = into_contiguous(filterbank);
    let bands = into_contiguous(bands);
    let [batch, len] = wav.shape().dims::<2>();
    assert!(len > n_fft / 2, "front end: {len} samples, the reflect padding needs more than {}", n_fft / 2);
    assert!(n_fft.is_power_of_two(), "front end: n_fft {n_fft} is not a power of two");
    let n_mels = filterbank.shape()[1];
    let frames = 1 + len / hop;
    let dtype = wav.dtype;
    let client = wav.client.clone();
    let framed = empty_device_dtype(client.clone(), wav.device.clone(), Shape::new([batch, frames, n_fft]), dtype);
    let (count, dim) = elementwise_launch(&client, batch * frames * n_fft);
    // SAFETY: each unit writes its own index < len (checked in the kernel) and
    // reads wav at reflected indices inside 0..L (L > n_fft/2 asserted above).
    unsafe {
        frames_kernel::launch_unchecked(
            &client,
            count,
            dim,
            wav.into_tensor_arg(),
            window.into_tensor_arg(),
            framed.clone().into_tensor_arg(),
            pre_emphasis,
            hop as u32,
            n_fft,
            dtype_to_storage_type(dtype),
        );
    }
    let (re, im) = rfft(framed, 2, None);
    let out = empty_device_dtype(client.clone(), re.device.clone(), Shape::new([batch, n_mels, frames]), dtype);
    let (count, dim) = elementwise_launch(&client, batch * n_mels * frames);
    // SAFETY: band ranges lie inside 0..n_freqs (built from the filterbank).
    unsafe {
        logmel_kernel::launch_unchecked(
            &client,
            count,
            dim,
            re.into_tensor_arg(),
            im.into_tensor_arg(),
            filterbank.into_tensor_arg(),
            bands.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            log_offset,
            dtype_to_storage_type(dtype),
        );
    }
    out
}
