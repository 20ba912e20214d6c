//! Logarithmic k-bit levels `alpha^i` (SOLO-style second-moment codes), with the base fixed or
//! chosen per block from a quantile of the block.
//!
//! Design:
//! - Levels are powers of `alpha` in `(0, 1)`, top level 1 (values are normalized by the block
//!   scale). Powers are computed by repeated multiplication in f64 starting from 1.0, each
//!   rounded to f32 only at the end: no libm, so the CUDA mirror reproduces every bit. Encoding
//!   and decoding go through [`crate::table::Table`].
//! - The per-block base is found by bisection over f32 bit patterns (positive floats order like
//!   their bits), for the largest `alpha` in `[ALPHA_MIN, ALPHA_MAX]` with
//!   `alpha^(n-1) ≤ v` (the same repeated-multiplication power). The power is monotone in
//!   `alpha` (each rounded multiply is), so bisection is exact and deterministic; ~27 steps.
//!   Rejected: `v.powf(1/(n-1))` (libm; not reproducible on the GPU bit for bit).
//! - `ALPHA_MIN = 2^-10` keeps a block with a zero quantile usable for few bits;
//!   `ALPHA_MAX = 1 - 2^-10` keeps adjacent levels at least a factor `1 - 2^-10` apart, so
//!   they never collide in f32. For many bits a tiny `alpha` underflows, and
//!   [`log_levels`] reports that instead of returning colliding levels.
//! - The quantile is by nearest rank (`floor(q·(len-1))`) with `select_nth_unstable_by` on a
//!   caller-provided scratch vector: O(len), no allocation once the scratch has capacity.

use crate::error::{Error, Result};

/// Smallest base [`alpha_from_quantile`] returns: 2^-10.
pub const ALPHA_MIN: f32 = 1.0 / 1024.0;
/// Largest base [`alpha_from_quantile`] returns: 1 - 2^-10 (exact in f32).
pub const ALPHA_MAX: f32 = 1.0 - 1.0 / 1024.0;

/// `alpha^k` by `k` repeated multiplications in f64, starting from 1.0.
#[inline]
fn pow_f64(alpha: f64, k: u32) -> f64 {
    let mut p = 1.0f64;
    for _ in 0..k {
        p *= alpha;
    }
    p
}

/// `[alpha^(n-1), …, alpha, 1]` as f32: powers by repeated f64 multiplication, each rounded.
fn magnitudes(alpha: f32, n: usize) -> Vec<f32> {
    let a = alpha as f64;
    let mut p = 1.0f64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(p as f32);
        p *= a;
    }
    out.reverse();
    out
}

/// The levels of a logarithmic `bits`-bit code with base `alpha`, ascending.
///
/// - unsigned with `zero` (1 ≤ bits ≤ 8): code 0 → 0, code `c ≥ 1` → `alpha^(2^bits-1-c)`.
/// - unsigned without zero (1 ≤ bits ≤ 8): code `c` → `alpha^(2^bits-1-c)`.
/// - `signed` (2 ≤ bits ≤ 8, `zero` must be true): with `n = 2^(bits-1) - 1` magnitudes
///   `alpha^(n-1), …, alpha, 1`: `[-1, …, -alpha^(n-1), 0, alpha^(n-1), …, 1]`
///   (`2^bits - 1` levels; the top code is unused).
///
/// The top level is always 1. Errors: `"alpha"` unless `0 < alpha < 1`, or when adjacent
/// levels collide in f32 (alpha too small for this many levels: they underflow); `"bits"`
/// outside the ranges above; `"zero"` for a signed code without zero.
pub fn log_levels(bits: u32, signed: bool, alpha: f32, zero: bool) -> Result<Vec<f32>> {
    let min_bits = if signed { 2 } else { 1 };
    if !(min_bits..=8).contains(&bits) {
        return Err(Error::value(
            "bits",
            format!(
                "expected {min_bits} <= bits <= 8 for a {} log code, got {bits}",
                if signed { "signed" } else { "unsigned" }
            ),
        ));
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(Error::value("alpha", format!("expected 0 < alpha < 1, got {alpha}")));
    }
    if signed && !zero {
        return Err(Error::value(
            "zero",
            "expected zero=true for a signed log code, got zero=false",
        ));
    }
    let levels = if signed {
        let n = (1usize << (bits - 1)) - 1;
        let pos = magnitudes(alpha, n);
        let mut l: Vec<f32> = pos.iter().rev().map(|&v| -v).collect();
        l.push(0.0);
        l.extend_from_slice(&pos);
        l
    } else if zero {
        let mut l = vec![0.0f32];
        l.extend(magnitudes(alpha, (1usize << bits) - 1));
        l
    } else {
        magnitudes(alpha, 1usize << bits)
    };
    if let Some(i) = levels.windows(2).position(|w| w[0] >= w[1]) {
        return Err(Error::value(
            "alpha",
            format!(
                "expected alpha large enough for {} distinct float32 levels, got alpha = {alpha}: \
                 the levels underflow (levels {i} and {} are both {:e})",
                levels.len(),
                i + 1,
                levels[i]
            ),
        ));
    }
    Ok(levels)
}

/// The base whose smallest nonzero level `alpha^(n_nonzero-1)` best fits the normalized
/// quantile `v` (`|x|/absmax` in `(0, 1]`): the largest f32 `alpha` in
/// `[ALPHA_MIN, ALPHA_MAX]` with `alpha^(n_nonzero-1) ≤ v`, the power taken by repeated f64
/// multiplication. Deterministic and libm-free (mirrored on the GPU).
///
/// Clamps: `v ≤ 0` (or `v` below `ALPHA_MIN^(n_nonzero-1)`) → `ALPHA_MIN`; `v ≥ 1` (or above
/// `ALPHA_MAX^(n_nonzero-1)`), NaN (an all-zero block gives 0/0) and `n_nonzero ≤ 1` →
/// `ALPHA_MAX`.
pub fn alpha_from_quantile(v: f32, n_nonzero: u32) -> f32 {
    if n_nonzero <= 1 || v.is_nan() || v >= 1.0 {
        return ALPHA_MAX;
    }
    let k = n_nonzero - 1;
    let vd = v as f64;
    let fits = |bits: u32| pow_f64(f32::from_bits(bits) as f64, k) <= vd;
    let (mut lo, mut hi) = (ALPHA_MIN.to_bits(), ALPHA_MAX.to_bits());
    if !fits(lo) {
        return ALPHA_MIN;
    }
    if fits(hi) {
        return ALPHA_MAX;
    }
    // Invariant: fits(lo) and !fits(hi). `fits` is monotone in alpha (a product of positive
    // factors, each rounded, never decreases when a factor grows), so the answer is the same
    // from any start: begin at libm's estimate v^(1/k), usually within an ulp or two, probe a
    // few neighbours, and bisect whatever bracket remains.
    let guess = (vd.powf(1.0 / k as f64) as f32).to_bits().clamp(lo, hi);
    let up = fits(guess);
    if up {
        lo = guess;
    } else {
        hi = guess;
    }
    for _ in 0..4 {
        if hi - lo <= 1 {
            break;
        }
        if up {
            if fits(lo + 1) {
                lo += 1;
            } else {
                hi = lo + 1;
            }
        } else if fits(hi - 1) {
            lo = hi - 1;
        } else {
            hi -= 1;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    f32::from_bits(lo)
}

/// The `q`-quantile of `|x|` by nearest rank: the element at index `floor(q·(len-1))` of the
/// sorted absolute values (total order, so a NaN sorts last). `q` is clamped to `[0, 1]`
/// (NaN → 0). Empty `x` → 0. Uses `scratch` as the working copy: no allocation when it already
/// has capacity for `x.len()` elements.
pub fn quantile_abs(x: &[f32], q: f32, scratch: &mut Vec<f32>) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let last = x.len() - 1;
    let k = ((q as f64 * last as f64).floor() as usize).min(last);
    if k < 16 {
        #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
        if x.len().is_multiple_of(8) && std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked just above.
            return unsafe { kth_avx2::kth_smallest_abs(x, k) };
        }
        return kth_smallest_abs(x, k);
    }
    scratch.clear();
    scratch.extend(x.iter().map(|v| v.abs()));
    let (_, kth, _) = scratch.select_nth_unstable_by(k, f32::total_cmp);
    *kth
}

/// The k-th smallest |x| (k < 16) by keeping the k+1 smallest in a sorted window: the same
/// value as the selection above, in one pass without a copy (SOLO's quantile is small, e.g.
/// k = 6 for the 5% quantile of 128 elements). |x| is compared as its bits: for floats with
/// the sign cleared (NaN included) the unsigned order of the bits is `f32::total_cmp`'s. Runs
/// of 8 elements none of which can enter the window are skipped after one vector minimum.
fn kth_smallest_abs(x: &[f32], k: usize) -> f32 {
    let mut win = [u32::MAX; 16]; // above every key (NaN keys included): k < x.len() fills it
    let w = &mut win[..=k];
    let insert = |key: u32, w: &mut [u32]| {
        if key < w[k] {
            let mut i = k;
            while i > 0 && key < w[i - 1] {
                w[i] = w[i - 1];
                i -= 1;
            }
            w[i] = key;
        }
    };
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        let keys: [u32; 8] = std::array::from_fn(|j| c[j].to_bits() & 0x7fff_ffff);
        if keys.iter().fold(u32::MAX, |m, &v| m.min(v)) < w[k] {
            keys.iter().for_each(|&key| insert(key, w));
        }
    }
    rest.iter().for_each(|v| insert(v.to_bits() & 0x7fff_ffff, w));
    f32::from_bits(w[k])
}

/// [`kth_smallest_abs`] 8 lanes wide: lane `j` keeps the `k + 1` smallest keys of elements
/// `j, j + 8, j + 16, …` in a sorted column of vectors (one min/max pair per insertion step).
/// Every one of the `k + 1` smallest keys overall is among its lane's `k + 1` smallest, so the
/// k-th smallest of the `8 (k + 1)` survivors is the answer: the same value.
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod kth_avx2 {
    use std::arch::x86_64::*;

    /// For `x.len()` a multiple of 8 and `k < 16`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn kth_smallest_abs(x: &[f32], k: usize) -> f32 {
        debug_assert!(k < 16 && x.len().is_multiple_of(8));
        macro_rules! windows {
            ($($w:literal)*) => {
                match k + 1 { $($w => columns::<$w>(x),)* _ => unreachable!() }
            };
        }
        let mut rows = windows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        if k < 8 {
            return f32::from_bits(merge_lanes(&mut rows)[k]);
        }
        let survivors: Vec<f32> = rows[..k + 1]
            .iter()
            .flat_map(|r| {
                let mut a = [0f32; 8];
                _mm256_storeu_si256(a.as_mut_ptr() as *mut __m256i, *r);
                a
            })
            .collect();
        super::kth_smallest_abs(&survivors, k)
    }

    /// The `W` smallest keys of each lane, sorted down the rows; rows `W..16` are all
    /// `u32::MAX` (above every key).
    #[inline(always)]
    unsafe fn columns<const W: usize>(x: &[f32]) -> [__m256i; 16] {
        let mask = _mm256_set1_epi32(0x7fff_ffff);
        let mut w = [_mm256_set1_epi32(-1); 16];
        for c in x.chunks_exact(8) {
            let mut v = _mm256_and_si256(_mm256_loadu_si256(c.as_ptr() as *const __m256i), mask);
            for wi in w[..W].iter_mut() {
                let lo = _mm256_min_epu32(*wi, v);
                v = _mm256_max_epu32(*wi, v);
                *wi = lo;
            }
        }
        w
    }

    /// The 8 smallest keys of all lanes, ascending, from rows 0..8 of sorted lane columns:
    /// three rounds that merge each lane with its partner 4, 2, then 1 lanes away. Merging
    /// two ascending columns `a`, `b` of 8 keeps `min(a_i, b_{7−i})`: the 8 smallest of both,
    /// as a bitonic sequence, which a half-cleaner network sorts again.
    #[inline(always)]
    unsafe fn merge_lanes(rows: &mut [__m256i; 16]) -> [u32; 8] {
        let r = &mut rows[..8];
        for round in 0..3 {
            let partner: [__m256i; 8] = std::array::from_fn(|i| {
                let v = r[7 - i];
                match round {
                    0 => _mm256_permute2x128_si256::<0x01>(v, v),
                    1 => _mm256_shuffle_epi32::<0b01_00_11_10>(v),
                    _ => _mm256_shuffle_epi32::<0b10_11_00_01>(v),
                }
            });
            for (ri, p) in r.iter_mut().zip(partner) {
                *ri = _mm256_min_epu32(*ri, p);
            }
            for gap in [4, 2, 1] {
                for i in 0..8 {
                    if i & gap == 0 {
                        let (lo, hi) = (r[i], r[i + gap]);
                        r[i] = _mm256_min_epu32(lo, hi);
                        r[i + gap] = _mm256_max_epu32(lo, hi);
                    }
                }
            }
        }
        std::array::from_fn(|i| _mm256_extract_epi32::<0>(r[i]) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_k_window_equals_selection() {
        let mut state = 12345u32;
        let special = [0.0, -0.0, f32::NAN, -f32::NAN, f32::INFINITY, -f32::INFINITY, 1e-45];
        for (len, kind) in [1usize, 2, 7, 8, 16, 17, 24, 128, 256, 300]
            .into_iter()
            .flat_map(|len| [(len, 0), (len, 1)])
        {
            let x: Vec<f32> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let sign = if state & 1 == 0 { 1.0 } else { -1.0 };
                    match (kind, state >> 29) {
                        // distinct values
                        (0, _) => ((state >> 8) as f32 / 65536.0 - 128.0) * sign,
                        // many ties, zeros of both signs, NaNs, infinities, a subnormal
                        (_, 0) => special[(state >> 8) as usize % special.len()],
                        _ => ((state >> 8) % 5) as f32 * sign,
                    }
                })
                .collect();
            for k in 0..16.min(len) {
                let mut s: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                s.sort_by(f32::total_cmp);
                assert_eq!(kth_smallest_abs(&x, k).to_bits(), s[k].to_bits(), "len {len} k {k}");
                #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
                if len % 8 == 0 && std::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 checked just above.
                    let got = unsafe { kth_avx2::kth_smallest_abs(&x, k) };
                    assert_eq!(got.to_bits(), s[k].to_bits(), "avx2, len {len} k {k}");
                }
            }
        }
    }

    #[test]
    fn small_cases() {
        assert_eq!(log_levels(2, false, 0.5, true).unwrap(), [0.0, 0.25, 0.5, 1.0]);
        assert_eq!(log_levels(2, false, 0.5, false).unwrap(), [0.125, 0.25, 0.5, 1.0]);
        assert_eq!(log_levels(1, false, 0.5, true).unwrap(), [0.0, 1.0]);
        assert_eq!(log_levels(1, false, 0.5, false).unwrap(), [0.5, 1.0]);
        assert_eq!(log_levels(2, true, 0.5, true).unwrap(), [-1.0, 0.0, 1.0]);
        assert_eq!(
            log_levels(3, true, 0.5, true).unwrap(),
            [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
        );
    }

    #[test]
    fn powers_by_repeated_multiplication() {
        let alpha = 0.9f32;
        let l = log_levels(8, false, alpha, true).unwrap();
        assert_eq!(l.len(), 256);
        let mut p = 1.0f64;
        for c in (1..256).rev() {
            assert_eq!(l[c], p as f32, "code {c}");
            p *= alpha as f64;
        }
        assert_eq!(l[0], 0.0);
        for bits in 1..=8u32 {
            for (signed, zero) in [(true, true), (false, true), (false, false)] {
                if signed && bits < 2 {
                    continue;
                }
                let l = log_levels(bits, signed, 0.7, zero).unwrap();
                assert_eq!(l.len(), (1usize << bits) - signed as usize);
                assert_eq!(*l.last().unwrap(), 1.0);
                assert!(l.windows(2).all(|w| w[0] < w[1]));
                if signed {
                    assert!(l.iter().zip(l.iter().rev()).all(|(a, b)| *a == -*b));
                }
                assert!(crate::table::Table::new(l).is_ok());
            }
        }
    }

    #[test]
    fn errors() {
        for alpha in [0.0f32, 1.0, -0.5, 1.5, f32::NAN, f32::INFINITY] {
            assert_eq!(log_levels(4, false, alpha, true).unwrap_err().arg, "alpha");
        }
        // Underflow: 0.001^254 is far below f32's smallest subnormal.
        let e = log_levels(8, false, 1e-3, true).unwrap_err();
        assert_eq!(e.arg, "alpha");
        assert!(e.msg.contains("underflow"), "{e}");
        assert_eq!(log_levels(8, false, 1e-3, false).unwrap_err().arg, "alpha");
        assert_eq!(log_levels(8, true, 1e-3, true).unwrap_err().arg, "alpha");
        // Few bits with the same alpha are fine.
        assert!(log_levels(3, false, 1e-3, true).is_ok());
        assert_eq!(log_levels(0, false, 0.5, true).unwrap_err().arg, "bits");
        assert_eq!(log_levels(1, true, 0.5, true).unwrap_err().arg, "bits");
        assert_eq!(log_levels(9, false, 0.5, true).unwrap_err().arg, "bits");
        assert_eq!(log_levels(4, true, 0.5, false).unwrap_err().arg, "zero");
    }

    #[test]
    fn alpha_brackets_v() {
        for n in [2u32, 3, 7, 15, 127, 255] {
            let k = n - 1;
            let mut prev = ALPHA_MIN;
            for i in 1..=2000 {
                let v = i as f32 / 2000.0 * 0.999 + 1e-9;
                let a = alpha_from_quantile(v, n);
                assert!((ALPHA_MIN..=ALPHA_MAX).contains(&a));
                assert!(a >= prev, "monotone in v: n {n} v {v}");
                prev = a;
                let p = pow_f64(a as f64, k);
                let up = f32::from_bits(a.to_bits() + 1);
                if a != ALPHA_MIN {
                    assert!(p <= v as f64, "n {n} v {v} a {a}");
                }
                if a != ALPHA_MAX {
                    assert!(pow_f64(up as f64, k) > v as f64, "n {n} v {v} a {a}");
                }
            }
        }
        // n = 2: alpha^1 ≤ v, largest such f32 is v itself.
        assert_eq!(alpha_from_quantile(0.3, 2), 0.3);
        // n = 3: alpha^2 ≤ 0.25 -> 0.5 exactly.
        assert_eq!(alpha_from_quantile(0.25, 3), 0.5);
    }

    /// The definition: bisection over the whole bracket, no starting guess.
    fn alpha_by_bisection(v: f32, n: u32) -> f32 {
        if n <= 1 || v.is_nan() || v >= 1.0 {
            return ALPHA_MAX;
        }
        let fits = |bits: u32| pow_f64(f32::from_bits(bits) as f64, n - 1) <= v as f64;
        let (mut lo, mut hi) = (ALPHA_MIN.to_bits(), ALPHA_MAX.to_bits());
        if !fits(lo) {
            return ALPHA_MIN;
        }
        if fits(hi) {
            return ALPHA_MAX;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        f32::from_bits(lo)
    }

    #[test]
    fn alpha_equals_bisection() {
        let mut state = 99u32;
        for n in [2u32, 3, 4, 7, 8, 15, 16, 127, 255] {
            for i in 0..20_000 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                // log-uniform v in about [2^-64, 1), plus exact powers and their neighbours
                let v = match i % 3 {
                    0 => (-((state >> 8) as f32) / (1u32 << 24) as f32 * 44.0).exp(),
                    1 => f32::from_bits((state >> 9) | 0x3f00_0000) - 0.5,
                    _ => {
                        let a = f32::from_bits(0x3a80_0000 + (state >> 10));
                        let p = pow_f64(a as f64, n - 1) as f32;
                        f32::from_bits(p.to_bits().wrapping_add(state % 3).wrapping_sub(1))
                    }
                };
                assert_eq!(
                    alpha_from_quantile(v, n).to_bits(),
                    alpha_by_bisection(v, n).to_bits(),
                    "v {v:e} n {n}"
                );
            }
        }
    }

    #[test]
    fn alpha_clamps() {
        assert_eq!(alpha_from_quantile(1.0, 15), ALPHA_MAX);
        assert_eq!(alpha_from_quantile(2.0, 15), ALPHA_MAX);
        assert_eq!(alpha_from_quantile(f32::INFINITY, 15), ALPHA_MAX);
        assert_eq!(alpha_from_quantile(f32::NAN, 15), ALPHA_MAX);
        assert_eq!(alpha_from_quantile(0.5, 1), ALPHA_MAX);
        assert_eq!(alpha_from_quantile(0.5, 0), ALPHA_MAX);
        assert_eq!(alpha_from_quantile(0.0, 15), ALPHA_MIN);
        assert_eq!(alpha_from_quantile(-1.0, 15), ALPHA_MIN);
        assert_eq!(alpha_from_quantile(f32::NEG_INFINITY, 15), ALPHA_MIN);
        assert_eq!(alpha_from_quantile(1e-30, 2), ALPHA_MIN);
        assert_eq!(alpha_from_quantile(0.9999999, 15), ALPHA_MAX);
    }

    #[test]
    fn quantiles() {
        let mut s = Vec::new();
        assert_eq!(quantile_abs(&[], 0.5, &mut s), 0.0);
        let x = [3.0f32, -1.0, 2.0, -5.0, 4.0];
        // |x| sorted: 1 2 3 4 5
        assert_eq!(quantile_abs(&x, 0.0, &mut s), 1.0);
        assert_eq!(quantile_abs(&x, 0.5, &mut s), 3.0);
        assert_eq!(quantile_abs(&x, 0.74, &mut s), 3.0); // floor(0.74*4) = 2
        assert_eq!(quantile_abs(&x, 0.75, &mut s), 4.0);
        assert_eq!(quantile_abs(&x, 1.0, &mut s), 5.0);
        assert_eq!(quantile_abs(&x, 7.0, &mut s), 5.0);
        assert_eq!(quantile_abs(&x, -1.0, &mut s), 1.0);
        assert_eq!(quantile_abs(&x, f32::NAN, &mut s), 1.0);
        assert_eq!(quantile_abs(&[-7.5], 0.3, &mut s), 7.5);
        // No allocation when scratch has capacity.
        let mut s = Vec::with_capacity(64);
        let ptr = s.as_ptr();
        let big: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.25).collect();
        let med = quantile_abs(&big, 0.5, &mut s);
        assert_eq!(s.as_ptr(), ptr);
        let mut sorted: Vec<f32> = big.iter().map(|v| v.abs()).collect();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(med, sorted[31]);
    }
}
