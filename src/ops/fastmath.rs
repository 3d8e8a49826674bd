//! `exp` and `ln` as branch-free float arithmetic, for the CPU loops that
//! [`simd_fn`](super::simd::simd_fn) compiles for several instruction sets.
//! The standard library's `exp`/`ln` are calls into libm, one value at a
//! time, which keeps every loop that contains them scalar; these inline and
//! vectorise at whatever width the enclosing loop was compiled for (a crate
//! such as `wide` fixes its vector width when the crate is compiled, which
//! for a baseline x86-64 build is SSE whatever the CPU has).

/// `a·b + c`, as one fused instruction when `FMA` (for code compiled with the
/// `fma` target feature; elsewhere `mul_add` is a library call).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x` for `x ≤ 0` down to the underflow: 2^n times a degree-6 Taylor
/// polynomial on |r| ≤ ln2/2 (relative error about 2e-7). Rounding uses the
/// 1.5·2^23 trick rather than `f32::round`, which is a library call (and
/// blocks vectorisation) without SSE4.1.
#[inline(always)]
pub(crate) fn exp_neg<const FMA: bool>(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0;
    let m = madd::<FMA>;
    let x = x.max(-87.0);
    let n = m(x, std::f32::consts::LOG2_E, ROUND) - ROUND;
    let r = m(-n, 1.428_606_8e-6, m(-n, 0.693_145_75, x));
    let p = m(r, m(r, m(r, m(r, m(r, m(r, 1.0 / 720.0, 1.0 / 120.0), 1.0 / 24.0), 1.0 / 6.0), 0.5), 1.0), 1.0);
    // SAFETY: x ∈ [-87, 0] (NaN became -87), so n ∈ [-126, 0] is finite and
    // in range; the unchecked conversion vectorises where `as` does not.
    let n: i32 = unsafe { n.to_int_unchecked() };
    f32::from_bits(((n + 127) as u32) << 23) * p
}

/// `ln x` for normal `x > 0`: `x = m·2^e` with `m ∈ [√½, √2)`, and
/// `ln(1 + f)`, `f = m − 1`, is Cephes' minimax polynomial for `logf`
/// (about 1 ulp); `e·ln 2` is added in two parts so that large exponents
/// lose nothing. Infinity, NaN, zero and negative `x` give what `f32::ln`
/// gives (an overflowed energy must not turn finite); subnormal `x` is not
/// handled (the front end's offset keeps its input above 1e-6).
#[inline(always)]
pub(crate) fn ln_pos<const FMA: bool>(x: f32) -> f32 {
    let m = madd::<FMA>;
    let bits = x.to_bits();
    // Mantissa in [0.5, 1) and its exponent.
    let half = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    let e = ((bits >> 23) & 0xff) as i32 - 126;
    let low = half < std::f32::consts::FRAC_1_SQRT_2;
    let f = if low { half + half - 1.0 } else { half - 1.0 };
    let e = (if low { e - 1 } else { e }) as f32;
    let z = f * f;
    let p = m(f, 7.037_683_6e-2, -1.151_461e-1);
    let p = m(p, f, 1.167_699_9e-1);
    let p = m(p, f, -1.242_014_1e-1);
    let p = m(p, f, 1.424_932_3e-1);
    let p = m(p, f, -1.666_805_8e-1);
    let p = m(p, f, 2.000_071_4e-1);
    let p = m(p, f, -2.499_999_4e-1);
    let p = m(p, f, 3.333_333e-1);
    let y = m(e, -2.121_944_4e-4, p * f * z);
    let y = m(-0.5, z, y);
    let ln = m(e, 0.693_359_4, f + y);
    let special = if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        x
    } else {
        f32::NAN
    };
    if x > 0.0 && x < f32::INFINITY {
        ln
    } else {
        special
    }
}

/// `tanh x` (absolute error below 2e-7): `(1 − e)/(1 + e)` with
/// `e = e^(−2|x|)` and the sign of `x`, and below |x| = 1/4, where that
/// difference would cancel, the Taylor series to `x¹¹`. NaN stays NaN.
#[inline(always)]
pub(crate) fn tanh<const FMA: bool>(x: f32) -> f32 {
    let m = madd::<FMA>;
    let a = x.abs();
    let e = exp_neg::<FMA>(-2.0 * a);
    let far = ((1.0 - e) / (1.0 + e)).copysign(x);
    let z = x * x;
    let p = m(z, -1382.0 / 155_925.0, 62.0 / 2835.0);
    let p = m(p, z, -17.0 / 315.0);
    let p = m(p, z, 2.0 / 15.0);
    let p = m(p, z, -1.0 / 3.0);
    let near = m(p * z, x, x);
    if a < 0.25 {
        near
    } else if x.is_nan() {
        x
    } else {
        far
    }
}

#[cfg(test)]
mod tests {
    use super::{exp_neg, ln_pos, tanh};

    /// Within 2 ulp of libm's `ln` over the range the front end feeds it
    /// (its offset, 1e-6, up to energies far above any recording's).
    #[test]
    fn ln_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = 1e-7f32;
        while x < 1e12 {
            for y in [x, x * 1.000_123, x * 1.5, x * 0.75] {
                let (ours, lib) = (ln_pos::<false>(y), y.ln());
                let ulp = (lib.abs().max(f32::MIN_POSITIVE) * f32::EPSILON) as f64;
                worst = worst.max(((ours - lib) as f64).abs() / ulp);
                assert!(ln_pos::<true>(y).to_bits().abs_diff(ours.to_bits()) <= 2, "{y}");
            }
            x *= 1.01;
        }
        assert!(worst <= 2.0, "ln: {worst} ulp");
        assert_eq!(ln_pos::<false>(1.0), 0.0);
        assert_eq!(ln_pos::<false>(f32::INFINITY), f32::INFINITY);
        assert_eq!(ln_pos::<false>(0.0), f32::NEG_INFINITY);
        assert!(ln_pos::<false>(f32::NAN).is_nan() && ln_pos::<false>(-1.0).is_nan());
    }

    /// Relative error below 4e-7 against libm's `exp` on [-87, 0].
    #[test]
    fn exp_matches_libm() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let (ours, lib) = (exp_neg::<false>(x), x.exp());
            assert!(((ours - lib) / lib).abs() < 4e-7, "exp({x}): {ours} against {lib}");
            x -= 0.001_37;
        }
    }

    /// Absolute error below 2e-7 against libm's `tanh`, NaN kept.
    #[test]
    fn tanh_matches_libm() {
        let mut x = -12.0f32;
        while x < 12.0 {
            for y in [x, x * 1e-3, x * 1e-6] {
                let (ours, lib) = (tanh::<false>(y), y.tanh());
                assert!((ours - lib).abs() < 2e-7, "tanh({y}): {ours} against {lib}");
            }
            x += 0.000_913;
        }
        assert!(tanh::<false>(f32::NAN).is_nan());
        assert_eq!(tanh::<false>(f32::INFINITY), 1.0);
        assert_eq!(tanh::<false>(f32::NEG_INFINITY), -1.0);
    }
}
