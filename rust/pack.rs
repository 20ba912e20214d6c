//! k-bit packing of codes, 1 ≤ k ≤ 8.
//!
//! Layout (normative): a little-endian, LSB-first bit stream. Element `i` occupies stream bits
//! `[k*i, k*i + k)`, and stream bit `b` is bit `b % 8` of byte `b / 8`. Padding bits after the
//! last element are written as zero and ignored on reading. Examples:
//! ```text
//! k = 4: byte 0 = e1 e1 e1 e1 e0 e0 e0 e0   (element 0 in the low nibble)
//!        bit:     7  6  5  4  3  2  1  0
//! k = 3: 8 elements in 3 bytes:
//!        byte 0 = e2 e2 e1 e1 e1 e0 e0 e0   (e2 bits 0..1)
//!        byte 1 = e5 e4 e4 e4 e3 e3 e3 e2   (e2 bit 2, e5 bit 0)
//!        byte 2 = e7 e7 e7 e6 e6 e6 e5 e5   (e5 bits 1..2)
//! ```
//!
//! Design:
//! - The unit of work is a group of 8 codes ↔ exactly `k` bytes. A group is gathered into a
//!   `u64` accumulator (`acc |= code_j << (k*j)`) and its low `k` bytes are stored; unpacking
//!   reverses that. The kernels are monomorphized over `k` (const generic), so every shift and
//!   store width is a constant; `k = 8` is a plain copy. A separate hand-written kernel per
//!   `k ∈ {1, 2, 4}` was not needed: LLVM vectorizes each monomorphized group kernel, which
//!   packs ~6–7 and unpacks ~5–7 G codes/s on one core (ignored test `bench_pack`).
//! - Parallelism: rayon `par_chunks` over chunks of `CHUNK` codes (a multiple of 8, so each
//!   chunk maps to a whole number of bytes), on the caller's current pool. The bytes depend
//!   only on the input, never on the thread count. Inputs of at most one chunk run inline.
//! - Code validation in `pack` is fused into the group loop (OR of all code bytes, checked per
//!   chunk); only when it fails is the input rescanned serially for the first bad index, so
//!   the error names the first offending code regardless of threads. `out` may then hold a
//!   partial result.

use crate::error::{Error, Result};
use rayon::prelude::*;

/// Codes per parallel chunk (a multiple of 8).
const CHUNK: usize = 1 << 16;

/// Bytes needed for `count` codes of `bits` bits each: `ceil(count * bits / 8)`.
///
/// Computed without overflow for any `count` when `bits ≤ 8` (saturates for absurd inputs).
pub fn packed_len(count: usize, bits: u32) -> usize {
    let bits = bits as usize;
    (count / 8).saturating_mul(bits).saturating_add(((count % 8) * bits).div_ceil(8))
}

/// Check `bits ∈ 1..=8`.
fn check_bits(bits: u32) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(Error::value("bits", format!("expected 1 <= bits <= 8, got {bits}")))
    }
}

/// Pack `codes` (each `< 2^bits`) into `out`, which must be exactly
/// `packed_len(codes.len(), bits)` bytes, in the LSB-first layout of this module.
///
/// Errors: `"bits"` if `bits ∉ 1..=8`; `"out"` if `out` has the wrong length; `"codes"` if a
/// code is `≥ 2^bits` (the message names the first such index and value). On a `"codes"`
/// error `out` may have been partly written.
pub fn pack(codes: &[u8], bits: u32, out: &mut [u8]) -> Result<()> {
    check_bits(bits)?;
    let need = packed_len(codes.len(), bits);
    if out.len() != need {
        return Err(Error::value(
            "out",
            format!(
                "expected {need} bytes for {} codes of {bits} bits, got {}",
                codes.len(),
                out.len()
            ),
        ));
    }
    let ok = match bits {
        1 => pack_par::<1>(codes, out),
        2 => pack_par::<2>(codes, out),
        3 => pack_par::<3>(codes, out),
        4 => pack_par::<4>(codes, out),
        5 => pack_par::<5>(codes, out),
        6 => pack_par::<6>(codes, out),
        7 => pack_par::<7>(codes, out),
        _ => {
            out.copy_from_slice(codes);
            true
        }
    };
    if ok {
        return Ok(());
    }
    let limit = 1u32 << bits;
    let first = codes.iter().position(|&c| (c as u32) >= limit);
    let seen = match first {
        Some(i) => format!("got {} at index {i}", codes[i]),
        None => "got a code out of range".to_string(), // unreachable: a chunk saw one
    };
    Err(Error::value(
        "codes",
        format!("expected codes in 0..={} for {bits} bits, {seen}", limit - 1),
    ))
}

/// Unpack `count` codes of `bits` bits from `packed` (exactly `packed_len(count, bits)` bytes)
/// into `out` (exactly `count` bytes). Padding bits are ignored.
///
/// Errors: `"bits"` if `bits ∉ 1..=8`; `"packed"` or `"out"` on a length mismatch.
pub fn unpack(packed: &[u8], bits: u32, count: usize, out: &mut [u8]) -> Result<()> {
    check_bits(bits)?;
    let need = packed_len(count, bits);
    if packed.len() != need {
        return Err(Error::value(
            "packed",
            format!("expected {need} bytes for {count} codes of {bits} bits, got {}", packed.len()),
        ));
    }
    if out.len() != count {
        return Err(Error::value("out", format!("expected {count} bytes, got {}", out.len())));
    }
    match bits {
        1 => unpack_par::<1>(packed, out),
        2 => unpack_par::<2>(packed, out),
        3 => unpack_par::<3>(packed, out),
        4 => unpack_par::<4>(packed, out),
        5 => unpack_par::<5>(packed, out),
        6 => unpack_par::<6>(packed, out),
        7 => unpack_par::<7>(packed, out),
        _ => out.copy_from_slice(packed),
    }
    Ok(())
}

/// Pack in parallel chunks; returns false if any code is out of range.
fn pack_par<const B: usize>(codes: &[u8], out: &mut [u8]) -> bool {
    if codes.len() <= CHUNK {
        return pack_chunk::<B>(codes, out);
    }
    codes
        .par_chunks(CHUNK)
        .zip(out.par_chunks_mut(CHUNK / 8 * B))
        .map(|(c, o)| pack_chunk::<B>(c, o))
        .reduce(|| true, |a, b| a & b)
}

/// Unpack in parallel chunks.
fn unpack_par<const B: usize>(packed: &[u8], out: &mut [u8]) {
    if out.len() <= CHUNK {
        return unpack_chunk::<B>(packed, out);
    }
    packed
        .par_chunks(CHUNK / 8 * B)
        .zip(out.par_chunks_mut(CHUNK))
        .for_each(|(p, o)| unpack_chunk::<B>(p, o));
}

/// Gather 8 codes (one per byte of the little-endian `x`) into the low `8*B` bits.
///
/// ```text
/// x   = c7 c6 c5 c4 c3 c2 c1 c0        (bytes, c0 lowest)
/// acc = ... c2 c1 c0                   (c_j at bits [B*j, B*j + B))
/// ```
#[inline(always)]
fn gather<const B: usize>(x: u64) -> u64 {
    let mask = (1u64 << B) - 1;
    let mut acc = 0u64;
    for j in 0..8 {
        acc |= ((x >> (8 * j)) & mask) << (B * j);
    }
    acc
}

/// Inverse of [`gather`]: spread the low `8*B` bits into 8 bytes.
#[inline(always)]
fn scatter<const B: usize>(acc: u64) -> u64 {
    let mask = (1u64 << B) - 1;
    let mut x = 0u64;
    for j in 0..8 {
        x |= ((acc >> (B * j)) & mask) << (8 * j);
    }
    x
}

/// Pack one chunk (whole groups of 8, then a zero-padded tail); returns false if any code is
/// `≥ 2^B`. `out.len()` must equal `packed_len(codes.len(), B)`.
fn pack_chunk<const B: usize>(codes: &[u8], out: &mut [u8]) -> bool {
    let mut seen = 0u64;
    let full = codes.len() / 8;
    let (out_body, out_tail) = out.split_at_mut(full * B);
    let groups = codes.chunks_exact(8);
    let tail = groups.remainder();
    for (g, o) in groups.zip(out_body.chunks_exact_mut(B)) {
        let x = u64::from_le_bytes(g.try_into().unwrap());
        seen |= x;
        o.copy_from_slice(&gather::<B>(x).to_le_bytes()[..B]);
    }
    if !tail.is_empty() {
        let mut buf = [0u8; 8];
        buf[..tail.len()].copy_from_slice(tail);
        let x = u64::from_le_bytes(buf);
        seen |= x;
        let n = out_tail.len();
        out_tail.copy_from_slice(&gather::<B>(x).to_le_bytes()[..n]);
    }
    // Every byte of `seen` is the OR of codes; any bit at or above B in any byte is an error.
    let high = !((1u64 << B) - 1) & 0xff;
    seen & (high * 0x0101_0101_0101_0101) == 0
}

/// Unpack one chunk. `packed.len()` must equal `packed_len(out.len(), B)`.
fn unpack_chunk<const B: usize>(packed: &[u8], out: &mut [u8]) {
    let full = out.len() / 8;
    let (in_body, in_tail) = packed.split_at(full * B);
    let mut outs = out.chunks_exact_mut(8);
    for (g, o) in in_body.chunks_exact(B).zip(&mut outs) {
        let mut buf = [0u8; 8];
        buf[..B].copy_from_slice(g);
        o.copy_from_slice(&scatter::<B>(u64::from_le_bytes(buf)).to_le_bytes());
    }
    let o = outs.into_remainder();
    if !o.is_empty() {
        let mut buf = [0u8; 8];
        buf[..in_tail.len()].copy_from_slice(in_tail);
        let n = o.len();
        o.copy_from_slice(&scatter::<B>(u64::from_le_bytes(buf)).to_le_bytes()[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(codes: &[u8], bits: u32) -> Vec<u8> {
        let mut out = vec![0xAAu8; packed_len(codes.len(), bits)];
        pack(codes, bits, &mut out).unwrap();
        out
    }

    #[test]
    fn lengths() {
        assert_eq!(packed_len(0, 3), 0);
        assert_eq!(packed_len(1, 3), 1);
        assert_eq!(packed_len(8, 3), 3);
        assert_eq!(packed_len(9, 3), 4);
        assert_eq!(packed_len(3, 4), 2);
        assert_eq!(packed_len(5, 8), 5);
        assert_eq!(packed_len(usize::MAX, 8), usize::MAX);
    }

    #[test]
    fn golden_2bit() {
        // codes [1,2,3,0,1]: stream bits (element: bits, LSB first)
        // byte 0 = e3 e2 e1 e0 = 00 11 10 01 = 0b0011_1001
        // byte 1 = pad pad pad e4 = 00 00 00 01 = 0b0000_0001
        assert_eq!(packed(&[1, 2, 3, 0, 1], 2), [0b0011_1001, 0b0000_0001]);
    }

    #[test]
    fn golden_3bit() {
        // codes [1..=8 mod 8] = [1,2,3,4,5,6,7,0], 3 bits each, 24 stream bits:
        // e0=001 e1=010 e2=011 e3=100 e4=101 e5=110 e6=111 e7=000
        // byte 0 = e2[1:0] e1 e0       = 11 010 001  = 0b1101_0001
        // byte 1 = e5[0] e4 e3 e2[2]   = 0 101 100 0 = 0b0101_1000
        // byte 2 = e7 e6 e5[2:1]       = 000 111 11  = 0b0001_1111
        assert_eq!(packed(&[1, 2, 3, 4, 5, 6, 7, 0], 3), [0b1101_0001, 0b0101_1000, 0b0001_1111]);
        // one element: 5 = 101 in the low bits, zero padding above.
        assert_eq!(packed(&[5], 3), [0b0000_0101]);
        // 9 elements: the ninth (7) starts byte 3.
        assert_eq!(packed(&[0, 0, 0, 0, 0, 0, 0, 0, 7], 3), [0, 0, 0, 0b0000_0111]);
    }

    #[test]
    fn golden_4bit() {
        // element 0 in the low nibble: byte = e1 e0
        // [0x1, 0x2, 0xF, 0x0, 0xA] -> 0x21, 0x0F, 0x0A (padding nibble 0)
        assert_eq!(packed(&[0x1, 0x2, 0xF, 0x0, 0xA], 4), [0x21, 0x0F, 0x0A]);
    }

    #[test]
    fn golden_6bit() {
        // codes [0b000001, 0b111110, 0b101010, 0b010101, 0b110011]
        // e0=000001 e1=111110 e2=101010 e3=010101 e4=110011 (30 bits -> 4 bytes)
        // byte 0 = e1[1:0] e0        = 10 000001   = 0b1000_0001
        // byte 1 = e2[3:0] e1[5:2]   = 1010 1111   = 0b1010_1111
        // byte 2 = e3 e2[5:4]        = 010101 10   = 0b0101_0110
        // byte 3 = pad pad e4        = 00 110011   = 0b0011_0011
        assert_eq!(
            packed(&[0b000001, 0b111110, 0b101010, 0b010101, 0b110011], 6),
            [0b1000_0001, 0b1010_1111, 0b0101_0110, 0b0011_0011]
        );
    }

    /// Reference: the layout definition, bit by bit.
    fn pack_ref(codes: &[u8], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; packed_len(codes.len(), bits)];
        for (i, &c) in codes.iter().enumerate() {
            for k in 0..bits as usize {
                let b = bits as usize * i + k;
                if (c >> k) & 1 == 1 {
                    out[b / 8] |= 1 << (b % 8);
                }
            }
        }
        out
    }

    fn codes_for(len: usize, bits: u32, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as u8) & (((1u32 << bits) - 1) as u8)
            })
            .collect()
    }

    #[test]
    fn round_trip_all_bits() {
        let lens = [
            0usize,
            1,
            2,
            7,
            8,
            9,
            15,
            16,
            17,
            63,
            1000,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 5,
        ];
        for bits in 1..=8u32 {
            for &len in &lens {
                let codes = codes_for(len, bits, len as u64 * 31 + bits as u64);
                let p = packed(&codes, bits);
                assert_eq!(p, pack_ref(&codes, bits), "bits {bits} len {len}");
                let mut back = vec![0xFFu8; len];
                unpack(&p, bits, len, &mut back).unwrap();
                assert_eq!(back, codes, "bits {bits} len {len}");
            }
        }
    }

    #[test]
    fn unpack_ignores_padding() {
        for bits in 1..=7u32 {
            let codes = codes_for(5, bits, 9);
            let mut p = packed(&codes, bits);
            *p.last_mut().unwrap() |= 0xFFu8 << ((5 * bits as usize) % 8);
            let mut back = vec![0u8; 5];
            unpack(&p, bits, 5, &mut back).unwrap();
            assert_eq!(back, codes);
        }
    }

    #[test]
    fn same_result_on_any_pool() {
        let codes = codes_for(5 * CHUNK + 3, 3, 1);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let many = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let a = one.install(|| packed(&codes, 3));
        let b = many.install(|| packed(&codes, 3));
        assert_eq!(a, b);
    }

    #[test]
    fn errors() {
        let mut out = vec![0u8; 2];
        for bits in [0u32, 9, 100] {
            assert_eq!(pack(&[0, 1], bits, &mut out).unwrap_err().arg, "bits");
            assert_eq!(unpack(&[0], bits, 1, &mut out).unwrap_err().arg, "bits");
        }
        assert_eq!(pack(&[0, 1, 2, 3, 4], 4, &mut out).unwrap_err().arg, "out");
        assert_eq!(pack(&[0, 1, 2], 4, &mut []).unwrap_err().arg, "out");
        let e = pack(&[0, 1, 4, 9], 2, &mut [0u8; 1]).unwrap_err();
        assert_eq!(e.arg, "codes");
        assert!(e.msg.contains("index 2") && e.msg.contains("got 4"), "{e}");
        assert!(e.msg.contains("0..=3"), "{e}");
        // first bad index in a large, parallel input
        let mut codes = vec![1u8; 4 * CHUNK];
        codes[3 * CHUNK + 7] = 200;
        codes[2 * CHUNK + 1] = 16;
        let mut big = vec![0u8; packed_len(codes.len(), 4)];
        let e = pack(&codes, 4, &mut big).unwrap_err();
        assert!(e.msg.contains(&format!("index {}", 2 * CHUNK + 1)), "{e}");
        assert_eq!(unpack(&[0, 0], 4, 5, &mut [0u8; 5]).unwrap_err().arg, "packed");
        assert_eq!(unpack(&[0, 0], 4, 4, &mut [0u8; 3]).unwrap_err().arg, "out");
    }

    /// Single-thread throughput: `cargo test --release bench_pack -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_pack() {
        let n = 1 << 24;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        for bits in [1u32, 2, 3, 4, 6, 8] {
            let codes = codes_for(n, bits, 5);
            let mut p = vec![0u8; packed_len(n, bits)];
            let mut back = vec![0u8; n];
            let reps = 20;
            pool.install(|| {
                pack(&codes, bits, &mut p).unwrap();
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    pack(std::hint::black_box(&codes), bits, &mut p).unwrap();
                }
                let tp = t.elapsed().as_secs_f64();
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    unpack(std::hint::black_box(&p), bits, n, &mut back).unwrap();
                }
                let tu = t.elapsed().as_secs_f64();
                println!(
                    "bits {bits}: pack {:.2} G codes/s, unpack {:.2} G codes/s",
                    (n * reps) as f64 / tp / 1e9,
                    (n * reps) as f64 / tu / 1e9
                );
            });
            assert_eq!(back, codes);
        }
    }
}
