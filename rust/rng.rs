//! Counter-based random bits: Philox4x32-10.
//!
//! Design:
//! - Stochastic rounding must give the same bits on 1 or 64 threads and on CPU or GPU, so the
//!   random word for an element is a pure function of `(seed, stream, global index)`; nothing
//!   depends on threads, chunks or launch geometry. A counter-based generator gives exactly
//!   that with O(1) random access.
//! - Philox4x32 with 10 rounds (Salmon et al., SC'11; Random123) is the choice: it has published
//!   known-answer vectors, it is what cuRAND's `curand_Philox4x32_10` computes, and it needs only
//!   32x32→64 multiplies, which are exact and identical on every target. The CUDA mirror
//!   (`cuda/kernels/rng.cu`) must compute the same function bit for bit.
//! - Counter/key layout: one Philox call yields four 32-bit words, used for four consecutive
//!   element indices. For element `index` in stream `stream` under seed `seed`:
//!   ```text
//!   ctr = [ index >> 2 (low 32 bits), index >> 34, stream low 32, stream high 32 ]
//!   key = [ seed low 32, seed high 32 ]
//!   word = philox(ctr, key)[index & 3]
//!   ```
//!   Rejected: one Philox call per element (4x the work) and word-per-lane layouts tied to a
//!   thread count (not reproducible across geometries).
//! - Two resolutions ([`Resolution`]), each a fixed, documented definition. `Bits32` (rounding
//!   mode `stochastic`) gives element `index` the word above. `Bits16` (`stochastic16`) gives
//!   it 16 bits, half as many Philox calls: `h` is the low (even `index`) or high (odd) half
//!   of word `index >> 1` of the `Bits32` stream, and the element's word is
//!   `h << 16 | 0xFFFF`. Every stochastic rounding in lowfp rounds away iff `word < t` for
//!   a 32-bit threshold `t`; with that word this holds iff `h < t >> 16`, so the rounding
//!   code is the same for both and the probability is `t`'s fraction truncated to 2^-16.
//!   Rejected for the 16-bit words: 8 or fewer bits (remainders below 1/256 of an ulp would
//!   never round away) and Philox with fewer rounds (a third definition for a smaller gain).

/// First Philox4x32 round multiplier.
const PHILOX_M0: u32 = 0xD251_1F53;
/// Second Philox4x32 round multiplier.
const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl increment of key word 0 between rounds (golden ratio).
const PHILOX_W0: u32 = 0x9E37_79B9;
/// Weyl increment of key word 1 between rounds (sqrt(3) - 1).
const PHILOX_W1: u32 = 0xBB67_AE85;

/// `(high, low)` 32-bit halves of the 64-bit product `a * b`.
#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32 round.
#[inline(always)]
fn round(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mulhilo(PHILOX_M0, ctr[0]);
    let (hi1, lo1) = mulhilo(PHILOX_M1, ctr[2]);
    [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0]
}

/// The Random123 Philox4x32 block function with 10 rounds (identical to cuRAND's
/// `curand_Philox4x32_10`): maps a 128-bit counter and a 64-bit key to 128 random bits.
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    c = round(c, k);
    for _ in 1..10 {
        k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        c = round(c, k);
    }
    c
}

/// Counter for the block of four words holding element `index` of `stream`.
#[inline(always)]
fn counter(stream: u64, index: u64) -> [u32; 4] {
    [(index >> 2) as u32, (index >> 34) as u32, stream as u32, (stream >> 32) as u32]
}

/// Key for `seed`.
#[inline(always)]
fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The random 32-bit word of element `index` in `stream` under `seed`:
/// word `index & 3` of `philox4x32_10([index >> 2, index >> 34, stream, stream >> 32],
/// [seed, seed >> 32])` (each entry truncated to 32 bits).
#[inline]
pub fn random_u32(seed: u64, stream: u64, index: u64) -> u32 {
    philox4x32_10(counter(stream, index), key(seed))[(index & 3) as usize]
}

/// How many random bits stochastic rounding draws per element (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// One 32-bit Philox word per element: `random_u32`.
    Bits32,
    /// 16 bits per element, as the word `h << 16 | 0xFFFF`: `random_word16`.
    Bits16,
}

/// The 32-bit word of element `index` under resolution `Bits16`: with `w =
/// random_u32(seed, stream, index >> 1)`, `w << 16 | 0xFFFF` for an even `index` and
/// `w | 0xFFFF` (its high half in place) for an odd one.
#[inline]
pub fn random_word16(seed: u64, stream: u64, index: u64) -> u32 {
    let w = random_u32(seed, stream, index >> 1);
    half_word(w, index & 1 == 1)
}

/// The `Bits16` word of the low (`high = false`) or high half of `w`.
#[inline(always)]
fn half_word(w: u32, high: bool) -> u32 {
    if high {
        w | 0xFFFF
    } else {
        (w << 16) | 0xFFFF
    }
}

/// Fill `out` with the words of elements `start ..` under `res`: [`fill_random_u32`] or
/// `out[j] = random_word16(seed, stream, start + j)` (indices wrap modulo 2^64).
pub fn fill_words(res: Resolution, seed: u64, stream: u64, start: u64, out: &mut [u32]) {
    match res {
        Resolution::Bits32 => fill_random_u32(seed, stream, start, out),
        Resolution::Bits16 => fill_word16(seed, stream, start, out),
    }
}

/// [`fill_words`] for `Bits16`: the 32-bit words of the half-length index range, split into
/// halves, a stack buffer's worth at a time.
fn fill_word16(seed: u64, stream: u64, start: u64, out: &mut [u32]) {
    const W: usize = 512;
    let mut buf = [0u32; W + 1];
    let mut idx = start;
    let mut rest = out;
    while !rest.is_empty() {
        // a piece never crosses the wrap of the element index, where word indices restart
        let room = (u64::MAX - idx) as u128 + 1;
        let n = (rest.len().min(2 * W) as u128).min(room) as usize;
        let odd = (idx & 1) as usize;
        let words = &mut buf[..(odd + n).div_ceil(2)];
        fill_random_u32(seed, stream, idx >> 1, words);
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(n);
        split_halves(words, odd == 1, piece);
        rest = tail;
        idx = idx.wrapping_add(n as u64);
    }
}

/// The `Bits16` word of element `i` of a range that starts at an even element index, from
/// the raw words of that range (`words[j]` = the 32-bit word of elements 2j and 2j + 1).
#[inline(always)]
pub(crate) fn word16_at(words: &[u32], i: usize) -> u32 {
    half_word(words[i / 2], i & 1 == 1)
}

/// `out` from the halves of `words`, starting at the high half of `words[0]` if `odd`.
fn split_halves(words: &[u32], odd: bool, out: &mut [u32]) {
    let (words, out) = match (odd, out.split_first_mut()) {
        (true, Some((first, rest))) => {
            *first = half_word(words[0], true);
            (&words[1..], rest)
        }
        _ => (words, out),
    };
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    let (words, out) = if std::is_x86_feature_detected!("avx512f") {
        let m = out.len() / 32 * 32;
        let (head, tail) = out.split_at_mut(m);
        // SAFETY: the CPU supports AVX-512F, checked just above; `words` holds m / 2 words.
        unsafe { avx512::split_halves(&words[..m / 2], head) };
        (&words[m / 2..], tail)
    } else {
        (words, out)
    };
    let last_word = out.len() / 2;
    let mut pairs = out.chunks_exact_mut(2);
    for (o, &w) in (&mut pairs).zip(words) {
        o[0] = half_word(w, false);
        o[1] = half_word(w, true);
    }
    if let [last] = pairs.into_remainder() {
        *last = half_word(words[last_word], false);
    }
}

/// Fill `out` with `out[j] = random_u32(seed, stream, start + j)`, with one Philox call per
/// four outputs (an unaligned `start` and a short tail cost one extra call each).
///
/// Single-threaded; callers parallelize over chunks, and the result does not depend on how
/// they split the range. Indices wrap modulo 2^64.
pub fn fill_random_u32(seed: u64, stream: u64, start: u64, out: &mut [u32]) {
    let k = key(seed);
    let mut idx = start;
    let mut rest: &mut [u32] = out;
    // Head: up to the next multiple of 4.
    let lane = (idx & 3) as usize;
    if lane != 0 && !rest.is_empty() {
        let words = philox4x32_10(counter(stream, idx), k);
        let n = (4 - lane).min(rest.len());
        rest[..n].copy_from_slice(&words[lane..lane + n]);
        rest = &mut rest[n..];
        idx = idx.wrapping_add(n as u64);
    }
    // Body: whole blocks of four, GROUP words at a time through the vectorized kernels.
    let whole = rest.len() / GROUP * GROUP;
    let (body, tail_start) = rest.split_at_mut(whole);
    fill_lanes(body, stream, idx, k);
    idx = idx.wrapping_add(whole as u64);
    rest = tail_start;
    let mut chunks = rest.chunks_exact_mut(4);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&philox4x32_10(counter(stream, idx), k));
        idx = idx.wrapping_add(4);
    }
    // Tail.
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let words = philox4x32_10(counter(stream, idx), k);
        let n = tail.len();
        tail.copy_from_slice(&words[..n]);
    }
}

/// Philox blocks computed 8 at a time with AVX2, or 32 at a time with AVX-512, where the CPU
/// has it: the same function as `philox4x32_10`, lane by lane (checked by the tests against
/// the scalar code). Written with intrinsics: LLVM's auto-vectorization of this loop
/// miscompiled (rustc 1.95).
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
const LANES: usize = 8;
/// Words per group of the vectorized body (a multiple of both kernels' 4·lanes).
const GROUP: usize = 128;

/// Fill `out` (a multiple of GROUP words) from counter index `idx` (a multiple of 4).
fn fill_lanes(out: &mut [u32], stream: u64, idx: u64, k: [u32; 2]) {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        unsafe { avx512::fill(out, stream, idx, k) };
        return;
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { avx2::fill(out, stream, idx, k) };
        return;
    }
    fill_portable(out, stream, idx, k);
}

/// [`fill_lanes`] one Philox block at a time (any multiple of 4 words).
fn fill_portable(out: &mut [u32], stream: u64, idx: u64, k: [u32; 2]) {
    for (j, chunk) in out.chunks_exact_mut(4).enumerate() {
        chunk.copy_from_slice(&philox4x32_10(counter(stream, idx.wrapping_add(4 * j as u64)), k));
    }
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod avx2 {
    use super::{counter, LANES, PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1};
    use std::arch::x86_64::*;

    /// (high, low) halves of the 8 products `m · c` (lane-wise 32×32→64).
    #[inline(always)]
    unsafe fn mulhilo8(m: __m256i, c: __m256i) -> (__m256i, __m256i) {
        let even = _mm256_mul_epu32(m, c); // lanes 0,2,4,6 as 64-bit products
        let odd = _mm256_mul_epu32(m, _mm256_srli_epi64(c, 32)); // lanes 1,3,5,7
        let lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0b1010_1010);
        let hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0b1010_1010);
        (hi, lo)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fill(out: &mut [u32], stream: u64, idx: u64, k: [u32; 2]) {
        let m0 = _mm256_set1_epi32(PHILOX_M0 as i32);
        let m1 = _mm256_set1_epi32(PHILOX_M1 as i32);
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let c2 = _mm256_set1_epi32(stream as u32 as i32);
        let c3 = _mm256_set1_epi32((stream >> 32) as u32 as i32);
        for (j, group) in out.chunks_exact_mut(4 * LANES).enumerate() {
            // lane l's counter: block number b = idx/4 + 8j + l as (low, high) words, stream
            let b0 = idx.wrapping_add((j * LANES * 4) as u64) >> 2;
            let (mut c0, mut c1) = if (b0 as u32).checked_add(LANES as u32 - 1).is_some() {
                let lo = _mm256_add_epi32(_mm256_set1_epi32(b0 as u32 as i32), lane);
                (lo, _mm256_set1_epi32((b0 >> 32) as u32 as i32))
            } else {
                // the low word wraps within these lanes: build the counters one by one
                let ctr =
                    |l: usize| counter(stream, idx.wrapping_add(((j * LANES + l) * 4) as u64));
                let lo: [u32; LANES] = std::array::from_fn(|l| ctr(l)[0]);
                let hi: [u32; LANES] = std::array::from_fn(|l| ctr(l)[1]);
                let ld = |r: &[u32; LANES]| _mm256_loadu_si256(r.as_ptr() as *const __m256i);
                (ld(&lo), ld(&hi))
            };
            let (mut c2, mut c3) = (c2, c3);
            let mut key = k;
            for r in 0..10 {
                if r > 0 {
                    key = [key[0].wrapping_add(PHILOX_W0), key[1].wrapping_add(PHILOX_W1)];
                }
                let (hi0, lo0) = mulhilo8(m0, c0);
                let (hi1, lo1) = mulhilo8(m1, c2);
                let k0 = _mm256_set1_epi32(key[0] as i32);
                let k1 = _mm256_set1_epi32(key[1] as i32);
                c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0);
                c1 = lo1;
                c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1);
                c3 = lo0;
            }
            // transpose 4 rows × 8 lanes into lane after lane (4 words each)
            let t0 = _mm256_unpacklo_epi32(c0, c1); // lanes 0, 1 | 4, 5: words 0-1
            let t1 = _mm256_unpackhi_epi32(c0, c1); // lanes 2, 3 | 6, 7: words 0-1
            let t2 = _mm256_unpacklo_epi32(c2, c3);
            let t3 = _mm256_unpackhi_epi32(c2, c3);
            let u0 = _mm256_unpacklo_epi64(t0, t2); // lane 0 | lane 4
            let u1 = _mm256_unpackhi_epi64(t0, t2); // lane 1 | lane 5
            let u2 = _mm256_unpacklo_epi64(t1, t3); // lane 2 | lane 6
            let u3 = _mm256_unpackhi_epi64(t1, t3); // lane 3 | lane 7
            let p = group.as_mut_ptr() as *mut __m256i;
            _mm256_storeu_si256(p, _mm256_permute2x128_si256::<0x20>(u0, u1));
            _mm256_storeu_si256(p.add(1), _mm256_permute2x128_si256::<0x20>(u2, u3));
            _mm256_storeu_si256(p.add(2), _mm256_permute2x128_si256::<0x31>(u0, u1));
            _mm256_storeu_si256(p.add(3), _mm256_permute2x128_si256::<0x31>(u2, u3));
        }
    }
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod avx512 {
    use super::{counter, PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1};
    use std::arch::x86_64::*;

    /// Philox blocks per vector: one block per 64-bit lane, its words in the low halves.
    /// `vpmuludq` multiplies the low halves into full 64-bit products, so a round needs no
    /// blends: `hi` is `p` with its high halves copied down and `lo = p` (the high halves are
    /// garbage that only ever meets the next `vpmuludq`, which ignores it, and are dropped on
    /// output).
    const L: usize = 8;
    /// Independent chains of 8 blocks per step (128 words): a round is a chain of dependent
    /// multiply, shuffle and XOR, so four chains keep the multiplier busy.
    const C: usize = 4;

    /// The `Bits16` words of the 16 elements whose raw words are the 8 at `w`: on
    /// little-endian x86 the 16-bit halves lie in memory in element order (low half first),
    /// so each is a zero-extended half, shifted up, with the low 16 bits set.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `w` points to 8 readable words.
    #[inline(always)]
    unsafe fn words16(w: *const u32) -> __m512i {
        let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(w as *const __m256i));
        _mm512_or_si512(_mm512_slli_epi32::<16>(h), _mm512_set1_epi32(0xFFFF))
    }

    /// `split_halves` for 16 words (32 outputs) per step ([`words16`]).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn split_halves(words: &[u32], out: &mut [u32]) {
        assert_eq!(out.len(), 2 * words.len());
        assert_eq!(out.len() % 16, 0);
        for (o, w) in out.chunks_exact_mut(16).zip(words.chunks_exact(8)) {
            _mm512_storeu_si512(o.as_mut_ptr() as *mut _, words16(w.as_ptr()));
        }
    }

    /// Four vectors of blocks (32 blocks, 128 words) per step, in four independent chains.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fill(out: &mut [u32], stream: u64, idx: u64, k: [u32; 2]) {
        let m0 = _mm512_set1_epi64(PHILOX_M0 as i64);
        let m1 = _mm512_set1_epi64(PHILOX_M1 as i64);
        let lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
        let s2 = _mm512_set1_epi64(stream as u32 as i64);
        let s3 = _mm512_set1_epi64((stream >> 32) as u32 as i64);
        let mut keys = [[_mm512_setzero_si512(); 2]; 10];
        let mut key = k;
        for (r, kr) in keys.iter_mut().enumerate() {
            if r > 0 {
                key = [key[0].wrapping_add(PHILOX_W0), key[1].wrapping_add(PHILOX_W1)];
            }
            *kr = [_mm512_set1_epi64(key[0] as i64), _mm512_set1_epi64(key[1] as i64)];
        }
        // counters of blocks b .. b + 8 as (low word, high word) per 64-bit lane
        let ctrs = |b: u64, first: u64| -> (__m512i, __m512i) {
            if (b as u32).checked_add(L as u32 - 1).is_some() {
                let lo = _mm512_add_epi64(_mm512_set1_epi64(b as u32 as i64), lane);
                (lo, _mm512_set1_epi64((b >> 32) as u32 as i64))
            } else {
                // the low word wraps within these lanes: build the counters one by one
                let ctr = |l: usize| counter(stream, first.wrapping_add((l * 4) as u64));
                let lo: [u64; L] = std::array::from_fn(|l| ctr(l)[0] as u64);
                let hi: [u64; L] = std::array::from_fn(|l| ctr(l)[1] as u64);
                let ld = |r: &[u64; L]| _mm512_loadu_si512(r.as_ptr() as *const _);
                (ld(&lo), ld(&hi))
            }
        };
        // lanes [w0 | w1 << 32] and [w2 | w3 << 32] interleaved into 8 blocks of 4 words
        let store = |p: *mut __m512i, c: [__m512i; 4]| {
            let a = _mm512_mask_blend_epi32(0xaaaa, c[0], _mm512_slli_epi64::<32>(c[1]));
            let b = _mm512_mask_blend_epi32(0xaaaa, c[2], _mm512_slli_epi64::<32>(c[3]));
            let even = _mm512_unpacklo_epi64(a, b); // blocks 0, 2, 4, 6
            let odd = _mm512_unpackhi_epi64(a, b); // blocks 1, 3, 5, 7
            let i0 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
            let i1 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
            _mm512_storeu_si512(p, _mm512_permutex2var_epi64(even, i0, odd));
            _mm512_storeu_si512(p.add(1), _mm512_permutex2var_epi64(even, i1, odd));
        };
        for (j, group) in out.chunks_exact_mut(C * 4 * L).enumerate() {
            let mut st: [[__m512i; 4]; C] = std::array::from_fn(|c| {
                let first = idx.wrapping_add(((j * C + c) * L * 4) as u64);
                let (c0, c1) = ctrs(first >> 2, first);
                [c0, c1, s2, s3]
            });
            for kr in &keys {
                for x in st.iter_mut() {
                    let p0 = _mm512_mul_epu32(m0, x[0]);
                    let p1 = _mm512_mul_epu32(m1, x[2]);
                    // [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0]; `vpshufd` copies each high
                    // half down (a shuffle rather than a shift beside the multiplies)
                    let hi = |p| _mm512_shuffle_epi32::<_MM_PERM_DDBB>(p);
                    *x = [
                        _mm512_ternarylogic_epi64::<0x96>(hi(p1), x[1], kr[0]),
                        p1,
                        _mm512_ternarylogic_epi64::<0x96>(hi(p0), x[3], kr[1]),
                        p0,
                    ];
                }
            }
            let p = group.as_mut_ptr() as *mut __m512i;
            for (c, x) in st.into_iter().enumerate() {
                store(p.add(2 * c), x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123 kat_vectors, philox4x32_10 lines.
    #[test]
    fn known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(
            philox4x32_10([0xffff_ffff; 4], [0xffff_ffff; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn random_u32_layout() {
        let seed = 0x0123_4567_89ab_cdef_u64;
        let stream = 0xfeed_beef_0000_0007_u64;
        for index in [0u64, 1, 2, 3, 4, 5, 1 << 34, (1 << 34) + 3, u64::MAX] {
            let ctr =
                [(index >> 2) as u32, (index >> 34) as u32, stream as u32, (stream >> 32) as u32];
            let key = [seed as u32, (seed >> 32) as u32];
            let want = philox4x32_10(ctr, key)[(index & 3) as usize];
            assert_eq!(random_u32(seed, stream, index), want, "index {index}");
        }
        // Seed 0, stream 0: the first four words are the ctr=0,key=0 known answer.
        let w: Vec<u32> = (0..4).map(|i| random_u32(0, 0, i)).collect();
        assert_eq!(w, [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    }

    #[test]
    fn fill_matches_scalar() {
        let (seed, stream) = (42u64, 3u64);
        let starts = [0u64, 1, 2, 3, 4, 5, 7, 1000, (1 << 34) - 2, u64::MAX - 5];
        for &start in &starts {
            for len in 0..=23usize {
                let mut out = vec![0u32; len];
                fill_random_u32(seed, stream, start, &mut out);
                for (j, &v) in out.iter().enumerate() {
                    assert_eq!(
                        v,
                        random_u32(seed, stream, start.wrapping_add(j as u64)),
                        "start {start} len {len} j {j}"
                    );
                }
            }
        }
        // whole AVX2 groups, also where the counter's low word wraps inside a group and
        // where the element index wraps around u64
        for start in [13u64, (1 << 34) - 61, (1 << 34) - 64, u64::MAX - 300] {
            let mut big = vec![0u32; 1001];
            fill_random_u32(seed, stream, start, &mut big);
            for (j, &v) in big.iter().enumerate() {
                let want = random_u32(seed, stream, start.wrapping_add(j as u64));
                assert_eq!(v, want, "start {start} j {j}");
            }
        }
    }

    /// Every kernel the CPU can run, against the portable one, also where the counter's low
    /// word wraps inside a group.
    #[test]
    fn kernels_agree() {
        let k = key(0x0123_4567_89ab_cdef);
        for idx in [0u64, 64, (1 << 34) - 60, (1 << 34) - 32, u64::MAX - 255] {
            let mut want = vec![0u32; 5 * GROUP];
            fill_portable(&mut want, 77, idx, k);
            let mut got = vec![0u32; 5 * GROUP];
            fill_lanes(&mut got, 77, idx, k);
            assert_eq!(got, want, "dispatch, idx {idx}");
            #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
            if std::is_x86_feature_detected!("avx2") {
                let mut got = vec![0u32; 5 * GROUP];
                unsafe { avx2::fill(&mut got, 77, idx, k) };
                assert_eq!(got, want, "avx2, idx {idx}");
            }
            #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
            if std::is_x86_feature_detected!("avx512f") {
                let mut got = vec![0u32; 5 * GROUP];
                unsafe { avx512::fill(&mut got, 77, idx, k) };
                assert_eq!(got, want, "avx512, idx {idx}");
            }
        }
    }

    /// `Bits16` words against their definition from `random_u32`, at odd and even starts,
    /// lengths around the piece size, and where the element index wraps around u64.
    #[test]
    fn word16_matches_definition() {
        let (seed, stream) = (0xdead_beef_u64, 5u64);
        for start in [0u64, 1, 2, 3, 1000, 1001, (1 << 35) - 7, u64::MAX - 2, u64::MAX - 1500] {
            for len in [0usize, 1, 2, 3, 17, 1023, 1024, 1025, 2049, 3001] {
                let mut out = vec![0u32; len];
                fill_words(Resolution::Bits16, seed, stream, start, &mut out);
                for (j, &v) in out.iter().enumerate() {
                    let i = start.wrapping_add(j as u64);
                    let w = random_u32(seed, stream, i >> 1);
                    let h = if i & 1 == 0 { w & 0xFFFF } else { w >> 16 };
                    assert_eq!(v, h << 16 | 0xFFFF, "start {start} len {len} j {j}");
                    assert_eq!(v, random_word16(seed, stream, i));
                }
            }
        }
        let mut a = vec![0u32; 9];
        fill_words(Resolution::Bits32, 3, 4, 5, &mut a);
        let mut b = vec![0u32; 9];
        fill_random_u32(3, 4, 5, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn fill_is_split_invariant() {
        let mut whole = vec![0u32; 100];
        fill_random_u32(7, 9, 5, &mut whole);
        let mut parts = vec![0u32; 100];
        let (a, b) = parts.split_at_mut(37);
        fill_random_u32(7, 9, 5, a);
        fill_random_u32(7, 9, 5 + 37, b);
        assert_eq!(whole, parts);
    }
}

#[cfg(test)]
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod bench {
    /// `cargo test --release bench_fill -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_fill() {
        let mut out = vec![0u32; 1 << 10];
        let reps = 1 << 14;
        let k = super::key(1);
        for round in 0..3 {
            let t = std::time::Instant::now();
            for r in 0..reps {
                super::fill_random_u32(1, 0, (r as u64) << 10, &mut out);
            }
            let dt = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
            for r in 0..reps {
                unsafe { super::avx2::fill(&mut out, 0, (r as u64) << 10, k) };
            }
            let d2 = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            for r in 0..reps {
                super::fill_words(super::Resolution::Bits16, 1, 0, (r as u64) << 10, &mut out);
            }
            let d16 = t.elapsed().as_secs_f64();
            let g = |d: f64| (reps << 10) as f64 / d / 1e9;
            println!(
                "{round}: fill_random_u32 {:.3}, avx2 {:.3}, Bits16 {:.3} G words/s",
                g(dt),
                g(d2),
                g(d16)
            );
        }
    }
}
