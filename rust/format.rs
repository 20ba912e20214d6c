//! The format type: a floating-point format is its primary parameters, everything
//! else (bits, max, special codes, …) is derived here.
//!
//! Design notes
//! - A format is a plain `Copy` value; equality is equality of the primary fields, so
//!   `parse(name(f)) == f` is a meaningful test.
//! - Every value of every accepted format is exactly representable in float32
//!   (`Format::new` rejects biases that would put values outside float32). This lets
//!   decode produce float32 without rounding and lets the encoder assume that an f32
//!   input never needs *more* bits than the target keeps at the bottom of its range.
//! - `subnormals = false` means the all-zero exponent field is an ordinary binade
//!   (as in OCP E8M0): such a format has no zero.
//! - Special codes:
//!   ```text
//!   nan = ieee     S 11…1 00…0 = ±inf (inf must be true), S 11…1 xx…x (x≠0) = NaN
//!   nan = max      S 11…1 11…1 = NaN (only that code, per sign), no inf
//!   nan = negzero  1 00…0 00…0 = the one NaN, no −0, no inf (signed only)
//!   nan = none     every code is finite, no inf
//!   ```
//! - Infinities without IEEE NaNs (IEEE P3109 style): `inf` may also be set with
//!   `nan = negzero` or `nan = max`; inf is then the magnitude code just below the NaN:
//!   ```text
//!   nan = negzero, inf   1 00…0 00…0 = NaN, S 11…1 11…1 = ±inf   (P3109 signed: 0x80, 0x7F/0xFF)
//!   nan = max, inf       S 11…1 11…1 = NaN, S 11…1 11…0 = ±inf  (P3109 unsigned: 0xFF, 0xFE)
//!   ```
//!   Rejected: a separate NaN kind per P3109 variant (the encoder and decoder only need
//!   "where is inf" and "where is NaN", which these two fields already say).

use crate::error::{Error, Result};

/// `v as f32` (round to nearest even), with a result in float32's subnormal range built from
/// bits: the conversion instruction gives 0 there when MXCSR's flush-to-zero flag is set
/// (`torch.set_flush_denormal(True)` sets it), which decoded e8m0's 2^-127 as 0.
pub fn f32_exact(v: f64) -> f32 {
    let a = v.abs();
    if a != 0.0 && a < f32::MIN_POSITIVE as f64 {
        // the significand field in units of 2^-149 (scaling by a power of two is exact; 2^23
        // after rounding is the smallest normal's pattern)
        let field = (a * 2f64.powi(149)).round_ties_even() as u32;
        f32::from_bits(((v.is_sign_negative() as u32) << 31) | field)
    } else {
        v as f32
    }
}

/// Where a format keeps its NaN codes (see the module docs for the bit pictures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NanKind {
    /// IEEE 754 style: the all-ones exponent holds inf (mantissa 0) and NaNs.
    Ieee,
    /// Only the all-ones code (per sign) is NaN ("fn" formats such as OCP E4M3).
    Max,
    /// The code 1000…0 is the only NaN; there is no −0 ("fnuz" formats).
    NegZero,
    /// No NaN at all; every code is a finite number (FP4, FP6).
    None,
}

impl NanKind {
    /// The name used in Python and in metadata.
    pub fn name(self) -> &'static str {
        match self {
            NanKind::Ieee => "ieee",
            NanKind::Max => "max",
            NanKind::NegZero => "negzero",
            NanKind::None => "none",
        }
    }

    /// Parse a name produced by [`NanKind::name`].
    pub fn parse(s: &str) -> Result<NanKind> {
        Ok(match s {
            "ieee" => NanKind::Ieee,
            "max" => NanKind::Max,
            "negzero" => NanKind::NegZero,
            "none" => NanKind::None,
            _ => {
                return Err(Error::value(
                    "nan",
                    format!("expected one of 'ieee', 'max', 'negzero', 'none', got {s:?}"),
                ))
            }
        })
    }
}

/// A floating-point format given by its primary parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Format {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    signed: bool,
    inf: bool,
    nan: NanKind,
    subnormals: bool,
}

impl Format {
    /// Build and validate a format.
    ///
    /// Rules: 1 ≤ exp_bits ≤ 8, 0 ≤ man_bits ≤ 23; `inf` requires `nan = ieee` and
    /// `nan = ieee` requires `inf` and man_bits ≥ 1; `negzero` requires `signed`; a
    /// format without subnormals has no zero; every value must be exact in float32.
    pub fn new(
        exp_bits: u32,
        man_bits: u32,
        bias: i32,
        signed: bool,
        inf: bool,
        nan: NanKind,
        subnormals: bool,
    ) -> Result<Format> {
        if !(1..=8).contains(&exp_bits) {
            return Err(Error::value("exp_bits", format!("expected 1..=8, got {exp_bits}")));
        }
        if man_bits > 23 {
            return Err(Error::value("man_bits", format!("expected 0..=23, got {man_bits}")));
        }
        if inf && nan == NanKind::None {
            return Err(Error::value(
                "inf",
                "inf=True needs a NaN code (nan='ieee', 'negzero' or 'max'), got nan='none'",
            ));
        }
        if inf && nan == NanKind::Max && exp_bits + man_bits < 2 {
            return Err(Error::value(
                "inf",
                "inf=True with nan='max' needs at least 2 exponent + mantissa bits",
            ));
        }
        if nan == NanKind::Ieee && !inf {
            return Err(Error::value(
                "inf",
                "nan='ieee' reserves the all-ones exponent for inf and NaN; it needs inf=True",
            ));
        }
        if nan == NanKind::Ieee && man_bits == 0 {
            return Err(Error::value(
                "man_bits",
                "nan='ieee' needs man_bits >= 1 (with 0 mantissa bits there is no NaN code)",
            ));
        }
        if nan == NanKind::NegZero && !signed {
            return Err(Error::value("nan", "nan='negzero' needs a signed format"));
        }
        if !(-1000..=1000).contains(&bias) {
            return Err(Error::value("bias", format!("expected -1000..=1000, got {bias}")));
        }
        let f = Format { exp_bits, man_bits, bias, signed, inf, nan, subnormals };
        // Exactness in float32: the largest finite value below 2^128, the smallest
        // non-zero value at or above 2^-149.
        let top = f.emax() + 1;
        let bottom = f.min_value_exponent();
        if top > 128 {
            return Err(Error::value(
                "bias",
                format!("bias={bias} gives values up to 2^{top}, beyond float32 (2^128)"),
            ));
        }
        if bottom < -149 {
            return Err(Error::value(
                "bias",
                format!("bias={bias} gives values down to 2^{bottom}, below float32 (2^-149)"),
            ));
        }
        Ok(f)
    }

    /// Number of exponent bits.
    pub fn exp_bits(&self) -> u32 {
        self.exp_bits
    }
    /// Number of explicit mantissa bits.
    pub fn man_bits(&self) -> u32 {
        self.man_bits
    }
    /// Exponent bias.
    pub fn bias(&self) -> i32 {
        self.bias
    }
    /// Whether the format has a sign bit.
    pub fn signed(&self) -> bool {
        self.signed
    }
    /// Whether the format has ±inf.
    pub fn inf(&self) -> bool {
        self.inf
    }
    /// NaN encoding.
    pub fn nan(&self) -> NanKind {
        self.nan
    }
    /// Whether exponent field 0 holds subnormals (and zero).
    pub fn subnormals(&self) -> bool {
        self.subnormals
    }

    /// Total bits of a code.
    pub fn bits(&self) -> u32 {
        self.signed as u32 + self.exp_bits + self.man_bits
    }
    /// Bits of the magnitude part (exponent + mantissa).
    pub fn mag_bits(&self) -> u32 {
        self.exp_bits + self.man_bits
    }
    /// Number of distinct codes, 2^bits.
    pub fn num_codes(&self) -> u64 {
        1u64 << self.bits()
    }
    /// The sign bit mask of a code (0 for unsigned formats).
    pub fn sign_mask(&self) -> u32 {
        if self.signed {
            1u32 << (self.bits() - 1)
        } else {
            0
        }
    }
    /// Whether zero is representable.
    pub fn has_zero(&self) -> bool {
        self.subnormals
    }
    /// Whether the format has any NaN code.
    pub fn has_nan(&self) -> bool {
        self.nan != NanKind::None
    }

    /// Smallest exponent of a normal number (of the binade of exponent field 0 when
    /// there are no subnormals, else of field 1).
    pub fn emin(&self) -> i32 {
        if self.subnormals {
            1 - self.bias
        } else {
            -self.bias
        }
    }

    /// Largest magnitude code that is a finite number.
    pub fn max_code_mag(&self) -> u32 {
        let all = (1u32 << self.mag_bits()) - 1;
        if self.inf && self.nan != NanKind::Ieee {
            return self.inf_code_mag() - 1; // P3109 style: inf right below the NaN
        }
        match self.nan {
            NanKind::Ieee => all - (1u32 << self.man_bits), // top binade reserved
            NanKind::Max => all - 1,
            NanKind::NegZero | NanKind::None => all,
        }
    }

    /// Exponent of the binade that holds the largest finite value.
    pub fn emax(&self) -> i32 {
        let field = (self.max_code_mag() >> self.man_bits) as i32;
        if self.subnormals && field == 0 {
            // only subnormals (degenerate): the largest value is below 2^emin
            self.emin() - 1
        } else {
            field - self.bias
        }
    }

    /// Exponent of the smallest non-zero magnitude.
    fn min_value_exponent(&self) -> i32 {
        if self.subnormals {
            self.emin() - self.man_bits as i32
        } else {
            self.emin()
        }
    }

    /// Magnitude code of +inf (only meaningful when `inf()`): the all-ones exponent with a
    /// zero mantissa (IEEE), else the magnitude code right below the NaN (P3109 style).
    pub fn inf_code_mag(&self) -> u32 {
        let all = (1u32 << self.mag_bits()) - 1;
        match self.nan {
            NanKind::NegZero => all,
            NanKind::Max => all - 1,
            _ => ((1u32 << self.exp_bits) - 1) << self.man_bits,
        }
    }

    /// The canonical NaN code for a given sign (sign ignored where the format has one NaN).
    /// Only meaningful when `has_nan()`.
    pub fn nan_code(&self, negative: bool) -> u32 {
        let s = if negative { self.sign_mask() } else { 0 };
        match self.nan {
            // quiet NaN: all-ones exponent, top mantissa bit set
            NanKind::Ieee => s | self.inf_code_mag() | (1u32 << (self.man_bits - 1)),
            NanKind::Max => s | ((1u32 << self.mag_bits()) - 1),
            NanKind::NegZero => self.sign_mask(),
            NanKind::None => 0,
        }
    }

    /// Whether `code` (< 2^bits) is a NaN code.
    pub fn is_nan_code(&self, code: u32) -> bool {
        let mag = code & ((1u32 << self.mag_bits()) - 1);
        match self.nan {
            NanKind::Ieee => mag > self.inf_code_mag(),
            NanKind::Max => mag == (1u32 << self.mag_bits()) - 1,
            NanKind::NegZero => code == self.sign_mask(),
            NanKind::None => false,
        }
    }

    /// Exact value of a code as f32 ([`f32_exact`] of [`Format::decode_f64`]).
    pub fn decode_f32(&self, code: u32) -> f32 {
        f32_exact(self.decode_f64(code))
    }

    /// Exact value of a code as f64 (every value is exact in float32 too).
    /// Codes ≥ 2^bits are the caller's error; they are masked here.
    pub fn decode_f64(&self, code: u32) -> f64 {
        let code = code & (self.num_codes() - 1) as u32;
        let neg = self.signed && code & self.sign_mask() != 0;
        let sign = if neg { -1.0 } else { 1.0 };
        if self.is_nan_code(code) {
            return if neg { -f64::NAN } else { f64::NAN };
        }
        let mag = code & ((1u32 << self.mag_bits()) - 1);
        if self.inf && mag == self.inf_code_mag() {
            return sign * f64::INFINITY;
        }
        let field = (mag >> self.man_bits) as i32;
        let man = (mag & ((1u32 << self.man_bits) - 1)) as f64;
        let scale = (self.man_bits as f64).exp2();
        let v = if field == 0 && self.subnormals {
            man / scale * pow2(self.emin())
        } else {
            (1.0 + man / scale) * pow2(field - self.bias)
        };
        sign * v
    }

    /// Largest finite value.
    pub fn max(&self) -> f64 {
        self.decode_f64(self.max_code_mag())
    }
    /// Smallest positive normal value.
    pub fn min_normal(&self) -> f64 {
        pow2(self.emin())
    }
    /// Smallest positive value (subnormal where the format has subnormals).
    pub fn min_subnormal(&self) -> f64 {
        pow2(self.min_value_exponent())
    }
    /// Difference between 1.0 and the next larger value (2^-man_bits).
    pub fn eps(&self) -> f64 {
        pow2(-(self.man_bits as i32))
    }
}

/// 2^e as f64, exact for the exponents used here (-1100..1100), computed on bits.
pub(crate) fn pow2(e: i32) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn f32_exact_is_the_conversion() {
        // below, at and around float32's subnormal range, ties included (this test runs
        // without flush-to-zero, where `as f32` gives the rounded value)
        let mut vs = vec![0.0, -0.0, 1.0, f64::INFINITY, f64::MIN_POSITIVE, 1e-300];
        for k in 0..=(1u32 << 12) {
            for e in [-160, -151, -150, -149, -140, -127, -126, -125] {
                let base = 2f64.powi(e);
                vs.extend([base * (1.0 + k as f64 / 4096.0), base * k as f64 / 3.0]);
            }
        }
        vs.extend((0..2000).map(|k| (k as f64 + 0.5) * 2f64.powi(-149))); // ties
        for v in vs {
            for v in [v, -v] {
                assert_eq!(f32_exact(v).to_bits(), (v as f32).to_bits(), "{v:e}");
            }
        }
    }
    use super::*;

    fn e4m3fn() -> Format {
        Format::new(4, 3, 7, true, false, NanKind::Max, true).unwrap()
    }

    #[test]
    fn derived_e4m3fn() {
        let f = e4m3fn();
        assert_eq!(f.bits(), 8);
        assert_eq!(f.max(), 448.0);
        assert_eq!(f.min_normal(), 2f64.powi(-6));
        assert_eq!(f.min_subnormal(), 2f64.powi(-9));
        assert!(f.decode_f64(0x7f).is_nan() && f.decode_f64(0xff).is_nan());
        assert_eq!(f.decode_f64(0x80), 0.0);
        assert!(f.decode_f64(0x80).is_sign_negative());
    }

    #[test]
    fn derived_e5m2_and_e8m0() {
        let f = Format::new(5, 2, 15, true, true, NanKind::Ieee, true).unwrap();
        assert_eq!(f.max(), 57344.0);
        assert_eq!(f.decode_f64(0x7c), f64::INFINITY);
        assert!(f.decode_f64(0x7d).is_nan());
        let g = Format::new(8, 0, 127, false, false, NanKind::Max, false).unwrap();
        assert_eq!(g.decode_f64(0), 2f64.powi(-127));
        assert_eq!(g.max(), 2f64.powi(127));
        assert!(g.decode_f64(0xff).is_nan());
        assert!(!g.has_zero());
    }

    #[test]
    fn rejects_bad_fields() {
        assert_eq!(
            Format::new(0, 3, 7, true, false, NanKind::Max, true).unwrap_err().arg,
            "exp_bits"
        );
        assert_eq!(
            Format::new(4, 24, 7, true, false, NanKind::Max, true).unwrap_err().arg,
            "man_bits"
        );
        assert_eq!(Format::new(4, 3, 7, true, true, NanKind::None, true).unwrap_err().arg, "inf");
        assert_eq!(Format::new(1, 0, 0, false, true, NanKind::Max, true).unwrap_err().arg, "inf");
        assert_eq!(
            Format::new(4, 3, 7, false, false, NanKind::NegZero, true).unwrap_err().arg,
            "nan"
        );
        assert_eq!(
            Format::new(8, 23, 100, true, true, NanKind::Ieee, true).unwrap_err().arg,
            "bias"
        );
        assert_eq!(
            Format::new(8, 23, 160, true, true, NanKind::Ieee, true).unwrap_err().arg,
            "bias"
        );
    }

    #[test]
    fn p3109_special_codes() {
        // P3109 binary8p4 (signed, extended): 0x80 NaN, 0x7F/0xFF ±inf, max at 0x7E
        let f = Format::new(4, 3, 8, true, true, NanKind::NegZero, true).unwrap();
        assert!(f.decode_f64(0x80).is_nan());
        assert_eq!(f.decode_f64(0x7f), f64::INFINITY);
        assert_eq!(f.decode_f64(0xff), f64::NEG_INFINITY);
        assert_eq!(f.max(), 224.0); // 2^7 · 1.75
        assert_eq!(f.decode_f64(0x00), 0.0);
        // unsigned, extended: 0xFF NaN, 0xFE +inf, max at 0xFD
        let u = Format::new(5, 3, 16, false, true, NanKind::Max, true).unwrap();
        assert!(u.decode_f64(0xff).is_nan());
        assert_eq!(u.decode_f64(0xfe), f64::INFINITY);
        assert_eq!(u.max_code_mag(), 0xfd);
    }

    #[test]
    fn pow2_exact() {
        assert_eq!(pow2(0), 1.0);
        assert_eq!(pow2(-149), f32::from_bits(1) as f64);
        assert_eq!(pow2(127), 2f64.powi(127));
    }
}
