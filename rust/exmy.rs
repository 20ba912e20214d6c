//! The ExMy element codec: float32/float64/float16/bfloat16 → codes of any `Format`,
//! and codes → float32/float64, on integer bit patterns only.
//!
//! Design notes
//! - Every input is decomposed exactly into `(sign, e, sig, lsb)` with
//!   `|x| = sig · 2^lsb` and `2^e ≤ |x| < 2^(e+1)`; rounding then works on `sig` alone.
//!   A float64 input is rounded once, directly (no staging through float32: ml_dtypes
//!   does stage, and so rounds twice on some inputs; we document that difference).
//! - The target's ulp at `x` is `2^q` with `q = max(e, emin) − M`. We keep
//!   `kept = sig >> (q − lsb)` and decide from the discarded bits `rem`:
//!   ```text
//!   sig:   1 m m m | r r r r r r      kept = 1mmm, rem = rrrrrr, half = 100000
//!                  ^ ulp of the target
//!   ```
//!   The magnitude code is then `((max(e, emin) − emin) << M) + kept'`: for subnormals
//!   the exponent part is 0 and `kept'` is the mantissa; for normals `kept'` carries the
//!   hidden bit, which lands in the exponent field, and a carry out of the mantissa
//!   moves to the next binade by itself. (Without subnormals, subtract the hidden bit.)
//! - Overflow is "magnitude code > the largest finite code" after rounding; then a
//!   rounding that shrinks the magnitude (toward_zero, up on negatives, down on
//!   positives) gives the largest finite value as in IEEE 754, and the others follow
//!   the overflow policy. This makes e4m3fn's 464 → 448 (ties to even) and 480 → NaN.
//! - Stochastic rounding rounds away from zero iff `r < floor(rem · 2^32 / 2^shift)`
//!   with `r` 32 random bits: P(away) is the discarded fraction truncated to 2^-32, and
//!   exact inputs (`rem = 0`) never move. `stochastic16` feeds the same code the words of
//!   `rng::Resolution::Bits16`, which truncates the probability to 2^-16.
//! - Round to nearest from float32 into a format of at most 8 bits also has a direct index
//!   (`nearest_index`: the table codec's 2^16 buckets of the top 16 bits, built from this
//!   encoder by evaluating it at each bucket's ends and binary-searching its one transition;
//!   round to nearest is monotone, so that describes the bucket). About twice the speed of
//!   the element code. It is built once per (format, options) for a call of 2^20+ elements
//!   or a blockwise spec, and kept; inf/NaN and error buckets are left to the element code.
//!   `encode` uses it only where the next note does not apply.
//! - Round to nearest from float32 into a format with subnormals and at least one mantissa
//!   bit is one float32 addition below the smallest normal (adding `2^(emin − M + 23)` rounds
//!   `|x|` to the subnormal step, ties to even, in IEEE arithmetic; float32 subnormal inputs
//!   are below half the target's smallest subnormal, so a CPU flushing them changes nothing)
//!   and a rebias plus add-and-shift above it (`rne_one`): no table, which a streaming input
//!   pushes out of the cache (one A/B run, 16M elements, one thread, shared 2-core VM:
//!   index 0.21 G/s, torch 0.45, this 0.56). float32 → float16 is `vcvtps2ph` (F16C).

use crate::error::{Error, Result};
use crate::format::{Format, NanKind};
use crate::par::{self, CHUNK};
use crate::rng;
use crate::simd::{self, CodeSlice};
use crate::table::Entries;
use std::sync::Mutex;

/// Rounding modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// To nearest, ties to even.
    Nearest,
    /// To nearest, ties away from zero.
    NearestAway,
    /// Truncation.
    TowardZero,
    /// Toward +inf.
    Up,
    /// Toward −inf.
    Down,
    /// Stochastic: away from zero with probability equal to the discarded fraction
    /// (truncated to 2^-32; one Philox word per element, `rng::Resolution::Bits32`).
    Stochastic,
    /// Stochastic with 16 random bits per element (`rng::Resolution::Bits16`): the same
    /// rounding code given its words, the probability truncated to 2^-16, half the Philox work.
    Stochastic16,
    /// To odd: truncate, and if anything was discarded set the lowest kept significand bit
    /// (the "sticky" rounding that makes a later round to nearest at ≥ 2 fewer bits exact).
    /// Overflow as for `TowardZero`.
    ToOdd,
}

impl Rounding {
    /// All modes with their names (Python's `ROUNDINGS`; its positions are the CUDA mode
    /// numbers, so a new mode goes last).
    pub const ALL: [(&'static str, Rounding); 8] = [
        ("nearest", Rounding::Nearest),
        ("nearest_away", Rounding::NearestAway),
        ("toward_zero", Rounding::TowardZero),
        ("up", Rounding::Up),
        ("down", Rounding::Down),
        ("stochastic", Rounding::Stochastic),
        ("to_odd", Rounding::ToOdd),
        ("stochastic16", Rounding::Stochastic16),
    ];

    /// Parse a mode name.
    pub fn parse(s: &str) -> Result<Rounding> {
        Rounding::ALL.iter().find(|(n, _)| *n == s).map(|(_, r)| *r).ok_or_else(|| {
            let names: Vec<String> = Rounding::ALL.iter().map(|(n, _)| format!("'{n}'")).collect();
            Error::value("rounding", format!("expected one of {}, got {s:?}", names.join(", ")))
        })
    }
}

/// Rounding modes as const-generic parameters (see [`Rounding::code`]).
pub(crate) const NEAREST: u8 = 0;
pub(crate) const NEAREST_AWAY: u8 = 1;
pub(crate) const TOWARD_ZERO: u8 = 2;
pub(crate) const UP: u8 = 3;
pub(crate) const DOWN: u8 = 4;
pub(crate) const STOCHASTIC: u8 = 5;
pub(crate) const TO_ODD: u8 = 6;

impl Rounding {
    /// The random words of a stochastic mode (`Bits32` for the others, which use none).
    pub const fn resolution(self) -> rng::Resolution {
        match self {
            Rounding::Stochastic16 => rng::Resolution::Bits16,
            _ => rng::Resolution::Bits32,
        }
    }

    /// Whether the mode draws random words.
    pub const fn is_stochastic(self) -> bool {
        matches!(self, Rounding::Stochastic | Rounding::Stochastic16)
    }

    /// The const-generic code of the mode: both stochastic modes are `STOCHASTIC` (they differ
    /// only in their words, [`Rounding::resolution`]).
    pub const fn code(self) -> u8 {
        match self {
            Rounding::Nearest => NEAREST,
            Rounding::NearestAway => NEAREST_AWAY,
            Rounding::TowardZero => TOWARD_ZERO,
            Rounding::Up => UP,
            Rounding::Down => DOWN,
            Rounding::Stochastic | Rounding::Stochastic16 => STOCHASTIC,
            Rounding::ToOdd => TO_ODD,
        }
    }
}

/// Run `$body` with `$m` bound to the const code of the rounding mode `$mode`.
macro_rules! dispatch_mode {
    ($mode:expr, $m:ident => $body:expr) => {
        match $mode {
            $crate::exmy::Rounding::Nearest => {
                const $m: u8 = $crate::exmy::NEAREST;
                $body
            }
            $crate::exmy::Rounding::NearestAway => {
                const $m: u8 = $crate::exmy::NEAREST_AWAY;
                $body
            }
            $crate::exmy::Rounding::TowardZero => {
                const $m: u8 = $crate::exmy::TOWARD_ZERO;
                $body
            }
            $crate::exmy::Rounding::Up => {
                const $m: u8 = $crate::exmy::UP;
                $body
            }
            $crate::exmy::Rounding::Down => {
                const $m: u8 = $crate::exmy::DOWN;
                $body
            }
            $crate::exmy::Rounding::Stochastic | $crate::exmy::Rounding::Stochastic16 => {
                const $m: u8 = $crate::exmy::STOCHASTIC;
                $body
            }
            $crate::exmy::Rounding::ToOdd => {
                const $m: u8 = $crate::exmy::TO_ODD;
                $body
            }
        }
    };
}
pub(crate) use dispatch_mode;

/// What happens to finite values beyond the largest finite value (and to ±inf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// inf if the format has it, else NaN if it has NaN, else the largest value
    /// (what ml_dtypes does); ±inf inputs stay ±inf (or become NaN / max likewise).
    NonFinite,
    /// The largest finite value, for overflowing values and ±inf alike.
    Saturate,
}

impl Overflow {
    /// Parse a policy name.
    pub fn parse(s: &str) -> Result<Overflow> {
        match s {
            "nonfinite" => Ok(Overflow::NonFinite),
            "saturate" => Ok(Overflow::Saturate),
            _ => Err(Error::value(
                "overflow",
                format!("expected 'nonfinite' or 'saturate', got {s:?}"),
            )),
        }
    }
}

/// Options of an encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    pub rounding: Rounding,
    pub overflow: Overflow,
    /// NaN into a format without NaN: `false` = error, `true` = encode as +0.
    pub nan_to_zero: bool,
    /// Negative values into an unsigned format: `false` = error, `true` = clamp to 0.
    pub clamp_negative: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            rounding: Rounding::Nearest,
            overflow: Overflow::NonFinite,
            nan_to_zero: false,
            clamp_negative: false,
        }
    }
}

// ---------------------------------------------------------------- input decomposition

/// `|x| = sig · 2^lsb`, `2^e ≤ |x| < 2^(e+1)` (for zero: `sig = 0`, `e = −4096`);
/// `special` marks inf and NaN (then `sig` holds the mantissa field: 0 for inf).
#[derive(Debug, Clone, Copy)]
struct Parts {
    neg: bool,
    special: bool,
    e: i32,
    sig: u64,
    lsb: i32,
}

/// Decompose an IEEE binary value with `eb` exponent and `mb` mantissa bits, given as
/// sign, biased exponent field and mantissa field. Branch-free on finite inputs.
#[inline(always)]
fn parts_ieee(neg: bool, ef: u32, mf: u64, eb: u32, mb: u32) -> Parts {
    let emax_field = (1u32 << eb) - 1;
    let bias = (emax_field >> 1) as i32;
    let special = ef == emax_field;
    let normal = ef != 0;
    let sig = if special { mf } else { mf | ((normal as u64) << mb) };
    let lsb = (ef.max(1) as i32) - bias - mb as i32;
    // zero gets an exponent below every format's range (it must not look like a normal)
    let e = if sig == 0 { -4096 } else { (63 - sig.leading_zeros() as i32) + lsb };
    Parts { neg, special, e, sig, lsb }
}

/// An input element type.
pub trait Input: Copy + Send + Sync {
    #[doc(hidden)]
    fn parts(self) -> PartsOpaque;
    /// Whether the value widens to float32 by bit operations (the fast path).
    #[doc(hidden)]
    const F32: bool = false;
    /// The float32 bits (only when `F32`).
    #[doc(hidden)]
    fn f32_bits(self) -> u32 {
        0
    }
    /// The slice as float32 values (only for `f32` itself).
    #[doc(hidden)]
    fn as_f32(_x: &[Self]) -> Option<&[f32]> {
        None
    }
}

/// Opaque wrapper so `Parts` stays private.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct PartsOpaque(Parts);

impl Input for f32 {
    #[inline(always)]
    fn parts(self) -> PartsOpaque {
        let b = self.to_bits();
        PartsOpaque(parts_ieee(b >> 31 != 0, (b >> 23) & 0xff, (b & 0x7f_ffff) as u64, 8, 23))
    }
    const F32: bool = true;
    #[inline(always)]
    fn f32_bits(self) -> u32 {
        self.to_bits()
    }
    fn as_f32(x: &[f32]) -> Option<&[f32]> {
        Some(x)
    }
}

impl Input for f64 {
    #[inline(always)]
    fn parts(self) -> PartsOpaque {
        let b = self.to_bits();
        PartsOpaque(parts_ieee(
            b >> 63 != 0,
            ((b >> 52) & 0x7ff) as u32,
            b & ((1u64 << 52) - 1),
            11,
            52,
        ))
    }
}

/// float16 given as its bit pattern.
#[derive(Debug, Clone, Copy)]
#[repr(transparent)]
pub struct F16Bits(pub u16);

/// bfloat16 given as its bit pattern.
#[derive(Debug, Clone, Copy)]
#[repr(transparent)]
pub struct Bf16Bits(pub u16);

impl Input for F16Bits {
    #[inline(always)]
    fn parts(self) -> PartsOpaque {
        let b = self.0 as u32;
        PartsOpaque(parts_ieee(b >> 15 != 0, (b >> 10) & 0x1f, (b & 0x3ff) as u64, 5, 10))
    }
}

impl Input for Bf16Bits {
    #[inline(always)]
    fn parts(self) -> PartsOpaque {
        f32::from_bits((self.0 as u32) << 16).parts()
    }
    const F32: bool = true;
    #[inline(always)]
    fn f32_bits(self) -> u32 {
        (self.0 as u32) << 16
    }
}

/// An output code type (u8, u16 or u32).
pub trait Code: Copy + Send + Sync + Default {
    /// Bits of the type.
    const BITS: u32;
    /// From a code known to fit.
    fn from_u32(v: u32) -> Self;
    /// To u32.
    fn to_u32(self) -> u32;
    /// The slice as bytes (only for `u8` itself).
    fn as_u8(_x: &mut [Self]) -> Option<&mut [u8]> {
        None
    }
    /// The slice as u16 codes (only for `u16` itself).
    #[doc(hidden)]
    fn as_u16(_x: &mut [Self]) -> Option<&mut [u16]> {
        None
    }
    /// The slice by width.
    #[doc(hidden)]
    fn code_slice(x: &[Self]) -> CodeSlice<'_>;
}

macro_rules! impl_code {
    ($t:ty, $bytes:expr, $halves:expr, $variant:ident) => {
        impl Code for $t {
            const BITS: u32 = <$t>::BITS;
            #[inline(always)]
            fn from_u32(v: u32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_u32(self) -> u32 {
                self as u32
            }
            fn as_u8(x: &mut [$t]) -> Option<&mut [u8]> {
                $bytes(x)
            }
            fn as_u16(x: &mut [$t]) -> Option<&mut [u16]> {
                $halves(x)
            }
            fn code_slice(x: &[$t]) -> CodeSlice<'_> {
                CodeSlice::$variant(x)
            }
        }
    };
}
impl_code!(u8, Some, |_| None, U8);
impl_code!(u16, |_| None, Some, U16);
impl_code!(u32, |_| None, |_| None, U32);

// ---------------------------------------------------------------- the encoder

/// A format with everything the per-element encoder needs precomputed.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    fmt: Format,
    opts: EncodeOptions,
    man: u32,
    emin: i32,
    emax: i32,
    subnormals: bool,
    max_code: u32,
    sign_mask: u32,
    overflow_code: u32,
    inf_code: u32,
    negzero: bool,
    /// 2^M for formats without subnormals (their hidden bit is not in the code), else 0.
    hidden: u64,
}

/// Result flags of one element: 0 ok, 1 NaN into a NaN-less format, 2 negative into
/// an unsigned format.
const BAD_NAN: u32 = 1;
const BAD_NEG: u32 = 2;

impl Encoder {
    /// Prepare an encoder.
    pub fn new(fmt: Format, opts: EncodeOptions) -> Encoder {
        let max_code = fmt.max_code_mag();
        let overflow_code = match opts.overflow {
            Overflow::Saturate => max_code,
            Overflow::NonFinite if fmt.inf() => fmt.inf_code_mag(),
            Overflow::NonFinite if fmt.has_nan() => u32::MAX, // marker: NaN with sign
            Overflow::NonFinite => max_code,
        };
        Encoder {
            fmt,
            opts,
            man: fmt.man_bits(),
            emin: fmt.emin(),
            emax: fmt.emax(),
            subnormals: fmt.subnormals(),
            max_code,
            sign_mask: fmt.sign_mask(),
            overflow_code,
            inf_code: fmt.inf_code_mag(),
            negzero: fmt.nan() == NanKind::NegZero,
            hidden: if fmt.subnormals() { 0 } else { 1u64 << fmt.man_bits() },
        }
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.fmt
    }

    /// The options it was built with.
    pub fn options(&self) -> EncodeOptions {
        self.opts
    }

    /// Attach the sign to a magnitude code.
    #[inline(always)]
    fn signed_code(&self, neg: bool, mag: u32) -> u32 {
        if neg && !(self.negzero && mag == 0) {
            mag | self.sign_mask
        } else {
            mag
        }
    }

    /// The code for an overflowing value, by rounding direction and policy.
    #[inline(always)]
    fn overflow(&self, neg: bool, mode: u8) -> u32 {
        let shrinks = match mode {
            TOWARD_ZERO | TO_ODD => true,
            UP => neg,
            DOWN => !neg,
            _ => false,
        };
        if shrinks {
            self.signed_code(neg, self.max_code)
        } else if self.overflow_code == u32::MAX {
            self.fmt.nan_code(neg)
        } else {
            self.signed_code(neg, self.overflow_code)
        }
    }

    /// Round a finite magnitude: (magnitude code, overflow).
    #[inline(always)]
    fn round_mag<const MODE: u8>(&self, p: &Parts, r: u32) -> (u32, bool) {
        if p.e < self.emin && !self.subnormals {
            return (0, false); // below the smallest value of a zero-less format
        }
        let ee = p.e.max(self.emin);
        let q = ee - self.man as i32;
        let d = q - p.lsb;
        if d <= 0 {
            // nothing to discard: a subnormal float16 input can have fewer significant
            // bits than the target keeps
            return self.assemble(p.e, ee, p.sig << (-d).min(63) as u32);
        }
        let shift = d as u32;
        let sh = shift.min(63);
        let kept = p.sig >> sh;
        let rem = p.sig & ((1u64 << sh) - 1);
        let half = (1u64 << sh) >> 1;
        let inexact = rem != 0;
        let up = match MODE {
            NEAREST => (rem > half) | ((rem == half) & (kept & 1 == 1) & inexact),
            NEAREST_AWAY => (rem >= half) & inexact,
            TOWARD_ZERO => false,
            UP => !p.neg & inexact,
            DOWN => p.neg & inexact,
            // kept = 1.mmm (the significand with its hidden bit): its last bit is the code's
            // last mantissa bit; with no mantissa bits every normal significand is 1 (odd)
            TO_ODD => (kept & 1 == 0) & inexact,
            _ => {
                // stochastic: up iff r < floor(rem · 2^32 / 2^shift)
                let frac = if shift <= 32 {
                    rem << (32 - shift)
                } else if shift - 32 < 64 {
                    rem >> (shift - 32)
                } else {
                    0
                };
                (r as u64) < frac
            }
        };
        self.assemble(p.e, ee, kept + up as u64)
    }

    /// Magnitude code of `m · 2^(ee − M)` with `ee = max(e, emin)`, and whether it overflows.
    #[inline(always)]
    fn assemble(&self, e: i32, ee: i32, m: u64) -> (u32, bool) {
        let base = ((ee - self.emin) as u64) << self.man;
        let code = base + m - self.hidden;
        (code as u32, (e > self.emax) | (code > self.max_code as u64))
    }

    /// Encode one element with rounding mode `MODE` (see [`Rounding::code`]); returns
    /// (code, bad flags). `r` is used only by stochastic rounding.
    #[inline(always)]
    pub(crate) fn encode_one<I: Input, const MODE: u8>(&self, x: I, r: u32) -> (u32, u32) {
        let p = x.parts().0;
        if p.special {
            return self.encode_special(&p);
        }
        let (mag, ovf) = self.round_mag::<MODE>(&p, r);
        let code = if ovf { self.overflow(p.neg, MODE) } else { self.signed_code(p.neg, mag) };
        // a negative non-zero value into an unsigned format
        if p.neg & (self.sign_mask == 0) & (p.sig != 0) {
            return (0, if self.opts.clamp_negative { 0 } else { BAD_NEG });
        }
        (code, 0)
    }

    /// The same with the mode chosen at run time (for callers outside hot loops).
    pub(crate) fn encode_one_dyn<I: Input>(&self, x: I, mode: Rounding, r: u32) -> (u32, u32) {
        dispatch_mode!(mode, MODE => self.encode_one::<I, MODE>(x, r))
    }

    /// inf and NaN inputs.
    #[cold]
    fn encode_special(&self, p: &Parts) -> (u32, u32) {
        if p.sig == 0 {
            if p.neg && self.sign_mask == 0 {
                return (0, if self.opts.clamp_negative { 0 } else { BAD_NEG });
            }
            let code = if self.fmt.inf() && self.opts.overflow == Overflow::NonFinite {
                self.signed_code(p.neg, self.inf_code)
            } else {
                self.overflow(p.neg, NEAREST)
            };
            (code, 0)
        } else if self.fmt.has_nan() {
            (self.fmt.nan_code(p.neg), 0)
        } else if self.opts.nan_to_zero {
            (0, 0)
        } else {
            (0, BAD_NAN)
        }
    }
}

// ---------------------------------------------------------------- the float32 fast path
//
// The element code above is the definition. For float32 (and bfloat16, which widens to
// float32 by a shift) inputs and targets whose smallest normal exponent is ≥ −126, the
// same arithmetic fits in u32 and, written without early returns, vectorizes. Inf, NaN
// and negatives into unsigned formats are flagged and redone by `encode_one`. A unit
// test holds the two paths equal on every format and mode.

/// Constants of the fast path.
#[derive(Debug, Clone, Copy)]
struct Fast {
    emin: i32,
    emax: i32,
    man: i32,
    hidden: u32,
    max_code: u32,
    sign_mask: u32,
    no_sub: bool,
    unsigned: bool,
    negzero: bool,
    ovf_pos: u32,
    ovf_neg: u32,
}

impl Encoder {
    fn fast(&self, mode: u8) -> Option<Fast> {
        (self.emin >= -126).then(|| Fast {
            emin: self.emin,
            emax: self.emax,
            man: self.man as i32,
            hidden: self.hidden as u32,
            max_code: self.max_code,
            sign_mask: self.sign_mask,
            no_sub: !self.subnormals,
            unsigned: self.sign_mask == 0,
            negzero: self.negzero,
            ovf_pos: self.overflow(false, mode),
            ovf_neg: self.overflow(true, mode),
        })
    }
}

impl Encoder {
    /// Whether the format is float16 itself with overflow to inf, so that round to nearest
    /// is the IEEE conversion (`vcvtps2ph`).
    fn is_f16_nearest(&self) -> bool {
        is_f16_prefix(&self.fmt) && self.man == 10 && self.opts.overflow == Overflow::NonFinite
    }

    /// Whether the format is a float32 prefix (bfloat16-like) with inf, so that round to
    /// nearest is the classic add-and-shift on the float32 bits.
    fn truncates(&self) -> bool {
        is_f32_prefix(&self.fmt) && self.opts.overflow == Overflow::NonFinite
    }
}

/// Round to nearest, ties to even, by add-and-shift: with `s = 23 − M` discarded bits,
/// `code = (bits + 2^(s−1) − 1 + lsb) >> s`, where `lsb` is the lowest kept bit. A carry runs
/// into the exponent by itself and overflow lands on inf; NaN becomes the canonical quiet NaN.
#[inline(always)]
fn truncate_nearest<I: Input, C: Code>(enc: &Encoder, x: &[I], out: &mut [C]) {
    let shift = 23 - enc.man;
    let t = simd::Truncate {
        shift,
        half: if shift == 0 { 0 } else { (1u32 << (shift - 1)) - 1 },
        lsb: (shift != 0) as u32,
        qnan: [enc.fmt.nan_code(false), enc.fmt.nan_code(true)],
    };
    let scalar = |x: &[I], out: &mut [C]| {
        for (o, &v) in out.iter_mut().zip(x) {
            let bits = v.f32_bits();
            let rounded = bits.wrapping_add(t.half + ((bits >> t.shift) & t.lsb)) >> t.shift;
            let nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
            *o = C::from_u32(if nan { t.qnan[(bits >> 31) as usize] } else { rounded });
        }
    };
    // float32 into u16 codes (bfloat16 and narrower prefixes): 32 per step with AVX-512,
    // from the first cache line of the output on
    let mut done = 0..0; // the elements the vector loop did
    if let (Some(xf), Some(o)) = (I::as_f32(x), C::as_u16(&mut *out)) {
        let head = simd::unaligned_head(o).min(xf.len());
        done = head..head + simd::truncate_u16(&t, &xf[head..], &mut o[head..]);
    }
    scalar(&x[..done.start], &mut out[..done.start]);
    scalar(&x[done.end..], &mut out[done.end..]);
}

/// Encode float32 bits; returns (code, 1 where the general path must redo it).
/// Flags are u32 0/1 values rather than bools so the vectorized loop stays in 32-bit lanes.
#[inline(always)]
fn fast_one<const MODE: u8>(f: &Fast, bits: u32, r: u32) -> (u32, u32) {
    let b = |c: bool| c as u32;
    let a = bits & 0x7fff_ffff;
    let neg = bits >> 31;
    let ef = a >> 23;
    let special = b(ef == 255) | (neg & b(f.unsigned) & b(a != 0));
    let sig = (a & 0x7f_ffff) | (b(ef != 0) << 23);
    let e = ef as i32 - 127; // exact for normal inputs; −127 < emin for subnormal ones
    let ee = e.max(f.emin);
    let d = (ee - f.man - (ef.max(1) as i32 - 150)) as u32; // ≥ 0: float32 has 23 bits
    let sh = d.min(31);
    let kept = sig >> sh;
    let rem = sig & ((1u32 << sh) - 1);
    let half = (1u32 << sh) >> 1;
    let inexact = b(rem != 0);
    let up = match MODE {
        NEAREST => b(rem > half) | (b(rem == half) & kept & inexact),
        NEAREST_AWAY => b(rem >= half) & inexact,
        TOWARD_ZERO => 0,
        UP => (neg ^ 1) & inexact,
        DOWN => neg & inexact,
        TO_ODD => (kept & 1 ^ 1) & inexact,
        _ => {
            let frac = if d <= 31 {
                (rem << (31 - d)) << 1
            } else if d - 32 < 32 {
                sig >> (d - 32)
            } else {
                0
            };
            b(r < frac)
        }
    };
    let mag = ((((ee - f.emin) as u32) << f.man) + kept + up).wrapping_sub(f.hidden);
    let tiny = b(e < f.emin) & b(f.no_sub);
    let ovf = (b(e > f.emax) | b(mag > f.max_code)) & (tiny ^ 1);
    let mag = mag & tiny.wrapping_sub(1); // 0 where tiny
    let sign = neg & b(!f.unsigned) & (b(f.negzero) & b(mag == 0) ^ 1);
    let code = mag | (sign.wrapping_neg() & f.sign_mask);
    let ovf_code = if neg != 0 { f.ovf_neg } else { f.ovf_pos };
    (if ovf != 0 { ovf_code } else { code }, special)
}

/// Constants of rounding by add-and-shift: round to nearest ([`rne_one`]) and stochastic
/// rounding ([`sr_one`]), for formats with subnormals and 1 ≤ M ≤ 22.
#[derive(Debug, Clone, Copy)]
struct AddShift {
    /// Float32 bits of 2^emin, the smallest normal of the target.
    min_normal: u32,
    /// `(126 + emin) << 23`: float32 exponent field minus the target's.
    rebias: u32,
    /// Discarded mantissa bits of an input at or above 2^emin, 23 − M.
    s: u32,
    /// 2^(s − 1) − 1.
    half: u32,
    /// 2^(emin − M + 23): adding it to |x| < 2^emin rounds |x| to a multiple of the target's
    /// subnormal step 2^(emin − M), to nearest even, in one IEEE addition.
    magic: f32,
    /// emin − M + 150: the discarded bits of an input below 2^emin are `c − max(e_field, 1)`.
    c: u32,
}

impl Encoder {
    fn add_shift(&self) -> AddShift {
        let (emin, m) = (self.emin, self.man as i32);
        AddShift {
            min_normal: ((emin + 127) as u32) << 23,
            rebias: ((126 + emin) as u32) << 23,
            s: 23 - m as u32,
            half: (1u32 << (22 - m)) - 1,
            magic: f32::from_bits(((emin - m + 23 + 127).max(1) as u32) << 23),
            c: (emin - m + 150) as u32,
        }
    }

    /// [`AddShift`] for round to nearest where it applies: formats with subnormals and a
    /// mantissa whose whole range of float32 inputs (from 2^-126 up) lies above half their
    /// smallest subnormal (so float32 subnormals, and whether the CPU flushes them, do not
    /// matter: they round to zero either way).
    fn rne(&self) -> Option<AddShift> {
        let (emin, m) = (self.emin, self.man as i32);
        // with no mantissa bits, "even" is the code's last exponent bit, which the general code
        // does not use (its significand 1 is odd): so M ≥ 1
        (self.subnormals && emin - m >= -124 && (1..=22).contains(&m)).then(|| self.add_shift())
    }

    /// [`AddShift`] for stochastic rounding where it applies: formats with subnormals,
    /// 1 ≤ M ≤ 22 and emin ≥ −126 (every float32 input at or above 2^emin is normal).
    fn sr(&self) -> Option<AddShift> {
        let (emin, m) = (self.emin, self.man as i32);
        (self.subnormals && emin >= -126 && (1..=22).contains(&m)).then(|| self.add_shift())
    }
}

/// The code of magnitude code `mag` with the sign `neg` (1 if negative): the overflow code
/// above the largest finite one, no sign on an unsigned format or on a zero whose −0 code is
/// NaN.
#[inline(always)]
fn finish(f: &Fast, neg: u32, mag: u32) -> u32 {
    let b = |c: bool| c as u32;
    let ovf = b(mag > f.max_code);
    let sign = neg & b(!f.unsigned) & (b(f.negzero) & b(mag == 0) ^ 1);
    let code = mag | (sign.wrapping_neg() & f.sign_mask);
    let ovf_code = if neg != 0 { f.ovf_neg } else { f.ovf_pos };
    if ovf != 0 {
        ovf_code
    } else {
        code
    }
}

/// Round to nearest even from float32 bits, the same codes as `fast_one::<NEAREST>` with
/// fewer operations: below 2^emin one float32 addition of `magic` (IEEE round to nearest
/// even, exact otherwise) leaves `|x| / 2^(emin − M)` rounded in the low bits, the subnormal
/// code (2^M: the smallest normal); above it, rebias the exponent and add-and-shift:
/// ```text
/// a − rebias:  e e e e | m m m | r r r … r     + 0111…1 + m₀ (the last kept bit), >> s
///                         kept ^ discarded (s bits)
/// ```
/// a carry runs into the exponent by itself; a code above the largest finite one overflows.
#[inline(always)]
fn rne_one(f: &Fast, r: &AddShift, bits: u32) -> (u32, u32) {
    let b = |c: bool| c as u32;
    let a = bits & 0x7fff_ffff;
    let neg = bits >> 31;
    let special = b(a >= 0x7f80_0000) | (neg & b(f.unsigned) & b(a != 0));
    let sub = (f32::from_bits(a) + r.magic).to_bits().wrapping_sub(r.magic.to_bits());
    let nrm = (a.wrapping_sub(r.rebias).wrapping_add(r.half + ((a >> r.s) & 1))) >> r.s;
    let mag = if a < r.min_normal { sub } else { nrm };
    (finish(f, neg, mag), special)
}

/// Stochastic rounding from float32 bits with the random word `rnd`, the same codes as
/// `fast_one::<STOCHASTIC>` (round up iff `rnd < rem · 2^(32 − d)` for `d` discarded bits
/// holding `rem`) with fewer operations. That test is `(rnd >> (32 − d)) < rem`, i.e. a
/// carry out of `rem + (!rnd >> (32 − d))`: for inputs at or above 2^emin (d = s) the
/// add-and-shift of [`rne_one`] with the top `s` bits of `!rnd` in place of the rounding bias.
/// Below 2^emin (d > s), `sig >> d` gives the kept bits and `sig << (32 − d)` (d ≤ 32) or
/// `sig >> (d − 32)` (d > 32: the definition truncates) the scaled remainder, a shift by 32 or
/// more giving 0 (as `vpsllvd`/`vpsrlvd` do).
#[inline(always)]
fn sr_one(f: &Fast, r: &AddShift, bits: u32, rnd: u32) -> (u32, u32) {
    let b = |c: bool| c as u32;
    let a = bits & 0x7fff_ffff;
    let neg = bits >> 31;
    let special = b(a >= 0x7f80_0000) | (neg & b(f.unsigned) & b(a != 0));
    let nrm = (a.wrapping_sub(r.rebias).wrapping_add(!rnd >> (32 - r.s))) >> r.s;
    let ef = a >> 23;
    let sig = (a & 0x7f_ffff) | (b(ef != 0) << 23);
    let d = r.c.wrapping_sub(ef.max(1)); // ≥ s + 1 below 2^emin
    let kept = sig.checked_shr(d).unwrap_or(0);
    let frac = sig.checked_shl(32u32.wrapping_sub(d)).unwrap_or(0)
        | sig.checked_shr(d.wrapping_sub(32)).unwrap_or(0);
    let sub = kept + b(rnd < frac);
    let mag = if a < r.min_normal { sub } else { nrm };
    (finish(f, neg, mag), special)
}

/// [`rne_one`] (`SR` false) or [`sr_one`] (`SR` true, with `rnd`) over a block of float32
/// inputs, 16 lanes at a time with AVX-512 where the CPU has it; returns 1 if an element
/// needs the general path (its code here is then unspecified). With `HALVES`, `rnd` holds
/// the raw words of a range that starts at an even element index, and element i's word is
/// `rng::word16_at(rnd, i)` (`stochastic16`, without a pass that writes the words out).
#[inline(always)]
fn add_shift_block<C: Code, const SR: bool, const HALVES: bool>(
    f: &Fast,
    r: &AddShift,
    x: &[f32],
    rnd: &[u32],
    out: &mut [C],
) -> u32 {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if simd::has_avx512() {
        // SAFETY: the CPU supports these AVX-512 subsets, checked just above.
        return unsafe {
            match (avx512::clamps(f), f.unsigned) {
                (true, false) => avx512::add_shift::<C, SR, HALVES, false>(f, r, x, rnd, out),
                (true, true) => avx512::add_shift::<C, SR, HALVES, true>(f, r, x, rnd, out),
                // no format of the registry (the tests check): element by element
                (false, _) => add_shift_scalar::<C, SR, HALVES>(f, r, x, rnd, 0, out),
            }
        };
    }
    add_shift_scalar::<C, SR, HALVES>(f, r, x, rnd, 0, out)
}

/// [`add_shift_block`] element by element (LLVM vectorizes it; also the AVX-512 tail, whose
/// first element is element `at` of `rnd`'s range).
#[inline(always)]
fn add_shift_scalar<C: Code, const SR: bool, const HALVES: bool>(
    f: &Fast,
    r: &AddShift,
    x: &[f32],
    rnd: &[u32],
    at: usize,
    out: &mut [C],
) -> u32 {
    let mut redo = 0u32;
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        let (c, sp) = match (SR, HALVES) {
            (true, true) => sr_one(f, r, v.to_bits(), rng::word16_at(rnd, at + i)),
            (true, false) => sr_one(f, r, v.to_bits(), rnd[at + i]),
            (false, _) => rne_one(f, r, v.to_bits()),
        };
        *o = C::from_u32(c);
        redo |= sp;
    }
    redo
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod avx512 {
    use super::{AddShift, Code, Fast};
    use std::arch::x86_64::*;

    /// Whether [`add_shift`] takes the format: overflow is a minimum (the overflow code is the
    /// largest finite magnitude or the one above it, and on a signed format a negative
    /// overflow is the positive one with the sign).
    pub(super) fn clamps(f: &Fast) -> bool {
        (f.ovf_pos == f.max_code || f.ovf_pos == f.max_code + 1)
            && (f.unsigned || f.ovf_neg == f.ovf_pos | f.sign_mask)
    }

    /// [`super::add_shift_block`] with AVX-512: the same operations as [`super::rne_one`] and
    /// [`super::sr_one`] on 16 lanes, the path below 2^emin only for vectors that have such
    /// a lane.
    ///
    /// `UNSIGNED` is the format's; the format is one that [`clamps`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn add_shift<
        C: Code,
        const SR: bool,
        const HALVES: bool,
        const UNSIGNED: bool,
    >(
        f: &Fast,
        r: &AddShift,
        x: &[f32],
        rnd: &[u32],
        out: &mut [C],
    ) -> u32 {
        let n = x.len().min(out.len());
        let n = match (SR, HALVES) {
            (true, true) => n.min(2 * rnd.len()),
            (true, false) => n.min(rnd.len()),
            (false, _) => n,
        };
        let set = |v: u32| _mm512_set1_epi32(v as i32);
        let (abs_mask, inf, min_normal) = (set(0x7fff_ffff), set(0x7f80_0000), set(r.min_normal));
        let (rebias, half, one) = (set(r.rebias), set(r.half), set(1));
        let s = _mm_cvtsi32_si128(r.s as i32);
        let ks = _mm_cvtsi32_si128(32 - r.s as i32);
        let magic = _mm512_set1_ps(r.magic);
        let (c, hidden, mant, n32) = (set(r.c), set(1 << 23), set(0x7f_ffff), set(32));
        // overflow: the least of the magnitude and the overflow code ([`clamps`])
        let (ovf, sign_code) = (set(f.ovf_pos), set(f.sign_mask));
        // the sign bit of the input moved to the code's (`sign_code` is 0 on an unsigned
        // format), for lanes whose magnitude is at least `signed_from` (1 where −0 is NaN)
        let to_sign = _mm_cvtsi32_si128(31 - f.sign_mask.trailing_zeros().min(31) as i32);
        let signed_from = set(f.negzero as u32);
        // `stochastic16`: the top s bits of the complemented word `h << 16 | 0xFFFF` of a
        // zero-extended half h are `(h ^ 0xFFFF) << (s − 16)`, or `>> (16 − s)` for s < 16
        let (shl, hs) = (r.s >= 16, _mm_cvtsi32_si128(r.s.abs_diff(16) as i32));
        let low16 = set(0xFFFF);
        let mut redo: __mmask16 = 0;
        // the largest |x| seen: a NaN or an infinity makes it reach `inf`
        let mut top = _mm512_setzero_si512();
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_loadu_si512(x.as_ptr().add(i) as *const _);
            let a = _mm512_and_si512(v, abs_mask);
            // `rn`: the random word (SR) or the zero-extended half (`stochastic16`); `bias`:
            // what is added before the shift at or above 2^emin
            let (rn, bias) = match (SR, HALVES) {
                (true, true) => {
                    let w = _mm256_loadu_si256(rnd.as_ptr().add(i / 2) as *const _);
                    let h = _mm512_cvtepu16_epi32(w);
                    let nh = _mm512_xor_si512(h, low16);
                    let bias = match shl {
                        true => _mm512_sll_epi32(nh, hs),
                        false => _mm512_srl_epi32(nh, hs),
                    };
                    (h, bias)
                }
                (true, false) => {
                    let rn = _mm512_loadu_si512(rnd.as_ptr().add(i) as *const _);
                    // the top s bits of !rnd
                    (rn, _mm512_srl_epi32(_mm512_ternarylogic_epi32::<0x55>(rn, rn, rn), ks))
                }
                // 2^(s−1) − 1 + the last kept bit
                (false, _) => (
                    _mm512_setzero_si512(),
                    _mm512_add_epi32(half, _mm512_and_si512(_mm512_srl_epi32(a, s), one)),
                ),
            };
            // at or above 2^emin: rebias, add the rounding bias, shift
            let mut mag = _mm512_srl_epi32(_mm512_add_epi32(_mm512_sub_epi32(a, rebias), bias), s);
            let small = _mm512_cmplt_epu32_mask(a, min_normal);
            if small != 0 {
                let sub = if SR {
                    let rn = match HALVES {
                        true => _mm512_or_si512(_mm512_slli_epi32::<16>(rn), low16),
                        false => rn,
                    };
                    let ef = _mm512_srli_epi32::<23>(a);
                    let sig = _mm512_mask_or_epi32(
                        _mm512_and_si512(a, mant),
                        _mm512_test_epi32_mask(ef, ef),
                        _mm512_and_si512(a, mant),
                        hidden,
                    );
                    let d = _mm512_sub_epi32(c, _mm512_max_epu32(ef, one));
                    // shift counts of 32 and more give 0 (vpsllvd, vpsrlvd)
                    let kept = _mm512_srlv_epi32(sig, d);
                    let frac = _mm512_or_si512(
                        _mm512_sllv_epi32(sig, _mm512_sub_epi32(n32, d)),
                        _mm512_srlv_epi32(sig, _mm512_sub_epi32(d, n32)),
                    );
                    let up = _mm512_cmplt_epu32_mask(rn, frac);
                    _mm512_mask_add_epi32(kept, up, kept, one)
                } else {
                    let sum = _mm512_add_ps(_mm512_castsi512_ps(a), magic);
                    _mm512_sub_epi32(_mm512_castps_si512(sum), _mm512_castps_si512(magic))
                };
                mag = _mm512_mask_mov_epi32(mag, small, sub);
            }
            top = _mm512_max_epu32(top, a);
            mag = _mm512_min_epu32(mag, ovf);
            if UNSIGNED {
                // negative inputs go the general way
                redo |= _mm512_movepi32_mask(v) & _mm512_test_epi32_mask(a, a);
            }
            let signed = _mm512_cmpge_epu32_mask(mag, signed_from);
            // mag | (the sign bit moved & sign_code), in the lanes of `signed`
            let sign = _mm512_srl_epi32(v, to_sign);
            let code = _mm512_mask_ternarylogic_epi32::<0xF8>(mag, signed, sign, sign_code);
            let p = out.as_mut_ptr().add(i);
            match C::BITS {
                8 => _mm_storeu_si128(p as *mut _, _mm512_cvtepi32_epi8(code)),
                16 => _mm256_storeu_si256(p as *mut _, _mm512_cvtepi32_epi16(code)),
                _ => _mm512_storeu_si512(p as *mut _, code),
            }
            i += 16;
        }
        redo |= _mm512_cmpge_epu32_mask(top, inf);
        let tail = super::add_shift_scalar::<C, SR, HALVES>(f, r, &x[i..n], rnd, i, &mut out[i..n]);
        (redo != 0) as u32 | tail
    }
}

/// Error for the first bad element of `x`.
fn first_bad<I: Input>(enc: &Encoder, x: &[I], offset: usize) -> Error {
    for (i, &v) in x.iter().enumerate() {
        let (_, bad) = enc.encode_one::<I, NEAREST>(v, 0);
        if bad & BAD_NAN != 0 {
            return Error::value(
                "x",
                format!(
                    "element {} is NaN and format {} has no NaN; pass nan='zero' to map NaN to 0",
                    offset + i,
                    crate::formats::name(&enc.fmt)
                ),
            );
        }
        if bad & BAD_NEG != 0 {
            return Error::value(
                "x",
                format!(
                    "element {} is negative and format {} is unsigned; pass negative='clamp' to clamp to 0",
                    offset + i,
                    crate::formats::name(&enc.fmt)
                ),
            );
        }
    }
    Error::value("x", "invalid element")
}

/// Where the random bits of stochastic rounding come from.
#[derive(Debug, Clone, Copy)]
pub enum Random<'a> {
    /// Philox bits keyed by (seed, stream, global index); `offset` is the global index of
    /// element 0 of this call.
    Philox { seed: u64, stream: u64, offset: u64 },
    /// Caller-supplied bits, one u32 per element.
    Bits(&'a [u32]),
}

/// Encode one chunk (sequential). `start` is the chunk's index within the call.
#[inline(always)]
fn encode_chunk_body<I: Input, C: Code, const MODE: u8>(
    enc: &Encoder,
    x: &[I],
    out: &mut [C],
    start: usize,
    random: Random,
) -> Result<()> {
    if I::F32 && MODE == NEAREST && enc.truncates() {
        truncate_nearest(enc, x, out);
        return Ok(());
    }
    if MODE == NEAREST && enc.is_f16_nearest() {
        // float32 → float16, round to nearest: the hardware conversion where there is one
        if let (Some(xf), Some(o)) = (I::as_f32(x), C::as_u16(&mut *out)) {
            if simd::narrow_f16(xf, o) {
                return Ok(());
            }
        }
    }
    let mut bad = 0u32;
    let fast = if I::F32 { enc.fast(MODE) } else { None };
    let rne = if MODE == NEAREST { enc.rne() } else { None };
    let sr = if MODE == STOCHASTIC && fast.is_some() { enc.sr() } else { None };
    // Elements per step: stochastic rounding makes a step's random words, then rounds the
    // step. 512 measured best of 256 to 4096 at 16Mi float8_e5m2 (3 A/B rounds, G/s at 1 / 2
    // threads: `stochastic` 1.27–1.30 / 2.58–2.68 against 1.15–1.25 / 2.21–2.45 with 1024;
    // `stochastic16` and round to nearest the same within noise).
    const STEP: usize = 512;
    let mut buf = [0u32; STEP];
    let add_shift = if MODE == NEAREST { &rne } else { &sr };
    for (k, (xs, os)) in x.chunks(STEP).zip(out.chunks_mut(STEP)).enumerate() {
        let at = start + k * STEP;
        if let (Random::Philox { seed, stream, offset }, Some(f), Some(xf), Some(r)) =
            (random, &fast, I::as_f32(xs), add_shift)
        {
            // `stochastic16` from an even element index, with no wrap of the index inside
            // the step: the AVX-512 add-and-shift loop takes the halves of the raw words in
            // place (without AVX-512 the words are written out, as before: the scalar loop
            // on halves was not measured against that)
            let first = offset.wrapping_add(at as u64);
            let words = xs.len().div_ceil(2);
            if MODE == STOCHASTIC
                && enc.opts.rounding.resolution() == rng::Resolution::Bits16
                && first & 1 == 0
                && first.checked_add(xs.len() as u64).is_some()
                && simd::avx512_loops()
            {
                simd::prefetch(xs);
                rng::fill_random_u32(seed, stream, first >> 1, &mut buf[..words]);
                if add_shift_block::<C, true, true>(f, r, xf, &buf[..words], os) == 0 {
                    continue;
                }
                // a special element (NaN, inf, negative into unsigned): the step again below,
                // with the words written out
            }
        }
        let bits: &[u32] = match random {
            _ if MODE != STOCHASTIC => &buf[..xs.len()],
            Random::Philox { seed, stream, offset } => {
                // the generator computes while these lines arrive
                simd::prefetch(xs);
                rng::fill_words(
                    enc.opts.rounding.resolution(),
                    seed,
                    stream,
                    offset.wrapping_add(at as u64),
                    &mut buf[..xs.len()],
                );
                &buf[..xs.len()]
            }
            Random::Bits(b) => &b[at..at + xs.len()],
        };
        if let (Some(f), Some(xf), Some(r)) = (&fast, I::as_f32(xs), add_shift) {
            let redo = match MODE {
                NEAREST => add_shift_block::<C, false, false>(f, r, xf, bits, os),
                _ => add_shift_block::<C, true, false>(f, r, xf, bits, os),
            };
            if redo == 0 {
                continue;
            }
        } else if let Some(f) = &fast {
            let mut redo = 0u32;
            for ((o, &v), &r) in os.iter_mut().zip(xs).zip(bits) {
                let (c, sp) = fast_one::<MODE>(f, v.f32_bits(), r);
                *o = C::from_u32(c);
                redo |= sp;
            }
            if redo == 0 {
                continue;
            }
        }
        for ((o, &v), &r) in os.iter_mut().zip(xs).zip(bits) {
            if fast.is_none() || v.parts().0.special || v.parts().0.neg {
                let (c, b) = enc.encode_one::<I, MODE>(v, r);
                *o = C::from_u32(c);
                bad |= b;
            }
        }
    }
    if bad != 0 {
        return Err(first_bad(enc, x, start));
    }
    Ok(())
}

/// The chunk loop compiled for AVX2 (LLVM vectorizes the branch-free element code with
/// variable shifts); chosen at run time where the CPU has it. Same results either way.
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
#[target_feature(enable = "avx2")]
unsafe fn encode_chunk_avx2<I: Input, C: Code, const MODE: u8>(
    enc: &Encoder,
    x: &[I],
    out: &mut [C],
    start: usize,
    random: Random,
) -> Result<()> {
    encode_chunk_body::<I, C, MODE>(enc, x, out, start, random)
}

/// The chunk loop compiled for AVX-512 (16 lanes).
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn encode_chunk_avx512<I: Input, C: Code, const MODE: u8>(
    enc: &Encoder,
    x: &[I],
    out: &mut [C],
    start: usize,
    random: Random,
) -> Result<()> {
    encode_chunk_body::<I, C, MODE>(enc, x, out, start, random)
}

pub(crate) fn encode_chunk<I: Input, C: Code, const MODE: u8>(
    enc: &Encoder,
    x: &[I],
    out: &mut [C],
    start: usize,
    random: Random,
) -> Result<()> {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if simd::has_avx512() {
        // SAFETY: the CPU supports these AVX-512 subsets, checked just above.
        return unsafe { encode_chunk_avx512::<I, C, MODE>(enc, x, out, start, random) };
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { encode_chunk_avx2::<I, C, MODE>(enc, x, out, start, random) };
    }
    encode_chunk_body::<I, C, MODE>(enc, x, out, start, random)
}

/// Encode `x` into `out` (same length) in parallel; the first failing element is reported.
pub fn encode<I: Input, C: Code>(
    enc: &Encoder,
    x: &[I],
    out: &mut [C],
    random: Random,
) -> Result<()> {
    check_len("out", out.len(), x.len())?;
    if C::BITS < enc.fmt.bits() {
        return Err(Error::value(
            "out",
            format!(
                "a {}-bit format needs {}-bit or wider codes",
                enc.fmt.bits(),
                enc.fmt.bits().next_power_of_two().max(8)
            ),
        ));
    }
    if let Random::Bits(b) = random {
        check_len("random_bits", b.len(), x.len())?;
    }
    // round to nearest from float32 into byte codes: the direct index, for a call large
    // enough to pay for building it (a chunk the index does not decide takes the usual path)
    // (not where the one-addition rounding applies: it needs no table, which streaming
    // inputs would push out of the cache)
    let ix = if I::F32
        && C::BITS == 8
        && enc.opts.rounding == Rounding::Nearest
        && enc.rne().is_none()
    {
        nearest_index(enc, x.len() >= INDEX_MIN)
    } else {
        None
    };
    dispatch_mode!(enc.opts.rounding, MODE => {
        par::try_zip_chunks(x, CHUNK, out, CHUNK, x.len(), |k, xs, os| {
            if let (Some(ent), Some(xf)) = (ix, I::as_f32(xs)) {
                if crate::table::index_lookup::<false>(ent, xf, 1.0, C::as_u8(os).expect("u8")) {
                    return Ok(());
                }
            }
            encode_chunk::<I, C, MODE>(enc, xs, os, k * CHUNK, random)
        })
    })
}

/// Inputs from which [`encode`] builds the direct index of a format it has none of yet.
const INDEX_MIN: usize = 1 << 20;
/// Most direct indexes kept (256 KiB each).
const INDEX_CACHE: usize = 16;

/// The direct index (`table::index_of`) of round to nearest from float32 into `enc`'s format
/// (at most 8 bits), built once per (format, overflow and NaN/negative options) and kept for
/// the process; `build = false` only returns one already built. `None` as well for wider
/// formats and for a format whose index would need two transitions in a bucket.
pub(crate) fn nearest_index(enc: &Encoder, build: bool) -> Option<&'static Entries> {
    type Key = (Format, EncodeOptions);
    static CACHE: Mutex<Vec<(Key, Option<&'static Entries>)>> = Mutex::new(Vec::new());
    if enc.fmt.bits() > 8 {
        return None;
    }
    let key = (enc.fmt, EncodeOptions { rounding: Rounding::Nearest, ..enc.opts });
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, ix)) = cache.iter().find(|(k, _)| *k == key) {
        return *ix;
    }
    if !build || cache.len() >= INDEX_CACHE {
        return None;
    }
    // kept for the life of the process, like the cache itself (at most INDEX_CACHE of them)
    let ix: Option<&'static Entries> = build_nearest_index(enc).map(|b| &*Box::leak(b));
    cache.push((key, ix));
    ix
}

/// [`nearest_index`] without the cache.
fn build_nearest_index(enc: &Encoder) -> Option<Box<Entries>> {
    crate::table::index_of(|b| match enc.encode_one::<f32, NEAREST>(f32::from_bits(b), 0) {
        (c, 0) => Some(c as u8),
        _ => None,
    })
}

pub(crate) fn check_len(arg: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::value(arg, format!("expected {want} elements, got {got}")));
    }
    Ok(())
}

// ---------------------------------------------------------------- decoding

/// A float output type of decode.
pub trait Float: Copy + Send + Sync {
    /// From an exact f64 value.
    fn from_f64(v: f64) -> Self;
    /// From an f32 value.
    fn from_f32(v: f32) -> Self;
    /// The slice as float32 (only for `f32` itself).
    #[doc(hidden)]
    fn as_f32_mut(_x: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}
impl Float for f32 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        crate::format::f32_exact(v)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    fn as_f32_mut(x: &mut [f32]) -> Option<&mut [f32]> {
        Some(x)
    }
}
impl Float for f64 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v as f64
    }
}

/// Formats whose codes are the leading bits of float32 patterns (bfloat16, e8m23, …).
fn is_f32_prefix(f: &Format) -> bool {
    f.exp_bits() == 8 && f.bias() == 127 && f.signed() && f.nan() == NanKind::Ieee && f.subnormals()
}

/// Formats whose codes are the leading bits of float16 patterns (float16, float8_e5m2, …).
fn is_f16_prefix(f: &Format) -> bool {
    f.exp_bits() == 5
        && f.bias() == 15
        && f.signed()
        && f.nan() == NanKind::Ieee
        && f.inf()
        && f.subnormals()
        && (1..=10).contains(&f.man_bits())
}

/// Value of every code of `fmt` as f32 (formats up to 16 bits), in code order.
pub fn table_f32(fmt: &Format) -> Result<Vec<f32>> {
    if fmt.bits() > 16 {
        return Err(Error::value(
            "fmt",
            format!("a value table needs a format of at most 16 bits, got {}", fmt.bits()),
        ));
    }
    Ok((0..fmt.num_codes() as u32).map(|c| fmt.decode_f32(c)).collect())
}

fn bad_code(fmt: &Format, i: usize, c: u32) -> Error {
    Error::value(
        "codes",
        format!(
            "element {i} is {c}, but a {}-bit format has codes 0..{}",
            fmt.bits(),
            fmt.num_codes() - 1
        ),
    )
}

/// Decode codes to floats in parallel. Codes ≥ 2^bits are an error.
pub fn decode<C: Code, F: Float>(fmt: &Format, codes: &[C], out: &mut [F]) -> Result<()> {
    check_len("out", out.len(), codes.len())?;
    let limit = fmt.num_codes();
    // a value table pays for itself only over enough codes (building 256 entries costs
    // ~1 µs, more than decoding 16 codes directly); both give the same values
    let prefix = is_f32_prefix(fmt) || is_f16_prefix(fmt);
    if fmt.bits() <= 8 && codes.len() as u64 >= limit / 4 && (simd::avx512_loops() || !prefix) {
        // byte codes to float32: the table in vector registers (`simd::Lut`; faster than
        // the widening of float8_e5m2 below with AVX-512, which it needs: else the widening)
        if let (CodeSlice::U8(c8), Some(o)) = (C::code_slice(codes), F::as_f32_mut(out)) {
            let lut = simd::Lut::new(&table_f32(fmt)?);
            return par::try_zip_chunks(c8, CHUNK, o, CHUNK, c8.len(), |k, cs, os| {
                if (lut.apply(cs, None, os) as u64) < limit {
                    return Ok(());
                }
                let i = cs.iter().position(|&c| c as u64 >= limit).unwrap_or(0);
                Err(bad_code(fmt, k * CHUNK + i, cs[i] as u32))
            });
        }
    }
    if prefix {
        // bfloat16-like: the code is the top bits of the float32 pattern (NaNs keep payloads);
        // float16-like: the top bits of a float16 pattern, widened exactly (NaN canonical)
        let (f16, shift) = match is_f16_prefix(fmt) {
            true => (true, 10 - fmt.man_bits()),
            false => (false, 23 - fmt.man_bits()),
        };
        return par::try_zip_chunks(codes, CHUNK, out, CHUNK, codes.len(), |k, cs, os| {
            let any = match F::as_f32_mut(os) {
                Some(o) if f16 => simd::widen_f16(C::code_slice(cs), shift, o),
                Some(o) => simd::widen_f32(C::code_slice(cs), shift, o),
                None => {
                    let mut any = 0u32;
                    for (o, &c) in os.iter_mut().zip(cs) {
                        let c = c.to_u32();
                        any |= c;
                        let b = match f16 {
                            true => simd::f16_to_f32_bits((c << shift) & 0xffff),
                            false => c << shift,
                        };
                        *o = F::from_f32(f32::from_bits(b));
                    }
                    any
                }
            };
            if (any as u64) < limit {
                return Ok(());
            }
            let i = cs.iter().position(|c| c.to_u32() as u64 >= limit).unwrap_or(0);
            Err(bad_code(fmt, k * CHUNK + i, cs[i].to_u32()))
        });
    }
    if fmt.bits() <= 16 && codes.len() as u64 >= limit / 4 {
        let lut: Vec<F> = (0..limit as u32).map(|c| F::from_f64(fmt.decode_f64(c))).collect();
        let full = (C::BITS as u64) <= fmt.bits() as u64;
        par::try_zip_chunks(codes, CHUNK, out, CHUNK, codes.len(), |k, cs, os| {
            if full {
                for (o, &c) in os.iter_mut().zip(cs) {
                    *o = lut[c.to_u32() as usize];
                }
                return Ok(());
            }
            for (i, (o, &c)) in os.iter_mut().zip(cs).enumerate() {
                match lut.get(c.to_u32() as usize) {
                    Some(&v) => *o = v,
                    None => return Err(bad_code(fmt, k * CHUNK + i, c.to_u32())),
                }
            }
            Ok(())
        })
    } else {
        par::try_zip_chunks(codes, CHUNK, out, CHUNK, codes.len(), |k, cs, os| {
            for (i, (o, &c)) in os.iter_mut().zip(cs).enumerate() {
                if c.to_u32() as u64 >= limit {
                    return Err(bad_code(fmt, k * CHUNK + i, c.to_u32()));
                }
                *o = F::from_f64(fmt.decode_f64(c.to_u32()));
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------- quantize (fused)

/// Round `x` to `fmt` and write the rounded values (as `O`) in one pass:
/// `lut_out[code]` is the output value of each code (formats up to 16 bits), or
/// `None` for wider formats, where the value is computed (f32/f64 outputs only via `O::from_f64`).
pub fn quantize<I: Input, O: Copy + Send + Sync>(
    enc: &Encoder,
    x: &[I],
    out: &mut [O],
    random: Random,
    lut_out: Option<&[O]>,
    from_f64: fn(f64) -> O,
) -> Result<()> {
    check_len("out", out.len(), x.len())?;
    if let Random::Bits(b) = random {
        check_len("random_bits", b.len(), x.len())?;
    }
    let fmt = enc.fmt;
    dispatch_mode!(enc.opts.rounding, MODE => {
        par::try_zip_chunks(x, CHUNK, out, CHUNK, x.len(), |k, xs, os| {
            let mut codes = [0u32; 1024]; // on the stack: no allocation per chunk
            for (j, (xp, op)) in xs.chunks(1024).zip(os.chunks_mut(1024)).enumerate() {
                let cs = &mut codes[..xp.len()];
                encode_chunk::<I, u32, MODE>(enc, xp, cs, k * CHUNK + j * 1024, random)?;
                match lut_out {
                    Some(lut) => op.iter_mut().zip(&*cs).for_each(|(o, &c)| *o = lut[c as usize]),
                    None => op.iter_mut().zip(&*cs).for_each(|(o, &c)| *o = from_f64(fmt.decode_f64(c))),
                }
            }
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::parse;

    /// A xorshift64 generator from `seed` (test inputs and random words).
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// Every named format, then the formats of `specs`.
    fn named_and<'a>(specs: &[&'a str]) -> Vec<(&'a str, Format)> {
        let mut all = crate::formats::all();
        all.extend(specs.iter().map(|&n| (n, parse(n).unwrap())));
        all
    }

    fn enc(name: &str, rounding: Rounding) -> Encoder {
        Encoder::new(parse(name).unwrap(), EncodeOptions { rounding, ..Default::default() })
    }

    fn one(e: &Encoder, x: f64) -> u32 {
        let mut out = [0u32];
        encode(e, &[x], &mut out, Random::Philox { seed: 0, stream: 0, offset: 0 }).unwrap();
        out[0]
    }

    #[test]
    fn every_code_round_trips_every_small_format() {
        for (name, f) in crate::formats::all().into_iter().filter(|(_, f)| f.bits() <= 16) {
            for mode in Rounding::ALL.map(|m| m.1) {
                let e = Encoder::new(f, EncodeOptions { rounding: mode, ..Default::default() });
                for c in 0..f.num_codes() as u32 {
                    let v = f.decode_f64(c);
                    let got = one(&e, v);
                    if v.is_nan() {
                        assert!(f.is_nan_code(got), "{name} {c:#x}");
                    } else if v == 0.0 && f.nan() == NanKind::NegZero {
                        assert_eq!(got, 0);
                    } else {
                        assert_eq!(got, c, "{name} code {c:#x} value {v} mode {mode:?}");
                    }
                }
            }
        }
    }

    /// The direct index of round to nearest gives the encoder's code for every float32 it
    /// decides, in every format of at most 8 bits under every overflow/NaN/negative option:
    /// per bucket, both ends, the transition and its neighbours, and a spread of others;
    /// plus every 4099th bit pattern, and `index_lookup` (vector and scalar paths) on a slice.
    /// Undecided buckets are exactly the inf/NaN ones and those holding an error input.
    #[test]
    fn nearest_index_matches_the_encoder() {
        let mut built = 0;
        for (name, f) in crate::formats::all().into_iter().filter(|(_, f)| f.bits() <= 8) {
            for (overflow, nan_to_zero, clamp_negative) in
                [(Overflow::NonFinite, false, false), (Overflow::Saturate, true, true)]
            {
                let opts = EncodeOptions {
                    rounding: Rounding::Nearest,
                    overflow,
                    nan_to_zero,
                    clamp_negative,
                };
                let e = Encoder::new(f, opts);
                let Some(ix) = build_nearest_index(&e) else {
                    // only a format with 2+ transitions in a bucket has none
                    assert!(f.man_bits() >= 7, "{name} {opts:?} got no index");
                    continue;
                };
                let ix = &*ix;
                built += 1;
                let want = |b: u32| match e.encode_one::<f32, NEAREST>(f32::from_bits(b), 0) {
                    (c, 0) => Some(c as u8),
                    _ => None,
                };
                let got = |b: u32| {
                    let mut o = [0u8];
                    crate::table::index_lookup::<false>(ix, &[f32::from_bits(b)], 1.0, &mut o)
                        .then_some(o[0])
                };
                for h in 0..1u32 << 16 {
                    let lo = h << 16;
                    let t = u16::from_le_bytes([ix[h as usize][0], ix[h as usize][1]]) as u32;
                    let lows = [0, 1, 2, 0x5555, 0x8000, 0xaaaa, 0xfffe, 0xffff].into_iter().chain(
                        [t.wrapping_sub(1), t, t + 1, t + 2].into_iter().filter(|&l| l <= 0xffff),
                    );
                    for l in lows {
                        let b = lo | l;
                        match got(b) {
                            Some(c) => assert_eq!(Some(c), want(b), "{name} {opts:?} {b:#010x}"),
                            None => assert!(
                                lo & 0x7f80_0000 == 0x7f80_0000
                                    || want(lo).is_none()
                                    || want(lo | 0xffff).is_none(),
                                "{name} {opts:?}: bucket {h:#06x} undecided"
                            ),
                        }
                    }
                }
                let xs: Vec<f32> = (0..=u32::MAX / 4099)
                    .map(|k| f32::from_bits(k * 4099))
                    .filter(|x| want(x.to_bits()).is_some() && !x.is_nan() && !x.is_infinite())
                    .collect();
                let mut out = vec![0u8; xs.len()];
                assert!(crate::table::index_lookup::<false>(ix, &xs, 1.0, &mut out), "{name}");
                for (x, c) in xs.iter().zip(&out) {
                    assert_eq!(Some(*c), want(x.to_bits()), "{name} {opts:?} {x:e}");
                }
            }
        }
        eprintln!("{built} (format, options) indexes checked");
        assert!(built >= 10, "only {built} formats got an index");
    }

    #[test]
    fn e4m3fn_edges() {
        let e = enc("float8_e4m3fn", Rounding::Nearest);
        assert_eq!(one(&e, 464.0), 0x7e); // tie to even stays at 448
        assert_eq!(one(&e, 480.0), 0x7f); // overflow → NaN
        assert_eq!(one(&e, -1e9), 0xff);
        assert_eq!(one(&e, f64::INFINITY), 0x7f);
        assert_eq!(one(&e, 2f64.powi(-10)), 0x00); // half of min subnormal, tie → even (0)
        assert_eq!(one(&e, 2f64.powi(-10) * 3.0), 0x02); // 1.5 ulp → tie → even (2)
        let z = enc("float8_e4m3fn", Rounding::TowardZero);
        assert_eq!(one(&z, 1e9), 0x7e);
        let s = Encoder::new(
            parse("e4m3").unwrap(),
            EncodeOptions { overflow: Overflow::Saturate, ..Default::default() },
        );
        assert_eq!(one(&s, 1e9), 0x7e);
        assert_eq!(one(&s, f64::NEG_INFINITY), 0xfe);
    }

    #[test]
    fn no_double_rounding_from_f64() {
        // 1 + 2^-4 + 2^-30: above the midpoint of 1 and 1.125, so e4m3 rounds up; staging
        // through float32 would make it an exact tie and round to 1.0.
        let e = enc("float8_e4m3fn", Rounding::Nearest);
        assert_eq!(one(&e, 1.0 + 2f64.powi(-4) + 2f64.powi(-30)), 0x39);
    }

    #[test]
    fn directed_modes() {
        let x = 1.0 + 2f64.powi(-5); // between 1.0 (0x38) and 1.125 (0x39)
        for (mode, pos, neg) in [
            (Rounding::TowardZero, 0x38, 0xb8),
            (Rounding::Up, 0x39, 0xb8),
            (Rounding::Down, 0x38, 0xb9),
            (Rounding::NearestAway, 0x38, 0xb8),
        ] {
            let e = enc("float8_e4m3fn", mode);
            assert_eq!(one(&e, x), pos, "{mode:?}");
            assert_eq!(one(&e, -x), neg, "{mode:?}");
        }
        let e = enc("float8_e4m3fn", Rounding::NearestAway);
        assert_eq!(one(&e, 1.0 + 2f64.powi(-4)), 0x39);
    }

    #[test]
    fn unsigned_and_nan_errors() {
        let e = enc("e8m0", Rounding::Nearest);
        let mut out = [0u8; 3];
        let err = encode(&e, &[1.0f32, 2.0, -1.0], &mut out, Random::Bits(&[0; 3])).unwrap_err();
        assert_eq!(err.arg, "x");
        assert!(err.msg.contains("element 2"), "{}", err.msg);
        let e = enc("e2m1", Rounding::Nearest);
        let err = encode(&e, &[f32::NAN], &mut out[..1], Random::Bits(&[0])).unwrap_err();
        assert!(err.msg.contains("NaN"));
        let e = Encoder::new(
            parse("e2m1").unwrap(),
            EncodeOptions { nan_to_zero: true, ..Default::default() },
        );
        encode(&e, &[f32::NAN], &mut out[..1], Random::Bits(&[0])).unwrap();
        assert_eq!(out[0], 0);
    }

    #[test]
    fn e8m0_values() {
        let e = enc("e8m0", Rounding::Nearest);
        assert_eq!(one(&e, 3.0), 129);
        assert_eq!(one(&e, 1e-45), 0);
        assert_eq!(one(&e, 0.0), 0); // no zero: the smallest value (ml_dtypes gives NaN)
        assert_eq!(one(&e, 2f64.powi(127) * 1.5), 0xff);
    }

    #[test]
    fn stochastic_exact_inputs_never_move_and_thread_independent() {
        let e = enc("float8_e5m2", Rounding::Stochastic);
        let x: Vec<f32> = (0..200_000).map(|i| ((i as f32) * 0.37).sin() * 100.0).collect();
        let mut a = vec![0u8; x.len()];
        let mut b = vec![0u8; x.len()];
        encode(&e, &x, &mut a, Random::Philox { seed: 7, stream: 1, offset: 0 }).unwrap();
        // the same elements encoded in two pieces with offsets give the same codes
        let (x1, x2) = x.split_at(12345);
        let (b1, b2) = b.split_at_mut(12345);
        encode(&e, x1, b1, Random::Philox { seed: 7, stream: 1, offset: 0 }).unwrap();
        encode(&e, x2, b2, Random::Philox { seed: 7, stream: 1, offset: 12345 }).unwrap();
        assert_eq!(a, b);
        let f = parse("float8_e5m2").unwrap();
        let vals: Vec<f32> =
            (0..256).map(|c| f.decode_f64(c) as f32).filter(|v| v.is_finite()).collect();
        let mut c = vec![0u8; vals.len()];
        encode(&e, &vals, &mut c, Random::Philox { seed: 3, stream: 0, offset: 0 }).unwrap();
        for (v, &code) in vals.iter().zip(&c) {
            assert_eq!(f.decode_f64(code as u32) as f32, *v);
        }
    }

    /// Random-bit indices wrap modulo 2^64 (rng's definition): an offset near u64::MAX gives
    /// the codes of the same elements encoded with explicit, wrapped random words (and no
    /// overflow panic in debug builds).
    ///
    /// Both stochastic modes: `stochastic16` is the same rounding given the words of
    /// `rng::random_word16` (at an odd offset, over several steps of the encode loop).
    #[test]
    fn stochastic_offset_wraps() {
        let x: Vec<f32> = (0..3000).map(|i| ((i as f32) * 0.71).sin() * 3.0).collect();
        let offset = u64::MAX - 1500;
        type Word = fn(u64, u64, u64) -> u32;
        let modes: [(Rounding, Word); 2] = [
            (Rounding::Stochastic, crate::rng::random_u32),
            (Rounding::Stochastic16, crate::rng::random_word16),
        ];
        let mut codes = vec![];
        for (mode, word) in modes {
            let e = enc("float8_e4m3fn", mode);
            let mut a = vec![0u8; x.len()];
            encode(&e, &x, &mut a, Random::Philox { seed: 5, stream: 2, offset }).unwrap();
            let words: Vec<u32> =
                (0..x.len() as u64).map(|i| word(5, 2, offset.wrapping_add(i))).collect();
            let mut b = vec![0u8; x.len()];
            encode(&e, &x, &mut b, Random::Bits(&words)).unwrap();
            assert_eq!(a, b, "{mode:?}");
            codes.push(a);
        }
        assert_ne!(codes[0], codes[1]);
    }

    /// `stochastic16` from Philox equals the same rounding given the words of
    /// `rng::random_word16`, on the path that reads the halves in place (even offsets) and
    /// the one that writes the words out (odd offsets, a wrap of the index inside a step,
    /// steps with NaN or inf), over several steps and chunks, for byte and u16 codes.
    #[test]
    fn stochastic16_in_place_halves_equal_the_definition() {
        let mut x: Vec<f32> =
            (0..2 * CHUNK + 1000).map(|i| ((i as f32) * 0.37).sin() * 5.0).collect();
        x[700] = f32::NAN;
        x[1501] = f32::NEG_INFINITY;
        x[CHUNK + 3] = 1e-7; // below 2^emin of the FP8 formats
        let offsets = [0u64, 1, 2, 1001, 4096, u64::MAX - 1500, u64::MAX - 1501];
        for name in ["float8_e4m3fn", "float8_e5m2", "bfloat16", "float16"] {
            let e = enc(name, Rounding::Stochastic16);
            for offset in offsets {
                for len in [1usize, 17, 3000, x.len()] {
                    let xs = &x[..len];
                    let words: Vec<u32> = (0..len as u64)
                        .map(|i| crate::rng::random_word16(7, 3, offset.wrapping_add(i)))
                        .collect();
                    let philox = Random::Philox { seed: 7, stream: 3, offset };
                    let (mut a, mut b) = (vec![0u16; len], vec![0u16; len]);
                    encode(&e, xs, &mut a, philox).unwrap();
                    encode(&e, xs, &mut b, Random::Bits(&words)).unwrap();
                    assert_eq!(a, b, "{name} offset {offset} len {len}");
                    if e.fmt.bits() <= 8 {
                        let (mut a8, mut b8) = (vec![0u8; len], vec![0u8; len]);
                        encode(&e, xs, &mut a8, philox).unwrap();
                        encode(&e, xs, &mut b8, Random::Bits(&words)).unwrap();
                        assert_eq!(a8, b8, "{name} u8 offset {offset} len {len}");
                    }
                }
            }
        }
    }

    /// The float32 fast path equals the general element code on every format and mode.
    #[test]
    fn add_shift_blocks_equal_the_element_code() {
        // the block loops (AVX-512 where the CPU has it, with their scalar tails) against the
        // element code, over every format they take, both roundings and all code widths
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut x: Vec<f32> = (0..20_000).map(|_| f32::from_bits(next() as u32)).collect();
        x.extend((0..20_000).map(|i| (i as f32 - 1e4) * 1.3e-3));
        x.extend((0..20_000).map(|i| (i as f32 - 1e4) * 7.1e-8));
        x.extend([0.0, -0.0, f32::INFINITY, f32::NAN, 1e-45, -1e-45, 448.0, 465.0, 1e30]);
        // exact multiples of small powers of two (codes that must not move), with the
        // random words 0 and 2^32 − 1 among them
        x.extend((-3000..3000).map(|k| k as f32 * 2f32.powi(-12)));
        x.extend((-3000..3000).map(|k| k as f32 * 2f32.powi(-20)));
        let rnd: Vec<u32> = (0..x.len())
            .map(|i| match i % 4 {
                0 => 0,
                1 => u32::MAX,
                _ => next() as u32,
            })
            .collect();
        let specs = [
            "e5m1",
            "e1m6",
            "e8m1",
            "e5m10",
            "e6m9",
            "e8m7",
            "e2m1fu",
            "e3m2fnu",
            "p3109_k8p4se",
            "p3109_k8p4ue",
            "p3109_k6p3se",
            "p3109_k8p3ue",
        ];
        // `stochastic16`'s loop reads the halves of raw words in place: element i's word is
        // `word16_at(&rnd, i)`
        let w16: Vec<u32> = (0..x.len()).map(|i| crate::rng::word16_at(&rnd, i)).collect();
        let mut checked = 0;
        // how many cases the AVX-512 loop took, unsigned and signed formats
        #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
        let mut taken = [0; 2];
        let cases = [
            (Rounding::Nearest, false),
            (Rounding::Stochastic, false),
            (Rounding::Stochastic16, true),
        ];
        let overflows = [Overflow::NonFinite, Overflow::Saturate];
        for (name, f) in named_and(&specs) {
            for ((mode, halves), overflow) in
                cases.into_iter().flat_map(|c| overflows.map(|o| (c, o)))
            {
                let e = Encoder::new(
                    f,
                    EncodeOptions { rounding: mode, overflow, ..Default::default() },
                );
                let m = if mode == Rounding::Nearest { NEAREST } else { STOCHASTIC };
                let (Some(fast), Some(r)) =
                    (e.fast(m), if m == NEAREST { e.rne() } else { e.sr() })
                else {
                    continue;
                };
                #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
                {
                    assert!(avx512::clamps(&fast), "{name} {mode:?} {overflow:?}");
                    taken[fast.unsigned as usize] += 1;
                }
                let want: Vec<(u32, u32)> = x
                    .iter()
                    .zip(if halves { &w16 } else { &rnd })
                    .map(|(&v, &w)| match m {
                        NEAREST => e.encode_one::<f32, NEAREST>(v, 0),
                        _ => e.encode_one::<f32, STOCHASTIC>(v, w),
                    })
                    .collect();
                let special =
                    |v: f32| v.is_nan() || v.is_infinite() || (!f.signed() && v < 0.0 && v != 0.0);
                for len in [0usize, 1, 15, 16, 17, 1000, x.len()] {
                    let xs = &x[..len];
                    let rs = &rnd[..if halves { len.div_ceil(2) } else { len }];
                    let check = |got: Vec<u32>, redo: u32, width: u32| {
                        assert_eq!(redo != 0, xs.iter().any(|&v| special(v)), "{name} redo");
                        for (i, (&g, &(w, _))) in got.iter().zip(&want).enumerate() {
                            if !special(xs[i]) {
                                assert_eq!(
                                    g, w,
                                    "{name} {mode:?} u{width} len {len} at {i}: {:e}",
                                    xs[i]
                                );
                            }
                        }
                    };
                    let blk = |o8: &mut [u8], o16: &mut [u16], o32: &mut [u32]| match (m, halves) {
                        (NEAREST, _) => [
                            add_shift_block::<u8, false, false>(&fast, &r, xs, rs, o8),
                            add_shift_block::<u16, false, false>(&fast, &r, xs, rs, o16),
                            add_shift_block::<u32, false, false>(&fast, &r, xs, rs, o32),
                        ],
                        (_, false) => [
                            add_shift_block::<u8, true, false>(&fast, &r, xs, rs, o8),
                            add_shift_block::<u16, true, false>(&fast, &r, xs, rs, o16),
                            add_shift_block::<u32, true, false>(&fast, &r, xs, rs, o32),
                        ],
                        (_, true) => [
                            add_shift_block::<u8, true, true>(&fast, &r, xs, rs, o8),
                            add_shift_block::<u16, true, true>(&fast, &r, xs, rs, o16),
                            add_shift_block::<u32, true, true>(&fast, &r, xs, rs, o32),
                        ],
                    };
                    let (mut o8, mut o16, mut o32) =
                        (vec![0u8; len], vec![0u16; len], vec![0u32; len]);
                    let redo = blk(&mut o8, &mut o16, &mut o32);
                    if f.bits() <= 8 {
                        check(o8.iter().map(|&c| c as u32).collect(), redo[0], 8);
                    }
                    if f.bits() <= 16 {
                        check(o16.iter().map(|&c| c as u32).collect(), redo[1], 16);
                    }
                    check(o32, redo[2], 32);
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "{checked}");
        #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
        assert!(taken.iter().all(|&k| k > 10), "{taken:?}");
    }

    #[test]
    fn fast_path_equals_general_path() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut inputs: Vec<u32> = (0..200_000).map(|_| next() as u32).collect();
        // values in the ranges of small formats, and their neighbours
        inputs.extend((0..200_000).map(|i| ((i as f32 - 1e5) * 3.1e-3).to_bits()));
        inputs.extend((0..200_000).map(|i| ((i as f32) * 1.7e-7).to_bits().wrapping_add(i & 1)));
        // every float32 exponent and sign with mantissas at and around each possible rounding
        // boundary (ties, ±1 ulp) for every count of discarded bits
        let mut edges = Vec::new();
        for top in 0..512u32 {
            for s in 1..=23u32 {
                for m in [0u32, 1, 3, 5] {
                    let tie = (m << s) | (1 << (s - 1));
                    for d in [-1i32, 0, 1] {
                        edges.push((top << 23) | (tie.wrapping_add(d as u32) & 0x7f_ffff));
                    }
                }
            }
        }
        let specs = ["e2m0fu", "e3m0fn", "e2m1fu", "e5m1", "e1m6", "e8m1", "e5m10", "e6m9"];
        for (name, f) in named_and(&specs) {
            for (_, mode) in Rounding::ALL {
                let e = Encoder::new(
                    f,
                    EncodeOptions {
                        rounding: mode,
                        clamp_negative: true,
                        nan_to_zero: true,
                        ..Default::default()
                    },
                );
                if mode == Rounding::Nearest && e.truncates() {
                    let x: Vec<f32> =
                        inputs.iter().chain(&edges).map(|&b| f32::from_bits(b)).collect();
                    let want: Vec<u32> =
                        x.iter().map(|&v| e.encode_one::<f32, NEAREST>(v, 0).0).collect();
                    let mut t = vec![0u32; x.len()];
                    truncate_nearest(&e, &x, &mut t);
                    for (i, (&c, &g)) in t.iter().zip(&want).enumerate() {
                        assert_eq!(c, g, "{name} add-and-shift, input {i}: {:e}", x[i]);
                    }
                    // u16 codes take the AVX-512 loop where the CPU has it, from the first
                    // cache line of the output on: every position of the output in a line
                    if f.bits() <= 16 {
                        for off in 0..32 {
                            let len = if off == 0 { x.len() } else { 100 + off };
                            let mut buf = vec![0u16; len + 32];
                            truncate_nearest(&e, &x[..len], &mut buf[off..off + len]);
                            for (i, (&c, &g)) in buf[off..off + len].iter().zip(&want).enumerate() {
                                assert_eq!(c as u32, g, "{name} u16 off {off}, input {i}");
                            }
                        }
                    }
                }
                if let (Rounding::Nearest, Some(fast), Some(rn)) = (mode, e.fast(NEAREST), e.rne())
                {
                    for (i, &bits) in inputs.iter().chain(&edges).enumerate() {
                        let (c, redo) = rne_one(&fast, &rn, bits);
                        let (g, _) = e.encode_one::<f32, NEAREST>(f32::from_bits(bits), 0);
                        assert!(
                            redo == 1 || c == g,
                            "{name} rne input {i}: {:e} {c:#x} general {g:#x}",
                            f32::from_bits(bits)
                        );
                    }
                }
                if let (Rounding::Stochastic, Some(fast), Some(sr)) =
                    (mode, e.fast(STOCHASTIC), e.sr())
                {
                    // random words at the ends and around the middle, and random ones
                    let fixed = [0u32, 1, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, u32::MAX];
                    for (i, &bits) in inputs.iter().chain(&edges).enumerate() {
                        let r = match i % 8 {
                            k @ 0..=5 => fixed[k],
                            _ => (next() >> 32) as u32,
                        };
                        let (c, redo) = sr_one(&fast, &sr, bits, r);
                        let (g, _) = e.encode_one::<f32, STOCHASTIC>(f32::from_bits(bits), r);
                        assert!(
                            redo == 1 || c == g,
                            "{name} sr input {i} r {r:#x}: {:e} {c:#x} general {g:#x}",
                            f32::from_bits(bits)
                        );
                    }
                }
                dispatch_mode!(mode, MODE => {
                    let Some(fast) = e.fast(MODE) else { continue };
                    for (i, &bits) in inputs.iter().enumerate() {
                        let r = (next() >> 32) as u32;
                        let (c, redo) = fast_one::<MODE>(&fast, bits, r);
                        let (g, _) = e.encode_one::<f32, MODE>(f32::from_bits(bits), r);
                        assert!(redo == 1 || c == g, "{name} {mode:?} input {i}: {:e} fast {c:#x} general {g:#x}", f32::from_bits(bits));
                    }
                });
            }
        }
    }

    #[test]
    fn decode_rejects_out_of_range_codes() {
        let f = parse("e2m1").unwrap();
        let mut out = [0f32; 2];
        let err = decode(&f, &[3u8, 16u8], &mut out).unwrap_err();
        assert_eq!(err.arg, "codes");
        assert!(err.msg.contains("element 1"));
    }
}

#[cfg(test)]
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod bench {
    use super::*;

    /// `cargo test --release bench_encode -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_encode() {
        let n = 1 << 18; // 1 MiB of input: the compute, not the memory
        let x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618).sin() * 3.0).collect();
        let mut out = vec![0u8; n];
        let best = |f: &mut dyn FnMut()| {
            (0..40)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let g = |d: f64| n as f64 / d / 1e9;
        for name in ["e4m3", "e5m2", "e2m1"] {
            let e = Encoder::new(crate::formats::parse(name).unwrap(), EncodeOptions::default());
            let ix = nearest_index(&e, true).unwrap();
            let di = best(&mut || {
                assert!(crate::table::index_lookup::<false>(ix, &x, 1.0, &mut out));
            });
            let dn = best(&mut || {
                encode_chunk::<f32, u8, NEAREST>(&e, &x, &mut out, 0, Random::Bits(&[])).unwrap()
            });
            let random = Random::Philox { seed: 1, stream: 0, offset: 0 };
            let ds = best(&mut || {
                encode_chunk::<f32, u8, STOCHASTIC>(&e, &x, &mut out, 0, random).unwrap()
            });
            let e16 = Encoder::new(
                crate::formats::parse(name).unwrap(),
                EncodeOptions { rounding: Rounding::Stochastic16, ..Default::default() },
            );
            let d16 = best(&mut || {
                encode_chunk::<f32, u8, STOCHASTIC>(&e16, &x, &mut out, 0, random).unwrap()
            });
            let bits: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
            let db = best(&mut || {
                encode_chunk::<f32, u8, STOCHASTIC>(&e, &x, &mut out, 0, Random::Bits(&bits))
                    .unwrap()
            });
            let mut words = vec![0u32; n];
            let dp = best(&mut || rng::fill_random_u32(1, 0, 0, &mut words));
            println!(
                "{name}: index {:.3}, nearest {:.3}, stochastic {:.3}, stochastic16 {:.3} (given \
                 bits {:.3}, Philox alone {:.3}) G/s, one thread",
                g(di),
                g(dn),
                g(ds),
                g(d16),
                g(db),
                g(dp)
            );
        }
    }
}
