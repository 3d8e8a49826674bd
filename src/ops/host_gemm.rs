//! Float32 matrix products on host slices, through the `gemm` crate (the
//! kernels burn-flex itself uses), for the fused CPU operations: they work on
//! plain slices and read transposed operands through their strides, so that
//! operands need no transposed copy (small weight matrices excepted, see
//! [`transposed`]).

use super::simd::{simd_fn, transpose_block};

/// gemm's threading for one product: the rayon pool natively; on wasm32,
/// where gemm is built without rayon (no threads), the calling thread.
pub(crate) fn pool() -> gemm::Parallelism {
    #[cfg(not(target_arch = "wasm32"))]
    {
        gemm::Parallelism::Rayon(0)
    }
    #[cfg(target_arch = "wasm32")]
    {
        gemm::Parallelism::None
    }
}

/// `n` zeros, written by the whole rayon pool: the fused operations' large
/// buffers would otherwise be zero-filled on one thread while the others wait.
pub fn zeros(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    if n < 1 << 16 {
        return vec![0.0; n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(n);
    // Parallel memset of the spare capacity, then the length.
    v.spare_capacity_mut().par_chunks_mut(1 << 16).for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: all `n` elements of the capacity were just initialised.
    unsafe { v.set_len(n) };
    v
}

/// `n` floats written row by row (`t` floats a row, rows over the pool) from
/// `row(r)`, into fresh memory: no zero-filling pass before the writes. Each
/// row's iterator must yield exactly `t` values (checked).
pub fn from_rows<I: Iterator<Item = f32>>(n: usize, t: usize, row: impl Fn(usize) -> I + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    assert!(t > 0 && n.is_multiple_of(t), "{n} floats in rows of {t}");
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut().par_chunks_mut(t).enumerate().with_min_len(8).for_each(|(r, o)| {
        let mut written = 0;
        for (slot, value) in o.iter_mut().zip(row(r)) {
            slot.write(value);
            written += 1;
        }
        assert_eq!(written, t, "row {r} written short");
    });
    // SAFETY: every row of the capacity was written whole (checked above).
    unsafe { v.set_len(n) };
    v
}

/// The row-major transpose `[cols, rows]` of a row-major `[rows, cols]`
/// matrix. `gemm` runs 20–40 % slower when one operand's layout is
/// transposed relative to the others (measured at the models' shapes), so
/// small weight matrices are transposed once per call rather than read
/// through their strides.
pub fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(m.len(), rows * cols, "matrix size");
    let mut out = vec![0.0f32; rows * cols];
    transpose_simd(m, rows, cols, &mut out);
    out
}

/// Side of the square blocks [`transpose_into`] moves through registers.
const SQUARE: usize = 8;

/// [`transposed`] into `out`: `SQUARE × SQUARE` blocks are read as rows into
/// a local array and written back as its columns, so both sides move in runs
/// of eight floats (element by element, every write lands in another row);
/// the edges past the last whole block go one element at a time.
#[inline(always)]
fn transpose_into(m: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    let (rows_b, cols_b) = (rows - rows % SQUARE, cols - cols % SQUARE);
    for i0 in (0..rows_b).step_by(SQUARE) {
        for j0 in (0..cols_b).step_by(SQUARE) {
            let mut blk = [[0.0f32; SQUARE]; SQUARE];
            for (i, r) in blk.iter_mut().enumerate() {
                r.copy_from_slice(&m[(i0 + i) * cols + j0..(i0 + i) * cols + j0 + SQUARE]);
            }
            for (j, col) in transpose_block(&blk).iter().enumerate() {
                out[(j0 + j) * rows + i0..(j0 + j) * rows + i0 + SQUARE].copy_from_slice(col);
            }
        }
    }
    for i in 0..rows {
        let first = if i < rows_b { cols_b } else { 0 };
        for j in first..cols {
            out[j * rows + i] = m[i * cols + j];
        }
    }
}

simd_fn!(fn transpose_simd(m: &[f32], rows: usize, cols: usize, out: &mut [f32]) => transpose_into);

/// A read-only matrix view: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, without moving anything.
    pub fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Rows `start..start + rows` (a view).
    fn row_block(self, start: usize, rows: usize) -> Self {
        Self { data: &self.data[start * self.rs..], rows, ..self }
    }

    /// Columns `start..start + cols` (a view).
    fn col_block(self, start: usize, cols: usize) -> Self {
        Self { data: &self.data[start * self.cs..], cols, ..self }
    }

    /// Whether every element the strides reach lies inside `data`.
    pub(crate) fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` with `accumulate`; `dst` is
/// row-major `[lhs.rows, rhs.cols]`. Runs on the rayon pool.
///
/// With at least [`ROWS_PER_THREAD`] rows or columns per thread, `dst` is
/// split evenly over the pool ([`split`]) and each part is one
/// single-threaded product: at the models' shapes (a few hundred rows per
/// utterance) that ran up to 1.8× faster than `gemm`'s own split on two AVX2
/// cores (400×1024×256: 162 against 144 GFLOP/s; 256×256×400: 163 against
/// 88). Smaller products keep `gemm`'s own parallelism.
pub fn matmul(dst: &mut [f32], lhs: View, rhs: View, accumulate: bool) {
    matmul_with(dst, lhs, rhs, accumulate, true)
}

/// `dst (+)= lhs · rhs` over the pool, split by [`split`].
///
/// # Safety
/// As [`gemm_raw`], with `dst` row-major `[lhs.rows, rhs.cols]` and a
/// non-empty product (`m, k, n > 0`).
unsafe fn split_product(dst: *mut f32, lhs: View, rhs: View, accumulate: bool) {
    use rayon::prelude::*;
    let n = rhs.cols;
    // The parts take `&dst` whole: a closure naming `dst.0` would capture
    // the bare pointer, which is not `Sync`.
    let dst = SharedDst(dst);
    match split(lhs, rhs) {
        // SAFETY (all three arms): as the caller guarantees; the parts
        // write disjoint blocks of `dst`.
        Split::None => unsafe { gemm_raw(dst.0, n, lhs, rhs, accumulate, pool()) },
        Split::Rows(per) => (0..lhs.rows.div_ceil(per)).into_par_iter().for_each(|i| unsafe {
            let rows = per.min(lhs.rows - i * per);
            let d = &dst;
            gemm_raw(d.0.add(i * per * n), n, lhs.row_block(i * per, rows), rhs, accumulate, gemm::Parallelism::None)
        }),
        Split::Cols(per) => (0..n.div_ceil(per)).into_par_iter().for_each(|j| unsafe {
            let cols = per.min(n - j * per);
            let d = &dst;
            gemm_raw(d.0.add(j * per), n, lhs, rhs.col_block(j * per, cols), accumulate, gemm::Parallelism::None)
        }),
    }
}

/// A destination pointer the parts of one product share; each writes its
/// own block.
struct SharedDst(*mut f32);
// SAFETY: the parts of `split_product` write disjoint elements.
unsafe impl Sync for SharedDst {}

/// `lhs · rhs` in a new row-major `[lhs.rows, rhs.cols]` buffer, written by
/// the product alone: no zero-filling pass before it.
pub fn product(lhs: View, rhs: View) -> Vec<f32> {
    let (m, n) = (lhs.rows, rhs.cols);
    check(lhs, rhs);
    if m == 0 || n == 0 || lhs.cols == 0 {
        return vec![0.0; m * n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the spare capacity holds m·n writable floats, and `gemm` only
    // writes the destination when it is told not to read it (`accumulate`
    // false).
    unsafe { split_product(v.spare_capacity_mut().as_mut_ptr().cast(), lhs, rhs, false) };
    // SAFETY: the product wrote every one of the m·n elements.
    unsafe { v.set_len(m * n) };
    v
}

/// How [`matmul`] shares one product among the pool's threads.
enum Split {
    /// gemm's own parallelism (small products).
    None,
    /// Parts of this many rows of `dst`: each thread packs all of `rhs`.
    Rows(usize),
    /// Parts of this many columns of `dst`: each thread packs its columns
    /// of `rhs` only.
    Cols(usize),
}

/// The split of a non-empty `dst [m, n]`: by columns where `2n ≥ m`, else
/// by rows.
///
/// `gemm` packs the right operand's columns in every part, and reads the
/// left one in place. A row split packs all of `rhs` once per thread, a
/// column split each column once but has every thread read all of `lhs`;
/// since packing writes what it reads, columns cost less unless `lhs` has
/// more than about twice as many rows as `rhs` has columns. Measured on two
/// AVX2 cores (rows' time over columns'): 1.03–1.06 for the feed-forward
/// block's first product at 4 s (398 × 256 → 1024 and 384 → 1536), 1.04–1.08
/// for the 1×1 convolutions' `[C, C] · [C, T]`; 0.87–0.94 for the tall
/// weight gradient `[4C, rows] · [rows, C]`, which therefore keeps the rows.
fn split(lhs: View, rhs: View) -> Split {
    let threads = rayon::current_num_threads();
    let (m, n) = (lhs.rows, rhs.cols);
    if threads < 2 || m < ROWS_PER_THREAD {
        return Split::None;
    }
    let min = threads * ROWS_PER_THREAD;
    if n >= min && 2 * n >= m {
        return Split::Cols(n.div_ceil(threads).next_multiple_of(16));
    }
    if m < min {
        return Split::None;
    }
    Split::Rows(m.div_ceil(threads))
}

/// Fewest rows (or columns) per thread for which [`matmul`] splits them
/// itself.
pub const ROWS_PER_THREAD: usize = 64;

/// [`matmul`] on the calling thread only (for products run in parallel).
pub fn matmul_serial(dst: &mut [f32], lhs: View, rhs: View, accumulate: bool) {
    matmul_with(dst, lhs, rhs, accumulate, false)
}

fn check(lhs: View, rhs: View) {
    assert_eq!(lhs.cols, rhs.rows, "inner dimensions");
    assert!(lhs.in_bounds() && rhs.in_bounds(), "operand strides reach outside their slices");
}

/// [`matmul`] over the pool (`threaded`) or on the calling thread.
fn matmul_with(dst: &mut [f32], lhs: View, rhs: View, accumulate: bool, threaded: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    check(lhs, rhs);
    assert_eq!(dst.len(), m * n, "destination size");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: `dst` holds the m·n initialised elements of the destination.
    unsafe {
        if threaded {
            split_product(dst.as_mut_ptr(), lhs, rhs, accumulate)
        } else {
            gemm_raw(dst.as_mut_ptr(), n, lhs, rhs, accumulate, gemm::Parallelism::None)
        }
    }
}

/// `dst (+)= lhs · rhs` through `gemm`, `dst` row-major `[m, n]` with rows
/// `dst_rs` floats apart.
///
/// # Safety
/// `dst` must be valid for writing those `lhs.rows · rhs.cols` floats, and
/// for reading them (initialised) when `accumulate`; the operands must have
/// been checked with [`check`], with `lhs.cols > 0`.
unsafe fn gemm_raw(
    dst: *mut f32,
    dst_rs: usize,
    lhs: View,
    rhs: View,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    // SAFETY: as the caller guarantees; both operands stay inside their
    // slices for every (i, j) their shapes and strides address.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `dst[b] = lhs · rhs[b]` (or `+=` with `accumulate`) for every utterance,
/// `rhs [B, K, T]` and `dst [B, M, T]`: utterances in parallel when there are
/// enough of them, else one multi-threaded product after another.
pub fn per_utterance(dst: &mut [f32], lhs: View, rhs: &[f32], b: usize, t: usize, accumulate: bool) {
    let (m, k) = (lhs.rows, lhs.cols);
    let many = b >= rayon::current_num_threads();
    let each = |(bi, out): (usize, &mut [f32])| {
        let r = View::rows(&rhs[bi * k * t..(bi + 1) * k * t], k, t);
        if many {
            matmul_serial(out, lhs, r, accumulate);
        } else {
            matmul(out, lhs, r, accumulate);
        }
    };
    if many {
        use rayon::prelude::*;
        dst.par_chunks_mut(m * t).enumerate().for_each(each);
    } else {
        dst.chunks_mut(m * t).enumerate().for_each(each);
    }
}

/// `dst = Σ_b lhs[b] · rhs[b]ᵀ` over utterances, `lhs, rhs [B, ·, T]`.
/// [`per_utterance`] into a new buffer `[B, M, T]`; one utterance's product
/// is written directly ([`product`]), without a zero-filling pass.
pub fn per_utterance_new(lhs: View, rhs: &[f32], b: usize, t: usize) -> Vec<f32> {
    if b == 1 {
        return product(lhs, View::rows(rhs, lhs.cols, t));
    }
    let mut out = zeros(b * lhs.rows * t);
    per_utterance(&mut out, lhs, rhs, b, t, false);
    out
}

pub fn sum_over_utterances(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, n: usize, b: usize, t: usize) {
    for bi in 0..b {
        let l = View::rows(&lhs[bi * m * t..(bi + 1) * m * t], m, t);
        let r = View::rows(&rhs[bi * n * t..(bi + 1) * n * t], n, t).t();
        matmul(dst, l, r, bi > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View, b: View) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for l in 0..a.cols {
                    out[i * b.cols + j] += a.data[i * a.rs + l * a.cs] * b.data[l * b.rs + j * b.cs];
                }
            }
        }
        out
    }

    /// Products through every [`split`] against the naive sum, on a pool of
    /// two threads: plain and transposed operands, accumulating and not.
    #[test]
    fn splits_over_threads() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            // By rows (300 rows, 17 columns), by columns (150 rows, 203
            // columns in parts of 112 and 91), and gemm's own (5 rows).
            for (m, k, n, want_split) in [(300, 33, 17, "rows"), (150, 33, 203, "cols"), (5, 33, 17, "none")] {
                let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.013).sin()).collect();
                let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.029).cos()).collect();
                for lhs in [View::rows(&a, m, k), View::rows(&a, k, m).t()] {
                    for rhs in [View::rows(&b, k, n), View::rows(&b, n, k).t()] {
                        let got = match split(lhs, rhs) {
                            Split::None => "none",
                            Split::Rows(_) => "rows",
                            Split::Cols(_) => "cols",
                        };
                        assert_eq!(got, want_split, "{m}×{k}×{n}");
                        let want = naive(lhs, rhs);
                        let mut out = vec![1.0; m * n];
                        matmul(&mut out, lhs, rhs, true);
                        for (o, w) in out.iter().zip(&want) {
                            assert!((o - (w + 1.0)).abs() < 1e-4, "{o} vs {w} + 1");
                        }
                        matmul(&mut out, lhs, rhs, false);
                        for (o, w) in out.iter().zip(&want) {
                            assert!((o - w).abs() < 1e-4, "{o} vs {w}");
                        }
                        let got = product(lhs, rhs);
                        assert_eq!(got.len(), m * n);
                        for (o, w) in got.iter().zip(&want) {
                            assert!((o - w).abs() < 1e-4, "product: {o} vs {w}");
                        }
                    }
                }
            }
        });
    }

    #[test]
    fn rows_are_written_whole() {
        let v = from_rows(12, 4, |r| (0..4).map(move |i| (10 * r + i) as f32));
        assert_eq!(v, [0., 1., 2., 3., 10., 11., 12., 13., 20., 21., 22., 23.]);
        let short = std::panic::catch_unwind(|| from_rows(8, 4, |_| std::iter::repeat_n(1.0, 3)));
        assert!(short.is_err(), "a row written short must not pass");
    }

    #[test]
    fn transposes_by_blocks() {
        let (m, k) = (300, 33);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.013).sin()).collect();
        // Whole 8×8 blocks and both edges (300 = 37·8 + 4 rows, 33 = 4·8 + 1 columns).
        let t = transposed(&a, m, k);
        for (i, j) in [(7, 5), (0, 0), (299, 32), (296, 31), (5, 32), (299, 3)] {
            assert_eq!(t[j * m + i], a[i * k + j], "({i}, {j})");
        }
        assert_eq!(transposed(&t, k, m), a);
    }

    #[test]
    fn transposed_views_and_accumulation() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..35).map(|i| (i as f32 * 0.11).cos()).collect();
        // [5, 7] × ([5, 7])ᵀ = [5, 5]
        let (va, vb) = (View::rows(&a, 5, 7), View::rows(&b, 5, 7).t());
        let mut out = vec![0.0; 25];
        matmul(&mut out, va, vb, false);
        let want = naive(va, vb);
        for (o, w) in out.iter().zip(&want) {
            assert!((o - w).abs() < 1e-5, "{o} vs {w}");
        }
        matmul(&mut out, va, vb, true);
        for (o, w) in out.iter().zip(&want) {
            assert!((o - 2.0 * w).abs() < 1e-5, "{o} vs 2·{w}");
        }
        // ([5, 7])ᵀ × [5, 7] = [7, 7]
        let mut out = vec![0.0; 49];
        matmul(&mut out, va.t(), View::rows(&b, 5, 7), false);
        let want = naive(va.t(), View::rows(&b, 5, 7));
        for (o, w) in out.iter().zip(&want) {
            assert!((o - w).abs() < 1e-5, "{o} vs {w}");
        }
    }
}
