//! A codec over a sorted table of levels: code = index into strictly ascending finite `f32`
//! levels (2..=256 of them). Used by the linear, dynamic and logarithmic codes.
//!
//! Definitions (the accelerated paths must agree with these exactly):
//! - Midpoints `m_k = (levels[k] as f64 + levels[k+1] as f64) / 2.0`.
//! - `nearest(x)`: the level whose cell `(m_{k-1}, m_k)` holds `x`; with `c = #{k : m_k < x}`,
//!   that is index `c`, except when `x == m_c` exactly (a tie), which goes to the even index
//!   of `c, c+1`. Below the table → 0, above → last, NaN → 0.
//! - `stochastic(x, r)`: an exact level never moves; otherwise with `lo < x < hi` adjacent
//!   levels, round up iff `r < trunc((x - lo) / (hi - lo) * 2^32)` (f64 arithmetic), so
//!   P(up) is the fraction at 2^-32 resolution. Outside the table: clamp. NaN → 0.
//!
//! Design:
//! - Everything works on the order-preserving key of the f32 bit pattern
//!   (`key = bits ^ 0x8000_0000` for +, `!bits` for −, so integer order = numeric order, with
//!   −0 one below +0). As `x` steps through the f32s in key order, `nearest(x)` never falls
//!   and rises by at most one per step (an f32 level lies strictly between two midpoints), so
//!   it is fully described by `n - 1` *transition keys*: `τ_k` = the smallest key whose code
//!   is `> k`, i.e. the first f32 `> m_k`, or the first `>= m_k` when `k` is odd (an exact tie
//!   goes to the even index `k + 1`). Then `nearest(x) = #{k : τ_k <= key(x)}` for every
//!   non-NaN `x`, clamping included; ties and the ±0 pair are folded into the keys, so no
//!   lookup needs f64 or tie logic. `new` computes the `τ_k` (a few exact f64 ops each).
//! - Direct index: 2^16 buckets, one per value of the top 16 bits of the bit pattern (not the
//!   key: no key transform in the hot path), covering all of f32, NaN and ±inf included, so
//!   no range checks. Entry `[t_lo, t_hi, c0, c1]`: the code is `c0` where the pattern's low 16
//!   bits are `<= t`, else `c1` (`c1 = c0 + 1` on the positive side, `c0 - 1` on the negative
//!   side, where the low bits run against the value order; `c0 = c1` without a transition;
//!   the +inf bucket gives the last code at low bits 0 and 0 to the NaNs after it). So the
//!   lookup is one load, one 16-bit compare and one dependent byte load, ~3 cycles/element.
//!   A bucket with 2+ transitions cannot be described so: it is marked in a bitmap and a
//!   binary search over the `τ_k` settles it. None of the dynamic, linear or log maps has
//!   one (tested); tables that do ("crowded") take a separate, checked path. 256 KiB, built
//!   by one sweep over the `τ_k` with run fills (~20 µs).
//! - Large tables (> `SMALL_MAX` levels, e.g. the 256-level dynamic map) build the index in
//!   `new`. Small ones (e.g. the per-block log tables of 4–16 levels, built for every block)
//!   keep the keys inline in an aligned padded array (no allocation besides the levels) and
//!   count `τ_k <= key` with SSE2 compares and a movemask (scalar elsewhere), ~9 cycles; they
//!   build the index lazily once clearly reused: a sampled (1 key in 64), racy relaxed counter
//!   reaches `LAZY_SAMPLES`, i.e. after roughly 32k lookups. A per-block table never pays for
//!   the index, a table shared by a whole tensor (linear 4-bit) gets it.
//! - Hot-path dispatch: `fast`, a pointer to the entries mirroring the `OnceLock` (one load
//!   and test instead of the `OnceLock` state check plus pointer loads, worth ~15%).
//! - `stochastic` reuses `nearest`: the nearest level `c` is the level just below or just
//!   above `x`, so `lo = c - (x < levels[c])` (an exact level gives a zero fraction, so it
//!   never moves); clamped inputs are handled branch-free (they can be half the inputs, e.g.
//!   negative values on an unsigned map). The f64 division stays (a reciprocal would change
//!   bits).
//! - Rejected: the previous f64-midpoint buckets with two compares (4x slower: f64
//!   conversions and range/NaN/tie logic per element); binary search (dependent,
//!   mispredicted compares); an index in key order (the key transform costs ~30%); an f32
//!   threshold per bucket (`base + (x > thr)`: the float compare made it ~25% slower than the
//!   integer one).

use crate::error::{Error, Result};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::OnceLock;

/// Tables with at most this many levels count inline keys; larger ones build the index in
/// `new`.
const SMALL_MAX: usize = 32;
/// Small tables build the index after this many sampled lookups (1 in 64 keys is sampled).
const LAZY_SAMPLES: u32 = 512;
/// Number of buckets of the direct index (top 16 bits of the bit pattern).
const BUCKETS: usize = 1 << 16;

/// Order-preserving map of an f32 bit pattern to u32 (NaNs land beyond ±inf).
#[inline(always)]
fn key(x: f32) -> u32 {
    // Branch-free: flip every bit of a negative pattern, only the sign bit of a positive one.
    let b = x.to_bits();
    b ^ (((b as i32) >> 31) as u32 | 0x8000_0000)
}

/// The smallest f32 above `f` (finite `f`; `-0.0` just above the smallest negative).
fn next_up(f: f32) -> f32 {
    if f == 0.0 {
        f32::from_bits(1)
    } else if f > 0.0 {
        f32::from_bits(f.to_bits() + 1)
    } else {
        f32::from_bits(f.to_bits() - 1)
    }
}

/// Key of the smallest f32 (in key order) equal to `f`: −0 for a zero.
fn first_key(f: f32) -> u32 {
    key(if f == 0.0 { -0.0 } else { f })
}

/// Transition key `τ_k` of midpoint `k`: the smallest key whose nearest code exceeds `k`.
fn transition(a: f32, b: f32, k: usize) -> u32 {
    let m = (a as f64 + b as f64) / 2.0;
    let f = m as f32;
    let fd = f as f64;
    if fd > m || (fd == m && k & 1 == 1) {
        // f is the first f32 above m, or m itself where a tie goes up (k odd → k + 1 even)
        first_key(f)
    } else {
        // f < m, or f == m with a tie staying at k: the next f32 up
        first_key(next_up(f))
    }
}

/// The direct index over the top 16 bits of the f32 bit pattern (see the module docs).
#[derive(Clone)]
struct Index {
    /// Per bucket: `[t_lo, t_hi, c0, c1]`: the code is `c0` where the low 16 bits of the
    /// pattern are `<= t` (little-endian u16), else `c1`.
    ent: Box<Entries>,
    /// Bitmap of the buckets holding 2+ transitions (cold path); empty when there are none.
    slow: Box<[u64]>,
    /// The transition keys, ascending.
    taus: Box<[u32]>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("taus", &self.taus).finish_non_exhaustive()
    }
}

/// The entries of the direct index, by the top 16 bits of the bit pattern.
pub(crate) type Entries = [[u8; 4]; BUCKETS];

/// The code of the value with bit pattern `b`, from entries without cold buckets.
#[inline(always)]
fn lookup(ent: &Entries, b: u32) -> u8 {
    let e = &ent[(b >> 16) as usize];
    e[2 + (b as u16 > u16::from_le_bytes([e[0], e[1]])) as usize]
}

/// An index entry.
fn entry(t: u16, c0: usize, c1: usize) -> [u8; 4] {
    let t = t.to_le_bytes();
    [t[0], t[1], c0 as u8, c1 as u8]
}

/// A direct-index entry that decides nothing: the caller's own code function must handle the
/// bucket's inputs. No real entry looks like it: `c0 = 0xff` below `c1 = 0` at `t = 0` would
/// be a code function going from 0xff to 0 as the magnitude grows within a bucket.
const UNDECIDED: [u8; 4] = [0, 0, 0xff, 0];

/// A direct index (the same entries as a table's) for any code function `f` of the f32 bit
/// pattern that, on the finite values of each sign, is monotone in the magnitude (round to
/// nearest into a floating-point format is). `f` gives `None` where it does not decide (an
/// error, say): such buckets, and the inf/NaN ones, are marked undecided. Per bucket: `f` at
/// both ends; equal codes fill the bucket (monotone); else a binary search finds the first
/// pattern with another code, which must be the code at the top end (one transition), or
/// there is no index (`None`: 2+ transitions in some bucket).
pub(crate) fn index_of(f: impl Fn(u32) -> Option<u8>) -> Option<Box<Entries>> {
    let mut ent: Box<Entries> =
        vec![[0u8; 4]; BUCKETS].into_boxed_slice().try_into().expect("BUCKETS");
    for (h, e) in ent.iter_mut().enumerate() {
        let lo = (h as u32) << 16;
        *e = UNDECIDED;
        if lo & 0x7f80_0000 == 0x7f80_0000 {
            continue; // inf and NaN patterns
        }
        let (Some(c0), Some(c1)) = (f(lo), f(lo | 0xffff)) else { continue };
        if c0 == c1 {
            *e = entry(0xffff, c0 as usize, c0 as usize);
            continue;
        }
        // the first low half with a code other than c0: in (a, b]
        let (mut a, mut b) = (0u32, 0xffffu32);
        let mut decided = true;
        while b - a > 1 {
            let mid = (a + b) / 2;
            match f(lo | mid) {
                Some(c) if c == c0 => a = mid,
                Some(_) => b = mid,
                None => {
                    decided = false;
                    break;
                }
            }
        }
        if !decided {
            continue;
        }
        if f(lo | b) != Some(c1) {
            return None; // 2+ transitions
        }
        *e = entry(a as u16, c0 as usize, c1 as usize);
        if *e == UNDECIDED {
            return None;
        }
    }
    Some(ent)
}

/// `out[j]` = the code of `xs[j]` (of `xs[j] / s` if `DIV`, IEEE f32 division) from an index
/// of [`index_of`]. Returns `false` if some element fell in an undecided bucket: the codes are
/// then unspecified and the caller computes them its own way.
pub(crate) fn index_lookup<const DIV: bool>(
    ent: &Entries,
    xs: &[f32],
    s: f32,
    out: &mut [u8],
) -> bool {
    let n = xs.len().min(out.len());
    // mutated only by the x86 SIMD prefix, which `portable` / non-x86 builds lack
    #[cfg_attr(not(all(target_arch = "x86_64", not(feature = "portable"))), allow(unused_mut))]
    let mut done = 0;
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above; the slices hold n elements.
        let (d, hit) = unsafe { idx_avx2::nearest::<DIV, true>(ent, &xs[..n], s, &mut out[..n]) };
        if hit {
            return false;
        }
        done = d;
    }
    for (o, &x) in out[done..n].iter_mut().zip(&xs[done..n]) {
        let b = (if DIV { x / s } else { x }).to_bits();
        if ent[(b >> 16) as usize] == UNDECIDED {
            return false;
        }
        *o = lookup(ent, b);
    }
    true
}

impl Index {
    fn new(taus: &[u32]) -> Box<Index> {
        // 256 KiB, allocated on the heap directly (not through the stack).
        let ent = vec![[0u8; 4]; BUCKETS].into_boxed_slice().try_into().expect("BUCKETS");
        let mut ix = Box::new(Index { ent, slow: Box::new([]), taus: taus.into() });
        let mut slow = vec![0u64; BUCKETS / 64];
        // Key bucket `kb` (top 16 key bits) is pattern bucket `kb ^ 0x8000` for positive
        // values and `!kb` for negative ones, whose low bits run against the value order.
        let pos = |kb: usize| kb - 0x8000;
        let neg = |kb: usize| 0xffff - kb;
        // Key buckets `k0..k1` hold no transition: code `c` throughout.
        let fill = |ix: &mut Index, k0: usize, k1: usize, c: usize| {
            let e = entry(0xffff, c, c);
            if k1 > 0x8000 {
                ix.ent[pos(k0.max(0x8000))..pos(k1)].fill(e);
            }
            if k0 < 0x8000 {
                ix.ent[neg(k1.min(0x8000) - 1)..=neg(k0)].fill(e);
            }
        };
        let (mut b, mut i) = (0usize, 0usize);
        while i < taus.len() {
            let kb = (taus[i] >> 16) as usize;
            fill(&mut ix, b, kb, i);
            let mut j = i + 1;
            while j < taus.len() && (taus[j] >> 16) as usize == kb {
                j += 1;
            }
            // A transition at the bucket's first key counts in its base code.
            let at_start = (taus[i] & 0xffff == 0) as usize;
            let c = i + at_start;
            match j - i - at_start {
                0 => fill(&mut ix, kb, kb + 1, c),
                1 => {
                    // code c below the transition key's low bits `l`, c + 1 from there
                    let l = (taus[j - 1] & 0xffff) as u16;
                    if kb >= 0x8000 {
                        ix.ent[pos(kb)] = entry(l - 1, c, c + 1);
                    } else {
                        // pattern low bits `0xffff - l` and below hold keys `l` and above
                        ix.ent[neg(kb)] = entry(0xffff - l, c + 1, c);
                    }
                }
                _ => {
                    let r = if kb >= 0x8000 { pos(kb) } else { neg(kb) };
                    slow[r / 64] |= 1 << (r % 64);
                    ix.ent[r] = entry(0xffff, c, c);
                }
            }
            (b, i) = (kb + 1, j);
        }
        fill(&mut ix, b, BUCKETS, taus.len());
        // NaNs: those below −inf already get code 0. Above +inf: +inf (low bits 0) keeps the
        // last code, the NaNs after it get 0.
        let inf = (f32::INFINITY.to_bits() >> 16) as usize;
        ix.ent[inf] = entry(0, taus.len(), 0);
        ix.ent[inf + 1..0x8000].fill(entry(0xffff, 0, 0));
        if slow.iter().any(|&w| w != 0) {
            ix.slow = slow.into();
        }
        ix
    }

    /// Whether some bucket needs the cold path.
    fn crowded(&self) -> bool {
        !self.slow.is_empty()
    }

    /// The code of the value with bit pattern `b`, for an index without cold buckets.
    #[inline(always)]
    fn lookup(&self, b: u32) -> u8 {
        lookup(&self.ent, b)
    }

    /// The code of `x`, for any index.
    #[inline(never)]
    fn lookup_checked(&self, x: f32) -> u8 {
        let i = (x.to_bits() >> 16) as usize;
        if self.slow[i / 64] >> (i % 64) & 1 != 0 {
            return self.cold(x);
        }
        self.lookup(x.to_bits())
    }

    #[cold]
    #[inline(never)]
    fn cold(&self, x: f32) -> u8 {
        let k = key(x); // never NaN: NaN buckets are not cold
        self.taus.partition_point(|&t| t <= k) as u8
    }
}

/// `#{i : keys[i] <= k}` over the first 16 keys (all 32 if `wide`), for keys sorted ascending
/// with a pad (`i32::MAX`) among the keys used: the keys above `k` then form a nonempty
/// suffix, whose start is the trailing zero count of the mask of `keys[i] > k`.
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
#[inline(always)]
fn count_le(keys: &Keys, wide: bool, k: i32) -> u32 {
    use std::arch::x86_64::*;
    // SSE2 is part of the x86_64 baseline. SAFETY: aligned in-bounds loads of `keys.0`.
    #[allow(unused_unsafe)]
    unsafe {
        let kv = _mm_set1_epi32(k);
        let p = keys.0.as_ptr() as *const __m128i;
        let a = _mm_packs_epi32(
            _mm_cmpgt_epi32(_mm_load_si128(p), kv),
            _mm_cmpgt_epi32(_mm_load_si128(p.add(1)), kv),
        );
        let b = _mm_packs_epi32(
            _mm_cmpgt_epi32(_mm_load_si128(p.add(2)), kv),
            _mm_cmpgt_epi32(_mm_load_si128(p.add(3)), kv),
        );
        let mut m = _mm_movemask_epi8(_mm_packs_epi16(a, b)) as u32;
        if wide {
            let a = _mm_packs_epi32(
                _mm_cmpgt_epi32(_mm_load_si128(p.add(4)), kv),
                _mm_cmpgt_epi32(_mm_load_si128(p.add(5)), kv),
            );
            let b = _mm_packs_epi32(
                _mm_cmpgt_epi32(_mm_load_si128(p.add(6)), kv),
                _mm_cmpgt_epi32(_mm_load_si128(p.add(7)), kv),
            );
            m |= (_mm_movemask_epi8(_mm_packs_epi16(a, b)) as u32) << 16;
        }
        m.trailing_zeros()
    }
}

#[cfg(not(all(target_arch = "x86_64", not(feature = "portable"))))]
#[inline(always)]
fn count_le(keys: &Keys, wide: bool, k: i32) -> u32 {
    let n = if wide { SMALL_MAX } else { 16 };
    keys.0[..n].iter().map(|&t| (t <= k) as u32).sum()
}

/// The transition keys of a small table, aligned for vector loads.
#[derive(Debug, Clone, Copy)]
#[repr(align(16))]
struct Keys([i32; SMALL_MAX]);

/// A codec over strictly ascending finite `f32` levels; the code of a level is its index.
#[derive(Debug)]
pub struct Table {
    levels: Vec<f32>,
    /// Small tables: the transition keys as signed keys (`key ^ 0x8000_0000`), padded with
    /// `i32::MAX`; only the first 16 are used unless `wide` (more than 16 levels).
    small: Keys,
    wide: bool,
    /// The direct index when it has no cold bucket: set in `new` for large tables, lazily for
    /// small ones (which keep counting when theirs would have cold buckets).
    index: OnceLock<Box<Index>>,
    /// Null, or the address of the entries of `index` (set right after it): one load and one
    /// test in the hot path instead of the `OnceLock` state check plus two pointer loads.
    fast: AtomicPtr<Entries>,
    /// The index of a large table with cold buckets.
    crowded: Option<Box<Index>>,
    /// Sampled lookups of a small table without its index (racy; a heuristic only);
    /// `u32::MAX` once its index turned out to have cold buckets.
    uses: AtomicU32,
}

impl Clone for Table {
    fn clone(&self) -> Table {
        let t = Table {
            levels: self.levels.clone(),
            small: self.small,
            wide: self.wide,
            index: self.index.clone(),
            fast: AtomicPtr::default(),
            crowded: self.crowded.clone(),
            uses: AtomicU32::new(self.uses.load(Relaxed)),
        };
        t.publish();
        t
    }
}

impl Table {
    /// Build a table. Errors (`"levels"`): fewer than 2 or more than 256 levels, a non-finite
    /// level, or levels not strictly ascending. Cheap for small tables (no allocation beyond
    /// `levels`); tables of more than 32 levels also build a 256 KiB lookup index (~20 µs),
    /// which small tables build lazily once heavily reused.
    pub fn new(levels: Vec<f32>) -> Result<Table> {
        check_levels(&levels)?;
        let n = levels.len();
        let mut t = Table {
            levels,
            small: Keys([i32::MAX; SMALL_MAX]),
            wide: n > 16,
            index: OnceLock::new(),
            fast: AtomicPtr::default(),
            crowded: None,
            uses: AtomicU32::new(0),
        };
        let taus = t.levels.windows(2).enumerate().map(|(k, w)| transition(w[0], w[1], k));
        if n <= SMALL_MAX {
            for (s, tau) in t.small.0.iter_mut().zip(taus) {
                *s = (tau ^ 0x8000_0000) as i32;
            }
        } else {
            let ix = Index::new(&taus.collect::<Vec<u32>>());
            if ix.crowded() {
                t.crowded = Some(ix);
            } else {
                let _ = t.index.set(ix);
                t.publish();
            }
        }
        Ok(t)
    }

    /// The levels, ascending.
    pub fn levels(&self) -> &[f32] {
        &self.levels
    }

    /// Number of levels (2..=256).
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Always false: a table has at least two levels.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Small-table lookup: count the transition keys at or below the key of `x`.
    #[inline(always)]
    fn nearest_small(&self, b: u32) -> u8 {
        let b = b as i32;
        let mut k = b ^ ((b >> 31) & 0x7fff_ffff);
        if k > 0x7f80_0000 {
            k = i32::MIN; // +NaN (−NaN already lies below everything)
        }
        if k & 63 == 21 {
            self.sample();
        }
        // The keys are sorted and padded with i32::MAX: count those <= k, over the first 16
        // keys unless `wide`.
        count_le(&self.small, self.wide, k) as u8
    }

    /// Count a sampled lookup; build the index once the table has clearly been reused.
    #[cold]
    #[inline(never)]
    fn sample(&self) {
        let u = self.uses.load(Relaxed);
        if u == u32::MAX {
            return;
        }
        self.uses.store(u + 1, Relaxed);
        if u + 1 >= LAZY_SAMPLES {
            self.build_index();
        }
    }

    /// Build the index of a small table (if it has no cold bucket).
    #[cold]
    #[inline(never)]
    fn build_index(&self) {
        if self.levels.len() > SMALL_MAX || self.index.get().is_some() {
            return;
        }
        let taus: Vec<u32> =
            self.small.0[..self.levels.len() - 1].iter().map(|&t| t as u32 ^ 0x8000_0000).collect();
        let ix = Index::new(&taus);
        if ix.crowded() {
            self.uses.store(u32::MAX, Relaxed);
        } else {
            // Another thread may have won the race with the same index; keep either.
            let _ = self.index.set(ix);
            self.publish();
        }
    }

    /// Point `fast` at the entries of the index, once set.
    fn publish(&self) {
        if let Some(ix) = self.index.get() {
            let p: *const Entries = &*ix.ent;
            self.fast.store(p.cast_mut(), Ordering::Release);
        }
    }

    /// Index of the nearest level; an exact midpoint tie goes to the even index. Below the
    /// first level → 0, above the last → last index, NaN → 0.
    #[inline(always)]
    pub fn nearest(&self, x: f32) -> u8 {
        let p = self.fast.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a non-null `fast` points to the entries boxed in `self.index`, which is
            // set once and then neither replaced, changed nor dropped while `self` lives; the
            // Acquire load pairs with the Release store after its initialization.
            return lookup(unsafe { &*p }, x.to_bits());
        }
        std::hint::cold_path(); // lay the indexed path out as the straight line
        match &self.crowded {
            Some(ix) => ix.lookup_checked(x),
            None => self.nearest_small(x.to_bits()),
        }
    }

    /// Stochastic rounding with random word `r`: an exact level returns its index; otherwise,
    /// between adjacent levels `lo < x < hi`, returns `hi` iff
    /// `r < trunc((x - lo) / (hi - lo) * 2^32)` (in f64). Outside the table: clamp. NaN → 0.
    #[inline]
    pub fn stochastic(&self, x: f32, r: u32) -> u8 {
        let l = &self.levels;
        let last = l.len() - 1;
        // `nearest` clamps and sends NaN to 0. Its level is the one just below or just above
        // x, or x itself (then lo = c and the fraction is 0, so the level never moves).
        let c = self.nearest(x) as usize;
        let lo = c.wrapping_sub((x < l[c]) as usize);
        // x below the first level (lo wrapped), or at or above the last: the result is c.
        // Computed branch-free (clamped inputs are common in some codecs, and random).
        let out = lo >= last;
        let i = std::hint::select_unpredictable(out, last - 1, lo);
        let (a, b) = (l[i] as f64, l[i + 1] as f64);
        // In [0, 2^32] when in range (NaN x: 0, so it stays at 0): `as i64` is the same
        // truncation as `as u64` here, and cheaper on x86.
        let threshold = ((x as f64 - a) / (b - a) * 4294967296.0) as i64 as u64;
        let code = i + ((r as u64) < threshold) as usize;
        std::hint::select_unpredictable(out, c, code) as u8
    }

    /// [`Table::stochastic`] over a slice: `out[j] = self.stochastic(xs[j], rs[j])` for every
    /// `j`, 8 elements at a time with AVX2 for tables of at most 16 levels (chosen at run time).
    pub fn stochastic_slice(&self, xs: &[f32], rs: &[u32], out: &mut [u8]) {
        let n = xs.len().min(rs.len()).min(out.len());
        // mutated only by the x86 SIMD prefix, which `portable` / non-x86 builds lack
        #[cfg_attr(not(all(target_arch = "x86_64", not(feature = "portable"))), allow(unused_mut))]
        let mut done = 0;
        #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
        if self.levels.len() <= 16 && std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above; the slices hold n elements.
            done = unsafe { sr_avx2::small(&self.levels, &xs[..n], &rs[..n], &mut out[..n]) };
        }
        for j in done..n {
            out[j] = self.stochastic(xs[j], rs[j]);
        }
    }

    /// [`Table::nearest`] over a slice: `out[j] = self.nearest(xs[j])` for every `j`.
    pub fn nearest_slice(&self, xs: &[f32], out: &mut [u8]) {
        self.nearest_div::<false>(xs, 1.0, out)
    }

    /// `out[j] = self.nearest(xs[j] / s)` for every `j` (IEEE f32 division), in one pass.
    pub fn nearest_scaled(&self, xs: &[f32], s: f32, out: &mut [u8]) {
        self.nearest_div::<true>(xs, s, out)
    }

    /// The slice lookups, of `xs[j] / s` if `DIV`. An indexed table does 8 lookups at a time
    /// with AVX2 where the CPU has it (chosen at run time), otherwise one at a time
    /// with the index pointer loaded once (a `u8` store may alias anything, so a per-element
    /// `nearest` reloads it).
    #[inline(always)]
    fn nearest_div<const DIV: bool>(&self, xs: &[f32], s: f32, out: &mut [u8]) {
        let n = xs.len().min(out.len());
        let x = |j: usize| if DIV { xs[j] / s } else { xs[j] };
        let p = self.fast.load(Ordering::Acquire);
        if p.is_null() {
            for (j, o) in out[..n].iter_mut().enumerate() {
                *o = self.nearest(x(j));
            }
            return;
        }
        // SAFETY: as in `nearest`.
        let ent: &Entries = unsafe { &*p };
        // mutated only by the x86 SIMD prefix, which `portable` / non-x86 builds lack
        #[cfg_attr(not(all(target_arch = "x86_64", not(feature = "portable"))), allow(unused_mut))]
        let mut done = 0;
        #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above; the slices hold n elements.
            done = unsafe { idx_avx2::nearest::<DIV, false>(ent, &xs[..n], s, &mut out[..n]).0 };
        }
        for (j, o) in out[..n].iter_mut().enumerate().skip(done) {
            *o = lookup(ent, x(j).to_bits());
        }
    }

    /// The level of `code`. A code `≥ len` is the caller's to reject; it decodes to NaN.
    #[inline]
    pub fn decode(&self, code: u8) -> f32 {
        self.levels.get(code as usize).copied().unwrap_or(f32::NAN)
    }
}

/// The levels a table accepts: 2 to 256 finite values, strictly ascending.
fn check_levels(levels: &[f32]) -> Result<()> {
    let n = levels.len();
    if !(2..=256).contains(&n) {
        return Err(Error::value("levels", format!("expected 2 to 256 levels, got {n}")));
    }
    if let Some(i) = levels.iter().position(|v| !v.is_finite()) {
        return Err(Error::value(
            "levels",
            format!("expected finite levels, got {} at index {i}", levels[i]),
        ));
    }
    if let Some(i) = levels.windows(2).position(|w| w[0] >= w[1]) {
        return Err(Error::value(
            "levels",
            format!(
                "expected strictly ascending levels, got {:?} at index {i} then {:?}",
                levels[i],
                levels[i + 1]
            ),
        ));
    }
    Ok(())
}

/// [`Table::stochastic_slice`] of a table used once (e.g. a block's own log levels): a table
/// of at most 16 levels goes to the AVX2 path without building the table where the CPU has
/// it; otherwise the table is built. `levels` must pass [`Table::new`]'s checks.
pub fn stochastic_levels(levels: Vec<f32>, xs: &[f32], rs: &[u32], out: &mut [u8]) -> Result<()> {
    check_levels(&levels)?;
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    if levels.len() <= 16 && std::is_x86_feature_detected!("avx2") {
        let n = xs.len().min(rs.len()).min(out.len());
        // SAFETY: the CPU supports AVX2, checked just above; the slices hold n elements.
        let done = unsafe { sr_avx2::small(&levels, &xs[..n], &rs[..n], &mut out[..n]) };
        if done == n {
            return Ok(());
        }
        let t = Table::new(levels)?;
        for j in done..n {
            out[j] = t.stochastic(xs[j], rs[j]);
        }
        return Ok(());
    }
    Table::new(levels)?.stochastic_slice(xs, rs, out);
    Ok(())
}

/// Direct-index lookups, 8 at a time: load the 8 entries, compare the low 16 bits of each
/// pattern with the entry's `t` (both in 0..=0xffff, so a signed 32-bit compare is exact), and
/// shift the entry right by 16 (code `c0`) or 24 (`c1`).
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod idx_avx2 {
    use super::Entries;
    use std::arch::x86_64::*;

    /// `vpshufb` control: byte 0 of each 32-bit lane to the front of its 128-bit half.
    #[allow(clippy::identity_op)]
    pub const PICK: __m256i = unsafe {
        std::mem::transmute::<[i8; 32], __m256i>([
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        ])
    };

    /// Look up the first multiple of 8 elements (divided by `s` if `DIV`); returns how many
    /// were done and, if `FLAG`, whether one of them fell in an `UNDECIDED` bucket.
    #[target_feature(enable = "avx2")]
    pub unsafe fn nearest<const DIV: bool, const FLAG: bool>(
        ent: &Entries,
        xs: &[f32],
        s: f32,
        out: &mut [u8],
    ) -> (usize, bool) {
        let sv = _mm256_set1_ps(s);
        let undecided = _mm256_set1_epi32(i32::from_le_bytes(super::UNDECIDED));
        let mut hit = _mm256_setzero_si256();
        let base = ent.as_ptr() as *const i32;
        let lo16 = _mm256_set1_epi32(0xffff);
        let (sixteen, eight) = (_mm256_set1_epi32(16), _mm256_set1_epi32(8));
        let pick = PICK;
        let full = xs.len() / 8 * 8;
        for j in (0..full).step_by(8) {
            let mut x = _mm256_loadu_ps(xs.as_ptr().add(j));
            if DIV {
                x = _mm256_div_ps(x, sv);
            }
            let b = _mm256_castps_si256(x);
            // The 8 entries: scalar loads assembled into a vector (on Zen 3 ~25% faster than
            // `vpgatherdd`), the indices taken two at a time from 64-bit words.
            let h = _mm256_srli_epi32::<16>(b);
            let (lo, hi) = (_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
            let q = [
                _mm_cvtsi128_si64(lo) as u64,
                _mm_extract_epi64::<1>(lo) as u64,
                _mm_cvtsi128_si64(hi) as u64,
                _mm_extract_epi64::<1>(hi) as u64,
            ];
            // SAFETY: every index is a top-16-bit value, < BUCKETS entries of 4 bytes.
            let l = |k: usize| *base.add(((q[k / 2] >> (32 * (k % 2))) & 0xffff) as usize);
            let e = _mm256_setr_epi32(l(0), l(1), l(2), l(3), l(4), l(5), l(6), l(7));
            if FLAG {
                hit = _mm256_or_si256(hit, _mm256_cmpeq_epi32(e, undecided));
            }
            let gt = _mm256_cmpgt_epi32(_mm256_and_si256(b, lo16), _mm256_and_si256(e, lo16));
            let c = _mm256_srlv_epi32(e, _mm256_add_epi32(sixteen, _mm256_and_si256(gt, eight)));
            let p = _mm256_shuffle_epi8(c, pick);
            let v = _mm_unpacklo_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
            _mm_storel_epi64(out.as_mut_ptr().add(j) as *mut __m128i, v);
        }
        (full, FLAG && _mm256_testz_si256(hit, hit) == 0)
    }
}

/// Stochastic rounding into a table of at most 16 levels, 8 elements per step. The same values
/// as [`Table::stochastic`], reached another way: with `cnt` = the number of levels `<= x`
/// (NaN: 0), `x` is below the table (or NaN) when `cnt = 0` → code 0, at or above the last
/// level when `cnt = len` → the last code (what `nearest` gives there), else between
/// `a = l[cnt-1] <= x < b = l[cnt]` → `cnt - 1`, plus 1 iff `r + 1 <= t` for the definition's
/// `t = (x - a) / (b - a) · 2^32` in f64, which is `r < trunc(t)` for an integer `r` and
/// `t >= 0`.
#[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
mod sr_avx2 {
    use std::arch::x86_64::*;

    /// Round the first multiple of 8 elements; returns how many were done.
    #[target_feature(enable = "avx2")]
    pub unsafe fn small(l: &[f32], xs: &[f32], rs: &[u32], out: &mut [u8]) -> usize {
        let n = l.len();
        debug_assert!((2..=16).contains(&n));
        let mut pad = [f32::NAN; 16]; // NaN compares false: padding never counts
        pad[..n].copy_from_slice(l);
        let lo8 = _mm256_loadu_ps(pad.as_ptr());
        let hi8 = _mm256_loadu_ps(pad.as_ptr().add(8));
        let top = _mm256_set1_epi32(n as i32 - 2);
        let seven = _mm256_set1_epi32(7);
        let one = _mm256_set1_epi32(1);
        let two32 = _mm256_set1_pd(4294967296.0);
        let two31 = _mm256_set1_pd(2147483648.0);
        let sign = _mm256_set1_epi32(i32::MIN);
        let one_pd = _mm256_set1_pd(1.0);
        let evens = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        let (zero, len, last) =
            (_mm256_setzero_si256(), _mm256_set1_epi32(n as i32), _mm256_set1_epi32(n as i32 - 1));
        let pick = super::idx_avx2::PICK;
        // The level at each lane's index (0..=15).
        let level = |i: __m256i| {
            let a = _mm256_permutevar8x32_ps(lo8, i);
            let b = _mm256_permutevar8x32_ps(hi8, i);
            _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_cmpgt_epi32(i, seven)))
        };
        // (low 4 lanes, high 4 lanes) as f64
        let wide = |v: __m256| {
            (
                _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)),
            )
        };
        // u32 words as f64 plus 1 (exact): flip the sign bit, convert as i32, add 2^31 + 1.
        let words = |r: __m128i| {
            let s = _mm256_cvtepi32_pd(_mm_xor_si128(r, _mm256_castsi256_si128(sign)));
            _mm256_add_pd(_mm256_add_pd(s, two31), one_pd)
        };
        let full = xs.len() / 8 * 8;
        for j in (0..full).step_by(8) {
            let x = _mm256_loadu_ps(xs.as_ptr().add(j));
            let mut cnt = _mm256_setzero_si256();
            for &v in &l[..n] {
                let le = _mm256_cmp_ps::<_CMP_LE_OQ>(_mm256_set1_ps(v), x);
                cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(le)); // true lanes are -1
            }
            // interval index, clamped into 0..=n-2 for the lanes decided by cnt alone
            let i = _mm256_max_epi32(
                _mm256_min_epi32(_mm256_sub_epi32(cnt, one), top),
                _mm256_setzero_si256(),
            );
            let a = level(i);
            let b = level(_mm256_add_epi32(i, one));
            let (x0, x1) = wide(x);
            let (a0, a1) = wide(a);
            let (b0, b1) = wide(b);
            let t0 =
                _mm256_mul_pd(_mm256_div_pd(_mm256_sub_pd(x0, a0), _mm256_sub_pd(b0, a0)), two32);
            let t1 =
                _mm256_mul_pd(_mm256_div_pd(_mm256_sub_pd(x1, a1), _mm256_sub_pd(b1, a1)), two32);
            let r = _mm256_loadu_si256(rs.as_ptr().add(j) as *const __m256i);
            let r0 = words(_mm256_castsi256_si128(r));
            let r1 = words(_mm256_extracti128_si256(r, 1));
            // the 64-bit masks of the two halves as one 32-bit mask per lane (true: -1)
            let up0 = _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_LE_OQ>(r0, t0));
            let up1 = _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_LE_OQ>(r1, t1));
            let up = _mm256_blend_epi32::<0xf0>(
                _mm256_permutevar8x32_epi32(up0, evens),
                _mm256_permutevar8x32_epi32(up1, evens),
            );
            let code = _mm256_sub_epi32(i, up);
            // below the table (or NaN): 0; at or above the last level: the last code
            let code = _mm256_andnot_si256(_mm256_cmpeq_epi32(cnt, zero), code);
            let code = _mm256_blendv_epi8(code, last, _mm256_cmpeq_epi32(cnt, len));
            let p = _mm256_shuffle_epi8(code, pick);
            let v = _mm_unpacklo_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
            _mm_storel_epi64(out.as_mut_ptr().add(j) as *mut __m128i, v);
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, by linear scan.
    fn nearest_ref(l: &[f32], x: f32) -> u8 {
        if x.is_nan() {
            return 0;
        }
        let xd = x as f64;
        for k in 0..l.len() - 1 {
            let m = (l[k] as f64 + l[k + 1] as f64) / 2.0;
            if xd < m {
                return k as u8;
            }
            if xd == m {
                return (k + (k & 1)) as u8;
            }
        }
        (l.len() - 1) as u8
    }

    fn stochastic_ref(l: &[f32], x: f32, r: u32) -> u8 {
        if x.is_nan() || x <= l[0] {
            return 0;
        }
        if x >= l[l.len() - 1] {
            return (l.len() - 1) as u8;
        }
        if let Some(i) = l.iter().position(|&v| v == x) {
            return i as u8;
        }
        let lo = l.iter().rposition(|&v| v < x).unwrap();
        let (a, b) = (l[lo] as f64, l[lo + 1] as f64);
        let t = ((x as f64 - a) / (b - a) * 4294967296.0) as u64;
        if (r as u64) < t {
            (lo + 1) as u8
        } else {
            lo as u8
        }
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 32) as u32
        }
        fn unit(&mut self) -> f32 {
            // uniform in [-1, 1)
            (self.next() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        }
    }

    /// A dynamic-map-like table: ± scaled decades, 0 and 1 (256 levels).
    fn dynamic_like() -> Vec<f32> {
        let mut v = vec![0.0f32, 1.0];
        for e in 0..7 {
            let n = 1usize << e;
            for i in 0..n {
                let f = 0.1 + 0.9 * (i as f32 + 0.5) / n as f32;
                let m = f * 10f32.powi(e - 6);
                v.push(m);
                v.push(-m);
            }
        }
        v.sort_by(f32::total_cmp);
        v.dedup();
        v
    }

    /// 40 levels one ulp apart between two huge ones: buckets with many midpoints.
    fn crowded() -> Vec<f32> {
        let mut v = vec![-1e30f32];
        v.extend((0..40).map(|k| f32::from_bits(1.0f32.to_bits() + k)));
        v.push(1e30);
        v
    }

    /// Buckets that take the cold path.
    fn slow_buckets(t: &Table) -> usize {
        let ix = t.crowded.as_ref().or(t.index.get()).unwrap();
        ix.slow.iter().map(|w| w.count_ones() as usize).sum()
    }

    #[test]
    fn crowded_buckets_take_the_cold_path() {
        let t = Table::new(crowded()).unwrap();
        assert!(slow_buckets(&t) > 0);
        // The common maps never do.
        let mut maps = vec![];
        for signed in [false, true] {
            for bits in 2..=8 {
                // (not every bit width exists for every map)
                maps.extend(crate::dynamic::dynamic_levels(bits, signed).ok());
                maps.extend(crate::linear::linear_levels(bits, signed, true).ok());
                maps.extend(crate::logfmt::log_levels(bits, signed, 0.9, true).ok());
            }
        }
        maps.push(crate::linear::linear_levels(8, false, false).unwrap());
        maps.push(crate::logfmt::log_levels(8, false, 0.95, false).unwrap());
        assert!(maps.len() > 30);
        for l in maps {
            let t = Table::new(l.clone()).unwrap();
            t.build_index();
            assert_eq!(slow_buckets(&t), 0, "{l:?}");
        }
    }

    /// Small tables build the index once reused, and give the same codes either way.
    #[test]
    fn small_tables_index_lazily() {
        let t = Table::new((0..16).map(|i| i as f32 / 15.0).collect()).unwrap();
        let mut rng = Lcg(7);
        let xs: Vec<f32> = (0..20_000).map(|_| rng.unit()).collect();
        let before: Vec<u8> = xs.iter().map(|&x| t.nearest(x)).collect();
        assert!(t.index.get().is_none());
        assert!(t.crowded.is_none());
        for _ in 0..10 {
            for &x in &xs {
                t.nearest(x);
            }
        }
        assert!(t.index.get().is_some());
        let after: Vec<u8> = xs.iter().map(|&x| t.nearest(x)).collect();
        assert_eq!(before, after);
        let c = t.clone();
        assert!(c.index.get().is_some());
        assert_eq!(c.nearest(0.5), t.nearest(0.5));
    }

    /// Random tables of every size, from value distributions that make representable
    /// midpoints (ties), ulp-adjacent levels, subnormals and huge spans; checked on the small
    /// path and the index.
    #[test]
    fn random_tables_match_definition() {
        let mut rng = Lcg(23);
        for case in 0..600 {
            let n = match case % 4 {
                0 => 2 + (rng.next() % 31) as usize,
                1 => 2 + (rng.next() % 255) as usize,
                _ => 2 + (rng.next() % 20) as usize,
            };
            let mut l: Vec<f32> = (0..n)
                .map(|_| match case % 5 {
                    // random bit patterns: any magnitude
                    0 => f32::from_bits(rng.next()),
                    // small integers and halves: many exact midpoints
                    1 => (rng.next() % 64) as f32 / 2.0 - 16.0,
                    // a cluster of neighbouring f32s around a random value
                    2 => f32::from_bits(0x3f80_0000 + rng.next() % 40) * [1.0, -1.0][case % 2],
                    // around zero, with subnormals
                    3 => f32::from_bits(rng.next() % 64) * [1.0, -1.0][(rng.next() & 1) as usize],
                    _ => rng.unit() * 10f32.powi((rng.next() % 20) as i32 - 10),
                })
                .filter(|v| v.is_finite())
                .collect();
            l.sort_by(f32::total_cmp);
            l.dedup_by(|a, b| a == b); // also merges -0 and +0
            if l.len() < 2 {
                continue;
            }
            let t = Table::new(l.clone()).unwrap();
            let mut xs = probes(&l);
            for _ in 0..500 {
                xs.push(f32::from_bits(rng.next()));
                let i = (rng.next() as usize) % l.len();
                let d = (rng.next() % 7) as i32 - 3;
                xs.push(f32::from_bits(l[i].to_bits().wrapping_add_signed(d)));
            }
            let small = (l.len() <= SMALL_MAX).then(|| xs.iter().map(|&x| t.nearest(x)));
            let small: Option<Vec<u8>> = small.map(|s| s.collect());
            t.build_index();
            for (i, &x) in xs.iter().enumerate() {
                let want = nearest_ref(&l, x);
                assert_eq!(t.nearest(x), want, "x {x:e} ({:#x}) table {l:?}", x.to_bits());
                if let Some(s) = &small {
                    assert_eq!(s[i], want, "small path, x {x:e} table {l:?}");
                }
                let r = rng.next();
                assert_eq!(t.stochastic(x, r), stochastic_ref(&l, x, r), "x {x:e}");
            }
            // the slice paths (AVX2 where available, a scalar tail: odd lengths)
            let want: Vec<u8> = xs.iter().map(|&x| nearest_ref(&l, x)).collect();
            for len in [xs.len(), xs.len() - 3] {
                let mut got = vec![0u8; len];
                t.nearest_slice(&xs[..len], &mut got);
                assert!(got == want[..len], "table {l:?}");
            }
        }
    }

    fn test_tables() -> Vec<Vec<f32>> {
        let mut rng = Lcg(3);
        let mut t = vec![
            vec![0.0, 1.0],
            vec![-1.0, 0.0, 1.0],
            vec![-1.0, -0.5, 0.0, 0.5, 1.0],
            (0..16).map(|i| i as f32 / 15.0).collect(),
            (0..33).map(|i| i as f32 / 32.0 - 0.5).collect(),
            (-127..=127).map(|i| (i as f64 / 127.0) as f32).collect(),
            (0..256).map(|i| (i as f64 / 255.0) as f32).collect(),
            (0..256).map(|i| 0.9f64.powi(255 - i) as f32).collect(),
            // extreme range: 1e-30 .. 1e30 and negatives, subnormals
            (-20i32..=20).map(|i| (i as f32).signum() * 10f32.powi(i.abs() * 3 - 30)).collect(),
            vec![-3.0e38, -f32::from_bits(1), 0.0, f32::from_bits(1), f32::from_bits(3), 3.0e38],
            dynamic_like(),
        ];
        t[8].sort_by(f32::total_cmp);
        t[8].dedup();
        for bits in [4, 8] {
            for signed in [false, true] {
                t.push(crate::dynamic::dynamic_levels(bits, signed).unwrap());
            }
        }
        t.push(crowded());
        t.push(crate::logfmt::log_levels(8, true, 0.9, true).unwrap());
        t.push(crate::logfmt::log_levels(8, false, 0.999, true).unwrap());
        for n in [40usize, 100, 256] {
            let mut v: Vec<f32> = (0..n).map(|_| rng.unit() * 4.0).collect();
            v.sort_by(f32::total_cmp);
            v.dedup();
            t.push(v);
        }
        t
    }

    /// Probe points: levels, midpoints (when representable), their neighbours, extremes.
    fn probes(l: &[f32]) -> Vec<f32> {
        let mut p = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN, 0.0, -0.0];
        let next = |x: f32, d: i32| -> f32 {
            if x == 0.0 {
                if d > 0 {
                    f32::from_bits(1)
                } else {
                    -f32::from_bits(1)
                }
            } else if (x > 0.0) == (d > 0) {
                f32::from_bits(x.to_bits() + 1)
            } else {
                f32::from_bits(x.to_bits() - 1)
            }
        };
        let mut add = |x: f32| {
            p.push(x);
            p.push(next(x, 1));
            p.push(next(x, -1));
        };
        for w in l.windows(2) {
            add(w[0]);
            let m = ((w[0] as f64 + w[1] as f64) / 2.0) as f32;
            add(m);
        }
        add(l[l.len() - 1]);
        p
    }

    #[test]
    fn matches_definition() {
        let mut rng = Lcg(11);
        for l in test_tables() {
            let t = Table::new(l.clone()).unwrap();
            assert_eq!(t.index.get().is_some() || t.crowded.is_some(), l.len() > SMALL_MAX);
            let lo = l[0].min(-1.0);
            let hi = l[l.len() - 1].max(1.0);
            let mut xs = probes(&l);
            let n = if l.len() > SMALL_MAX { 1_000_000 } else { 20_000 };
            for _ in 0..n {
                let u = (rng.unit() + 1.0) / 2.0;
                xs.push(lo + (hi - lo) * u * 1.1);
            }
            for _ in 0..n / 4 {
                // random bit patterns (any magnitude)
                xs.push(f32::from_bits(rng.next()));
            }
            let small = Table::new(l.clone()).unwrap();
            small.build_index();
            for &x in &xs {
                let want = nearest_ref(&l, x);
                assert_eq!(t.nearest(x), want, "x {x:e} table {l:?}");
                assert_eq!(small.nearest(x), want, "x {x:e} table {l:?} (index)");
                let r = rng.next();
                assert_eq!(t.stochastic(x, r), stochastic_ref(&l, x, r), "x {x:e}");
            }
            // the slice paths (AVX2 where available, a scalar tail: odd lengths)
            let want: Vec<u8> = xs.iter().map(|&x| nearest_ref(&l, x)).collect();
            for tab in [&t, &small] {
                for len in [xs.len(), xs.len() - 3] {
                    let mut got = vec![0u8; len];
                    tab.nearest_slice(&xs[..len], &mut got);
                    assert!(got == want[..len], "table {l:?}");
                }
                for s in [0.75f32, 3.0e-3] {
                    let want: Vec<u8> = xs.iter().map(|&x| nearest_ref(&l, x / s)).collect();
                    let mut got = vec![0u8; xs.len() - 5];
                    tab.nearest_scaled(&xs[..xs.len() - 5], s, &mut got);
                    assert!(got == want[..xs.len() - 5], "table {l:?} / {s}");
                }
            }
            for (i, &v) in l.iter().enumerate() {
                assert_eq!(t.nearest(v) as usize, i);
                assert_eq!(t.stochastic(v, 0) as usize, i);
                assert_eq!(t.stochastic(v, u32::MAX) as usize, i);
                assert_eq!(t.decode(i as u8), v);
            }
        }
    }

    #[test]
    fn ties_go_to_even() {
        let t = Table::new(vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(t.nearest(0.5), 0);
        assert_eq!(t.nearest(1.5), 2);
        assert_eq!(t.nearest(2.5), 2);
        assert_eq!(t.nearest(-5.0), 0);
        assert_eq!(t.nearest(7.0), 3);
        assert_eq!(t.nearest(f32::NAN), 0);
        let big: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let t = Table::new(big).unwrap();
        for k in 0..63 {
            let m = k as f32 + 0.5;
            assert_eq!(t.nearest(m) as usize, k + (k & 1));
        }
    }

    #[test]
    fn table_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + std::fmt::Debug>() {}
        check::<Table>();
        // the lazy index from several threads at once
        let t = Table::new((0..9).map(|i| i as f32 / 8.0).collect()).unwrap();
        let xs: Vec<f32> = (0..100_000).map(|i| (i as f32 / 50_000.0) - 0.5).collect();
        let want: Vec<u8> = xs.iter().map(|&x| nearest_ref(t.levels(), x)).collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..3 {
                        let got: Vec<u8> = xs.iter().map(|&x| t.nearest(x)).collect();
                        assert_eq!(got, want);
                    }
                });
            }
        });
        assert!(t.index.get().is_some());
    }

    #[test]
    fn stochastic_slice_equals_elements() {
        let mut rng = Lcg(7);
        let mut tables = test_tables();
        for n in 2..=17 {
            let mut v: Vec<f32> = (0..n).map(|i| i as f32 / (n - 1) as f32).collect();
            tables.push(v.clone());
            v.iter_mut().for_each(|x| *x = *x * 2.0 - 1.0);
            tables.push(v);
        }
        for l in tables {
            let t = Table::new(l.clone()).unwrap();
            let mut xs = probes(&l);
            let (lo, hi) = (l[0] - 0.5, l[l.len() - 1] + 0.5);
            xs.extend((0..2000).map(|_| lo + (rng.unit() + 1.0) / 2.0 * (hi - lo)));
            let mut rs: Vec<u32> = xs.iter().map(|_| rng.next()).collect();
            rs[..8].copy_from_slice(&[0, 1, u32::MAX, u32::MAX - 1, 1 << 31, (1 << 31) - 1, 7, 9]);
            for len in [0, 1, 7, 8, 9, 63, xs.len()] {
                let mut out = vec![0u8; len];
                t.stochastic_slice(&xs[..len], &rs[..len], &mut out);
                for j in 0..len {
                    assert_eq!(out[j], t.stochastic(xs[j], rs[j]), "x {:e} r {}", xs[j], rs[j]);
                }
                let mut once = vec![0u8; len];
                stochastic_levels(l.clone(), &xs[..len], &rs[..len], &mut once).unwrap();
                assert_eq!(once, out, "table {l:?}");
            }
        }
    }

    #[test]
    fn stochastic_probabilities() {
        let t = Table::new(vec![0.0, 1.0, 2.0]).unwrap();
        // x = 0.25: up iff r < 2^30.
        assert_eq!(t.stochastic(0.25, (1 << 30) - 1), 1);
        assert_eq!(t.stochastic(0.25, 1 << 30), 0);
        assert_eq!(t.stochastic(1.75, 0), 2);
        assert_eq!(t.stochastic(1.75, u32::MAX), 1);
        assert_eq!(t.stochastic(-1.0, 0), 0);
        assert_eq!(t.stochastic(3.0, u32::MAX), 2);
        assert_eq!(t.stochastic(f32::NAN, 0), 0);
    }

    #[test]
    fn decode_out_of_range_is_nan() {
        let t = Table::new(vec![0.0, 1.0]).unwrap();
        assert_eq!(t.decode(1), 1.0);
        assert!(t.decode(2).is_nan());
        assert_eq!(t.len(), 2);
        assert!(!t.is_empty());
        assert_eq!(t.levels(), &[0.0, 1.0]);
    }

    #[test]
    fn errors() {
        for bad in [
            vec![],
            vec![1.0],
            vec![0.0; 257].iter().enumerate().map(|(i, _)| i as f32).collect(),
            vec![0.0, f32::NAN],
            vec![0.0, f32::INFINITY],
            vec![1.0, 1.0],
            vec![2.0, 1.0],
            vec![-0.0, 0.0],
        ] {
            assert_eq!(Table::new(bad).unwrap_err().arg, "levels");
        }
    }

    /// `cargo test --release bench_nearest -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_nearest() {
        let n = 1 << 22;
        let mut rng = Lcg(5);
        let uniform: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        // standard normal (Box-Muller), divided by the absmax of its block of 256
        let mut normal: Vec<f32> = (0..n)
            .map(|_| {
                let u = (rng.next() as f64 + 1.0) / 4294967297.0;
                let v = rng.next() as f64 / 4294967296.0;
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect();
        for b in normal.chunks_mut(256) {
            let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            b.iter_mut().for_each(|v| *v /= m);
        }
        let rs: Vec<u32> = (0..n).map(|_| rng.next()).collect();
        let mut out = vec![0u8; n];
        let reps = 20;
        let mut time = |name: &str, t: &Table, xs: &[f32], stoch: bool| {
            let mut t0 = std::time::Instant::now();
            for rep in 0..=reps {
                if rep == 1 {
                    t0 = std::time::Instant::now(); // after a warm-up pass
                }
                let xs = std::hint::black_box(xs);
                if stoch {
                    for ((o, &x), &r) in out.iter_mut().zip(xs).zip(&rs) {
                        *o = t.stochastic(x, r);
                    }
                } else {
                    t.nearest_slice(xs, &mut out);
                }
                std::hint::black_box(&out);
            }
            let dt = t0.elapsed().as_secs_f64();
            println!("{name:<44} {:5.0} M elem/s", (n * reps) as f64 / dt / 1e6);
        };
        let dynamic = Table::new(crate::dynamic::dynamic_levels(8, true).unwrap()).unwrap();
        let lin4 = crate::linear::linear_levels(4, true, true).unwrap(); // i/7, 15 levels
        let lin4u = crate::linear::linear_levels(4, false, true).unwrap(); // i/15, 16 levels
        let log4 = crate::logfmt::log_levels(4, true, 0.8, true).unwrap();
        for (xs, dist) in [(&uniform, "uniform"), (&normal, "normal/amax")] {
            time(&format!("nearest dynamic-8 signed, {dist}"), &dynamic, xs, false);
            time(&format!("stochastic dynamic-8 signed, {dist}"), &dynamic, xs, true);
            for (l, name) in [(&lin4, "linear-4 signed"), (&lin4u, "linear-4"), (&log4, "log-4")] {
                // a table used for a whole tensor: the warm-up pass builds its index
                let t = Table::new(l.clone()).unwrap();
                time(&format!("nearest {name} (indexed), {dist}"), &t, xs, false);
                assert!(t.index.get().is_some());
                time(&format!("stochastic {name} (indexed), {dist}"), &t, xs, true);
                // the small path alone (a per-block table never reaches the index)
                let mut s = 0u32;
                let t0 = std::time::Instant::now();
                for _ in 0..reps {
                    for b in std::hint::black_box(xs).chunks(256) {
                        let t = Table::new(l.clone()).unwrap();
                        for &x in b {
                            s = s.wrapping_add(t.nearest(x) as u32);
                        }
                    }
                }
                let dt = t0.elapsed().as_secs_f64();
                let name = format!("nearest {name} (new table per 256), {dist}");
                println!("{name:<44} {:5.0} M elem/s", (n * reps) as f64 / dt / 1e6);
                assert!(s > 0);
            }
        }
        let t0 = std::time::Instant::now();
        let mut s = 0usize;
        for i in 0..100_000 {
            let lv: Vec<f32> = (0..16).map(|k| k as f32 + i as f32).collect();
            s += Table::new(lv).unwrap().len();
        }
        println!("Table::new (16 levels): {:.0} ns", t0.elapsed().as_secs_f64() / 100_000.0 * 1e9);
        let t0 = std::time::Instant::now();
        for _ in 0..100 {
            s += Table::new(dynamic_like()).unwrap().len();
        }
        println!(
            "Table::new (255 levels, incl. building levels): {:.0} us",
            t0.elapsed().as_secs_f64() / 100.0 * 1e6
        );
        assert!(s > 0);
    }
}
