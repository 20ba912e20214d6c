//! Run-time choice of AVX2 code for the hot loops.
//!
//! `avx2_or_baseline!` defines a function whose body is compiled twice: once for the
//! baseline target and once with AVX2 enabled (where LLVM vectorizes 8 lanes wide, with
//! `vpmaxud`, variable shifts and 256-bit divisions). The AVX2 copy runs where the CPU has
//! it (std caches the check). Both copies perform the same IEEE operations in the same order
//! (Rust never contracts `a * b + c` into an FMA), so the results are the same bits.

/// Define `fn NAME<const ..>(ARGS) -> RET { BODY }` with a baseline and an AVX2 copy of
/// `BODY`, chosen at run time.
macro_rules! avx2_or_baseline {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident $(<$(const $c:ident: $ct:ty),*>)? ($($arg:ident: $ty:ty),* $(,)?)
        $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name $(<$(const $c: $ct),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[allow(clippy::too_many_arguments)]
            #[inline(always)]
            fn body $(<$(const $c: $ct),*>)? ($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2 $(<$(const $c: $ct),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body $(::<$($c),*>)? ($($arg),*)
            }

            #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { avx2 $(::<$($c),*>)? ($($arg),*) };
            }
            body $(::<$($c),*>)? ($($arg),*)
        }
    };
}

pub(crate) use avx2_or_baseline;

// ---------------------------------------------------------------- float16 ↔ float32
//
// Design:
// - Decoding a format whose codes are the leading bits of float16 patterns (float16 itself,
//   float8_e5m2, any e5mY with IEEE specials) is a shift into a float16 pattern and an exact
//   widening to float32; NaN codes become the canonical quiet NaN with their sign, as the
//   general decoder gives (payloads are not kept), so the bits equal the table path's.
// - Encoding float32 to float16 with round to nearest even and overflow to inf is
//   `vcvtps2ph` with immediate 0 (IEEE round to nearest even, subnormals kept, MXCSR's
//   flush-to-zero not used); NaN inputs become the canonical quiet NaN with their sign, as
//   the element encoder gives.
// - F16C (with AVX2) where the CPU has it, chosen at run time; elsewhere, and for the tails,
//   branch-free scalar code that LLVM vectorizes. Tests hold the two equal and equal to the
//   element code. Rejected: a 64Ki-entry table for float16 (a gather per element, and 256 KiB
//   of cache), and Rust's `f16` type (unstable).

/// The float32 bits of the float16 pattern `h` (low 16 bits), NaN canonicalized
/// (sign | 0x7fc00000).
#[inline(always)]
pub(crate) fn f16_to_f32_bits(h: u32) -> u32 {
    let sign = (h & 0x8000) << 16;
    let a = h & 0x7fff;
    let normal = (a << 13) + ((127 - 15) << 23);
    // a subnormal is a · 2^-24 with a < 2^10: exact in float32, and never itself subnormal
    let sub = ((a as f32) * f32::from_bits((127 - 24) << 23)).to_bits();
    let mag = if a > 0x7c00 {
        0x7fc0_0000
    } else if a == 0x7c00 {
        0x7f80_0000
    } else if a < 0x0400 {
        sub
    } else {
        normal
    };
    mag | sign
}

/// Codes of one width, borrowed.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum CodeSlice<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
}

impl CodeSlice<'_> {
    fn len(&self) -> usize {
        match self {
            CodeSlice::U8(c) => c.len(),
            CodeSlice::U16(c) => c.len(),
            CodeSlice::U32(c) => c.len(),
        }
    }

    #[inline(always)]
    #[cfg_attr(not(all(target_arch = "x86_64", not(feature = "portable"))), allow(dead_code))]
    fn get(&self, i: usize) -> u32 {
        match self {
            CodeSlice::U8(c) => c[i] as u32,
            CodeSlice::U16(c) => c[i] as u32,
            CodeSlice::U32(c) => c[i],
        }
    }
}

/// How many of `out`'s first elements lie before its first 64-byte boundary (all of them
/// when none does). A vector loop that starts there stores whole cache lines: NumPy's
/// arrays begin 16 bytes past one, so an unpeeled loop's every 64-byte store (every other
/// 32-byte one) writes two lines. Before the loops peeled their heads, float8_e4m3fn codes
/// (16Mi, 2 threads, one process, with other buffers in turn) decoded into an output 16
/// bytes past a line at 3.5–5.1 G/s and into one on a line at 4.6–6.9; after, the two were
/// the same within noise. With nothing else in turn the gain was within the noise (≤ 5%).
#[inline(always)]
pub(crate) fn unaligned_head<T>(out: &[T]) -> usize {
    let to_line = (out.as_ptr() as usize).wrapping_neg() % 64;
    (to_line / std::mem::size_of::<T>().max(1)).min(out.len())
}

/// `out[i] = f32::from_bits(widen(codes[i]))`; returns the OR of the codes.
#[inline(always)]
fn widen_loop<C: Copy + Into<u32>>(
    codes: &[C],
    out: &mut [f32],
    widen: impl Fn(u32) -> u32,
) -> u32 {
    let mut any = 0u32;
    let head = unaligned_head(out).min(codes.len());
    let (o0, o1) = out.split_at_mut(head);
    for (os, cs) in [(o0, &codes[..head]), (o1, &codes[head..])] {
        for (o, &c) in os.iter_mut().zip(cs) {
            any |= c.into();
            *o = f32::from_bits(widen(c.into()));
        }
    }
    any
}

avx2_or_baseline! {
    /// Float16-prefix codes (u8) to float32; returns the OR of the codes.
    fn widen_f16_u8(codes: &[u8], shift: u32, out: &mut [f32]) -> u32 {
        widen_loop(codes, out, |c| f16_to_f32_bits(c << shift))
    }
}

avx2_or_baseline! {
    /// Float16-prefix codes (u16) to float32; returns the OR of the codes.
    fn widen_f16_u16(codes: &[u16], shift: u32, out: &mut [f32]) -> u32 {
        widen_loop(codes, out, |c| f16_to_f32_bits(c << shift))
    }
}

avx2_or_baseline! {
    /// Float16-prefix codes (u32) to float32; returns the OR of the codes (codes ≥ 2^16
    /// show there; their outputs are then replaced by the caller's error).
    fn widen_f16_u32(codes: &[u32], shift: u32, out: &mut [f32]) -> u32 {
        widen_loop(codes, out, |c| f16_to_f32_bits((c << shift) & 0xffff))
    }
}

avx2_or_baseline! {
    /// Float32-prefix codes (bfloat16-like, u8) to float32: `code << shift` is the float32
    /// pattern (NaNs keep their payloads); returns the OR of the codes.
    fn widen_f32_u8(codes: &[u8], shift: u32, out: &mut [f32]) -> u32 {
        widen_loop(codes, out, |c| c << shift)
    }
}

avx2_or_baseline! {
    /// As `widen_f32_u8` for u16 codes.
    fn widen_f32_u16(codes: &[u16], shift: u32, out: &mut [f32]) -> u32 {
        widen_loop(codes, out, |c| c << shift)
    }
}

avx2_or_baseline! {
    /// As `widen_f32_u8` for u32 codes.
    fn widen_f32_u32(codes: &[u32], shift: u32, out: &mut [f32]) -> u32 {
        widen_loop(codes, out, |c| c << shift)
    }
}

/// Codes of a float32-prefix format (`shift` = 23 − mantissa bits) to float32; returns the
/// OR of the codes so that the caller can check their range.
pub(crate) fn widen_f32(codes: CodeSlice, shift: u32, out: &mut [f32]) -> u32 {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if let (CodeSlice::U16(c), true) = (codes, has_avx512()) {
        // SAFETY: the CPU supports these AVX-512 subsets, checked just above.
        return unsafe { avx512::widen_f32_u16(c, shift, out) };
    }
    match codes {
        CodeSlice::U8(c) => widen_f32_u8(c, shift, out),
        CodeSlice::U16(c) => widen_f32_u16(c, shift, out),
        CodeSlice::U32(c) => widen_f32_u32(c, shift, out),
    }
}

/// `out[i]` = the float32 value of the float16 pattern `codes[i] << shift` (NaN
/// canonicalized), for codes of a format that is a float16 prefix (`shift` = 10 − mantissa
/// bits); returns the OR of all codes so that the caller can check their range. u16 codes
/// take 16 lanes per step with AVX-512: at 2 threads (16Mi float16 codes, 3 A/B rounds) the
/// 8-lane F16C loop made 4.8–5.3 G/s and this one 5.8–6.0, against a uint16 → float32 cast
/// of 6.5–7.1 (at 1 thread both were within noise of the cast).
pub(crate) fn widen_f16(codes: CodeSlice, shift: u32, out: &mut [f32]) -> u32 {
    debug_assert_eq!(codes.len(), out.len());
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if has_avx512() && std::is_x86_feature_detected!("f16c") {
        if let CodeSlice::U16(c) = codes {
            // SAFETY: the CPU supports these AVX-512 subsets and F16C, checked just above.
            return unsafe { avx512::widen_f16(c, shift, out) };
        }
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports F16C and AVX2, checked just above.
        return unsafe { f16c::widen(codes, shift, out) };
    }
    widen_portable(codes, shift, out)
}

/// [`widen_f16`] without F16C.
pub(crate) fn widen_portable(codes: CodeSlice, shift: u32, out: &mut [f32]) -> u32 {
    match codes {
        CodeSlice::U8(c) => widen_f16_u8(c, shift, out),
        CodeSlice::U16(c) => widen_f16_u16(c, shift, out),
        CodeSlice::U32(c) => widen_f16_u32(c, shift, out),
    }
}

/// Encode float32 to float16 codes, round to nearest even, overflow to inf, NaN to the
/// canonical quiet NaN with its sign, with F16C; `false` (nothing written) where the CPU
/// has no F16C (the caller's element code then does it).
pub(crate) fn narrow_f16(x: &[f32], out: &mut [u16]) -> bool {
    debug_assert_eq!(x.len(), out.len());
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if has_avx512() && std::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU supports these AVX-512 subsets and F16C (the tail's), checked just
        // above.
        unsafe { avx512::narrow_f16(x, out) };
        return true;
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports F16C and AVX2, checked just above.
        unsafe { f16c::narrow(x, out) };
        return true;
    }
    false
}

/// Round to nearest even by add-and-shift from float32 (`exmy::truncate_nearest`, which
/// holds the formula): `code = (bits + half + ((bits >> shift) & lsb)) >> shift`, NaN to
/// `qnan[sign]`.
pub(crate) struct Truncate {
    pub shift: u32,
    pub half: u32,
    pub lsb: u32,
    pub qnan: [u32; 2],
}

/// [`Truncate`] into u16 codes over the longest prefix of `x` that is a multiple of 32
/// elements, with AVX-512; returns how many it did (0 without AVX-512: the caller's scalar
/// code does the rest). float32 → bfloat16 at one thread: 256Ki values (in cache) 6.5 G/s
/// against 5.5 for the scalar code as LLVM vectorizes it, 16Mi values 3.5 against 2.7
/// (torch 2.8). Into bfloat16 where the CPU has AVX512-BF16, `vcvtne2ps2bf16` (one process,
/// in turns, 2 runs; 1 / 2 threads, G/s): 256Ki 8.3–8.9 / 17.7–21.1 against 6.9–7.0 /
/// 14.4–15.3 for this loop; 16Mi 3.8–3.9 / 8.0–8.2 against 2.9–3.0 / 5.9–7.6 (torch
/// 2.3–2.5 / 5.0–6.6).
pub(crate) fn truncate_u16(t: &Truncate, x: &[f32], out: &mut [u16]) -> usize {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if t.shift == 16 && has_avx512() && std::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the CPU supports these AVX-512 subsets, checked just above.
        return unsafe { avx512::truncate_bf16(t, x, out) };
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if has_avx512() {
        // SAFETY: the CPU supports these AVX-512 subsets, checked just above.
        return unsafe { avx512::truncate_u16(t, x, out) };
    }
    let _ = (t, x, out);
    0
}

/// Ask for the cache lines of `s` ahead of their use (x86-64: `prefetcht0`, part of the
/// baseline; elsewhere nothing). For a loop that computes for a while before it reads a
/// chunk (stochastic rounding makes the chunk's random words first): the hardware prefetcher
/// follows reads only, so without this the chunk's first lines would arrive after the
/// compute, not during it.
#[inline(always)]
pub(crate) fn prefetch<T>(s: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = s.as_ptr() as *const i8;
        let bytes = std::mem::size_of_val(s);
        for off in (0..bytes).step_by(64) {
            // SAFETY: a prefetch of an address inside `s`; it never faults or writes.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.add(off))
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

/// Whether the CPU has the AVX-512 subsets (F, BW, VL, DQ) the 16-lane loops are compiled for.
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
pub(crate) fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512dq")
}

// ---------------------------------------------------------------- byte codes by table
//
// Design: decoding byte codes of a format of at most 8 bits is a lookup in its value table
// (256 float32 at most: 16 vector registers). With AVX-512 the table stays in registers and
// a lookup is `vpermi2ps` (32 entries by the low 5 bits of the code) on each pair of
// registers, then a blend per higher code bit: 16 codes in 2^(bits−4) − 1 + (bits − 5)
// operations, no memory access but the codes and the output (a gather would load each
// element). With AVX2 only, 8 scalar loads assembled into a vector; elsewhere, a scalar loop
// over the table padded to 256 entries (no bounds check).

/// A value table of at most 256 float32 entries, prepared for lookups by byte code
/// ([`Lut::apply`]).
#[derive(Debug, Clone)]
pub(crate) struct Lut {
    /// The entries, padded with zeros to 256 (any byte indexes it).
    t: [f32; 256],
    len: usize,
    /// Code bits the lookup uses (4..=8): with `signed`, the bits below the sign bit.
    #[cfg_attr(not(all(target_arch = "x86_64", not(feature = "portable"))), allow(dead_code))]
    bits: u32,
    /// Whether the upper half of the table is its lower half negated (every signed format
    /// without a code −0 taken for NaN): looked up by the low bits, the top bit flips the sign.
    #[cfg_attr(not(all(target_arch = "x86_64", not(feature = "portable"))), allow(dead_code))]
    signed: bool,
}

impl Lut {
    pub(crate) fn new(table: &[f32]) -> Lut {
        debug_assert!(table.len() <= 256);
        let len = table.len().min(256);
        let mut t = [0f32; 256];
        t[..len].copy_from_slice(&table[..len]);
        let bits = len.next_power_of_two().trailing_zeros().max(4);
        let half = len / 2;
        let signed = bits >= 5
            && len == 1 << bits
            && (0..half).all(|c| t[c + half].to_bits() == t[c].to_bits() ^ 0x8000_0000);
        Lut { t, len, bits: bits - signed as u32, signed }
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `out[i] = table[codes[i]]`, times `scale` where given (one IEEE multiplication);
    /// returns the largest code. Where a code is ≥ the number of entries, its output is
    /// unspecified (the caller reports the code).
    pub(crate) fn apply(&self, codes: &[u8], scale: Option<f32>, out: &mut [f32]) -> u8 {
        debug_assert_eq!(codes.len(), out.len());
        #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
        if avx512_loops() {
            // SAFETY: the CPU supports these AVX-512 subsets, checked just above.
            return unsafe { self.apply_avx512(codes, scale, out) };
        }
        #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
        if std::is_x86_feature_detected!("avx2") {
            let n = codes.len().min(out.len());
            // SAFETY: AVX2 checked just above; the table has 256 entries, so every byte
            // indexes it; both slices hold n elements.
            let done = unsafe { avx2::lut(&self.t, &codes[..n], scale, &mut out[..n]) };
            let head = codes[..done].iter().fold(0u8, |m, &c| m.max(c));
            return head.max(self.apply_scalar(&codes[done..n], scale, &mut out[done..n]));
        }
        self.apply_scalar(codes, scale, out)
    }

    fn apply_scalar(&self, codes: &[u8], scale: Option<f32>, out: &mut [f32]) -> u8 {
        match scale {
            Some(s) => lut_scalar::<true>(&self.t, codes, s, out),
            None => lut_scalar::<false>(&self.t, codes, 1.0, out),
        }
    }

    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    unsafe fn apply_avx512(&self, codes: &[u8], scale: Option<f32>, out: &mut [f32]) -> u8 {
        macro_rules! go {
            ($($b:literal),*) => {
                match (self.bits, self.signed, scale) {
                    $(
                        ($b, false, None) => avx512::lut::<$b, false, false>(&self.t, codes, 1.0, out),
                        ($b, true, None) => avx512::lut::<$b, true, false>(&self.t, codes, 1.0, out),
                        ($b, false, Some(s)) => avx512::lut::<$b, false, true>(&self.t, codes, s, out),
                        ($b, true, Some(s)) => avx512::lut::<$b, true, true>(&self.t, codes, s, out),
                    )*
                    (_, _, None) => avx512::lut::<8, false, false>(&self.t, codes, 1.0, out),
                    (_, _, Some(s)) => avx512::lut::<8, false, true>(&self.t, codes, s, out),
                }
            };
        }
        go!(4, 5, 6, 7)
    }
}

/// Whether the AVX-512 loops run here (an x86-64 CPU with the subsets of `has_avx512`, and
/// not the portable build): [`Lut::apply`] then keeps its table in vector registers rather
/// than loading its entries one by one, and `stochastic16` reads its halves in place.
pub(crate) fn avx512_loops() -> bool {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if has_avx512() {
        return true;
    }
    false
}

/// [`Lut::apply`] without SIMD (also the AVX-512 loop's tail).
fn lut_scalar<const SCALE: bool>(t: &[f32; 256], codes: &[u8], s: f32, out: &mut [f32]) -> u8 {
    let mut max = 0u8;
    for (o, &c) in out.iter_mut().zip(codes) {
        max = max.max(c);
        *o = if SCALE { t[c as usize] * s } else { t[c as usize] };
    }
    max
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::Lut::apply`] without AVX-512, over the first multiple of 8 elements; returns
    /// how many were done. The 8 entries are scalar loads (indices from one 64-bit word of
    /// codes) assembled into a vector: on Zen 3 about half the time of a `vgatherdps`, whose
    /// microcode is the bottleneck here.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn lut(
        t: &[f32; 256],
        codes: &[u8],
        scale: Option<f32>,
        out: &mut [f32],
    ) -> usize {
        let sv = _mm256_set1_ps(scale.unwrap_or(1.0));
        let tp = t.as_ptr();
        let full = codes.len().min(out.len()) / 8 * 8;
        for j in (0..full).step_by(8) {
            let w = (codes.as_ptr().add(j) as *const u64).read_unaligned();
            let l = |k: u32| *tp.add(((w >> (8 * k)) & 0xff) as usize);
            let mut v = _mm256_setr_ps(l(0), l(1), l(2), l(3), l(4), l(5), l(6), l(7));
            if scale.is_some() {
                v = _mm256_mul_ps(v, sv);
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(j), v);
        }
        full
    }
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::widen_f16`] of u16 codes, 16 per step (`vcvtph2ps` on 512 bits); the NaN
    /// canonicalization runs only for a vector that holds a NaN (found on the float16
    /// patterns). The tail goes through the F16C loop.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c,avx2")]
    pub(super) unsafe fn widen_f16(codes: &[u16], shift: u32, out: &mut [f32]) -> u32 {
        let n = codes.len().min(out.len());
        let count = _mm_cvtsi32_si128(shift as i32);
        let (abs, inf) = (_mm256_set1_epi16(0x7fff), _mm256_set1_epi16(0x7c00));
        let (sign, qnan) = (_mm512_set1_epi32(i32::MIN), _mm512_set1_epi32(0x7fc0_0000));
        let mut any = _mm256_setzero_si256();
        let mut i = super::unaligned_head(&out[..n]);
        let head = super::f16c::widen(super::CodeSlice::U16(&codes[..i]), shift, &mut out[..i]);
        while i + 16 <= n {
            let c = _mm256_loadu_si256(codes.as_ptr().add(i) as *const _);
            any = _mm256_or_si256(any, c);
            let h = _mm256_sll_epi16(c, count);
            let mut v = _mm512_castps_si512(_mm512_cvtph_ps(h));
            let nan = _mm256_cmpgt_epu16_mask(_mm256_and_si256(h, abs), inf);
            if nan != 0 {
                let q = _mm512_ternarylogic_epi32::<0xea>(v, sign, qnan); // (v & sign) | qnan
                v = _mm512_mask_mov_epi32(v, nan, q);
            }
            _mm512_storeu_si512(out.as_mut_ptr().add(i) as *mut _, v);
            i += 16;
        }
        let lanes: [u16; 16] = std::mem::transmute(any);
        let or = lanes.iter().fold(head, |a, &l| a | l as u32);
        or | super::f16c::widen(super::CodeSlice::U16(&codes[i..n]), shift, &mut out[i..n])
    }

    /// [`super::widen_f32`] of u16 codes (bfloat16), 16 per step on 512 bits, the stores
    /// aligned: at 2 threads (16Mi bfloat16 codes) the 8-lane loop made ~0.88× of a uint16 →
    /// float32 cast and this one ~0.95–1.0× (see docs/benchmarks_codecs.md). The head and
    /// the tail go through the 8-lane loop.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn widen_f32_u16(codes: &[u16], shift: u32, out: &mut [f32]) -> u32 {
        let n = codes.len().min(out.len());
        let mut i = super::unaligned_head(&out[..n]);
        let head = super::widen_f32_u16(&codes[..i], shift, &mut out[..i]);
        let count = _mm_cvtsi32_si128(shift as i32);
        let mut any = _mm512_setzero_si512();
        while i + 16 <= n {
            let c = _mm512_cvtepu16_epi32(_mm256_loadu_si256(codes.as_ptr().add(i) as *const _));
            any = _mm512_or_si512(any, c);
            _mm512_storeu_si512(out.as_mut_ptr().add(i) as *mut _, _mm512_sll_epi32(c, count));
            i += 16;
        }
        let or = head | _mm512_reduce_or_epi32(any) as u32;
        or | super::widen_f32_u16(&codes[i..n], shift, &mut out[i..n])
    }

    /// The entry of 16 codes (u32 lanes of `idx`) in a table of 2^B entries held in `t`.
    #[inline(always)]
    unsafe fn look<const B: u32>(t: &[__m512; 16], idx: __m512i) -> __m512 {
        if B <= 4 {
            return _mm512_permutexvar_ps(idx, t[0]);
        }
        // entries 32j .. 32j + 32 by the low 5 bits, then one blend per higher bit, halving
        // the candidates
        let mut level = [_mm512_setzero_ps(); 8];
        for (j, l) in level.iter_mut().enumerate().take(1 << (B - 5)) {
            *l = _mm512_permutex2var_ps(t[2 * j], idx, t[2 * j + 1]);
        }
        for b in 5..B {
            let m = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(1 << b));
            for j in 0..1usize << (B - 1 - b) {
                level[j] = _mm512_mask_blend_ps(m, level[2 * j], level[2 * j + 1]);
            }
        }
        level[0]
    }

    /// The lookup of [`super::Lut::apply`] in a table of 2^B entries or, with `SIGN`, of
    /// 2^(B+1) entries whose upper half is the lower half negated (code bit B flips the
    /// sign); with `SCALE`, times `s`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn lut<const B: u32, const SIGN: bool, const SCALE: bool>(
        t: &[f32; 256],
        codes: &[u8],
        s: f32,
        out: &mut [f32],
    ) -> u8 {
        let regs: [__m512; 16] = std::array::from_fn(|j| _mm512_loadu_ps(t.as_ptr().add(16 * j)));
        let n = codes.len().min(out.len());
        let sv = _mm512_set1_ps(s);
        let mut max = _mm_setzero_si128();
        let mut i = super::unaligned_head(&out[..n]);
        let head = super::lut_scalar::<SCALE>(t, &codes[..i], s, &mut out[..i]);
        while i + 16 <= n {
            let c = _mm_loadu_si128(codes.as_ptr().add(i) as *const _);
            max = _mm_max_epu8(max, c);
            let idx = _mm512_cvtepu8_epi32(c);
            let mut v = look::<B>(&regs, idx);
            if SIGN {
                let neg = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(1 << B));
                v = _mm512_mask_xor_ps(v, neg, v, _mm512_set1_ps(-0.0));
            }
            if SCALE {
                v = _mm512_mul_ps(v, sv);
            }
            _mm512_storeu_ps(out.as_mut_ptr().add(i), v);
            i += 16;
        }
        let lanes: [u8; 16] = std::mem::transmute(max);
        let max = lanes.iter().fold(head, |a, &l| a.max(l));
        max.max(super::lut_scalar::<SCALE>(t, &codes[i..n], s, &mut out[i..n]))
    }

    /// The codes of [`super::Truncate`] of 16 float32 values at `p`, as u16 lanes.
    #[inline(always)]
    unsafe fn truncate16(t: &super::Truncate, p: *const f32) -> __m256i {
        let count = _mm_cvtsi32_si128(t.shift as i32);
        let b = _mm512_loadu_si512(p as *const _);
        let lsb = _mm512_and_si512(_mm512_srl_epi32(b, count), _mm512_set1_epi32(t.lsb as i32));
        let up = _mm512_add_epi32(_mm512_set1_epi32(t.half as i32), lsb);
        let mut r = _mm512_srl_epi32(_mm512_add_epi32(b, up), count);
        let abs = _mm512_and_si512(b, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
        if nan != 0 {
            let (qpos, qneg) = (t.qnan[0] as i32, t.qnan[1] as i32);
            let q = _mm512_mask_blend_epi32(
                _mm512_movepi32_mask(b),
                _mm512_set1_epi32(qpos),
                _mm512_set1_epi32(qneg),
            );
            r = _mm512_mask_mov_epi32(r, nan, q);
        }
        _mm512_cvtepi32_epi16(r)
    }

    /// The codes of [`super::Truncate`] of 32 float32 values at `p`, as u16 lanes.
    #[inline(always)]
    unsafe fn truncate32(t: &super::Truncate, p: *const f32) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(truncate16(t, p)), truncate16(t, p.add(16)))
    }

    /// [`super::truncate_u16`]: 32 elements per step, one 64-byte store.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn truncate_u16(t: &super::Truncate, x: &[f32], out: &mut [u16]) -> usize {
        let n = x.len().min(out.len()) / 32 * 32;
        for i in (0..n).step_by(32) {
            _mm512_storeu_si512(
                out.as_mut_ptr().add(i) as *mut _,
                truncate32(t, x.as_ptr().add(i)),
            );
        }
        n
    }

    /// [`truncate_u16`] into bfloat16 (`t.shift` 16) with `vcvtne2ps2bf16`: the same round to
    /// nearest even, 32 elements per instruction. It reads a subnormal input as zero and
    /// quiets a NaN by its own rule, so 32 elements with either go through [`truncate32`];
    /// the test is on the bits, not `vfpclassps`, which MXCSR's DAZ flag (set by
    /// `torch.set_flush_denormal(True)`) blinds to subnormals.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
    pub(super) unsafe fn truncate_bf16(t: &super::Truncate, x: &[f32], out: &mut [u16]) -> usize {
        let n = x.len().min(out.len()) / 32 * 32;
        // with the sign shifted out, minus the smallest normal's: zero is 0xff00_0000,
        // subnormals lie above it, normals and infinities at or below 0xfe00_0000, NaNs
        // between the two
        let (min2, top, zero) = (
            _mm512_set1_epi32(0x0100_0000),
            _mm512_set1_epi32(0xfe00_0000u32 as i32),
            _mm512_set1_epi32(0xff00_0000u32 as i32),
        );
        let odd = |v: __m512i| {
            let w = _mm512_sub_epi32(_mm512_add_epi32(v, v), min2);
            _mm512_mask_cmpneq_epu32_mask(_mm512_cmpgt_epu32_mask(w, top), w, zero)
        };
        for i in (0..n).step_by(32) {
            let p = x.as_ptr().add(i);
            let (lo, hi) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            let h = if odd(_mm512_castps_si512(lo)) | odd(_mm512_castps_si512(hi)) == 0 {
                std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
            } else {
                truncate32(t, p)
            };
            _mm512_storeu_si512(out.as_mut_ptr().add(i) as *mut _, h);
        }
        n
    }

    /// [`super::narrow_f16`] 32 lanes at a time (two `vcvtps2ph`, one store; the NaN
    /// fix-up of `f16c::narrow` only for a vector that has a NaN, found on the float16
    /// patterns: `vcvtps2ph` turns every NaN into a float16 NaN); the tail through the AVX2
    /// loop.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c")]
    pub(super) unsafe fn narrow_f16(x: &[f32], out: &mut [u16]) {
        let n = x.len().min(out.len());
        let (abs, inf) = (_mm512_set1_epi16(0x7fff), _mm512_set1_epi16(0x7c00));
        let mut i = super::unaligned_head(&out[..n]);
        super::f16c::narrow(&x[..i], &mut out[..i]);
        while i + 32 <= n {
            let v0 = _mm512_loadu_ps(x.as_ptr().add(i));
            let v1 = _mm512_loadu_ps(x.as_ptr().add(i + 16));
            let h0 = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v0);
            let h1 = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v1);
            let mut h = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(h0), h1);
            let nan = _mm512_cmpgt_epu16_mask(_mm512_and_si512(h, abs), inf);
            if nan != 0 {
                // sign | 0x7e00
                let qnan = _mm512_ternarylogic_epi32::<0xea>(
                    h,
                    _mm512_set1_epi16(-0x8000),
                    _mm512_set1_epi16(0x7e00),
                );
                h = _mm512_mask_mov_epi16(h, nan, qnan);
            }
            _mm512_storeu_si512(out.as_mut_ptr().add(i) as *mut _, h);
            i += 32;
        }
        super::f16c::narrow(&x[i..n], &mut out[i..n]);
    }
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod f16c {
    use super::CodeSlice;
    use std::arch::x86_64::*;

    /// Eight float16 patterns (u16 lanes of `h`) to float32, NaN canonicalized.
    #[inline(always)]
    unsafe fn widen8(h: __m128i) -> __m256 {
        let v = _mm256_castps_si256(_mm256_cvtph_ps(h));
        let abs = _mm256_and_si256(v, _mm256_set1_epi32(0x7fff_ffff));
        let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
        let sign = _mm256_andnot_si256(_mm256_set1_epi32(0x7fff_ffff), v);
        let qnan = _mm256_or_si256(sign, _mm256_set1_epi32(0x7fc0_0000));
        _mm256_castsi256_ps(_mm256_blendv_epi8(v, qnan, nan))
    }

    /// Eight codes as u16 lanes, from `c` at `i` (8 available).
    #[inline(always)]
    unsafe fn load8(c: CodeSlice, i: usize) -> __m128i {
        match c {
            CodeSlice::U8(c) => _mm_cvtepu8_epi16(_mm_loadl_epi64(c.as_ptr().add(i) as *const _)),
            CodeSlice::U16(c) => _mm_loadu_si128(c.as_ptr().add(i) as *const _),
            CodeSlice::U32(c) => {
                let v = _mm256_loadu_si256(c.as_ptr().add(i) as *const _);
                // keep the low 16 bits of each lane (the OR of the codes reports the rest)
                let v = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
                _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
            }
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn widen(codes: CodeSlice, shift: u32, out: &mut [f32]) -> u32 {
        let n = out.len();
        let count = _mm_cvtsi32_si128(shift as i32);
        let mut any = _mm_setzero_si128();
        let mut i = 0;
        while i + 8 <= n {
            let c = load8(codes, i);
            any = _mm_or_si128(any, c);
            let v = widen8(_mm_sll_epi16(c, count));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), v);
            i += 8;
        }
        let lanes: [u16; 8] = std::mem::transmute(any);
        let mut or = lanes.iter().fold(0u32, |a, &l| a | l as u32);
        if let CodeSlice::U32(c) = codes {
            or |= c[..i].iter().fold(0u32, |a, &l| a | l) & !0xffff;
        }
        if i < n {
            // the tail through a padded block
            let mut buf = [0u16; 8];
            for (j, b) in buf.iter_mut().enumerate().take(n - i) {
                let c = codes.get(i + j);
                or |= c;
                *b = (c << shift) as u16;
            }
            let v: [f32; 8] =
                std::mem::transmute(widen8(_mm_loadu_si128(buf.as_ptr() as *const _)));
            out[i..].copy_from_slice(&v[..n - i]);
        }
        or
    }

    /// Eight float32 values to float16 codes, NaN canonicalized.
    #[inline(always)]
    unsafe fn narrow8(x: __m256) -> __m128i {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        let bits = _mm256_castps_si256(x);
        let abs = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fff_ffff));
        let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
        // the NaN mask as 8 u16 lanes (each 32-bit lane is all ones or all zeros)
        let nan16 =
            _mm_packs_epi32(_mm256_castsi256_si128(nan), _mm256_extracti128_si256::<1>(nan));
        let qnan = _mm_or_si128(_mm_and_si128(h, _mm_set1_epi16(-0x8000)), _mm_set1_epi16(0x7e00));
        _mm_blendv_epi8(h, qnan, nan16)
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn narrow(x: &[f32], out: &mut [u16]) {
        let n = x.len();
        let mut i = 0;
        while i + 8 <= n {
            let h = narrow8(_mm256_loadu_ps(x.as_ptr().add(i)));
            _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut _, h);
            i += 8;
        }
        if i < n {
            let mut buf = [0f32; 8];
            buf[..n - i].copy_from_slice(&x[i..]);
            let h: [u16; 8] = std::mem::transmute(narrow8(_mm256_loadu_ps(buf.as_ptr())));
            out[i..].copy_from_slice(&h[..n - i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exmy::{EncodeOptions, Encoder};
    use crate::formats::parse;

    /// The general decoder's float32 bits of `code` (NaN: canonical, with its sign).
    fn reference(name: &str, code: u32) -> u32 {
        (parse(name).unwrap().decode_f64(code) as f32).to_bits()
    }

    #[test]
    fn f16_widening_equals_the_general_decoder() {
        for h in 0..=0xffffu32 {
            assert_eq!(f16_to_f32_bits(h), reference("float16", h), "{h:#06x}");
        }
    }

    #[test]
    fn widen_paths_agree_on_every_width_and_length() {
        let f16: Vec<u32> = (0..=0xffffu32).collect();
        let e5m2: Vec<u32> = (0..=0xffu32).collect();
        for (codes, shift, name) in [(&f16, 0, "float16"), (&e5m2, 8, "float8_e5m2")] {
            let want: Vec<u32> = codes.iter().map(|&c| reference(name, c)).collect();
            for len in [0usize, 1, 7, 8, 9, 31, 256, codes.len()] {
                let (cs, want) = (&codes[..len.min(codes.len())], &want[..len.min(codes.len())]);
                let n = cs.len();
                let u16s: Vec<u16> = cs.iter().map(|&c| c as u16).collect();
                let u8s: Vec<u8> = cs.iter().map(|&c| c as u8).collect();
                let mut slices = vec![CodeSlice::U32(cs), CodeSlice::U16(&u16s)];
                if shift == 8 {
                    slices.push(CodeSlice::U8(&u8s));
                }
                for s in slices {
                    // the dispatched path (AVX-512 for u16 codes where the CPU has it), the
                    // F16C loop on its own, and the portable code
                    for path in ["dispatch", "f16c", "portable"] {
                        let mut out = vec![0f32; n];
                        let any = match path {
                            "portable" => widen_portable(s, shift, &mut out),
                            "f16c" => {
                                #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
                                if std::is_x86_feature_detected!("f16c")
                                    && std::is_x86_feature_detected!("avx2")
                                {
                                    // SAFETY: the CPU supports F16C and AVX2 (checked).
                                    unsafe { f16c::widen(s, shift, &mut out) }
                                } else {
                                    widen_portable(s, shift, &mut out)
                                }
                                #[cfg(not(all(
                                    target_arch = "x86_64",
                                    not(feature = "portable")
                                )))]
                                widen_portable(s, shift, &mut out)
                            }
                            _ => widen_f16(s, shift, &mut out),
                        };
                        let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(got, want, "{name} len {len} path {path}");
                        assert_eq!(any, cs.iter().fold(0, |a, &c| a | c));
                    }
                }
            }
        }
        // codes out of range show in the OR, on both paths
        let bad = [1u32, 0x1_0000, 3, 4, 5, 6, 7, 8, 9];
        let mut out = [0f32; 9];
        assert_eq!(widen_f16(CodeSlice::U32(&bad), 0, &mut out) >> 16, 1);
        assert_eq!(widen_portable(CodeSlice::U32(&bad), 0, &mut out) >> 16, 1);
    }

    #[test]
    fn f32_prefix_widening_is_the_shift_on_every_path_and_length() {
        let codes: Vec<u16> = (0..=0xffffu16).collect();
        for (shift, mask) in [(16u32, 0xffffu16), (19, 0x1fff)] {
            let cs: Vec<u16> = codes.iter().map(|&c| c & mask).collect();
            for len in [0usize, 1, 15, 16, 17, 33, cs.len()] {
                let mut out = vec![0f32; len];
                let any = widen_f32(CodeSlice::U16(&cs[..len]), shift, &mut out);
                assert_eq!(any, cs[..len].iter().fold(0, |a, &c| a | c as u32));
                for (&c, &o) in cs.iter().zip(&out) {
                    assert_eq!(o.to_bits(), (c as u32) << shift, "shift {shift} len {len}");
                }
            }
        }
    }

    #[test]
    fn byte_table_lookup_equals_indexing_for_every_size_code_and_length() {
        let codes: Vec<u8> =
            (0..=255u8).chain((0..300).map(|i: u32| (i * 37 % 256) as u8)).collect();
        for size in [1usize, 2, 8, 15, 16, 17, 31, 32, 33, 64, 65, 100, 128, 129, 255, 256] {
            let plain: Vec<f32> = (0..size).map(|i| (i as f32) * -1.5 + 0.25).collect();
            // sign-symmetric (the upper half is the lower half negated, a NaN included), which
            // takes the half-table path where the size is a power of two ≥ 32
            let h = size / 2;
            let low = |i: usize| if i + 1 == h { f32::NAN } else { i as f32 * 0.75 };
            let sym: Vec<f32> =
                (0..size).map(|i| if i < h || h == 0 { low(i) } else { -low(i - h) }).collect();
            for table in [&plain, &sym] {
                for len in [0usize, 1, 15, 16, 17, 33, codes.len()] {
                    let cs = &codes[..len];
                    let mut out = vec![f32::NAN; len];
                    let max = Lut::new(table).apply(cs, None, &mut out);
                    assert_eq!(max, cs.iter().copied().max().unwrap_or(0), "size {size} len {len}");
                    let mut scaled = vec![f32::NAN; len];
                    assert_eq!(Lut::new(table).apply(cs, Some(-0.7), &mut scaled), max);
                    // the AVX2 loop too (this CPU may take the AVX-512 one above): the same
                    // values over the elements it does
                    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
                    if std::is_x86_feature_detected!("avx2") {
                        let t = Lut::new(table).t;
                        for scale in [None, Some(-0.7)] {
                            let mut o2 = vec![f32::NAN; len];
                            // SAFETY: AVX2 checked just above; 256 entries, slices of len.
                            let done = unsafe { avx2::lut(&t, cs, scale, &mut o2) };
                            assert_eq!(done, len / 8 * 8);
                            let want = if scale.is_some() { &scaled } else { &out };
                            for i in (0..done).filter(|&i| (cs[i] as usize) < size) {
                                assert_eq!(
                                    o2[i].to_bits(),
                                    want[i].to_bits(),
                                    "avx2 {size} at {i}"
                                );
                            }
                        }
                    }
                    for (i, (&c, (&o, &so))) in cs.iter().zip(out.iter().zip(&scaled)).enumerate() {
                        if (c as usize) < size {
                            let want = table[c as usize];
                            assert_eq!(o.to_bits(), want.to_bits(), "size {size} at {i}");
                            assert_eq!(
                                so.to_bits(),
                                (want * -0.7).to_bits(),
                                "scaled, {size} at {i}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn peeled_loops_give_the_same_values_at_every_output_alignment() {
        // 16 offsets of a float32 output cover its 16 possible positions in a cache line,
        // so every head length the loops peel (0..=15) is taken, before and after
        // lengths that end inside the head
        let u8s: Vec<u8> = (0..300u32).map(|i| (i * 37 % 256) as u8).collect();
        let u16s: Vec<u16> = (0..300u32).map(|i| (i * 40503 % 65536) as u16).collect();
        let sym: Vec<f32> = (0..256)
            .map(|i| if i < 128 { i as f32 * 0.5 } else { -((i - 128) as f32) * 0.5 })
            .collect();
        let small: Vec<f32> = (0..16).map(|i| i as f32 - 3.0).collect();
        for off in 0..16 {
            for len in [0usize, 1, 5, 15, 16, 17, 31, 300] {
                let mut buf = vec![f32::NAN; len + 16];
                let out = &mut buf[off..off + len];
                let bits = |o: &[f32]| o.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                for table in [&sym, &small] {
                    let cs: Vec<u8> =
                        u8s[..len].iter().map(|&c| (c as usize % table.len()) as u8).collect();
                    let max = Lut::new(table).apply(&cs, None, out);
                    assert_eq!(max, cs.iter().copied().max().unwrap_or(0));
                    let want: Vec<u32> = cs.iter().map(|&c| table[c as usize].to_bits()).collect();
                    assert_eq!(bits(out), want, "lut {} off {off} len {len}", table.len());
                }
                let cs = CodeSlice::U16(&u16s[..len]);
                let any = widen_f16(cs, 0, out);
                assert_eq!(any, u16s[..len].iter().fold(0, |a, &c| a | c as u32));
                let want: Vec<u32> =
                    u16s[..len].iter().map(|&c| f16_to_f32_bits(c as u32)).collect();
                assert_eq!(bits(out), want, "widen_f16 off {off} len {len}");
                widen_f32(cs, 16, out);
                let want: Vec<u32> = u16s[..len].iter().map(|&c| (c as u32) << 16).collect();
                assert_eq!(bits(out), want, "widen_f32 off {off} len {len}");
            }
        }
    }

    #[test]
    fn f16_narrowing_equals_the_element_encoder() {
        let enc = Encoder::new(parse("float16").unwrap(), EncodeOptions::default());
        // every sign, exponent and top mantissa bits, with low parts around the rounding
        // boundaries of the 13 discarded bits (ties, ±1) and some others
        let lows = [0u32, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x17ff, 0x0800, 0x0ff0, 0x1234];
        let mut xs = Vec::new();
        for hi in 0..=0xffffu32 {
            for &lo in &lows {
                xs.push(f32::from_bits((hi << 16) | (lo & 0xffff)));
                xs.push(f32::from_bits((hi << 16) | ((lo ^ 0x2000) & 0xffff)));
            }
        }
        let mut got = vec![0u16; xs.len()];
        if !narrow_f16(&xs, &mut got) {
            return; // no F16C here: nothing to compare
        }
        for (&x, &g) in xs.iter().zip(&got) {
            let (want, _) = enc.encode_one_dyn(x, crate::exmy::Rounding::Nearest, 0);
            assert_eq!(g as u32, want, "{:#010x}", x.to_bits());
        }
        // tails, and every position of the output in a cache line (32 offsets of u16), so
        // that every head the AVX-512 loop peels is taken
        for n in [1usize, 7, 9, 15, 31, 33, 100] {
            for off in 0..32 {
                let mut buf = vec![0u16; n + 32];
                assert!(narrow_f16(&xs[..n], &mut buf[off..off + n]));
                assert_eq!(buf[off..off + n], got[..n], "n {n} off {off}");
            }
        }
    }
}
