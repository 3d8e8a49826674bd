//! The one place where the CPU's vector instructions are chosen. Loops are
//! compiled plainly, for AVX2 with FMA and for AVX-512F, and picked at run
//! time: the fused CPU operations write each loop once as an
//! `#[inline(always)]` function and wrap it with [`simd_fn`].

/// The widest instruction set the loops are compiled for that this CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub enum Isa {
    /// AVX-512F with AVX2 and FMA: 16-wide vectors.
    Avx512,
    /// AVX2 with FMA: 8-wide vectors.
    Avx2,
    /// The target's baseline.
    Plain,
}

/// This CPU's [`Isa`] (the feature checks are cached by std). On other
/// architectures than x86-64 the loops are compiled plainly only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return if has!("avx512f") { Isa::Avx512 } else { Isa::Avx2 };
        }
    }
    Isa::Plain
}

/// `fn $name(args)` runs the `#[inline(always)]` loop `$body(args)` compiled
/// for the widest vectors this CPU has: AVX-512F (16 lanes), AVX2 with FMA
/// (8 lanes), or the target's baseline. The loops are written once; only
/// their compilation differs. With `=> fma $body`, the body takes
/// `<const FMA: bool>`, true in the vector builds (for `f32::mul_add`, one
/// instruction there and a library call elsewhere).
///
/// With `=> fma narrow $body`, an AVX-512 CPU runs the AVX2 build too: for
/// loops whose every vector load starts at an arbitrary float, such as the
/// depthwise convolution's shifted windows. A 64-byte load that does not
/// start on a 64-byte boundary spans two cache lines, which is the case for
/// 15 of every 16 starting floats; a 32-byte load spans two for 7 of 16.
/// Measured on one core of a Zen 4 (the convolution's K = 65 rows of 798
/// frames): 55 GFLOP/s with 16-wide vectors, 70 with 8-wide.
macro_rules! simd_fn {
    ($(#[$m:meta])* $v:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) => fma narrow $body:ident) => {
        $crate::ops::simd::simd_fn!(@dispatch $(#[$m])* $v fn $name($($a: $t),*) => $body::<true>, $body::<false>, fast);
    };
    ($(#[$m:meta])* $v:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) => fma $body:ident) => {
        $crate::ops::simd::simd_fn!(@dispatch $(#[$m])* $v fn $name($($a: $t),*) => $body::<true>, $body::<false>, widest);
    };
    ($(#[$m:meta])* $v:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) => $body:ident) => {
        $crate::ops::simd::simd_fn!(@dispatch $(#[$m])* $v fn $name($($a: $t),*) => $body, $body, widest);
    };
    (@dispatch $(#[$m:meta])* $v:vis fn $name:ident($($a:ident: $t:ty),*) => $vector:expr, $plain:expr, $on512:ident) => {
        $(#[$m])*
        $v fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(dead_code)]
                $(#[$m])*
                unsafe fn widest($($a: $t),*) {
                    $vector($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                $(#[$m])*
                unsafe fn fast($($a: $t),*) {
                    $vector($($a),*)
                }
                match $crate::ops::simd::isa() {
                    // SAFETY: the CPU has the features (checked by `isa`).
                    $crate::ops::simd::Isa::Avx512 => return unsafe { $on512($($a),*) },
                    // SAFETY: as above.
                    $crate::ops::simd::Isa::Avx2 => return unsafe { fast($($a),*) },
                    $crate::ops::simd::Isa::Plain => {}
                }
            }
            $plain($($a),*)
        }
    };
}

pub(crate) use simd_fn;

/// Elements per parallel task of [`elementwise`].
const CHUNK: usize = 1 << 14;

/// An element-wise operation over the rayon pool, in chunks of [`CHUNK`]:
/// `out = forward(x)`, or `out = backward(x, grad)` when `grad` is given,
/// where `x` is what the backward reads (the input, or the saved output).
/// The kernels are [`simd_fn`] loops.
pub(crate) fn elementwise(
    x: &[f32],
    grad: Option<&[f32]>,
    out: &mut [f32],
    forward: fn(&[f32], &mut [f32]),
    backward: fn(&[f32], &[f32], &mut [f32]),
) {
    use rayon::prelude::*;
    match grad {
        None => out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| forward(x, o)),
        Some(g) => out
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(o, (x, g))| backward(x, g, o)),
    }
}

/// The transpose of a small block, for the loops that turn channels-first
/// rows into frames-major ones and back. With both sizes fixed at compile
/// time and every index constant once unrolled, the compiler writes it as
/// vector shuffles; reading `blk[j][k]` with a running `k` inside the
/// consumer's loop instead compiles to gathers: 2.3× slower at the models'
/// 8 × 16 blocks in the AVX-512 build, about 1.1× in the AVX2 one.
#[inline(always)]
pub(crate) fn transpose_block<const R: usize, const C: usize>(blk: &[[f32; C]; R]) -> [[f32; R]; C] {
    let mut out = [[0.0f32; R]; C];
    for (k, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = blk[j][k];
        }
    }
    out
}
