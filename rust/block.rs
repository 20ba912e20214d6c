//! Blockwise quantization: per-block scales + an element codec + packed codes.
//!
//! Design notes
//! - A tensor (flattened) is cut into blocks of `block` elements (the last may be
//!   shorter). Every block but the last is a multiple of 8 elements, so each block's
//!   packed codes start on a byte boundary and blocks are independent (parallel).
//! - Scale rules, per block with `amax = max |x|`:
//!   ```text
//!   absmax  s = amax / M                      (fp32; M = the element codec's max, 1 for tables)
//!   e8m0    s = 2^(floor(log2 amax) − emax)   (OCP MX floor rule; ExMy elements, saturating)
//!           s = 2^ceil(log2 amax)             (table codecs, so |x/s| ≤ 1)
//!   e4m3    s = e4m3(amax / M / g) · g        (NVFP4: e4m3 block scale, fp32 tensor scale
//!                                              g = amax_tensor / (M · 448))
//!   ```
//!   The other E8M0 rules (ExMy elements only; `e = floor(log2 M)`, `m` = mantissa bits of
//!   the element format), as torchao's `to_mx` computes them (`ScaleCalculationMode`):
//!   ```text
//!   e8m0_ceil   s = 2^(ceil(log2 amax) − e)       (CEIL: never clips, |x/s| ≤ 2^e ≤ M)
//!   e8m0_even   s = 2^(floor(log2 r(amax)) − e)   (EVEN: r rounds amax to m mantissa bits,
//!                                                  half up, before the floor rule)
//!   e8m0_rceil  s = 2^ceil(log2 d), d = fl32(amax / M)  (RCEIL, NVIDIA's cvt.rp.ue8m0:
//!                                                  the smallest s with amax/s ≤ M, up to
//!                                                  the rounding of d)
//!   ```
//!   All four work on the float32 bits of amax (`e8m0_exponent`); every exponent is clamped
//!   to the E8M0 range −127..=127, and a zero block gets 2^−127 (code 0) under each.
//!   One deliberate difference from torchao: its EVEN turns an amax that rounds past
//!   float32's largest finite value into a NaN scale; here that block keeps exponent 128 − e
//!   (a finite block never gets a NaN scale). torchao's formats all have e ≥ 2; for any
//!   format the rules are the exact floor/ceil of log2 (subnormal amax included).
//!   Elements are encoded from `x / s` (IEEE division, so a GPU mirror gets the same bits)
//!   and decoded as `value · s`. A block of zeros has `s = 0` (absmax) and decodes to 0.
//! - ExMy elements saturate (MX rule: `x/s` may exceed the format's max under the floor rule).
//! - Non-finite inputs are rejected by default ([`NonFinite::Error`]): a packed state has no
//!   place for them. [`NonFinite::Ocp`] follows the OCP MX rule instead: a block holding a
//!   NaN or ±inf gets a NaN scale (f32 NaN here; the E8M0 code 0xFF, the E4M3 code 0x7F once
//!   stored) and zero codes, so every element of it decodes to NaN; the other blocks (and the
//!   e4m3 tensor scale, from the finite values only) are as if the block were not there.
//! - Rows ([`quantize_rows`]): `x` may hold rows of `row` real elements, each padded with
//!   zeros to a whole number of blocks (the last row need not be), so blocks never cross
//!   rows. Zeros change no block's amax (so no scale) and no tensor scale; the quantile log
//!   base is taken over the real elements only, so every block is as if its row had been
//!   quantized alone.
//! - Stochastic rounding draws bits keyed by the element's index in `x` (padding included).

use crate::error::{Error, Result};
use crate::exmy::{EncodeOptions, Encoder, Overflow, Random, Rounding, NEAREST, STOCHASTIC};
use crate::format::Format;
use crate::par::{self, CHUNK};
use crate::table::{self, Table};
use crate::{dynamic, linear, logfmt, pack, rng, simd};
use rayon::prelude::*;

/// The element codec of a blockwise tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Elem {
    /// A float format of at most 8 bits.
    ExMy(Format),
    /// Linear levels (see `linear.rs`).
    Linear { bits: u32, signed: bool, zero: bool },
    /// The dynamic-exponent map (see `dynamic.rs`).
    Dynamic { bits: u32, signed: bool },
    /// Logarithmic levels; `quantile > 0` picks the base per block from that quantile
    /// of |x|/amax, otherwise `alpha` is the fixed base.
    Log { bits: u32, signed: bool, zero: bool, alpha: f32, quantile: f32 },
}

/// How block scales are chosen (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleKind {
    /// float32 `amax / M`.
    Absmax,
    /// Power of two, OCP MX floor rule.
    E8m0,
    /// Power of two, torchao CEIL.
    E8m0Ceil,
    /// Power of two, torchao EVEN.
    E8m0Even,
    /// Power of two, NVIDIA RCEIL (torchao RCEIL).
    E8m0Rceil,
    /// E4M3 block scale and a float32 tensor scale (NVFP4).
    E4m3,
}

impl ScaleKind {
    /// Every rule with its name.
    pub const ALL: [(&'static str, ScaleKind); 6] = [
        ("absmax", ScaleKind::Absmax),
        ("e8m0", ScaleKind::E8m0),
        ("e8m0_ceil", ScaleKind::E8m0Ceil),
        ("e8m0_even", ScaleKind::E8m0Even),
        ("e8m0_rceil", ScaleKind::E8m0Rceil),
        ("e4m3", ScaleKind::E4m3),
    ];

    /// Parse a scale rule name.
    pub fn parse(s: &str) -> Result<ScaleKind> {
        match Self::ALL.iter().find(|(n, _)| *n == s) {
            Some(&(_, k)) => Ok(k),
            None => {
                let names: Vec<String> = Self::ALL.iter().map(|(n, _)| format!("'{n}'")).collect();
                Err(Error::value(
                    "scale",
                    format!("expected one of {}, got {s:?}", names.join(", ")),
                ))
            }
        }
    }

    /// The rule's name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("?", |e| e.0)
    }

    /// Whether the scale is a power of two stored as an E8M0 code.
    pub fn is_e8m0(self) -> bool {
        matches!(
            self,
            ScaleKind::E8m0 | ScaleKind::E8m0Ceil | ScaleKind::E8m0Even | ScaleKind::E8m0Rceil
        )
    }
}

/// Unbiased E8M0 exponent (−127..=127) of the scale of a block whose max |x| has the
/// float32 bits `amax` (finite, sign ignored), for an ExMy element format with
/// `emax = floor(log2 M)`, `man_bits` mantissa bits and maximum `max = M` (module docs).
///
/// ```text
/// amax = s eeeeeeee mmmmmmmmmmmmmmmmmmmmmmm   exponent field E, mantissa field F
/// floor  floor(log2 amax) − emax             (E − 127 − emax for a normal amax)
/// ceil   floor + 1 unless amax is a power of two (F = 0 for a normal amax)
/// even   r = (amax + 2^(22−man_bits)) & 0xff80_0000: F rounded half up to man_bits bits,
///        a carry out of F bumps E, then F is cleared; floor of r (r = 0: as a zero block)
/// rceil  d = amax / M (one float32 division), ceil(log2 d) from d's bits: E_d − 127 +
///        (F_d ≠ 0), or for a subnormal d (E_d = 0, d = F_d · 2^−149) −127 + (F_d > 2^22)
/// ```
/// A zero amax gives −127 under every rule. torchao reads a subnormal amax's exponent as
/// −127 where this takes its true floor(log2); with `emax ≥ 0` (every format torchao has)
/// both clamp to −127. RCEIL divides as torchao 0.18 and NVIDIA's cuBLAS documentation do
/// (later torchao multiplies by fl32(1/M): the same at amax = M·2^k, where it matters, as
/// fl32(M · fl32(1/M)) = 1 for every MX element format), then rounds up on the bits as
/// `cvt.rp.ue8m0` and later torchao do (torchao 0.18's eager `ceil(log2(d))` in float32
/// misses the round-up just above a power of two). The table-codec `e8m0` rule is not
/// this function (`Spec::block_scale`).
pub fn e8m0_exponent(rule: ScaleKind, amax: u32, emax: i32, man_bits: u32, max: f32) -> i32 {
    let a = amax & 0x7fff_ffff;
    if a == 0 {
        return -127;
    }
    let k = match rule {
        ScaleKind::E8m0Ceil => floor_log2_bits(a) + !is_pow2_bits(a) as i32 - emax,
        ScaleKind::E8m0Even => {
            // may carry into the exponent field, up to 255 for amax near float32's max
            let r = (a + (1 << (22 - man_bits))) & 0xff80_0000;
            if r == 0 {
                return -127;
            }
            floor_log2_bits(r) - emax
        }
        ScaleKind::E8m0Rceil => {
            let d = (f32::from_bits(a) / max).to_bits();
            let (e, f) = ((d >> 23) as i32, d & 0x7f_ffff);
            let up = if e == 0 { f > 0x40_0000 } else { f != 0 };
            e + up as i32 - 127
        }
        _ => floor_log2_bits(a) - emax, // E8m0: the OCP floor rule
    };
    k.clamp(-127, 127)
}

/// Whether the non-zero float32 magnitude bits `a` are a power of two.
fn is_pow2_bits(a: u32) -> bool {
    if a >> 23 == 0 {
        a.is_power_of_two()
    } else {
        a & 0x7f_ffff == 0
    }
}

/// What a blockwise call does with a block that holds a NaN or an infinity (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinite {
    /// Reject the call, naming the first such element.
    #[default]
    Error,
    /// OCP MX: the block's scale is NaN and the whole block decodes to NaN.
    Ocp,
}

impl NonFinite {
    /// Parse a policy name ("error" or "ocp").
    pub fn parse(s: &str) -> Result<NonFinite> {
        match s {
            "error" => Ok(NonFinite::Error),
            "ocp" => Ok(NonFinite::Ocp),
            _ => Err(Error::value("nonfinite", format!("expected 'error' or 'ocp', got {s:?}"))),
        }
    }
}

/// A validated blockwise configuration with its fixed tables.
#[derive(Debug, Clone)]
pub struct Spec {
    elem: Elem,
    block: usize,
    scale: ScaleKind,
    rounding: Rounding,
    table: Option<Table>,
    encoder: Option<Encoder>,
    /// The element values by code, prepared for decoding (ExMy and table elements; log
    /// elements with quantile-fitted bases have one table per block).
    lut: Option<simd::Lut>,
    elem_max: f32,
}

/// Smallest and largest block size.
pub const BLOCK_MIN: usize = 16;
/// Largest block size.
pub const BLOCK_MAX: usize = 4096;

impl Spec {
    /// Validate and prepare.
    pub fn new(elem: Elem, block: usize, scale: ScaleKind, rounding: Rounding) -> Result<Spec> {
        if !(BLOCK_MIN..=BLOCK_MAX).contains(&block) || !block.is_multiple_of(8) {
            return Err(Error::value(
                "block_size",
                format!("expected a multiple of 8 in {BLOCK_MIN}..={BLOCK_MAX}, got {block}"),
            ));
        }
        let mut spec = Spec {
            elem,
            block,
            scale,
            rounding,
            table: None,
            encoder: None,
            lut: None,
            elem_max: 1.0,
        };
        match elem {
            Elem::ExMy(f) => {
                if f.bits() > 8 {
                    return Err(Error::value(
                        "codec",
                        format!(
                            "blockwise ExMy needs a format of at most 8 bits, got {}",
                            f.bits()
                        ),
                    ));
                }
                if !f.has_zero() {
                    return Err(Error::value("codec", "blockwise ExMy needs a format with zero"));
                }
                let opts = EncodeOptions {
                    rounding,
                    overflow: Overflow::Saturate,
                    nan_to_zero: false,
                    clamp_negative: true,
                };
                spec.encoder = Some(Encoder::new(f, opts));
                let values: Vec<f32> = (0..f.num_codes() as u32).map(|c| f.decode_f32(c)).collect();
                spec.lut = Some(simd::Lut::new(&values));
                spec.elem_max = f.max() as f32;
            }
            Elem::Linear { bits, signed, zero } => {
                spec.table = Some(Table::new(linear::linear_levels(bits, signed, zero)?)?)
            }
            Elem::Dynamic { bits, signed } => {
                spec.table = Some(Table::new(dynamic::dynamic_levels(bits, signed)?)?)
            }
            Elem::Log { bits, signed, zero, alpha, quantile } => {
                if !(0.0..1.0).contains(&quantile) || quantile.is_nan() {
                    return Err(Error::value(
                        "quantile",
                        format!("expected 0 <= quantile < 1 (0 = fixed base), got {quantile}"),
                    ));
                }
                // validates bits/alpha/zero once; per-block tables come later
                logfmt::log_levels(bits, signed, alpha, zero)?;
            }
        }
        if let Some(t) = &spec.table {
            spec.lut = Some(simd::Lut::new(t.levels()));
        }
        if spec.encoder.is_none() {
            table_stochastic(rounding)?;
        }
        if scale == ScaleKind::E4m3 && spec.encoder.is_none() {
            return Err(Error::value("scale", "'e4m3' scales are for ExMy elements (NVFP4)"));
        }
        if scale.is_e8m0() && scale != ScaleKind::E8m0 && spec.encoder.is_none() {
            return Err(Error::value(
                "scale",
                format!(
                    "{:?} scales are for ExMy elements; table codecs take 'e8m0' (the power of \
                     two at or above amax)",
                    scale.name()
                ),
            ));
        }
        Ok(spec)
    }

    /// The element codec.
    pub fn elem(&self) -> Elem {
        self.elem
    }
    /// The scale rule.
    pub fn scale(&self) -> ScaleKind {
        self.scale
    }
    /// Elements per block.
    pub fn block(&self) -> usize {
        self.block
    }
    /// Rounding of the element codes.
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }
    /// Bits per element code.
    pub fn code_bits(&self) -> u32 {
        match self.elem {
            Elem::ExMy(f) => f.bits(),
            Elem::Linear { bits, .. } | Elem::Dynamic { bits, .. } | Elem::Log { bits, .. } => bits,
        }
    }
    /// Number of blocks for `count` elements.
    pub fn num_blocks(&self, count: usize) -> usize {
        count.div_ceil(self.block)
    }
    /// Bytes of packed codes for `count` elements.
    pub fn packed_len(&self, count: usize) -> usize {
        pack::packed_len(count, self.code_bits())
    }
    /// Number of per-block bases stored (log codec with a quantile rule), else 0.
    pub fn num_alphas(&self, count: usize) -> usize {
        match self.elem {
            Elem::Log { quantile, .. } if quantile > 0.0 => self.num_blocks(count),
            _ => 0,
        }
    }

    /// The levels of a log block and its base (from the block's quantile, or fixed).
    fn log_levels(&self, xs: &[f32], amax: f32, scratch: &mut Vec<f32>) -> Result<(Vec<f32>, f32)> {
        let Elem::Log { bits, signed, zero, alpha, quantile } = self.elem else { unreachable!() };
        let a = if quantile > 0.0 {
            let n_nonzero =
                if signed { (1u32 << (bits - 1)) - 1 } else { (1u32 << bits) - zero as u32 };
            let v =
                if amax > 0.0 { logfmt::quantile_abs(xs, quantile, scratch) / amax } else { 1.0 };
            logfmt::alpha_from_quantile(v, n_nonzero)
        } else {
            alpha
        };
        Ok((logfmt::log_levels(bits, signed, a, zero)?, a))
    }

    /// The block scale from the block's amax.
    fn block_scale(&self, amax: f32, global: f32) -> f32 {
        match self.scale {
            ScaleKind::Absmax => amax / self.elem_max,
            ScaleKind::E8m0 if self.encoder.is_none() => {
                // table codecs: the power of two at or above amax, so |x/s| ≤ 1
                if amax == 0.0 {
                    return f32::from_bits(1 << 22); // 2^-127, the smallest E8M0 value
                }
                let e = floor_log2(amax);
                let k = if amax == pow2f(e) { e } else { e + 1 };
                pow2f(k.clamp(-127, 127))
            }
            ScaleKind::E8m0 | ScaleKind::E8m0Ceil | ScaleKind::E8m0Even | ScaleKind::E8m0Rceil => {
                let Elem::ExMy(f) = self.elem else { unreachable!("checked in Spec::new") };
                let emax = floor_log2(self.elem_max);
                pow2f(e8m0_exponent(self.scale, amax.to_bits(), emax, f.man_bits(), self.elem_max))
            }
            ScaleKind::E4m3 => {
                // built once per process, not once per block (16 elements)
                static E4M3: std::sync::OnceLock<Encoder> = std::sync::OnceLock::new();
                let enc = E4M3.get_or_init(|| {
                    let e4m3 = crate::formats::parse("float8_e4m3fn").expect("named");
                    let opts = EncodeOptions { overflow: Overflow::Saturate, ..Default::default() };
                    Encoder::new(e4m3, opts)
                });
                let c = enc.encode_one_dyn(amax / self.elem_max / global, Rounding::Nearest, 0).0;
                enc.format().decode_f32(c)
            }
        }
    }
}

/// floor(log2 |x|) of a finite non-zero f32, from its bits.
fn floor_log2(x: f32) -> i32 {
    floor_log2_bits(x.to_bits() & 0x7fff_ffff)
}

/// floor(log2 a) of non-zero float32 magnitude bits `a` (exponent field 255 reads as 128).
fn floor_log2_bits(b: u32) -> i32 {
    let ef = (b >> 23) as i32;
    if ef == 0 {
        (31 - b.leading_zeros() as i32) - 149
    } else {
        ef - 127
    }
}

/// 2^k as f32 for -149 ≤ k ≤ 127.
fn pow2f(k: i32) -> f32 {
    if k >= -126 {
        f32::from_bits(((k + 127) as u32) << 23)
    } else {
        f32::from_bits(1 << (k + 149))
    }
}

/// The tensor scale `g` of the e4m3 rule (1 for the others).
fn global_scale(spec: &Spec, x: &[f32]) -> f32 {
    if spec.scale != ScaleKind::E4m3 {
        return 1.0;
    }
    // finite values only: under the OCP policy a non-finite block is NaN, not the tensor's max
    let amax = x.iter().fold(0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    let g = amax / (spec.elem_max * 448.0);
    if g > 0.0 && g.is_finite() {
        g
    } else {
        1.0
    }
}

/// Quantize `x` blockwise into `packed` codes, `scales` (one per block) and `alphas`
/// (one per block for the quantile log rule, else empty). Returns the tensor scale
/// (1 except for the e4m3 rule), by which `scales` must be multiplied on decode.
/// Non-finite values are an error; [`quantize_rows`] for rows and the OCP policy.
pub fn quantize(
    spec: &Spec,
    x: &[f32],
    packed: &mut [u8],
    scales: &mut [f32],
    alphas: &mut [f32],
    seed: u64,
    stream: u64,
) -> Result<f32> {
    quantize_rows(spec, x, 0, NonFinite::Error, packed, scales, alphas, seed, stream)
}

/// [`quantize`] of rows: `x` holds rows of `row` real elements, each but the last followed
/// by zeros up to a whole number of blocks (`row = 0`: one flat row). The padding must be
/// zeros (the caller's); the quantile log base is taken over each block's real elements.
/// `nonfinite` chooses what a block with a NaN or ±inf becomes (module docs).
#[allow(clippy::too_many_arguments)]
pub fn quantize_rows(
    spec: &Spec,
    x: &[f32],
    row: usize,
    nonfinite: NonFinite,
    packed: &mut [u8],
    scales: &mut [f32],
    alphas: &mut [f32],
    seed: u64,
    stream: u64,
) -> Result<f32> {
    let n = x.len();
    check("packed", packed.len(), spec.packed_len(n))?;
    check("scales", scales.len(), spec.num_blocks(n))?;
    check("alphas", alphas.len(), spec.num_alphas(n))?;
    let rows = (row > 0).then(|| (row, spec.num_blocks(row)));
    if let Some((row, per_row)) = rows {
        // checked: `row` comes from the caller (found by the block_spec fuzz target)
        let padded = per_row.checked_mul(spec.block).ok_or_else(|| {
            Error::value("row", format!("expected a row length of at most {n}, got {row}"))
        })?;
        if n > 0 && (n < row || !(n - row).is_multiple_of(padded)) {
            return Err(Error::value(
                "x",
                format!(
                    "{n} elements are not rows of {row} padded to {padded} (the last unpadded)"
                ),
            ));
        }
    }
    let global = global_scale(spec, x);
    let g = Groups::new(spec);
    let mut alpha_dummy = vec![0f32; if alphas.is_empty() { spec.num_blocks(n) } else { 0 }];
    let alphas: &mut [f32] = if alphas.is_empty() { &mut alpha_dummy } else { alphas };
    crate::exmy::dispatch_mode!(spec.rounding, MODE => {
        let one = |gi: usize, xs: &[f32], ps: &mut [u8], ss: &mut [f32], als: &mut [f32]| {
            let start = gi * g.elems;
            if xs.iter().all(|v| v.is_finite()) {
                return quantize_group_rows::<MODE>(
                    spec, xs, ps, ss, als, global, start, rows, seed, stream,
                );
            }
            if nonfinite == NonFinite::Error {
                return Err(Error::value("x", "")); // located below, the same on any pool
            }
            // OCP: the blocks with a non-finite value as zero blocks, then NaN scales
            let mut clean = xs.to_vec();
            let mut bad = Vec::new();
            for (b, cb) in clean.chunks_mut(spec.block).enumerate() {
                if cb.iter().any(|v| !v.is_finite()) {
                    cb.fill(0.0);
                    bad.push(b);
                }
            }
            quantize_group_rows::<MODE>(
                spec, &clean, ps, ss, als, global, start, rows, seed, stream,
            )?;
            for b in bad {
                ss[b] = f32::NAN;
            }
            Ok(())
        };
        if par::serial(n) {
            // small calls on the calling thread: the same groups, so the same bits
            x.chunks(g.elems)
                .zip(packed.chunks_mut(g.bytes))
                .zip(scales.chunks_mut(g.blocks))
                .zip(alphas.chunks_mut(g.blocks))
                .enumerate()
                .try_for_each(|(gi, (((xs, ps), ss), als))| one(gi, xs, ps, ss, als))
        } else {
            par::install(|| {
                x.par_chunks(g.elems)
                    .zip(packed.par_chunks_mut(g.bytes))
                    .zip(scales.par_chunks_mut(g.blocks))
                    .zip(alphas.par_chunks_mut(g.blocks))
                    .enumerate()
                    .try_for_each(|(gi, (((xs, ps), ss), als))| one(gi, xs, ps, ss, als))
            })
        }
    })
    .map_err(|e| match x.iter().position(|v| !v.is_finite()) {
        Some(i) if e.arg == "x" => Error::value(
            "x",
            format!("element {i} is {}; blockwise quantization needs finite values", x[i]),
        ),
        _ => e,
    })?;
    // amax / M overflows float32 for a format whose max M is below 1 (an ExMy with a large
    // bias): an absmax scale, or the e4m3 rule's scale times its tensor scale, is inf, and
    // the block would decode to NaN (found by the block_spec fuzz target). One pass over
    // the scales; a block's values are read only when its scale is not finite (an OCP NaN
    // block holds a non-finite value).
    let bad = |(b, s): &(usize, &f32)| {
        !(**s * global).is_finite()
            && x[b * spec.block..n.min((b + 1) * spec.block)].iter().all(|v| v.is_finite())
    };
    if let Some((b, _)) = scales.iter().enumerate().find(bad) {
        return Err(Error::value(
            "x",
            format!(
                "block {b}: its scale amax / {:e} overflows float32; the format's range is too \
                 small for these values",
                spec.elem_max
            ),
        ));
    }
    Ok(global)
}

/// Work items: whole groups of blocks, about `CHUNK` elements each.
pub(crate) struct Groups {
    pub(crate) blocks: usize,
    pub(crate) elems: usize,
    pub(crate) bytes: usize,
}

impl Groups {
    pub(crate) fn new(spec: &Spec) -> Groups {
        let blocks = (CHUNK / spec.block).max(1);
        let elems = blocks * spec.block;
        Groups { blocks, elems, bytes: elems * spec.code_bits() as usize / 8 }
    }
}

/// max |x| of finite values, on bit patterns (|x| orders like its bits), so it vectorizes.
#[inline(always)]
fn amax(xs: &[f32]) -> f32 {
    f32::from_bits(xs.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff)))
}

/// Reused per-thread buffers (allocating ~100 KiB per group costs page faults).
#[derive(Default)]
struct Scratch {
    ys: Vec<f32>,
    codes: Vec<u8>,
    rand: Vec<u32>,
    sorted: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// One group of blocks: scales, normalized values `x / s`, element codes, packing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_group<const MODE: u8>(
    spec: &Spec,
    xs: &[f32],
    ps: &mut [u8],
    ss: &mut [f32],
    als: &mut [f32],
    global: f32,
    start: usize,
    seed: u64,
    stream: u64,
) -> Result<()> {
    quantize_group_rows::<MODE>(spec, xs, ps, ss, als, global, start, None, seed, stream)
}

/// [`quantize_group`] within rows: `rows = Some((real elements per row, blocks per row))`.
#[allow(clippy::too_many_arguments)]
fn quantize_group_rows<const MODE: u8>(
    spec: &Spec,
    xs: &[f32],
    ps: &mut [u8],
    ss: &mut [f32],
    als: &mut [f32],
    global: f32,
    start: usize,
    rows: Option<(usize, usize)>,
    seed: u64,
    stream: u64,
) -> Result<()> {
    SCRATCH.with(|cell| {
        let scratch = &mut *cell.borrow_mut();
        quantize_group_in::<MODE>(scratch, spec, xs, ps, ss, als, global, start, rows, seed, stream)
    })
}

crate::simd::avx2_or_baseline! {
/// [`quantize_group`] with the thread's scratch buffers.
#[allow(clippy::too_many_arguments)]
fn quantize_group_in<const MODE: u8>(
    scratch: &mut Scratch,
    spec: &Spec,
    xs: &[f32],
    ps: &mut [u8],
    ss: &mut [f32],
    als: &mut [f32],
    global: f32,
    start: usize,
    rows: Option<(usize, usize)>,
    seed: u64,
    stream: u64,
) -> Result<()> {
    let n = xs.len();
    // ExMy to nearest: the format's direct index (built once per process)
    let index = match (&spec.encoder, MODE == NEAREST) {
        (Some(enc), true) => crate::exmy::nearest_index(enc, true),
        _ => None,
    };
    let fixed = if MODE == STOCHASTIC { None } else { spec.table.as_ref() };
    if fixed.is_some() || index.is_some() {
        // a fixed table or an ExMy index, nearest: scale, divide and look up in one pass per
        // block, into the packed bytes directly for 8-bit codes (the same values as the
        // general path below, which also takes the inputs the index leaves undecided: NaN)
        let bits = spec.code_bits();
        let zero = match (fixed, &spec.encoder) {
            (Some(t), _) => t.nearest(0.0),
            (None, Some(enc)) => enc.encode_one::<f32, NEAREST>(0.0, 0).0 as u8,
            (None, None) => unreachable!("an index comes from an encoder"),
        };
        let codes: &mut [u8] = if bits == 8 {
            check("packed", ps.len(), n)?;
            ps
        } else {
            scratch.codes.resize(n, 0);
            &mut scratch.codes[..n]
        };
        let mut decided = true;
        for (b, (xb, cb)) in xs.chunks(spec.block).zip(codes.chunks_mut(spec.block)).enumerate() {
            let s = spec.block_scale(amax(xb), global);
            ss[b] = s;
            let sd = s * global;
            if sd <= 0.0 {
                cb.fill(zero);
            } else if let Some(t) = fixed {
                t.nearest_scaled(xb, sd, cb);
            } else if let Some(ent) = index {
                decided = table::index_lookup::<true>(ent, xb, sd, cb);
                if !decided {
                    break;
                }
            }
        }
        if decided {
            return if bits == 8 { Ok(()) } else { pack::pack(&scratch.codes[..n], bits, ps) };
        }
    }
    scratch.ys.clear();
    scratch.ys.resize(n, 0.0);
    scratch.codes.resize(n, 0);
    scratch.rand.resize(if MODE == STOCHASTIC { n } else { 0 }, 0);
    let (ys, codes) = (&mut scratch.ys[..], &mut scratch.codes[..]);
    for (b, (xb, yb)) in xs.chunks(spec.block).zip(ys.chunks_mut(spec.block)).enumerate() {
        let s = spec.block_scale(amax(xb), global);
        ss[b] = s;
        let sd = s * global; // the scale actually applied
        if sd > 0.0 {
            yb.iter_mut().zip(xb).for_each(|(y, &v)| *y = v / sd);
        }
    }
    if let Some(enc) = &spec.encoder {
        let random = Random::Philox { seed, stream, offset: start as u64 };
        crate::exmy::encode_chunk::<f32, u8, MODE>(enc, ys, codes, 0, random)?;
        return pack::pack(codes, spec.code_bits(), ps);
    }
    let rand = &mut scratch.rand[..];
    if MODE == STOCHASTIC {
        rng::fill_words(spec.rounding.resolution(), seed, stream, start as u64, rand);
    }
    for (b, (yb, cb)) in ys.chunks(spec.block).zip(codes.chunks_mut(spec.block)).enumerate() {
        let rb = if MODE == STOCHASTIC { &rand[b * spec.block..b * spec.block + yb.len()] } else { &[] };
        match &spec.table {
            Some(t) if MODE == STOCHASTIC => t.stochastic_slice(yb, rb, cb),
            Some(t) => t.nearest_slice(yb, cb),
            None => {
                // the base from the block's real elements (not its row's padding)
                let real = match rows {
                    Some((row, per_row)) => {
                        let at = (start / spec.block + b) % per_row * spec.block;
                        yb.len().min(row - at)
                    }
                    None => yb.len(),
                };
                let xb = &xs[b * spec.block..b * spec.block + real];
                let (levels, a) = spec.log_levels(xb, amax(xb), &mut scratch.sorted)?;
                als[b] = a;
                if MODE == STOCHASTIC {
                    table::stochastic_levels(levels, yb, rb, cb)?;
                } else {
                    Table::new(levels)?.nearest_slice(yb, cb);
                }
            }
        }
    }
    pack::pack(codes, spec.code_bits(), ps)
}
}

/// Decode a blockwise tensor: `out[i] = value(code_i) · scales[block] · global`.
pub fn dequantize(
    spec: &Spec,
    packed: &[u8],
    scales: &[f32],
    alphas: &[f32],
    global: f32,
    out: &mut [f32],
) -> Result<()> {
    let n = out.len();
    check("packed", packed.len(), spec.packed_len(n))?;
    check("scales", scales.len(), spec.num_blocks(n))?;
    check("alphas", alphas.len(), spec.num_alphas(n))?;
    let g = Groups::new(spec);
    let one = |gi: usize, os: &mut [f32], ps: &[u8], ss: &[f32]| {
        let al = if alphas.is_empty() {
            &alphas[..0]
        } else {
            &alphas[gi * g.blocks..(gi * g.blocks + ss.len())]
        };
        dequantize_group(spec, ps, ss, al, global, os)
    };
    if par::serial(n) {
        out.chunks_mut(g.elems)
            .zip(packed.chunks(g.bytes))
            .zip(scales.chunks(g.blocks))
            .enumerate()
            .try_for_each(|(gi, ((os, ps), ss))| one(gi, os, ps, ss))
    } else {
        par::install(|| {
            out.par_chunks_mut(g.elems)
                .zip(packed.par_chunks(g.bytes))
                .zip(scales.par_chunks(g.blocks))
                .enumerate()
                .try_for_each(|(gi, ((os, ps), ss))| one(gi, os, ps, ss))
        })
    }
}

/// Decode one group of blocks (`als`: the group's bases, or empty).
pub(crate) fn dequantize_group(
    spec: &Spec,
    ps: &[u8],
    ss: &[f32],
    als: &[f32],
    global: f32,
    os: &mut [f32],
) -> Result<()> {
    let bits = spec.code_bits();
    if bits == 8 {
        check("packed", ps.len(), os.len())?;
        return decode_blocks(spec, ps, ss, als, global, os);
    }
    // the thread's buffer of codes, sized to the group (not a zeroed CHUNK-byte array per
    // call: that 32 KiB memset, even for 8-bit codes, was 12% of a step over 2000 tensors
    // of 64 elements)
    UNPACKED.with(|cell| {
        let buf = &mut *cell.borrow_mut();
        buf.resize(buf.len().max(os.len()), 0);
        let codes = &mut buf[..os.len()];
        pack::unpack(ps, bits, os.len(), codes)?;
        decode_blocks(spec, codes, ss, als, global, os)
    })
}

thread_local! {
    static UNPACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decode the blocks of one group from its unpacked codes.
fn decode_blocks(
    spec: &Spec,
    codes: &[u8],
    ss: &[f32],
    als: &[f32],
    global: f32,
    os: &mut [f32],
) -> Result<()> {
    for (b, (ob, cb)) in os.chunks_mut(spec.block).zip(codes.chunks(spec.block)).enumerate() {
        let local;
        let lut = match &spec.lut {
            Some(lut) => lut,
            None => {
                let Elem::Log { bits, signed, zero, alpha, quantile } = spec.elem else {
                    unreachable!()
                };
                let a = if quantile > 0.0 { als[b] } else { alpha };
                local = simd::Lut::new(&logfmt::log_levels(bits, signed, a, zero)?);
                &local
            }
        };
        decode_scaled(lut, cb, ss[b] * global, ob)?;
    }
    Ok(())
}

/// `out[i] = levels[codes[i]] · s` (a code beyond the levels is an error), by `simd::Lut`.
fn decode_scaled(lut: &simd::Lut, codes: &[u8], s: f32, out: &mut [f32]) -> Result<()> {
    let len = lut.len();
    if (lut.apply(codes, Some(s), out) as usize) < len {
        return Ok(());
    }
    let c = codes.iter().copied().find(|&c| c as usize >= len).unwrap_or(0);
    Err(Error::value("packed", format!("code {c} is outside the codec's {len} levels")))
}

/// Whether table-codec rounding `mode` is stochastic: table codecs round to nearest or
/// stochastically (either resolution), and reject every other mode.
fn table_stochastic(mode: Rounding) -> Result<bool> {
    match mode {
        Rounding::Nearest => Ok(false),
        m if m.is_stochastic() => Ok(true),
        _ => Err(Error::value(
            "rounding",
            "table codecs support 'nearest', 'stochastic' and 'stochastic16'",
        )),
    }
}

/// Encode normalized values with a table codec (nearest or stochastic), in parallel.
pub fn table_encode(
    t: &Table,
    x: &[f32],
    out: &mut [u8],
    mode: Rounding,
    seed: u64,
    stream: u64,
    offset: u64,
) -> Result<()> {
    check("out", out.len(), x.len())?;
    if let Some(i) = x.iter().position(|v| v.is_nan()) {
        return Err(Error::value("x", format!("element {i} is NaN")));
    }
    let stochastic = table_stochastic(mode)?;
    par::try_zip_chunks(x, CHUNK, out, CHUNK, x.len(), |k, xs, os| {
        if stochastic {
            let mut r = vec![0u32; xs.len()];
            // the counter wraps mod 2^64, as the keyed encoders of exmy.rs do
            let at = offset.wrapping_add((k * CHUNK) as u64);
            rng::fill_words(mode.resolution(), seed, stream, at, &mut r);
            t.stochastic_slice(xs, &r, os);
        } else {
            t.nearest_slice(xs, os);
        }
        Ok(())
    })
}

fn check(arg: &str, got: usize, want: usize) -> Result<()> {
    crate::exmy::check_len(arg, got, want)
}

#[cfg(test)]
mod tests {
    use super::*;

    const E4M3: (i32, u32, f32) = (8, 3, 448.0); // emax = floor(log2 448), man bits, max
    const E2M1: (i32, u32, f32) = (2, 1, 6.0);

    fn k(rule: ScaleKind, f: (i32, u32, f32), amax: u32) -> i32 {
        e8m0_exponent(rule, amax, f.0, f.1, f.2)
    }

    // Each vector: (amax bits, expected unbiased exponent), derived by hand in the comment.
    #[test]
    fn floor_vectors() {
        let r = ScaleKind::E8m0;
        assert_eq!(k(r, E4M3, 0x3f80_0000), -8); // 1.0 = 2^0: 0 − 8
        assert_eq!(k(r, E4M3, 0x43e0_0000), 0); // 448 = 1.75·2^8: 8 − 8
        assert_eq!(k(r, E4M3, 0), -127); // zero block: smallest scale
        assert_eq!(k(r, E4M3, 0x7f7f_ffff), 119); // f32 max < 2^128: 127 − 8
        assert_eq!(k(r, E4M3, 1), -127); // 2^-149: −157, clamped
        assert_eq!(k(r, E4M3, 0x0400_0000), -127); // 2^-119: −127 exactly
        assert_eq!(k(r, E4M3, 0x0480_0000), -126); // 2^-118: −126
        assert_eq!(k(r, E2M1, 0x7f00_0000), 125); // 2^127, e2m1 emax 2: 125
    }

    #[test]
    fn ceil_vectors() {
        let r = ScaleKind::E8m0Ceil;
        assert_eq!(k(r, E4M3, 0x3f80_0000), -8); // 1.0 is a power of two: no bump
        assert_eq!(k(r, E4M3, 0x3f80_0001), -7); // 1 + 2^-23: ceil(log2) = 1, 1 − 8
        assert_eq!(k(r, E4M3, 0x43e0_0000), 1); // 448: ceil(log2 448) = 9, 9 − 8
        assert_eq!(k(r, E4M3, 0x4396_0000), 1); // 300: ceil = 9 (torchao CEIL gives 128)
        assert_eq!(k(r, E4M3, 0), -127); // zero block
        assert_eq!(k(r, E4M3, 3), -127); // 3·2^-149: ceil = −147, −155 clamped
        assert_eq!(k(r, E4M3, 0x7f7f_ffff), 120); // f32 max: ceil = 128, 128 − 8
        assert_eq!(k(r, E2M1, 0x7f7f_ffff), 126); // 128 − 2
    }

    #[test]
    fn even_vectors() {
        let r = ScaleKind::E8m0Even;
        // e4m3 adds 2^(22−3) = 0x8_0000 to the bits: F carries out iff F ≥ 0x78_0000
        // (mantissa ≥ 1.9375 = 1 + 15/16: rounds to 2.0 at 3 mantissa bits, half up)
        assert_eq!(k(r, E4M3, 0x3f80_0000), -8); // 1.0: no carry, 0 − 8
        assert_eq!(k(r, E4M3, 0x3ff8_0000), -7); // 1.9375: carry to 2^1, 1 − 8
        assert_eq!(k(r, E4M3, 0x3ff7_ffff), -8); // just below 1.9375: no carry
        assert_eq!(k(r, E4M3, 0x43e0_0000), 0); // 448 = 1.75·2^8: no carry
        assert_eq!(k(r, E4M3, 0x43f0_0000), 0); // 480 = 1.875·2^8: no carry
        assert_eq!(k(r, E4M3, 0x43f8_0000), 1); // 496 = 1.9375·2^8: carry, 9 − 8
                                                // e2m1 adds 2^21 = 0x20_0000: carry iff F ≥ 0x60_0000 (mantissa ≥ 1.75)
        assert_eq!(k(r, E2M1, 0x40e0_0000), 1); // 7 = 1.75·4: carry to 8, 3 − 2
        assert_eq!(k(r, E2M1, 0x40c0_0000), 0); // 6 = 1.5·4: 2 − 2
        assert_eq!(k(r, E2M1, 0x40df_ffff), 0); // just below 7: no carry
        assert_eq!(k(r, E4M3, 0), -127); // zero block
        assert_eq!(k(r, E4M3, 1), -127); // 2^-149 rounds to 0: as a zero block
        assert_eq!(k(r, E4M3, 0x007f_ffff), -127); // carries to 2^-126: −134, clamped
                                                   // f32 max carries into exponent field 255: 128 − 8 (torchao: a NaN scale)
        assert_eq!(k(r, E4M3, 0x7f7f_ffff), 120);
    }

    #[test]
    fn rceil_vectors() {
        let r = ScaleKind::E8m0Rceil;
        assert_eq!(k(r, E4M3, 0x43e0_0000), 0); // 448/448 = 1 = 2^0 exactly
        assert_eq!(k(r, E4M3, 0x43e0_0001), 1); // 448·(1 + 2^-23)/448 = 1 + 2^-23: up to 2^1
        assert_eq!(k(r, E4M3, 0x3f80_0000), -8); // 1/448 = 1.14·2^-9: up to 2^-8
        assert_eq!(k(r, E4M3, 0x4396_0000), 0); // 300/448 = 1.34·2^-1: up to 2^0
        assert_eq!(k(r, E4M3, 0), -127); // d = 0
                                         // 448·2^-127 = 1.75·2^-119: d = 2^-127 exactly (subnormal F = 2^22): no round-up
        assert_eq!(k(r, E4M3, 0x0460_0000), -127);
        // 2^-118/448 = 1.14·2^-127: subnormal F = fl(1.14·2^22) > 2^22: up to 2^-126
        assert_eq!(k(r, E4M3, 0x0480_0000), -126);
        // 2^-120/448 = 1.14·2^-129 < 2^-127: stays −127
        assert_eq!(k(r, E4M3, 0x0380_0000), -127);
        // f32 max/448 ≈ 2^128/(1.75·2^8) = 1.142…·2^119: up to 2^120
        assert_eq!(k(r, E4M3, 0x7f7f_ffff), 120);
        assert_eq!(k(r, E2M1, 0x40c0_0000), 0); // 6/6 = 1
        assert_eq!(k(r, E2M1, 0x40e0_0000), 1); // 7/6 = 1.17: up to 2^1
    }

    #[test]
    fn names_round_trip_and_table_codecs_take_only_e8m0() {
        for (n, kind) in ScaleKind::ALL {
            assert_eq!(ScaleKind::parse(n).unwrap(), kind);
            assert_eq!(kind.name(), n);
        }
        assert!(ScaleKind::parse("e8m0_floor").is_err());
        let lin = Elem::Linear { bits: 4, signed: true, zero: true };
        assert!(Spec::new(lin, 32, ScaleKind::E8m0, Rounding::Nearest).is_ok());
        for kind in [ScaleKind::E8m0Ceil, ScaleKind::E8m0Even, ScaleKind::E8m0Rceil] {
            assert_eq!(Spec::new(lin, 32, kind, Rounding::Nearest).unwrap_err().arg, "scale");
        }
    }

    fn run_rows(
        spec: &Spec,
        x: &[f32],
        row: usize,
        nf: NonFinite,
    ) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let n = x.len();
        let mut p = vec![0u8; spec.packed_len(n)];
        let mut s = vec![0f32; spec.num_blocks(n)];
        let mut a = vec![0f32; spec.num_alphas(n)];
        quantize_rows(spec, x, row, nf, &mut p, &mut s, &mut a, 3, 0).unwrap();
        (p, s, a)
    }

    #[test]
    fn padded_rows_quantize_as_each_row_alone() {
        // rows of 40 with block 16: 3 blocks a row, the third 8 real + 8 padding zeros; the
        // quantile log base of that block must come from its 8 real elements
        let log = Elem::Log { bits: 4, signed: false, zero: true, alpha: 0.5, quantile: 0.3 };
        let spec = Spec::new(log, 16, ScaleKind::Absmax, Rounding::Nearest).unwrap();
        let (row, padded) = (40, 48);
        let rows: Vec<Vec<f32>> = (0..3)
            .map(|r| (0..row).map(|i| ((i * 37 + r * 11) % 23) as f32 * 0.1 + 0.05).collect())
            .collect();
        let mut x = vec![];
        for (r, v) in rows.iter().enumerate() {
            x.extend_from_slice(v);
            if r < 2 {
                x.extend(std::iter::repeat_n(0.0, padded - row));
            }
        }
        let (_, s, a) = run_rows(&spec, &x, row, NonFinite::Error);
        for (r, v) in rows.iter().enumerate() {
            let (_, s1, a1) = run_rows(&spec, v, 0, NonFinite::Error);
            assert_eq!(s[3 * r..3 * r + 3], s1[..]);
            assert_eq!(a[3 * r..3 * r + 3], a1[..]);
        }
        // without the row length the padding would move the third base
        let (_, _, a0) = run_rows(&spec, &x, 0, NonFinite::Error);
        assert_ne!(a0[2], a[2]);
        // a length that is not such rows is an error
        let mut p = vec![0u8; spec.packed_len(50)];
        let mut sc = vec![0f32; spec.num_blocks(50)];
        let mut al = vec![0f32; spec.num_alphas(50)];
        let e =
            quantize_rows(&spec, &[0.0; 50], row, NonFinite::Error, &mut p, &mut sc, &mut al, 0, 0);
        assert_eq!(e.unwrap_err().arg, "x");
    }

    #[test]
    fn ocp_policy_gives_nan_blocks() {
        let f = crate::formats::parse("float4_e2m1fn").unwrap();
        for scale in [ScaleKind::E8m0, ScaleKind::Absmax, ScaleKind::E4m3] {
            let spec = Spec::new(Elem::ExMy(f), 16, scale, Rounding::Nearest).unwrap();
            let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 34.0) * 0.25).collect();
            let clean = run_rows(&spec, &x, 0, NonFinite::Ocp);
            x[20] = f32::NAN;
            x[63] = f32::NEG_INFINITY;
            let n = x.len();
            let mut p = vec![0u8; spec.packed_len(n)];
            let mut s = vec![0f32; spec.num_blocks(n)];
            let err = quantize(&spec, &x, &mut p, &mut s, &mut [], 0, 0).unwrap_err();
            assert!(err.msg.contains("element 20 is NaN"), "{}", err.msg);
            let (p, s, _) = run_rows(&spec, &x, 0, NonFinite::Ocp);
            assert!(s[1].is_nan() && s[3].is_nan());
            assert_eq!((s[0], s[2]), (clean.1[0], clean.1[2]));
            assert_eq!(p[..8], clean.0[..8]);
            assert_eq!(p[16..24], clean.0[16..24]);
            let g = global_scale(&spec, &x);
            let mut back = vec![0f32; n];
            dequantize(&spec, &p, &s, &[], g, &mut back).unwrap();
            assert!(back[16..32].iter().chain(&back[48..]).all(|v| v.is_nan()));
            assert!(back[..16].iter().chain(&back[32..48]).all(|v| v.is_finite()));
        }
    }

    /// `stochastic16` table encoding is the table's stochastic rounding given the words of
    /// `rng::random_word16` (over chunk boundaries, from an odd offset).
    #[test]
    fn table_encode_stochastic16_takes_word16() {
        let t = Table::new((0..16).map(|i| i as f32 / 7.5 - 1.0).collect()).unwrap();
        let n = CHUNK * 2 + 77;
        let x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.41).sin()).collect();
        let mut got = vec![0u8; n];
        table_encode(&t, &x, &mut got, Rounding::Stochastic16, 9, 4, 3).unwrap();
        let words: Vec<u32> = (0..n as u64).map(|i| rng::random_word16(9, 4, 3 + i)).collect();
        let mut want = vec![0u8; n];
        t.stochastic_slice(&x, &words, &mut want);
        assert_eq!(got, want);
    }

    #[test]
    fn small_and_large_calls_give_the_same_bits() {
        // a call of at most par::SERIAL_MAX elements runs on the calling thread: the same
        // groups as in the pool, so a prefix of a large call equals the small call
        let f = crate::formats::parse("float4_e2m1fn").unwrap();
        let spec =
            Spec::new(Elem::ExMy(f), 32, ScaleKind::E8m0Rceil, Rounding::Stochastic).unwrap();
        let n = par::SERIAL_MAX * 3;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1013) as f32 - 500.0) * 0.37).collect();
        let run = |x: &[f32]| {
            let m = x.len();
            let mut p = vec![0u8; spec.packed_len(m)];
            let mut s = vec![0f32; spec.num_blocks(m)];
            quantize(&spec, x, &mut p, &mut s, &mut [], 5, 1).unwrap();
            let mut back = vec![0f32; m];
            dequantize(&spec, &p, &s, &[], 1.0, &mut back).unwrap();
            (p, s, back)
        };
        let (pb, sb, bb) = run(&x);
        let m = par::SERIAL_MAX;
        let (ps, ss, bs) = run(&x[..m]);
        assert_eq!(ps[..], pb[..spec.packed_len(m)]);
        assert_eq!(ss[..], sb[..spec.num_blocks(m)]);
        assert_eq!(bs[..], bb[..m]);
    }
}
