//! The dynamic-exponent map of 8-bit optimizers (Dettmers, "8-Bit Approximations for
//! Parallelism in Deep Learning"), in its 8-bit and 4-bit, signed and unsigned forms.
//!
//! The levels are exactly the float32 values of bitsandbytes'
//! `create_dynamic_map(signed, max_exponent_bits=bits-1, total_bits=bits)` (sorted, without
//! the zero padding bitsandbytes appends to reach 256 entries for 4 bits), so 8-bit optimizer
//! states can be imported code for code. Its algorithm: for each decade `i` of
//! `max_exponent_bits` decades, `n_i` linearly spaced boundaries on `[0.1, 1]`
//! (`torch.linspace`, float32), their pairwise means, scaled by `10^(i - (max_exponent_bits-1))`
//! (and negated, when signed); then 0 and 1.
//!
//! Design:
//! - Computed, not embedded: every step is reproduced in float32 exactly as torch's CPU kernels
//!   do it, and checked bit for bit against torch 2.15 (x86-64 CPU) and bitsandbytes 0.50.2:
//!   every value of the four maps (16, 16, 256 and 256 levels), dumped as hex by the ignored
//!   test `dump_dynamic`, was compared in Python with `create_dynamic_map` and with the
//!   algorithm above run in torch; spot values from that oracle are the `golden` test.
//!   The float32 steps:
//!   * `torch.linspace(0.1, 1, n)`: `start = 0.1f32`, `step = (1 - start) / (n - 1)` in
//!     float32, element `i < n/2` is `start + step*i` and the rest `end - step*(n-1-i)`, each
//!     rounded ONCE — torch's kernel is compiled with FP contraction, so these are fused
//!     multiply-adds (`f32::mul_add`; verified for every n in 2..300: the unfused form
//!     differs for most n ≥ 9). A torch build without contraction would give other bits;
//!     the map we match is the one torch/bitsandbytes produce on x86-64.
//!   * means: `(a + b) / 2` in float32 (the halving is exact).
//!   * scale: the Python float `10**k` is rounded to float32 (torch's opmath for a float32
//!     tensor times a Python scalar) and multiplied in float32.
//! - Rejected: embedding four hex tables (bulkier, and hides where the values come from).

use crate::error::{Error, Result};

/// `torch.linspace(0.1, 1, n, dtype=float32)` as torch's CPU kernel computes it (n ≥ 2).
fn linspace_01_1(n: usize) -> Vec<f32> {
    let start = 0.1f32;
    let end = 1.0f32;
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// The levels of the dynamic map with `bits ∈ {4, 8}` total bits, ascending: `2^bits` values,
/// containing 0 and 1 (signed maps: ± values from `0.1·10^-(bits-2)` up to just below 1,
/// plus 0 and 1; unsigned: the same magnitudes with twice the density, plus 0 and 1).
///
/// Errors: `"bits"` if `bits` is not 4 or 8.
pub fn dynamic_levels(bits: u32, signed: bool) -> Result<Vec<f32>> {
    if bits != 4 && bits != 8 {
        return Err(Error::value(
            "bits",
            format!("expected 4 or 8 bits for the dynamic map, got {bits}"),
        ));
    }
    // Powers of ten as the Python floats 10**-7 .. 10**0 (correctly rounded f64 literals).
    const POW10: [f64; 8] = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let max_exp = (bits - 1) as usize;
    let non_sign = bits as usize - 1;
    let mut data: Vec<f32> = Vec::with_capacity(1 << bits);
    for i in 0..max_exp {
        let items = if signed {
            (1usize << (i + non_sign - max_exp)) + 1
        } else {
            (1usize << (i + non_sign - max_exp + 1)) + 1
        };
        let b = linspace_01_1(items);
        // exponent -(max_exp - 1) + i, in -(max_exp - 1) ..= 0
        let scale = POW10[7 + i + 1 - max_exp] as f32;
        for w in b.windows(2) {
            let v = scale * ((w[0] + w[1]) / 2.0);
            data.push(v);
            if signed {
                data.push(-v);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(f32::total_cmp);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure() {
        for bits in [4u32, 8] {
            for signed in [false, true] {
                let l = dynamic_levels(bits, signed).unwrap();
                assert_eq!(l.len(), 1 << bits, "bits {bits} signed {signed}");
                assert!(l.windows(2).all(|w| w[0] < w[1]), "strictly ascending");
                assert!(l.contains(&0.0) && l.contains(&1.0));
                assert_eq!(*l.last().unwrap(), 1.0);
                if signed {
                    // symmetric, except that 1.0 has no negative twin
                    let neg: Vec<f32> = l.iter().filter(|&&v| v < 0.0).map(|&v| -v).collect();
                    let mut pos: Vec<f32> =
                        l.iter().filter(|&&v| v > 0.0 && v < 1.0).copied().collect();
                    pos.reverse();
                    assert_eq!(neg, pos);
                    assert_eq!(l[0], -l[l.len() - 2]);
                } else {
                    assert_eq!(l[0], 0.0);
                }
                assert!(crate::table::Table::new(l).is_ok());
            }
        }
    }

    /// Values from torch 2.15 / bitsandbytes 0.50.2 `create_dynamic_map` (as float32 hex).
    #[test]
    fn golden() {
        let hex = |bits: u32, signed: bool| -> Vec<u32> {
            dynamic_levels(bits, signed).unwrap().iter().map(|v| v.to_bits()).collect()
        };
        let s8 = hex(8, true);
        let u8_ = hex(8, false);
        let s4 = hex(4, true);
        let u4 = hex(4, false);
        GOLDEN.iter().for_each(|&(bits, signed, idx, want)| {
            let got = match (bits, signed) {
                (8, true) => s8[idx],
                (8, false) => u8_[idx],
                (4, true) => s4[idx],
                _ => u4[idx],
            };
            assert_eq!(got, want, "bits {bits} signed {signed} index {idx}");
        });
    }

    /// (bits, signed, index, f32 bits) spot values from the oracle.
    const GOLDEN: &[(u32, bool, usize, u32)] = &[
        (8, true, 0, 0xbf7e3333),    // -0.992968738
        (8, true, 1, 0xbf7a999a),    // -0.978906274
        (8, true, 64, 0xbdc9eb85),   // -0.0985937491
        (8, true, 127, 0x00000000),  // 0
        (8, true, 128, 0x3513a3b7),  // 5.50000038e-07
        (8, true, 129, 0x365a1a94),  // 3.25000019e-06
        (8, true, 192, 0x3df80000),  // 0.12109375
        (8, true, 253, 0x3f7a999a),  // 0.978906274
        (8, true, 254, 0x3f7e3333),  // 0.992968738
        (8, true, 255, 0x3f800000),  // 1
        (8, false, 0, 0x00000000),   // 0
        (8, false, 1, 0x34ae7baa),   // 3.2500003e-07
        (8, false, 64, 0x3c466667),  // 0.0121093756
        (8, false, 127, 0x3dd40000), // 0.103515625
        (8, false, 128, 0x3de26666), // 0.110546872
        (8, false, 129, 0x3df0cccd), // 0.117578126
        (8, false, 192, 0x3f0f8000), // 0.560546875
        (8, false, 253, 0x3f7d4ccc), // 0.989453077
        (8, false, 254, 0x3f7f199a), // 0.996484399
        (8, false, 255, 0x3f800000), // 1
        (4, true, 0, 0xbf633333),    // -0.887499988
        (4, true, 1, 0xbf29999a),    // -0.662500024
        (4, true, 4, 0xbd9eb852),    // -0.0775000006
        (4, true, 7, 0x00000000),    // 0
        (4, true, 8, 0x3bb43958),    // 0.00549999997
        (4, true, 9, 0x3d051eb9),    // 0.0325000025
        (4, true, 12, 0x3ee00000),   // 0.4375
        (4, true, 13, 0x3f29999a),   // 0.662500024
        (4, true, 14, 0x3f633333),   // 0.887499988
        (4, true, 15, 0x3f800000),   // 1
        (4, false, 0, 0x00000000),   // 0
        (4, false, 1, 0x3b54fdf4),   // 0.00325000007
        (4, false, 4, 0x3d333333),   // 0.0437499993
        (4, false, 7, 0x3e200000),   // 0.15625
        (4, false, 8, 0x3e89999a),   // 0.268750012
        (4, false, 9, 0x3ec33333),   // 0.381249994
        (4, false, 12, 0x3f380000),  // 0.71875
        (4, false, 13, 0x3f54cccc),  // 0.831249952
        (4, false, 14, 0x3f71999a),  // 0.943750024
        (4, false, 15, 0x3f800000),  // 1
    ];

    #[test]
    fn errors() {
        for bits in [0u32, 1, 2, 3, 5, 7, 9] {
            assert_eq!(dynamic_levels(bits, true).unwrap_err().arg, "bits");
        }
    }

    /// Prints the four maps as hex (one `DYN bits signed hex,…` line each) for comparison with
    /// the Python oracle:
    /// `cargo test --release dump_dynamic -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn dump_dynamic() {
        for bits in [4u32, 8] {
            for signed in [false, true] {
                let l = dynamic_levels(bits, signed).unwrap();
                let h: Vec<String> = l.iter().map(|v| format!("{:08x}", v.to_bits())).collect();
                println!("DYN {bits} {} {}", signed as u8, h.join(","));
            }
        }
    }
}
