//! Depthwise 1-D convolution: forward (which with a reversed filter is also
//! the input gradient) and the weight gradient.
//!
//! Burn 0.22's CubeCL backends run grouped 1-D convolutions through their
//! generic direct kernel, which re-reads every input sample once per filter
//! tap from global memory. Here a cube owns one `(batch·channel, time tile)`
//! pair: it stages the input span the tile needs (`TILE + K - 1` samples) and
//! the channel's `K` taps in shared memory once, then each of its
//! `TILE / PER_UNIT` units computes `PER_UNIT` neighbouring outputs with a
//! sliding window (one shared load of `x` and one of `w` per tap feed
//! `PER_UNIT` multiply-adds). Global traffic is one read of the input and one
//! write of the output, which is the memory-bandwidth floor for this op.
//!
//! The weight gradient writes one partial sum per (tile, batch row, channel,
//! tap), `[tiles·B, C, K]`; the caller sums them over the first axis.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::Shape;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::server::CubeCountSelection;

/// Outputs per cube of both kernels.
const TILE: usize = 256;
/// Outputs per unit of the forward kernel (unrolled in the kernel).
const PER_UNIT: usize = 4;
/// Most units per cube of the weight-gradient kernel.
const WGRAD_UNITS: usize = 256;

/// Cooperatively stages `dst[i] = src[base + start + i - pad]` for `i` in
/// `0..count` (all units of the cube, strided), with zero where
/// `start + i - pad` falls outside `0..len`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage<F: Float>(
    src: &Tensor<F>,
    dst: &mut Shared<[F]>,
    base: usize,
    len: usize,
    start: usize,
    pad: usize,
    count: usize,
) {
    let mut i = UNIT_POS_X as usize;
    while i < count {
        let shifted = start + i;
        let mut value = F::new(0.0);
        if shifted >= pad && shifted - pad < len {
            value = src[base + shifted - pad];
        }
        dst[i] = value;
        i += CUBE_DIM_X as usize;
    }
}

/// `out[r, t] = bias[c] + Σ_k w[c, k'] · x[r, t - pad + k]`, with `r = b·C + c`,
/// `k' = k` (or `K-1-k` when `flip`), and zero outside `0..T_in`.
#[cube(launch_unchecked)]
fn depthwise_forward_kernel<F: Float>(
    x: &Tensor<F>,       // [B, C, T_in], contiguous
    weight: &Tensor<F>,  // [C, K], contiguous
    bias: &Tensor<F>,    // [C]
    out: &mut Tensor<F>, // [B, C, T_out], contiguous
    pad: u32,
    tiles: u32,
    rows: u32,
    #[comptime] kernel: usize,
    #[comptime] tile: usize,
    #[comptime] flip: bool,
    #[define(F)] _dtype: ElemType,
) {
    let cube = CUBE_POS;
    let tiles = tiles as usize;
    if cube >= tiles * rows as usize {
        terminate!();
    }
    let row = cube / tiles;
    let t0 = (cube % tiles) * tile;
    let channels = weight.shape(0);
    let c = row % channels;
    let t_in = x.shape(2);
    let t_out = out.shape(2);
    let pad = pad as usize;
    let unit = UNIT_POS_X as usize;
    let units = CUBE_DIM_X as usize;

    let span = tile + kernel - 1;
    let mut xs = Shared::<[F]>::new_slice(span);
    let mut ws = Shared::<[F]>::new_slice(kernel);

    // Stage x[row, t0 - pad .. t0 - pad + span), zero outside the signal.
    stage::<F>(x, &mut xs, row * t_in, t_in, t0, pad, span);
    let mut j = unit;
    while j < kernel {
        let mut tap = j;
        if flip {
            tap = kernel - 1 - j;
        }
        ws[j] = weight[c * kernel + tap];
        j += units;
    }
    sync_cube();

    // Unit u computes the four outputs local = 4u .. 4u+3 of the tile with a
    // sliding window: each tap is one shared load of x and one of w for four
    // multiply-adds (instead of two loads per multiply-add).
    let local = unit * 4;
    let mut a0 = bias[c];
    let mut a1 = a0;
    let mut a2 = a0;
    let mut a3 = a0;
    let mut x0 = xs[local];
    let mut x1 = xs[local + 1];
    let mut x2 = xs[local + 2];
    #[unroll]
    for k in 0..kernel {
        let x3 = xs[local + k + 3];
        let wk = ws[k];
        a0 += wk * x0;
        a1 += wk * x1;
        a2 += wk * x2;
        a3 += wk * x3;
        x0 = x1;
        x1 = x2;
        x2 = x3;
    }
    let t = t0 + local;
    let o = row * t_out + t;
    if t < t_out {
        out[o] = a0;
    }
    if t + 1 < t_out {
        out[o + 1] = a1;
    }
    if t + 2 < t_out {
        out[o + 2] = a2;
    }
    if t + 3 < t_out {
        out[o + 3] = a3;
    }
}

/// Per-tile partial weight gradients:
/// `partial[tile, r, k] = Σ_{t in tile} g[r, t] · x[r, t - pad + k]`.
///
/// Taps are handled four at a time (`groups = ⌈K/4⌉`) and the tile's time
/// steps are split into `lanes` contiguous chunks; a unit owns one
/// (tap group, chunk) pair and slides a four-sample window along its chunk,
/// so each time step costs one shared load of `g`, one of `x` and four
/// multiply-adds. The lanes are then summed in shared memory.
#[cube(launch_unchecked)]
fn depthwise_weight_grad_kernel<F: Float>(
    x: &Tensor<F>,           // [B, C, T_in]
    grad: &Tensor<F>,        // [B, C, T_out]
    partial: &mut Tensor<F>, // [tiles, B·C, K]
    pad: u32,
    tiles: u32,
    rows: u32,
    #[comptime] kernel: usize,
    #[comptime] tile: usize,
    #[comptime] lanes: usize,
    #[define(F)] _dtype: ElemType,
) {
    let cube = CUBE_POS;
    let tiles = tiles as usize;
    let rows = rows as usize;
    if cube >= tiles * rows {
        terminate!();
    }
    let row = cube / tiles;
    let tile_index = cube % tiles;
    let t0 = tile_index * tile;
    let t_in = x.shape(2);
    let t_out = grad.shape(2);
    let pad = pad as usize;
    let unit = UNIT_POS_X as usize;
    let groups = kernel.div_ceil(4);
    let chunk = tile.div_ceil(lanes);

    let span = tile + 4 * groups - 1;
    let mut xs = Shared::<[F]>::new_slice(span);
    let mut gs = Shared::<[F]>::new_slice(tile);
    let mut sums = Shared::<[F]>::new_slice(lanes * groups * 4);

    stage::<F>(x, &mut xs, row * t_in, t_in, t0, pad, span);
    stage::<F>(grad, &mut gs, row * t_out, t_out, t0, 0, tile);
    sync_cube();

    if unit < lanes * groups {
        let group = unit % groups;
        let lane = unit / groups;
        let k = group * 4;
        let begin = lane * chunk;
        let end = clamp_max(begin + chunk, tile);
        let mut a0 = F::new(0.0);
        let mut a1 = F::new(0.0);
        let mut a2 = F::new(0.0);
        let mut a3 = F::new(0.0);
        if begin < end {
            let mut x0 = xs[begin + k];
            let mut x1 = xs[begin + k + 1];
            let mut x2 = xs[begin + k + 2];
            for t in begin..end {
                let x3 = xs[t + k + 3];
                let g = gs[t];
                a0 += g * x0;
                a1 += g * x1;
                a2 += g * x2;
                a3 += g * x3;
                x0 = x1;
                x1 = x2;
                x2 = x3;
            }
        }
        let s = (lane * groups + group) * 4;
        sums[s] = a0;
        sums[s + 1] = a1;
        sums[s + 2] = a2;
        sums[s + 3] = a3;
    }
    sync_cube();

    if unit < kernel {
        let group = unit / 4;
        let within = unit % 4;
        let mut acc = F::new(0.0);
        for lane in 0..lanes {
            acc += sums[(lane * groups + group) * 4 + within];
        }
        partial[(tile_index * rows + row) * kernel + unit] = acc;
    }
}

fn cube_count(client: &cubecl::client::Client, cubes: usize) -> CubeCount {
    CubeCountSelection::new(client, cubes as u32).cube_count()
}

/// Depthwise convolution of `x [B, C, T]` with `weight [C, K]` and `bias [C]`,
/// symmetric zero padding `pad`: `[B, C, T + 2·pad - K + 1]`. With `flip` the
/// taps are read in reverse order (the input gradient of the forward).
pub fn depthwise_conv1d(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, pad: usize, flip: bool) -> CubeTensor {
    let x = into_contiguous(x);
    let weight = into_contiguous(weight);
    let bias = into_contiguous(bias);
    let [batch, channels, t_in] = x.meta.shape().dims::<3>();
    let [w_channels, kernel] = weight.meta.shape().dims::<2>();
    assert_eq!(channels, w_channels, "depthwise_conv1d: weight has {w_channels} channels, input {channels}");
    assert!(t_in + 2 * pad >= kernel, "depthwise_conv1d: input shorter than the kernel");
    let t_out = t_in + 2 * pad + 1 - kernel;
    let dtype = x.dtype;
    let client = x.client.clone();
    let out = empty_device_dtype(client.clone(), x.device.clone(), Shape::new([batch, channels, t_out]), dtype);
    let rows = batch * channels;
    let tiles = t_out.div_ceil(TILE);
    // SAFETY: every index the kernel forms is bounded by the shapes checked
    // above (rows, tiles and the staged span), so the bounds checks a checked
    // launch would add to each access are redundant.
    unsafe {
        depthwise_forward_kernel::launch_unchecked(
            &client,
            cube_count(&client, rows * tiles),
            CubeDim::new_1d((TILE / PER_UNIT) as u32),
            x.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            pad as u32,
            tiles as u32,
            rows as u32,
            kernel,
            TILE,
            flip,
            dtype_to_storage_type(dtype),
        );
    }
    out
}

/// Per-tile partial weight gradients `[tiles·B, C, K]` of
/// `out = depthwise_conv1d(x, w, ·, pad, false)` given `grad = ∂L/∂out`; the
/// caller sums them over the first axis.
pub fn depthwise_conv1d_weight_grad_partials(x: CubeTensor, grad: CubeTensor, pad: usize, kernel: usize) -> CubeTensor {
    let x = into_contiguous(x);
    let grad = into_contiguous(grad);
    let [batch, channels, t_in] = x.meta.shape().dims::<3>();
    let [g_batch, g_channels, t_out] = grad.meta.shape().dims::<3>();
    assert_eq!((batch, channels), (g_batch, g_channels), "depthwise weight grad: shapes differ");
    assert_eq!(t_out, t_in + 2 * pad + 1 - kernel, "depthwise weight grad: output length");
    let dtype = x.dtype;
    let client = x.client.clone();
    let rows = batch * channels;
    let tiles = t_out.div_ceil(TILE);
    let partial =
        empty_device_dtype(client.clone(), x.device.clone(), Shape::new([tiles * batch, channels, kernel]), dtype);
    let groups = kernel.div_ceil(4);
    let lanes = (WGRAD_UNITS / groups).clamp(1, 64);
    // SAFETY: as for the forward kernel.
    unsafe {
        depthwise_weight_grad_kernel::launch_unchecked(
            &client,
            cube_count(&client, rows * tiles),
            CubeDim::new_1d((lanes * groups).max(kernel) as u32),
            x.into_tensor_arg(),
            grad.into_tensor_arg(),
            partial.clone().into_tensor_arg(),
            pad as u32,
            tiles as u32,
            rows as u32,
            kernel,
            TILE,
            lanes,
            dtype_to_storage_type(dtype),
        );
    }
    partial
}
