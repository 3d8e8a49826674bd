//! Loops compiled twice, plainly and for AVX2 with FMA, chosen at run time:
//! the fused CPU operations write each loop once as an `#[inline(always)]`
//! function and wrap it with [`simd_fn`].

/// Whether the CPU has AVX2 and FMA (checked once, then cached by std). On
/// other architectures the loops are compiled plainly only.
#[cfg(target_arch = "x86_64")]
pub fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `fn $name(args)` runs the `#[inline(always)]` loop `$body(args)` compiled
/// for AVX2 and FMA when the CPU has them (8-wide vectors), plainly otherwise.
/// The loops are written once; only their compilation differs. With
/// `=> fma $body`, the body takes `<const FMA: bool>`, true in the AVX2
/// build (for `f32::mul_add`, one instruction there and a library call
/// elsewhere).
macro_rules! simd_fn {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) => fma $body:ident) => {
        $(#[$m])*
        fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                $(#[$m])*
                unsafe fn fast($($a: $t),*) {
                    $body::<true>($($a),*)
                }
                if $crate::ops::simd::avx2_fma() {
                    // SAFETY: the CPU has the features (checked just above).
                    return unsafe { fast($($a),*) };
                }
            }
            $body::<false>($($a),*)
        }
    };
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) => $body:ident) => {
        $(#[$m])*
        fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                $(#[$m])*
                unsafe fn fast($($a: $t),*) {
                    $body($($a),*)
                }
                if $crate::ops::simd::avx2_fma() {
                    // SAFETY: the CPU has the features (checked just above).
                    return unsafe { fast($($a),*) };
                }
            }
            $body($($a),*)
        }
    };
}

pub(crate) use simd_fn;
