//! Fused optimizer steps: decode states → update → encode states → write the weight, in
//! one pass over memory, block group by block group, in parallel.
//!
//! Design notes
//! - A state is either plain float32 or blockwise quantized (`block::Spec`): packed codes,
//!   per-block scales and, for the quantile log codec, per-block bases. The update works on
//!   one group of whole blocks at a time (about `CHUNK` elements), so a state is decoded into
//!   a per-thread buffer, updated, and re-encoded with fresh per-block scales while the group
//!   is in cache: no temporaries of the parameter's size.
//! - Scalars (learning rate, bias corrections) are computed once per step by the caller, so a
//!   GPU path given the same inputs computes the same arithmetic.
//! - The AdamW arithmetic follows torch.optim.AdamW (single-tensor path) operation by
//!   operation in float32: `p *= 1 − lr·wd`, `m += (1 − β1)(g − m)`,
//!   `v = β2·v + (1 − β2)·g·g`, `p −= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)`.
//! - Stochastic rounding of the states draws bits keyed by (seed, stream, element index); the
//!   caller makes the stream unique per (parameter, state, step).

use crate::block::{self, Groups, Spec};
use crate::error::{Error, Result};
use crate::exmy::{check_len, dispatch_mode, Rounding};
use crate::par::{self, CHUNK};
use rayon::prelude::*;

/// One optimizer state of a parameter.
pub enum State<'a> {
    /// Plain float32, one value per element.
    F32(&'a mut [f32]),
    /// Blockwise quantized: `spec` and its packed codes, scales and bases.
    Quantized { spec: &'a Spec, packed: &'a mut [u8], scales: &'a mut [f32], alphas: &'a mut [f32] },
}

/// One group's share of a state.
enum Part<'a> {
    F32(&'a mut [f32]),
    Quantized { spec: &'a Spec, packed: &'a mut [u8], scales: &'a mut [f32], alphas: &'a mut [f32] },
}

impl<'a> State<'a> {
    fn check(&self, n: usize, block: usize, arg: &str) -> Result<()> {
        match self {
            State::F32(s) => check_len(arg, s.len(), n),
            State::Quantized { spec, packed, scales, alphas } => {
                if spec.block() != block {
                    return Err(Error::value(
                        arg,
                        format!("block size {} differs from the step's {block}", spec.block()),
                    ));
                }
                check_len(arg, packed.len(), spec.packed_len(n))?;
                check_len(arg, scales.len(), spec.num_blocks(n))?;
                check_len(arg, alphas.len(), spec.num_alphas(n))
            }
        }
    }

    /// Split off the part of the next `len` elements (whole blocks, or all that is left);
    /// the state keeps the rest.
    fn take_front(&mut self, len: usize) -> Part<'a> {
        match self {
            State::F32(s) => Part::F32(front(s, len)),
            State::Quantized { spec, packed, scales, alphas } => Part::Quantized {
                spec,
                packed: front(packed, spec.packed_len(len)),
                scales: front(scales, spec.num_blocks(len)),
                alphas: front(alphas, spec.num_alphas(len)),
            },
        }
    }
}

/// The first `k` elements of `*s`, leaving the rest in `*s`.
fn front<'a, T>(s: &mut &'a mut [T], k: usize) -> &'a mut [T] {
    let (a, b) = std::mem::take(s).split_at_mut(k);
    *s = b;
    a
}

impl Part<'_> {
    /// Decode a packed part into `buf` (`len` values). A float32 part is updated in place:
    /// nothing to decode.
    fn load(&self, buf: &mut Vec<f32>, len: usize) -> Result<()> {
        match self {
            Part::F32(_) => Ok(()),
            Part::Quantized { spec, packed, scales, alphas } => {
                buf.resize(len, 0.0);
                block::dequantize_group(spec, packed, scales, alphas, 1.0, &mut buf[..len])
            }
        }
    }

    /// Re-encode a packed part from `buf[..len]` (nothing to do for a float32 part).
    fn store(
        &mut self,
        buf: &[f32],
        len: usize,
        start: usize,
        seed: u64,
        stream: u64,
    ) -> Result<()> {
        match self {
            Part::F32(_) => Ok(()),
            Part::Quantized { spec, packed, scales, alphas } => {
                dispatch_mode!(spec.rounding(), MODE => block::quantize_group::<MODE>(
                    spec, &buf[..len], packed, scales, alphas, 1.0, start, seed, stream
                ))
            }
        }
    }
}

/// Whether every value is finite (no NaN, no ±inf): a (parallel) scan of the exponent bits,
/// for float32 or 16-bit float gradients, run before a step so that packed states never see a NaN.
/// Whether every gradient of a list is finite: one call for a whole step's gradients,
/// tensors in parallel (and chunks of big ones) unless the total is small.
pub fn all_finite_many(gs: &[Grad]) -> bool {
    let total: usize = gs.iter().map(|g| g.len()).sum();
    if par::serial(total) {
        return gs.iter().all(|&g| all_finite(g));
    }
    par::install(|| gs.par_iter().all(|&g| all_finite(g)))
}

pub fn all_finite(g: Grad) -> bool {
    if par::serial(g.len()) {
        return match g {
            Grad::F32(x) => max_magnitude_bits(x) < 0x7f80_0000,
            Grad::Half(k, x) => {
                let m = k.exp_mask();
                x.iter().all(|&b| b & m != m)
            }
        };
    }
    par::install(|| match g {
        Grad::F32(x) => x.par_chunks(CHUNK).all(|c| max_magnitude_bits(c) < 0x7f80_0000),
        Grad::Half(k, x) => {
            let m = k.exp_mask();
            x.par_chunks(CHUNK).all(|c| c.iter().all(|&b| b & m != m))
        }
    })
}

crate::simd::avx2_or_baseline! {
/// The largest `bits & 0x7fff_ffff` of the values (≥ 0x7f80_0000 iff one is ±inf or NaN),
/// without early exit, so it vectorizes.
fn max_magnitude_bits(x: &[f32]) -> u32 {
    x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff))
}
}

/// The scalars of one AdamW step, computed once per step by the caller (in float64, then
/// rounded to float32, as torch does with Python scalars).
#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    /// `1 − lr·wd` (decoupled decay; 1 when not decoupled).
    pub decay: f32,
    /// Weight decay added to the gradient (L2, plain Adam; 0 when decoupled).
    pub l2: f32,
    /// `1 − β1`.
    pub w1: f32,
    /// β2 and `1 − β2`.
    pub beta2: f32,
    pub w2: f32,
    /// ε.
    pub eps: f32,
    /// `lr / (1 − β1^t)`.
    pub step_size: f32,
    /// `sqrt(1 − β2^t)`.
    pub bc2_sqrt: f32,
}

/// Per-thread buffers of a step: one per state, and float32 copies of a bfloat16
/// parameter and gradient.
#[derive(Default)]
struct Bufs {
    states: Vec<Vec<f32>>,
    param: Vec<f32>,
    grad: Vec<f32>,
}

thread_local! {
    static BUFS: std::cell::RefCell<Bufs> = std::cell::RefCell::new(Bufs::default());
}

/// Fused AdamW steps on many parameters (a param group) in one parallel pass; each item
/// carries its own scalars.
pub fn adamw_steps(items: Vec<Item<2, AdamW>>, block: usize, seed: u64) -> Result<()> {
    run_items(items, block, seed, |hp, p, g, [m, v]| adamw_update(hp, p, g, m, v))
}

/// Fused AMSGrad AdamW steps (`torch.optim.AdamW(amsgrad=True)`): states `[m, v, v_max]`,
/// `v_max ← max(v_max, v)` after the update of `v`, and the denominator reads `v_max`. A
/// quantized `v_max` is re-encoded like any state (with `v`'s codec, as the caller chooses).
pub fn adamw_amsgrad_steps(items: Vec<Item<3, AdamW>>, block: usize, seed: u64) -> Result<()> {
    run_items(items, block, seed, |hp, p, g, [m, v, vmax]| {
        adamw_amsgrad_update(hp, p, g, m, v, vmax)
    })
}

/// A 16-bit float type of parameters and gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Bf16,
    F16,
}

impl Half {
    /// The exact float32 value of a bit pattern.
    #[inline(always)]
    fn to_f32(self, b: u16) -> f32 {
        match self {
            Half::Bf16 => f32::from_bits((b as u32) << 16),
            Half::F16 => {
                // 1.5.10 → 1.8.23: rebias normals; subnormals are m·2^-24, exact in float32
                let (sign, e, m) = ((b as u32 & 0x8000) << 16, (b >> 10) & 0x1f, b as u32 & 0x3ff);
                let mag = match e {
                    0 => (m as f32 * f32::from_bits(0x3380_0000)).to_bits(),
                    31 => 0x7f80_0000 | (m << 13),
                    _ => ((e as u32 + 112) << 23) | (m << 13),
                };
                f32::from_bits(sign | mag)
            }
        }
    }

    /// The exponent-field mask: all ones means inf or NaN.
    fn exp_mask(self) -> u16 {
        match self {
            Half::Bf16 => 0x7f80,
            Half::F16 => 0x7c00,
        }
    }

    fn format_name(self) -> &'static str {
        match self {
            Half::Bf16 => "bfloat16",
            Half::F16 => "float16",
        }
    }
}

/// A parameter tensor: float32, or bfloat16/float16 bit patterns updated through float32 and
/// rounded back (`rounding`: nearest, stochastic or stochastic16, keyed by `stream`).
pub enum Param<'a> {
    F32(&'a mut [f32]),
    Half { kind: Half, bits: &'a mut [u16], rounding: Rounding, stream: u64 },
}

/// A gradient: float32, or 16-bit float bit patterns (widened exactly).
#[derive(Clone, Copy)]
pub enum Grad<'a> {
    F32(&'a [f32]),
    Half(Half, &'a [u16]),
}

impl Param<'_> {
    fn len(&self) -> usize {
        match self {
            Param::F32(p) => p.len(),
            Param::Half { bits, .. } => bits.len(),
        }
    }
}

impl Grad<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Grad::F32(g) => g.len(),
            Grad::Half(_, g) => g.len(),
        }
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One group's share of a parameter (or, while splitting, what is left of it).
enum ParamPart<'a> {
    F32(&'a mut [f32]),
    Half(&'a mut [u16]),
}

impl<'a> ParamPart<'a> {
    /// Split off the next `len` elements (see [`State::take_front`]).
    fn take_front(&mut self, len: usize) -> ParamPart<'a> {
        match self {
            ParamPart::F32(p) => ParamPart::F32(front(p, len)),
            ParamPart::Half(p) => ParamPart::Half(front(p, len)),
        }
    }
}

/// Round float32 values to 16-bit float bits (elements from `start`).
fn to_half(
    kind: Half,
    src: &[f32],
    dst: &mut [u16],
    rounding: Rounding,
    start: usize,
    seed: u64,
    stream: u64,
) -> Result<()> {
    use crate::exmy::{EncodeOptions, Encoder, Random};
    let fmt = crate::formats::parse(kind.format_name()).expect("named format");
    let enc = Encoder::new(fmt, EncodeOptions { rounding, ..Default::default() });
    let random = Random::Philox { seed, stream, offset: start as u64 };
    dispatch_mode!(rounding, MODE => crate::exmy::encode_chunk::<f32, u16, MODE>(&enc, src, dst, 0, random))
}

/// One tensor's share of a fused step: the parameter, its gradient, its states (each with
/// the argument name for errors and its stochastic-rounding stream) and its own scalars.
pub struct Item<'a, const K: usize, T> {
    pub param: Param<'a>,
    pub grad: Option<Grad<'a>>,
    pub states: [(State<'a>, &'static str, u64); K],
    pub ctx: T,
    /// Index of the tensor's element 0 in the keying of its random bits: 0 for a whole
    /// tensor; for a shard of a larger one (FSDP), its offset there, so that every element
    /// draws the same bits as in the whole tensor.
    pub offset: usize,
}

/// Drive a fused step over one tensor (see [`run_items`]).
fn run_groups<const K: usize>(
    param: Param,
    grad: Option<Grad>,
    states: [(State, &'static str, u64); K],
    block: usize,
    seed: u64,
    offset: usize,
    update: impl Fn(&mut [f32], &[f32], [&mut [f32]; K]) + Sync,
) -> Result<()> {
    let item = Item { param, grad, states, ctx: (), offset };
    run_items(vec![item], block, seed, |_, p, g, st| update(p, g, st))
}

/// Drive a fused step over many tensors in one parallel pass (on the calling thread when
/// they hold at most `par::SERIAL_MAX` elements together): for every group of whole blocks
/// of every tensor, decode the states into per-thread buffers, call
/// `update(ctx, param, grad, states)` on float32 views, and re-encode the states (and a
/// bfloat16 parameter). Without a gradient the update sees an empty slice.
pub fn run_items<const K: usize, T: Sync>(
    items: Vec<Item<K, T>>,
    block: usize,
    seed: u64,
    update: impl Fn(&T, &mut [f32], &[f32], [&mut [f32]; K]) + Sync,
) -> Result<()> {
    let g = groups(block);
    let mut work = Vec::new();
    let mut ctxs = Vec::with_capacity(items.len());
    let mut total = 0;
    for Item { param, grad, states, ctx, offset } in items {
        let n = param.len();
        total += n;
        if offset.checked_add(n).is_none() {
            return Err(Error::value(
                "offsets",
                format!("expected an element offset of at most {}, got {offset}", usize::MAX - n),
            ));
        }
        if let Some(grad) = grad {
            check_len("grad", grad.len(), n)?;
        }
        for (st, arg, _) in &states {
            st.check(n, block, arg)?;
        }
        let streams: [u64; K] = std::array::from_fn(|k| states[k].2);
        let mut states = states.map(|(st, _, _)| st);
        let (pkind, pround, pstream) = match &param {
            Param::Half { kind, rounding, stream, .. } => (*kind, *rounding, *stream),
            Param::F32(_) => (Half::Bf16, Rounding::Nearest, 0),
        };
        let mut param = match param {
            Param::F32(p) => ParamPart::F32(p),
            Param::Half { bits, .. } => ParamPart::Half(bits),
        };
        let t = ctxs.len();
        ctxs.push(ctx);
        // one work item per group, peeled off the front: no per-tensor vectors of parts
        // (their allocations were ~10% of a step over 2000 tensors of 64 elements)
        for start in (0..n).step_by(g.elems) {
            let len = g.elems.min(n - start);
            let ps: [Part; K] = std::array::from_fn(|k| states[k].take_front(len));
            let p = param.take_front(len);
            let gr = grad.map(|gr| match gr {
                Grad::F32(x) => Grad::F32(&x[start..start + len]),
                Grad::Half(k, x) => Grad::Half(k, &x[start..start + len]),
            });
            work.push((t, offset + start, p, gr, ps, streams, (pkind, pround, pstream)));
        }
    }
    // small calls (many small tensors) stay on this thread: see `par::SERIAL_MAX`
    par::try_for_each_mut(&mut work, total, |(t, start, p, gr, ps, streams, pmeta)| {
        let ((pkind, pround, pstream), ctx) = (*pmeta, &ctxs[*t]);
        BUFS.with(|cell| {
            let bufs = &mut *cell.borrow_mut();
            let start = *start;
            let len = match p {
                ParamPart::F32(p) => p.len(),
                ParamPart::Half(p) => p.len(),
            };
            bufs.states.resize(K, Vec::new());
            // float32 states are updated in place; packed ones through a buffer
            for (buf, part) in bufs.states.iter_mut().zip(ps.iter()) {
                part.load(buf, len)?;
            }
            let gview: &[f32] = match gr {
                Some(Grad::F32(gs)) => gs,
                Some(Grad::Half(k, gs)) => {
                    bufs.grad.clear();
                    bufs.grad.extend(gs.iter().map(|&b| k.to_f32(b)));
                    &bufs.grad
                }
                None => &[],
            };
            let mut it = bufs.states.iter_mut().zip(ps.iter_mut());
            let views: [&mut [f32]; K] =
                std::array::from_fn(|_| match it.next().expect("K states") {
                    (_, Part::F32(s)) => &mut s[..],
                    (buf, Part::Quantized { .. }) => &mut buf[..len],
                });
            match p {
                ParamPart::F32(p) => update(ctx, p, gview, views),
                ParamPart::Half(bits) => {
                    bufs.param.clear();
                    bufs.param.extend(bits.iter().map(|&b| pkind.to_f32(b)));
                    update(ctx, &mut bufs.param, gview, views);
                    to_half(pkind, &bufs.param, bits, pround, start, seed, pstream)?;
                }
            }
            for ((buf, part), &stream) in bufs.states.iter().zip(ps.iter_mut()).zip(streams.iter())
            {
                part.store(buf, len, start, seed, stream)?;
            }
            Ok(())
        })
    })
}

/// SGD hyperparameters (torch.optim.SGD semantics).
#[derive(Debug, Clone, Copy)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    /// `1 − dampening`.
    pub w: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    /// First step: the buffer starts as the gradient itself (torch's rule).
    pub first: bool,
}

/// Fused SGD steps with (possibly quantized) momentum buffers, many parameters (a param
/// group) in one parallel pass; each item carries its own scalars.
pub fn sgd_steps(items: Vec<Item<1, Sgd>>, block: usize, seed: u64) -> Result<()> {
    run_items(items, block, seed, |hp, p, g, [b]| {
        for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
            let d = g + hp.weight_decay * *p;
            *b = if hp.first { d } else { hp.momentum * *b + hp.w * d };
            let step = if hp.nesterov { d + hp.momentum * *b } else { *b };
            *p -= hp.lr * step;
        }
    })
}

/// Muon's momentum (Keller Jordan's reference): `buf ← buf + (1 − β)(g − buf)`, and the
/// direction written to `out` (in place of the gradient): `g + β(buf − g)` with Nesterov,
/// else `buf`. The parameter itself is updated afterwards, from the orthogonalized direction.
#[allow(clippy::too_many_arguments)]
pub fn muon_momentum(
    beta: f32,
    nesterov: bool,
    grad_out: &mut [f32],
    buf: State,
    block: usize,
    seed: u64,
    stream: u64,
    offset: usize,
) -> Result<()> {
    let states = [(buf, "momentum_buffer", stream)];
    run_groups(Param::F32(grad_out), None, states, block, seed, offset, |go, _, [b]| {
        for (g, b) in go.iter_mut().zip(b.iter_mut()) {
            *b += (1.0 - beta) * (*g - *b);
            *g = if nesterov { *g + beta * (*b - *g) } else { *b };
        }
    })
}

/// Groups of whole blocks, about `CHUNK` elements each (bytes are per state).
fn groups(block: usize) -> Groups {
    let blocks = (CHUNK / block.max(1)).max(1);
    Groups { blocks, elems: blocks * block.max(1), bytes: 0 }
}

crate::simd::avx2_or_baseline! {
/// The element-wise AdamW update on float32 buffers (vectorizes).
fn adamw_update(hp: &AdamW, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g + hp.l2 * *p;
        *p *= hp.decay;
        *m += hp.w1 * (g - *m);
        *v = hp.beta2 * *v + hp.w2 * g * g;
        let denom = v.sqrt() / hp.bc2_sqrt + hp.eps;
        *p -= hp.step_size * (*m / denom);
    }
}
}

crate::simd::avx2_or_baseline! {
/// AdamW's update with AMSGrad's running maximum of the second moment (vectorizes).
fn adamw_amsgrad_update(
    hp: &AdamW,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    vmax: &mut [f32],
) {
    let it = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()).zip(vmax.iter_mut());
    for ((((p, &g), m), v), vmax) in it {
        let g = g + hp.l2 * *p;
        *p *= hp.decay;
        *m += hp.w1 * (g - *m);
        *v = hp.beta2 * *v + hp.w2 * g * g;
        // torch.maximum; gradients are finite here (the caller skips non-finite steps)
        *vmax = if *v > *vmax { *v } else { *vmax };
        let denom = vmax.sqrt() / hp.bc2_sqrt + hp.eps;
        *p -= hp.step_size * (*m / denom);
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small tensors stepped alone (on the calling thread) and next to a big one (in the
    /// pool): the same bits, state bytes and all.
    #[test]
    fn small_calls_match_pooled_calls() {
        use crate::block::{Elem, ScaleKind};
        use crate::exmy::Rounding;
        let spec = Spec::new(
            Elem::Dynamic { bits: 8, signed: true },
            64,
            ScaleKind::Absmax,
            Rounding::Stochastic,
        )
        .unwrap();
        let sizes = [64, 100, 1000, 4096];
        let big = par::SERIAL_MAX + 1000;
        let hp = AdamW {
            decay: 0.99,
            l2: 0.0,
            w1: 0.1,
            beta2: 0.999,
            w2: 0.001,
            eps: 1e-8,
            step_size: 0.01,
            bc2_sqrt: 0.03,
        };
        let value = |i: usize| ((i as f32 * 0.618).fract() - 0.5) * 2.0;
        let run = |with_big: bool| {
            let mut ns = sizes.to_vec();
            if with_big {
                ns.push(big);
            }
            assert_eq!(par::serial(ns.iter().sum()), !with_big);
            let mut ps: Vec<Vec<f32>> = ns.iter().map(|&n| (0..n).map(value).collect()).collect();
            let gs: Vec<Vec<f32>> = ns.iter().map(|&n| (7..n + 7).map(value).collect()).collect();
            let mut ms: Vec<Vec<u8>> = ns.iter().map(|&n| vec![0u8; spec.packed_len(n)]).collect();
            let mut ss: Vec<Vec<f32>> = ns.iter().map(|&n| vec![0.0; spec.num_blocks(n)]).collect();
            let mut vs: Vec<Vec<f32>> = ns.iter().map(|&n| vec![0.0; n]).collect();
            for _ in 0..2 {
                let mut items = Vec::new();
                for (i, (((p, g), (m, s)), v)) in ps
                    .iter_mut()
                    .zip(&gs)
                    .zip(ms.iter_mut().zip(ss.iter_mut()))
                    .zip(vs.iter_mut())
                    .enumerate()
                {
                    let m = State::Quantized { spec: &spec, packed: m, scales: s, alphas: &mut [] };
                    let states = [(m, "exp_avg", 2 * i as u64), (State::F32(v), "exp_avg_sq", 0)];
                    let (param, grad) = (Param::F32(p), Some(Grad::F32(g)));
                    items.push(Item { param, grad, states, ctx: hp, offset: 0 });
                }
                adamw_steps(items, 64, 5).unwrap();
            }
            let k = sizes.len();
            (ps[..k].to_vec(), ms[..k].to_vec(), ss[..k].to_vec(), vs[..k].to_vec())
        };
        let (a, b) = (run(false), run(true));
        let bits = |x: &Vec<Vec<f32>>| -> Vec<Vec<u32>> {
            x.iter().map(|v| v.iter().map(|f| f.to_bits()).collect()).collect()
        };
        assert_eq!(bits(&a.0), bits(&b.0));
        assert_eq!(a.1, b.1);
        assert_eq!(bits(&a.2), bits(&b.2));
        assert_eq!(bits(&a.3), bits(&b.3));
    }

    /// Every float16 bit pattern widens to the value the format table gives it.
    #[test]
    fn float16_widening_is_exact() {
        let f16 = crate::formats::parse("float16").unwrap();
        for b in 0..=u16::MAX {
            let (got, want) = (Half::F16.to_f32(b), f16.decode_f64(b as u32));
            assert!(got as f64 == want || (got.is_nan() && want.is_nan()), "{b:#06x}");
            if !want.is_nan() {
                assert_eq!(got.is_sign_negative(), want.is_sign_negative(), "{b:#06x}");
            }
        }
    }
}
