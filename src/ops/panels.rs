//! Products `x · W` whose right operand is a weight matrix laid out in the
//! panels that `gemm`'s microkernels read, and the driver that feeds them.
//!
//! `gemm` copies ("packs") a strip of one operand into this layout inside
//! every product, on every thread that needs it. For the feed-forward block
//! at inference that operand is a weight: the same bytes each call, and for
//! the projection a matrix the block computes anyway (GRN folded into it,
//! [`super::ffn::cpu`]), which can be written straight into panels. The
//! `gemm` crate has no entry point that takes an operand already packed, so
//! this module keeps its microkernels (public in `gemm-f32`) and does the
//! blocking itself. Measured on one AVX-512 Zen 4 core at C384's shapes
//! (BENCHMARKS.md), against `gemm` on the same thread: 399×384×1536 in
//! 4.14 ms against 4.33, 399×1536×384 in 4.10-4.24 against 4.40-4.59; read
//! unpacked, where the weight lies, as fast as `gemm` or barely faster.
//!
//! Where no microkernel is taken (no AVX2+FMA, other architectures, wasm32)
//! the panel is as wide as the matrix: the layout is then plain row-major
//! and the product goes to [`super::host_gemm::matmul`].

use std::ops::Range;
use std::sync::Arc;

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::host_gemm::{self, View};
use super::kept::kept;
use super::scratch::{scratch, Scratch};

/// A weight `[k, n]` in column panels: panel `p` holds columns
/// `p·width .. (p+1)·width` as `[k, width]` row-major, the last one padded
/// with zeros; the panels follow one another.
pub struct Panels {
    data: Buffer,
    k: usize,
    n: usize,
    width: usize,
}

/// Where a [`Panels`]' floats live: a per-call working buffer, or memory of
/// their own for panels kept between calls.
enum Buffer {
    Scratch(Scratch),
    Owned(Vec<f32>),
}

impl std::ops::Deref for Buffer {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Buffer::Scratch(s) => s,
            Buffer::Owned(v) => v,
        }
    }
}

/// Rows per parallel task of [`Panels::build`].
const ROWS: usize = 64;

/// One row of a [`Panels`] being built: its `n` floats lie in pieces of
/// up to the panel width, one piece in each panel.
pub struct PanelRow<'a, 'b> {
    parts: &'a mut [&'b mut [f32]],
    /// Offset of this row in each part.
    at: usize,
    width: usize,
    n: usize,
}

impl<'b> PanelRow<'_, 'b> {
    /// The row's pieces in column order: the columns each holds, and where
    /// they go.
    #[inline(always)]
    pub fn pieces(&mut self) -> impl Iterator<Item = (Range<usize>, &mut [f32])> + use<'_, 'b> {
        let (at, width, n) = (self.at, self.width, self.n);
        self.parts.iter_mut().enumerate().map(move |(p, part)| {
            let cols = p * width..n.min((p + 1) * width);
            let len = cols.len();
            (cols, &mut part[at..at + len])
        })
    }
}

impl Panels {
    /// `[k, n]` built row by row over the pool, each task [`ROWS`] rows with
    /// its own state from `init`: `fill(state, j, row)` writes row `j`
    /// through [`PanelRow::pieces`] (every column of it). Returns the tasks'
    /// states in row order. The source can be read row by row, as it lies.
    pub fn build<S: Send>(
        k: usize,
        n: usize,
        init: impl Fn() -> S + Sync,
        fill: impl Fn(&mut S, usize, PanelRow) + Sync,
    ) -> (Self, Vec<S>) {
        let width = panel_width(n);
        let mut data = scratch(n.div_ceil(width) * k * width);
        let states = fill_panels(&mut data, k, n, width, init, fill);
        (Self { data: Buffer::Scratch(data), k, n, width }, states)
    }

    /// The microkernels these panels were laid out for; `None`: the layout
    /// is row-major (one panel).
    fn kernel(&self) -> Option<Kernel> {
        let kernel = Kernel::get()?;
        assert_eq!(kernel.width, self.width, "panels laid out for this CPU's kernels");
        Some(kernel)
    }

    /// A row-major `[k, n]` matrix in panels, in memory of their own (to be
    /// kept).
    fn from_rows(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "matrix size");
        let width = panel_width(n);
        let mut data = vec![0.0f32; n.div_ceil(width) * k * width];
        fill_panels(&mut data, k, n, width, || (), |_, j, row| copy_row(&w[j * n..(j + 1) * n], row));
        Self { data: Buffer::Owned(data), k, n, width }
    }

    /// The panels of a weight tensor `[k, n]` that stays the same from call
    /// to call (a loaded model's), laid out on its first call and kept
    /// ([`super::kept`]).
    pub fn of_weight(w: &FlexTensor, k: usize, n: usize) -> Arc<Self> {
        kept(w, "panels", [k, n], |floats| Self::from_rows(floats, k, n))
    }
}

/// The panel width for `n` columns: this CPU's kernels', or all `n` (one
/// row-major panel) where none is taken.
fn panel_width(n: usize) -> usize {
    Kernel::get().map_or(n, |kernel| kernel.width).max(1)
}

/// `src` into the pieces of `row`.
fn copy_row(src: &[f32], mut row: PanelRow) {
    for (cols, dst) in row.pieces() {
        dst.copy_from_slice(&src[cols]);
    }
}

/// [`Panels::build`] into `data`: the panels split into blocks of [`ROWS`]
/// rows, one task per block writing that block's rows of every panel.
fn fill_panels<S: Send>(
    data: &mut [f32],
    k: usize,
    n: usize,
    width: usize,
    init: impl Fn() -> S + Sync,
    fill: impl Fn(&mut S, usize, PanelRow) + Sync,
) -> Vec<S> {
    if k == 0 || n == 0 {
        return Vec::new();
    }
    let blocks = k.div_ceil(ROWS);
    // by_block[b][p]: the rows of block b in panel p.
    let mut by_block: Vec<Vec<&mut [f32]>> = (0..blocks).map(|_| Vec::new()).collect();
    for panel in data.chunks_mut(k * width) {
        for (b, part) in panel.chunks_mut(ROWS * width).enumerate() {
            by_block[b].push(part);
        }
    }
    let used = n - (n.div_ceil(width) - 1) * width;
    by_block
        .into_par_iter()
        .enumerate()
        .map(|(b, mut parts)| {
            if used < width {
                // The microkernels read whole vectors; zeros keep the
                // unused lanes of the last panel finite.
                let last = parts.last_mut().expect("one panel or more");
                last.chunks_mut(width).for_each(|r| r[used..].fill(0.0));
            }
            let mut state = init();
            for j in b * ROWS..k.min((b + 1) * ROWS) {
                fill(&mut state, j, PanelRow { parts: &mut parts, at: (j - b * ROWS) * width, width, n });
            }
            state
        })
        .collect()
}

/// `lhs · rhs` into a new row-major `[lhs.rows, rhs.n]` buffer, written by
/// the product alone. `lhs` must have unit column stride.
pub fn product(lhs: View, rhs: &Panels) -> Vec<f32> {
    let (m, n) = (lhs.rows, rhs.n);
    assert_eq!(lhs.cols, rhs.k, "inner dimensions");
    if m == 0 || n == 0 || rhs.k == 0 {
        return vec![0.0; m * n];
    }
    let Some(kernel) = rhs.kernel() else {
        return host_gemm::product(lhs, View::rows(&rhs.data[..], rhs.k, rhs.n));
    };
    let mut v: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the capacity holds m·n floats, and the first depth block of
    // `run` writes every one of them before any block reads them.
    unsafe {
        run(kernel, v.spare_capacity_mut().as_mut_ptr().cast(), lhs, rhs, false);
        v.set_len(m * n);
    }
    v
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` with `accumulate`; `dst` is
/// row-major `[lhs.rows, rhs.n]` and `lhs` has unit column stride.
pub fn matmul(dst: &mut [f32], lhs: View, rhs: &Panels, accumulate: bool) {
    let (m, n) = (lhs.rows, rhs.n);
    assert_eq!(lhs.cols, rhs.k, "inner dimensions");
    assert_eq!(dst.len(), m * n, "destination size");
    if m == 0 || n == 0 || rhs.k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    match rhs.kernel() {
        // SAFETY: `dst` holds the m·n initialised floats of the destination.
        Some(kernel) => unsafe { run(kernel, dst.as_mut_ptr(), lhs, rhs, accumulate) },
        None => host_gemm::matmul(dst, lhs, View::rows(&rhs.data[..], rhs.k, rhs.n), accumulate),
    }
}

/// `gemm-f32`'s microkernel signature: `(m, n, k, dst, lhs, rhs, dst_cs,
/// dst_rs, lhs_cs, rhs_rs, rhs_cs, alpha, beta, alpha_status, conj ×3,
/// next_lhs)`, computing `dst = alpha·dst + beta·lhs·rhs` on an `m × n`
/// tile (`alpha_status` 0: dst not read; 1: alpha is one).
type Ukr = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    *const f32,
    *const f32,
    isize,
    isize,
    isize,
    isize,
    isize,
    f32,
    f32,
    u8,
    bool,
    bool,
    bool,
    *const f32,
);

/// Columns of `dst` one microkernel call covers at most (gemm's `NR`, the
/// same for both instruction sets).
const NR: usize = 6;

/// The microkernels of this CPU: `table[v - 1][c - 1]` computes `v` vectors
/// of output columns (the panel's, in the kernel's terms its rows) for `c`
/// rows of `dst`.
#[derive(Clone, Copy)]
struct Kernel {
    /// Panel width: the vectors of the widest kernel times their lanes.
    width: usize,
    lanes: usize,
    table: &'static [[Ukr; NR]],
}

impl Kernel {
    fn get() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            use super::simd::{isa, Isa};
            use gemm_f32::microkernel as uk;
            match isa() {
                Isa::Avx512 => {
                    return Some(Self { width: 64, lanes: 16, table: &uk::avx512f::f32::UKR });
                }
                Isa::Avx2 => return Some(Self { width: 16, lanes: 8, table: &uk::fma::f32::UKR }),
                Isa::Plain => {}
            }
        }
        None
    }
}

/// Depth of one block of the inner dimension: the products' `k` up to this
/// runs in one block; a deeper one is cut into equal blocks no deeper.
const MAX_DEPTH: usize = 768;

/// Bytes of panel blocks each thread sweeps over all its rows before the
/// next: half of a 1 MB level-2 cache.
const PANEL_BYTES: usize = 512 << 10;

/// Rows of `dst` per parallel part: at least this many, or one part.
const MIN_ROWS: usize = 4 * NR;

/// The product over the pool: `dst`'s rows in equal parts, one per thread.
///
/// # Safety
/// `dst` must be valid for writing `lhs.rows · rhs.n` floats, and for
/// reading them when `accumulate`; `kernel.width == rhs.width`, and
/// `m, n, k > 0`.
unsafe fn run(kernel: Kernel, dst: *mut f32, lhs: View, rhs: &Panels, accumulate: bool) {
    assert_eq!(lhs.cs, 1, "the left operand's rows are read as vectors");
    assert!(lhs.in_bounds(), "the left operand's strides reach outside its slice");
    let m = lhs.rows;
    let threads = rayon::current_num_threads().max(1);
    let per = m.div_ceil(threads).next_multiple_of(NR).max(MIN_ROWS);
    let dst = Dst(dst);
    (0..m.div_ceil(per)).into_par_iter().for_each(|i| {
        let rows = i * per..m.min((i + 1) * per);
        let d = &dst;
        // SAFETY: as `run`'s caller guarantees; the parts write disjoint
        // rows.
        unsafe { run_rows(kernel, d.0, lhs, rhs, rows, accumulate) }
    });
}

/// A destination the parts of one product share; each writes its rows.
struct Dst(*mut f32);
// SAFETY: the parts of `run` write disjoint rows.
unsafe impl Sync for Dst {}

/// Rows `rows` of the product on this thread: depth blocks, then groups of
/// panels that stay in the level-2 cache while every row block of [`NR`]
/// rows (in level 1) goes past them.
///
/// # Safety
/// As [`run`]; `rows` lies within `0..lhs.rows`.
unsafe fn run_rows(kernel: Kernel, dst: *mut f32, lhs: View, rhs: &Panels, rows: Range<usize>, accumulate: bool) {
    let (k, n, width) = (rhs.k, rhs.n, rhs.width);
    let depth = k.div_ceil(k.div_ceil(MAX_DEPTH));
    let group = (PANEL_BYTES / (width * depth * 4)).max(1);
    let panels = n.div_ceil(width);
    for k0 in (0..k).step_by(depth) {
        let kd = depth.min(k - k0);
        // Status 0: the kernel writes without reading; 1: it adds.
        let status = u8::from(accumulate || k0 > 0);
        for g0 in (0..panels).step_by(group) {
            for r0 in rows.clone().step_by(NR) {
                let nr = NR.min(rows.end - r0);
                for p in g0..panels.min(g0 + group) {
                    let cols = width.min(n - p * width);
                    let ukr = kernel.table[cols.div_ceil(kernel.lanes) - 1][nr - 1];
                    // SAFETY: the tile is `cols` columns by `nr` rows of
                    // `dst` inside its `m × n`; the kernel reads whole
                    // vectors of the panel (padded to `width`) over `kd` of
                    // its rows from `k0`, and `nr` rows of `lhs` over the
                    // same depth, all inside their buffers; `status` reads
                    // `dst` only where it was written (or is initialised).
                    unsafe {
                        ukr(
                            cols,
                            nr,
                            kd,
                            dst.add(r0 * n + p * width),
                            rhs.data.as_ptr().add((p * k + k0) * width),
                            lhs.data.as_ptr().add(r0 * lhs.rs + k0),
                            n as isize,
                            1,
                            width as isize,
                            1,
                            lhs.rs as isize,
                            1.0,
                            1.0,
                            status,
                            false,
                            false,
                            false,
                            std::ptr::null(),
                        )
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for l in 0..k {
                for j in 0..n {
                    out[i * n + j] += a[i * k + l] * b[l * n + j];
                }
            }
        }
        out
    }

    /// Products against the naive sum on a pool of two threads: partial
    /// panels and row blocks, one and several depth blocks, a strided left
    /// operand, writing fresh memory and accumulating.
    #[test]
    fn products_match_the_naive_sum() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            for (m, k, n) in [(1, 5, 3), (7, 33, 17), (131, 96, 200), (64, 1600, 70), (25, 768, 64)] {
                let a: Vec<f32> = (0..m * (k + 3)).map(|i| (i as f32 * 0.013).sin()).collect();
                let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.029).cos()).collect();
                // Rows `k + 3` floats apart: the first `k` of each.
                let lhs = View { data: &a, rows: m, cols: k, rs: k + 3, cs: 1 };
                let dense: Vec<f32> = a.chunks(k + 3).flat_map(|r| r[..k].to_vec()).collect();
                let want = naive(&dense, &b, m, k, n);
                let panels = Panels::from_rows(&b, k, n);
                let bound = 1e-5 * k as f32;
                let got = product(lhs, &panels);
                for (o, w) in got.iter().zip(&want) {
                    assert!((o - w).abs() < bound, "{m}×{k}×{n}: {o} vs {w}");
                }
                let mut acc = vec![1.0f32; m * n];
                matmul(&mut acc, lhs, &panels, true);
                for (o, w) in acc.iter().zip(&want) {
                    assert!((o - (w + 1.0)).abs() < bound, "{m}×{k}×{n} accumulated: {o} vs {w} + 1");
                }
            }
        });
    }

    /// `build` takes the rows in order, one state per block of rows, and
    /// the panels hold them (read back through a product with unit rows).
    #[test]
    fn panels_hold_the_rows_built() {
        let (k, n) = (150, 150);
        let (panels, states) = Panels::build(k, n, Vec::new, |seen: &mut Vec<usize>, j, mut row| {
            seen.push(j);
            for (cols, piece) in row.pieces() {
                for (c, v) in cols.zip(piece.iter_mut()) {
                    *v = (j * 1000 + c) as f32;
                }
            }
        });
        let rows: Vec<usize> = states.concat();
        assert_eq!(rows, (0..k).collect::<Vec<_>>());
        assert_eq!(states.len(), k.div_ceil(ROWS));
        for j in [0, 70, 149] {
            let mut unit = vec![0.0f32; k];
            unit[j] = 1.0;
            let got = product(View::rows(&unit, 1, k), &panels);
            let want: Vec<f32> = (0..n).map(|c| (j * 1000 + c) as f32).collect();
            assert_eq!(got, want, "row {j}");
        }
    }

    /// A kept weight is found again, and a weight of the same shape with
    /// other values never gets its panels.
    #[test]
    fn weights_are_kept_by_identity() {
        use burn::tensor::TensorData;
        let (k, n) = (24, 70);
        let tensor = |seed: f32| {
            let v: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
            (FlexTensor::from_data(TensorData::new(v.clone(), [k, n])), v)
        };
        let x: Vec<f32> = (0..3 * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let check = |panels: &Panels, w: &[f32]| {
            let got = product(View::rows(&x, 3, k), panels);
            let want = host_gemm::product(View::rows(&x, 3, k), View::rows(w, k, n));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{g} vs {w}");
            }
        };
        let (a, av) = tensor(0.0);
        let pa = Panels::of_weight(&a, k, n);
        assert!(Arc::ptr_eq(&pa, &Panels::of_weight(&a, k, n)), "found again");
        drop(a);
        for seed in 1..4 {
            let (b, bv) = tensor(seed as f32);
            check(&Panels::of_weight(&b, k, n), &bv);
        }
        check(&pa, &av);
    }
}
