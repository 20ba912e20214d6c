//! Fuzz targets: the bodies of the `cargo fuzz` targets in `fuzz/`, kept here so that the
//! same code runs under stable `cargo test` over a small seeded random corpus (CI runs that;
//! `scripts/fuzz.sh` runs the cargo-fuzz targets for as long as it is given).
//!
//! Each target takes arbitrary bytes, builds inputs from them and calls the core's entry
//! points. The contract checked: the core never panics on any input (it returns an
//! [`Error`](crate::Error) instead), and what it accepts is consistent (a parsed format's
//! name parses back to it; unpacking then packing gives the same codes; a quantized tensor
//! dequantizes, finite values to finite values).
//!
//! Design: a fuzz input is read by a [`Bytes`] cursor that yields zeros once exhausted, so
//! every input is valid and short inputs mean small cases. Rejected: `arbitrary`-derived
//! structs (a dependency of the main crate for test code only).

use crate::block::{self, Elem, NonFinite, ScaleKind, Spec};
use crate::exmy::Rounding;
use crate::format::{Format, NanKind};
use crate::optim::{self, Grad, Item, Param, State};
use crate::{formats, pack};

/// A cursor over fuzz bytes; reads past the end give zeros.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }
    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }
    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    /// The next bool.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// An f32: often a plain value in [-4, 4), sometimes any bit pattern (NaN, inf, tiny).
    pub fn f32(&mut self) -> f32 {
        let tag = self.u8();
        if tag < 200 {
            (self.u16() as f32 / 8192.0) - 4.0
        } else {
            f32::from_bits(self.u32())
        }
    }
    /// A length: mostly small, sometimes anything up to `usize::MAX`.
    pub fn len(&mut self, small: usize) -> usize {
        match self.u8() {
            0..=239 => self.u16() as usize % small.saturating_add(1),
            240..=247 => self.u32() as usize,
            _ => self.u64() as usize,
        }
    }
    /// The bytes not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.data.get(self.pos..).unwrap_or(&[]);
        self.pos = self.data.len();
        r
    }
    /// `n` bytes (zeros past the end).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// A rounding mode from a byte.
fn rounding(b: u8) -> Rounding {
    [
        Rounding::Nearest,
        Rounding::NearestAway,
        Rounding::TowardZero,
        Rounding::Up,
        Rounding::Down,
        Rounding::Stochastic,
        Rounding::Stochastic16,
    ][b as usize % 7]
}

/// A scale rule from a byte.
fn scale_kind(b: u8) -> ScaleKind {
    [
        ScaleKind::Absmax,
        ScaleKind::E8m0,
        ScaleKind::E8m0Ceil,
        ScaleKind::E8m0Even,
        ScaleKind::E8m0Rceil,
        ScaleKind::E4m3,
    ][b as usize % 6]
}

/// A format from its primary parameters read off the bytes (possibly invalid).
fn format_of(b: &mut Bytes) -> crate::Result<Format> {
    let nan = [NanKind::Ieee, NanKind::Max, NanKind::NegZero, NanKind::None][b.u8() as usize % 4];
    let (e, m) = (b.u8() as u32 % 12, b.u8() as u32 % 28);
    let bias = b.u16() as i16 as i32;
    Format::new(e, m, bias, b.bool(), b.bool(), nan, b.bool())
}

/// An element codec read off the bytes (parameters possibly out of range).
fn elem_of(b: &mut Bytes) -> crate::Result<Elem> {
    Ok(match b.u8() % 5 {
        0 => Elem::ExMy(format_of(b)?),
        1 => Elem::ExMy(formats::parse(
            ["e4m3", "e5m2", "e2m1", "e3m2", "e2m3", "float8_e4m3fnuz", "float8_e8m0fnu"]
                [b.u8() as usize % 7],
        )?),
        2 => Elem::Linear { bits: b.u8() as u32 % 10, signed: b.bool(), zero: b.bool() },
        3 => Elem::Dynamic { bits: b.u8() as u32 % 10, signed: b.bool() },
        _ => Elem::Log {
            bits: b.u8() as u32 % 10,
            signed: b.bool(),
            zero: b.bool(),
            alpha: b.f32(),
            quantile: b.f32(),
        },
    })
}

/// A block spec read off the bytes: usually a valid block size, sometimes any.
fn spec_of(b: &mut Bytes) -> crate::Result<Spec> {
    let elem = elem_of(b)?;
    let block = if b.u8() < 230 { 16 + 8 * (b.u8() as usize % 32) } else { b.len(1 << 20) };
    Spec::new(elem, block, scale_kind(b.u8()), rounding(b.u8()))
}

// ---------------------------------------------------------------- targets

/// Target `format_spec`: the format-spec parser on any string, and `Format::new` on any
/// primary parameters. A parsed format's canonical name parses back to the same format.
pub fn format_spec(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(f) = formats::parse(s) {
            check_format(&f);
        }
    }
    let mut b = Bytes::new(data);
    if let Ok(f) = format_of(&mut b) {
        check_format(&f);
    }
}

fn check_format(f: &Format) {
    let name = formats::name(f);
    let back = formats::parse(&name).unwrap_or_else(|e| panic!("{name:?} does not parse: {e}"));
    assert_eq!(&back, f, "parse(name(f)) != f for {name:?}");
    let _ = (f.max(), f.min_normal(), f.min_subnormal(), f.eps(), f.emin(), f.emax());
    for c in [0, 1, f.max_code_mag(), f.sign_mask(), (f.num_codes() - 1) as u32] {
        let _ = f.decode_f64(c);
    }
}

/// Target `packed_decode`: unpack (and pack) with any bit width, any declared count and any
/// byte stream; and a blockwise dequantize of any packed bytes, scales and bases under any
/// spec, with lengths from the input. Accepted streams round-trip.
pub fn packed_decode(data: &[u8]) {
    let mut b = Bytes::new(data);
    let bits = b.u8() as u32 % 10;
    let count = b.len(4096);
    let _ = pack::packed_len(count, bits); // never overflows, for any count
    let n_out = count.min(1 << 16);
    let stream_len = b.len(4096).min(1 << 16);
    let packed = b.take(stream_len);
    let mut out = vec![0u8; n_out];
    if pack::unpack(&packed, bits, count, &mut out).is_ok() {
        let mut again = vec![0u8; packed.len()];
        pack::pack(&out, bits, &mut again).expect("unpacked codes pack");
        let mut back = vec![0u8; out.len()];
        pack::unpack(&again, bits, count, &mut back).expect("packed codes unpack");
        assert_eq!(back, out, "unpack(pack(codes)) != codes ({bits} bits)");
    }
    let k = b.len(300).min(1 << 12);
    let mut codes = b.take(k);
    let mut packed2 = vec![0u8; pack::packed_len(codes.len(), bits)];
    if pack::pack(&codes, bits, &mut packed2).is_ok() {
        let mut back = vec![0u8; codes.len()];
        pack::unpack(&packed2, bits, codes.len(), &mut back).expect("packed codes unpack");
        assert_eq!(back, codes);
    }
    // blockwise dequantize of arbitrary parts
    let Ok(spec) = spec_of(&mut b) else { return };
    let n = b.len(1200).min(1 << 16);
    let exact = b.bool();
    let plen = if exact { spec.packed_len(n) } else { b.len(2000).min(1 << 16) };
    let nb = if exact { spec.num_blocks(n) } else { b.len(100).min(1 << 12) };
    let na = if exact { spec.num_alphas(n) } else { b.len(100).min(1 << 12) };
    codes.resize(plen, 0);
    for c in codes.iter_mut() {
        *c = b.u8();
    }
    let scales: Vec<f32> = (0..nb).map(|_| b.f32()).collect();
    let alphas: Vec<f32> = (0..na).map(|_| b.f32()).collect();
    let global = b.f32();
    let mut vals = vec![0f32; n];
    let _ = block::dequantize(&spec, &codes, &scales, &alphas, global, &mut vals);
}

/// Target `block_spec`: build a blockwise spec from any codec parameters, block size, scale
/// rule and rounding; when it is valid, quantize values read off the input (any floats,
/// rows, either non-finite policy) and dequantize the result.
pub fn block_spec(data: &[u8]) {
    let mut b = Bytes::new(data);
    let Ok(spec) = spec_of(&mut b) else { return };
    let huge = b.len(usize::MAX >> 1);
    let _ = (spec.packed_len(huge), spec.num_blocks(huge), spec.num_alphas(huge));
    let n = b.len(700).min(1 << 14);
    let x: Vec<f32> = (0..n).map(|_| b.f32()).collect();
    let row = if b.bool() { b.len(n) } else { 0 };
    let nonfinite = if b.bool() { NonFinite::Ocp } else { NonFinite::Error };
    let mut packed = vec![0u8; spec.packed_len(n)];
    let mut scales = vec![0f32; spec.num_blocks(n)];
    let mut alphas = vec![0f32; spec.num_alphas(n)];
    let (seed, stream) = (b.u64(), b.u64());
    let r = block::quantize_rows(
        &spec,
        &x,
        row,
        nonfinite,
        &mut packed,
        &mut scales,
        &mut alphas,
        seed,
        stream,
    );
    if let Ok(g) = r {
        let mut out = vec![0f32; n];
        block::dequantize(&spec, &packed, &scales, &alphas, g, &mut out)
            .unwrap_or_else(|e| panic!("a quantized tensor does not dequantize: {e}"));
        // finite input: finite output. Not near float32's top: a ceil-type E8M0 rule
        // (ceil, even, rceil) with a directed rounding may round a block's largest value
        // up past amax, to 2^128 (inf in float32), as the rule defines it.
        if x.iter().all(|v| v.is_finite() && v.abs() <= 2f32.powi(120)) && g.is_finite() {
            for (i, (v, s)) in out.iter().zip(x.iter()).enumerate() {
                assert!(v.is_finite(), "element {i}: {s} dequantizes to {v}");
            }
        }
    }
}

/// One state of the optimizer-step target: float32, or quantized parts read off the input
/// (right lengths or not).
enum Owned {
    F32(Vec<f32>),
    Q(Vec<u8>, Vec<f32>, Vec<f32>),
}

fn state_of(b: &mut Bytes, spec: &Spec, n: usize) -> Owned {
    if b.u8() < 64 {
        return Owned::F32((0..n).map(|_| b.f32()).collect());
    }
    let exact = b.u8() < 220;
    let plen = if exact { spec.packed_len(n) } else { b.len(600) };
    let nb = if exact { spec.num_blocks(n) } else { b.len(40) };
    let na = if exact { spec.num_alphas(n) } else { b.len(40) };
    let codes = b.take(plen.min(1 << 12));
    let scales = (0..nb.min(1 << 10)).map(|_| b.f32()).collect();
    let alphas = (0..na.min(1 << 10)).map(|_| b.f32()).collect();
    Owned::Q(codes, scales, alphas)
}

fn view<'a>(o: &'a mut Owned, spec: &'a Spec) -> State<'a> {
    match o {
        Owned::F32(v) => State::F32(v),
        Owned::Q(c, s, a) => State::Quantized { spec, packed: c, scales: s, alphas: a },
    }
}

/// Target `optim_step`: a fused AdamW (or AMSGrad, or SGD) step over a parameter, gradient
/// and states read off the input (any bytes as codes, scales and bases, any lengths, any
/// scalars, 16-bit parameters). Never a panic.
pub fn optim_step(data: &[u8]) {
    let mut b = Bytes::new(data);
    let Ok(spec) = spec_of(&mut b) else { return };
    let n = b.len(600).min(1 << 13);
    let block = if b.u8() < 240 { spec.block() } else { b.len(8192) };
    let half = b.u8() % 3;
    let mut p32: Vec<f32> = (0..n).map(|_| b.f32()).collect();
    let mut p16: Vec<u16> = (0..n).map(|_| b.u16()).collect();
    let glen = if b.u8() < 240 { n } else { b.len(n + 8).min(1 << 13) };
    let g: Vec<f32> = (0..glen).map(|_| b.f32()).collect();
    let kind = b.u8() % 3;
    let mut states: Vec<Owned> = (0..3).map(|_| state_of(&mut b, &spec, n)).collect();
    let (seed, offset) = (b.u64(), if b.u8() < 240 { 0 } else { b.len(usize::MAX) });
    let hp = optim::AdamW {
        decay: b.f32(),
        l2: b.f32(),
        w1: b.f32(),
        beta2: b.f32(),
        w2: b.f32(),
        eps: b.f32(),
        step_size: b.f32(),
        bc2_sqrt: b.f32(),
    };
    let sgd = optim::Sgd {
        lr: hp.step_size,
        momentum: hp.beta2,
        w: hp.w1,
        weight_decay: hp.l2,
        nesterov: b.bool(),
        first: b.bool(),
    };
    let streams = [b.u64(), b.u64(), b.u64()];
    let param = match half {
        0 => Param::F32(&mut p32),
        k => Param::Half {
            kind: if k == 1 { optim::Half::Bf16 } else { optim::Half::F16 },
            bits: &mut p16,
            rounding: [Rounding::Nearest, Rounding::Stochastic, Rounding::Stochastic16]
                [b.u8() as usize % 3],
            stream: b.u64(),
        },
    };
    let grad = Some(Grad::F32(&g));
    let [s0, s1, s2] = &mut states[..] else { unreachable!() };
    let _ = match kind {
        0 => {
            let st = [
                (view(s0, &spec), "exp_avg", streams[0]),
                (view(s1, &spec), "exp_avg_sq", streams[1]),
            ];
            optim::adamw_steps(vec![Item { param, grad, states: st, ctx: hp, offset }], block, seed)
        }
        1 => {
            let st = [
                (view(s0, &spec), "exp_avg", streams[0]),
                (view(s1, &spec), "exp_avg_sq", streams[1]),
                (view(s2, &spec), "max_exp_avg_sq", streams[2]),
            ];
            let item = Item { param, grad, states: st, ctx: hp, offset };
            optim::adamw_amsgrad_steps(vec![item], block, seed)
        }
        _ => {
            let st = [(view(s0, &spec), "momentum_buffer", streams[0])];
            optim::sgd_steps(vec![Item { param, grad, states: st, ctx: sgd, offset }], block, seed)
        }
    };
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/*.rs` and the seeded test call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("format_spec", format_spec),
    ("packed_decode", packed_decode),
    ("block_spec", block_spec),
    ("optim_step", optim_step),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded corpus: inputs of random bytes (lengths 0..2048, split so short inputs are
    /// common) from a fixed 64-bit LCG, plus a few hand-made edge cases. Each target must
    /// return (not panic) on all of them. `LOWFP_FUZZ_CASES` sets the number of random
    /// inputs per target (default 400).
    fn corpus() -> Vec<Vec<u8>> {
        let cases: usize =
            std::env::var("LOWFP_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut out: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff; 64],
            b"e4m3".to_vec(),
            b"float8_e4m3fn".to_vec(),
            b"e8m23".to_vec(),
            b"e5m2b11".to_vec(),
            b"e9m99999999999999999999".to_vec(),
            b"e3m3fnuz".to_vec(),
            b"e33m2".to_vec(), // found by cargo fuzz: a shift overflow in default_bias
            b"e8m00fnu".to_vec(), // found by cargo fuzz: its name was the alias e8m0fnu
        ];
        for i in 0..cases {
            let len = if i % 4 == 0 { next() as usize % 2048 } else { next() as usize % 96 };
            out.push((0..len).map(|_| next() as u8).collect());
        }
        out
    }

    /// Every input the fuzzers found a crash with (`fuzz/regressions/<target>-<what>`)
    /// runs through its target without a panic.
    #[test]
    fn the_crashes_found_stay_fixed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/regressions") {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            let (_, target) = TARGETS
                .iter()
                .find(|(name, _)| file.starts_with(&format!("{name}-")))
                .unwrap_or_else(|| panic!("{file}: names no target"));
            let input = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| target(&input));
            assert!(r.is_ok(), "{file} panics again");
            seen += 1;
        }
        assert!(seen >= 3);
    }

    #[test]
    fn targets_never_panic_on_the_seeded_corpus() {
        let corpus = corpus();
        for (name, target) in TARGETS {
            for (i, input) in corpus.iter().enumerate() {
                let r = std::panic::catch_unwind(|| target(input));
                let head = &input[..input.len().min(48)];
                assert!(
                    r.is_ok(),
                    "target {name} panicked on corpus input {i} ({} bytes, \
                                    starting {head:02x?})",
                    input.len()
                );
            }
        }
    }
}
