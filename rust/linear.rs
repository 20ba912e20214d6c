//! Linear k-bit levels (evenly spaced codes), signed or unsigned, with or without zero.
//!
//! Design:
//! - Only the levels are defined here; encoding and decoding go through [`crate::table::Table`],
//!   so nearest (ties to even) and stochastic rounding behave the same for every table codec.
//! - Each level is defined as `(i as f64 / n as f64) as f32` (an f64 division, then one
//!   rounding to f32), so any implementation can reproduce the table exactly.
//! - Signed levels are symmetric, `i/n` for `i ∈ -n..=n` with `n = 2^(bits-1) - 1`: the code
//!   `2^bits - 1` is left unused rather than making the range asymmetric (as in bitsandbytes'
//!   linear maps and int8 symmetric quantization).
//! - The zero-free unsigned variant `(i+1)/2^bits` is for second moments, where a code of
//!   exactly zero would turn into a division by ~0 in Adam's update.

use crate::error::{Error, Result};

/// The levels of a linear `bits`-bit code, ascending.
///
/// - `signed` (2 ≤ bits ≤ 8, `zero` must be true): `i/n` for `i ∈ -n..=n`,
///   `n = 2^(bits-1) - 1` (`2^bits - 1` levels; the top code is unused).
/// - unsigned with `zero` (1 ≤ bits ≤ 8): `i/(2^bits - 1)` for `i ∈ 0..2^bits`.
/// - unsigned without zero (1 ≤ bits ≤ 8): `(i+1)/2^bits` for `i ∈ 0..2^bits`.
///
/// Errors: `"bits"` outside those ranges; `"zero"` for a signed code without zero.
pub fn linear_levels(bits: u32, signed: bool, zero: bool) -> Result<Vec<f32>> {
    let min_bits = if signed { 2 } else { 1 };
    if !(min_bits..=8).contains(&bits) {
        return Err(Error::value(
            "bits",
            format!(
                "expected {min_bits} <= bits <= 8 for a {} linear code, got {bits}",
                if signed { "signed" } else { "unsigned" }
            ),
        ));
    }
    let level = |i: i64, n: i64| (i as f64 / n as f64) as f32;
    if signed {
        if !zero {
            return Err(Error::value(
                "zero",
                "expected zero=true for a signed linear code (its levels are symmetric \
                 around 0), got zero=false",
            ));
        }
        let n = (1i64 << (bits - 1)) - 1;
        return Ok((-n..=n).map(|i| level(i, n)).collect());
    }
    let count = 1i64 << bits;
    if zero {
        Ok((0..count).map(|i| level(i, count - 1)).collect())
    } else {
        Ok((0..count).map(|i| level(i + 1, count)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases() {
        assert_eq!(linear_levels(2, true, true).unwrap(), [-1.0, 0.0, 1.0]);
        assert_eq!(
            linear_levels(3, true, true).unwrap(),
            [-1.0, -2.0 / 3.0, -1.0 / 3.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]
        );
        assert_eq!(linear_levels(1, false, true).unwrap(), [0.0, 1.0]);
        assert_eq!(linear_levels(1, false, false).unwrap(), [0.5, 1.0]);
        assert_eq!(linear_levels(2, false, true).unwrap(), [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
        assert_eq!(linear_levels(2, false, false).unwrap(), [0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn structure() {
        for bits in 1..=8u32 {
            for (signed, zero) in [(true, true), (false, true), (false, false)] {
                if signed && bits < 2 {
                    continue;
                }
                let l = linear_levels(bits, signed, zero).unwrap();
                let want_len = (1usize << bits) - signed as usize;
                assert_eq!(l.len(), want_len);
                assert!(l.windows(2).all(|w| w[0] < w[1]));
                assert_eq!(*l.last().unwrap(), 1.0);
                assert_eq!(l.contains(&0.0), zero);
                if signed {
                    assert_eq!(l[0], -1.0);
                    assert!(l.iter().zip(l.iter().rev()).all(|(a, b)| *a == -*b));
                }
                if !zero {
                    assert_eq!(l[0], 1.0 / (1u32 << bits) as f32);
                }
                assert!(crate::table::Table::new(l).is_ok());
            }
        }
        // 8-bit signed: i/127, the value of `127 / 127` etc. rounded once.
        let l = linear_levels(8, true, true).unwrap();
        assert_eq!(l[127 + 1], (1.0f64 / 127.0) as f32);
    }

    #[test]
    fn errors() {
        assert_eq!(linear_levels(1, true, true).unwrap_err().arg, "bits");
        assert_eq!(linear_levels(0, false, true).unwrap_err().arg, "bits");
        assert_eq!(linear_levels(9, false, false).unwrap_err().arg, "bits");
        assert_eq!(linear_levels(9, true, false).unwrap_err().arg, "bits");
        assert_eq!(linear_levels(4, true, false).unwrap_err().arg, "zero");
    }
}
