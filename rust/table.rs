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
//! - Small tables (≤ `ACCEL_MIN_LEN` levels, e.g. per-block tables of 4–16 levels built for
//!   every block) store only the levels: `new` is one validation pass and no extra
//!   allocation. Lookups count midpoints branch-free over the whole table, using
//!   `m_k < x  ⟺  levels[k] + levels[k+1] < 2x` in f64 (halving and doubling are exact);
//!   counting `<` and `≤` together detects a tie without another load.
//! - Large tables (the 256-entry dynamic map) also get an acceleration structure: midpoints
//!   precomputed in f64 with two +inf sentinels, and a bucket index on the order-preserving
//!   key of the f32 bit pattern (`key = bits ^ 0x8000_0000` for +, `!bits` for −, so integer
//!   order = numeric order). Bucket `b` covers keys `[base + b·2^s, base + (b+1)·2^s)` from
//!   the first to the last level and stores `C(first value of the bucket)` with
//!   `C(x) = #{k : m_k < x}`: a lower bound of `C(x)` for every `x` in the bucket, since `C`
//!   is monotone. `s` is the smallest shift giving at most `MAX_BUCKETS` buckets (16 KiB).
//!   When no bucket holds more than two midpoints (true of the dynamic, linear and log maps
//!   tested), two branch-free compares against `mids[start]`, `mids[start+1]` finish the
//!   count exactly; otherwise ("crowded" tables) a forward scan does. All compares are exact
//!   f64 compares, so results equal the definition bit for bit. Bit-pattern buckets are
//!   logarithmic in value, which suits the dynamic and log maps (dense near zero) and is still
//!   fine for linear maps. Built by one merge sweep, O(buckets + levels), ~40 µs.
//!   Rejected: plain binary search (eight dependent, mispredicted compares per element); a
//!   uniform-in-value grid (useless for the dynamic map, whose levels span seven decades).
//! - `stochastic` reuses the midpoint count: level `c = C(x)` is the only level in
//!   `(m_{c-1}, m_c]`, so `lo` is `c` or `c-1` after one compare, and an exact level gives a
//!   zero fraction, so it never moves. The division stays (a reciprocal would change bits).

use crate::error::{Error, Result};

/// Tables with more levels than this get the bucket index.
const ACCEL_MIN_LEN: usize = 32;
/// Upper bound on the number of buckets of the index (one byte each).
const MAX_BUCKETS: u64 = 1 << 14;

/// Order-preserving map of an f32 bit pattern to u32 (NaN excluded by callers).
#[inline(always)]
fn key(x: f32) -> u32 {
    // Branch-free: flip every bit of a negative pattern, only the sign bit of a positive one.
    let b = x.to_bits();
    b ^ (((b as i32) >> 31) as u32 | 0x8000_0000)
}

/// Inverse of [`key`].
#[inline(always)]
fn from_key(k: u32) -> f32 {
    if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7fff_ffff)
    } else {
        f32::from_bits(!k)
    }
}

/// Bucket index over the midpoints of a large table.
#[derive(Debug, Clone)]
struct Accel {
    /// Midpoints in f64, followed by two `+inf` sentinels.
    mids: Vec<f64>,
    /// `key(levels[0])`.
    base: u32,
    /// Bucket width is `2^shift` keys.
    shift: u32,
    /// `starts[b]` = number of midpoints below the first value of bucket `b`.
    starts: Vec<u8>,
    /// Some bucket holds more than two midpoints (then a scan finishes the count).
    crowded: bool,
}

impl Accel {
    fn new(levels: &[f32]) -> Accel {
        let mut mids: Vec<f64> =
            levels.windows(2).map(|w| (w[0] as f64 + w[1] as f64) / 2.0).collect();
        mids.extend([f64::INFINITY; 2]);
        let base = key(levels[0]);
        let span = (key(levels[levels.len() - 1]) - base) as u64;
        let mut shift = 0u32;
        while (span >> shift) + 1 > MAX_BUCKETS {
            shift += 1;
        }
        let nb = ((span >> shift) + 1) as usize;
        let mut starts = Vec::with_capacity(nb);
        let mut c = 0usize;
        for b in 0..nb {
            let first = from_key(base + ((b as u32) << shift)) as f64;
            while mids[c] < first {
                c += 1;
            }
            starts.push(c as u8);
        }
        // The last bucket ends at levels[last], below which lie all the midpoints.
        let ends = starts[1..].iter().copied().chain([(levels.len() - 1) as u8]);
        let crowded = starts.iter().zip(ends).any(|(&a, b)| b - a > 2);
        Accel { mids, base, shift, starts, crowded }
    }

    /// `(#{k : m_k < x}, #{k : m_k <= x})` for `levels[0] < x < levels[last]`.
    #[inline(always)]
    fn counts(&self, x: f32) -> (usize, usize) {
        let b = ((key(x) - self.base) >> self.shift) as usize;
        let s = self.starts[b] as usize;
        let xd = x as f64;
        if self.crowded {
            let mut lt = s;
            while self.mids[lt] < xd {
                lt += 1;
            }
            return (lt, lt + (self.mids[lt] == xd) as usize);
        }
        // Every bucket holds at most two midpoints: branch-free compares against the two
        // candidates (mids are sorted, so the sums are the counts).
        let (m0, m1) = (self.mids[s], self.mids[s + 1]);
        let lt = s + (m0 < xd) as usize + (m1 < xd) as usize;
        let le = s + (m0 <= xd) as usize + (m1 <= xd) as usize;
        (lt, le)
    }
}

/// A codec over strictly ascending finite `f32` levels; the code of a level is its index.
#[derive(Debug, Clone)]
pub struct Table {
    levels: Vec<f32>,
    accel: Option<Box<Accel>>,
}

impl Table {
    /// Build a table. Errors (`"levels"`): fewer than 2 or more than 256 levels, a non-finite
    /// level, or levels not strictly ascending. Cheap for small tables (no allocation beyond
    /// `levels`); tables of more than 32 levels also build a lookup index.
    pub fn new(levels: Vec<f32>) -> Result<Table> {
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
        let accel = (n > ACCEL_MIN_LEN).then(|| Box::new(Accel::new(&levels)));
        Ok(Table { levels, accel })
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

    /// `(#{k : m_k < x}, #{k : m_k <= x})` for `levels[0] < x < levels[last]` (x not NaN).
    #[inline(always)]
    fn counts(&self, x: f32) -> (usize, usize) {
        if let Some(a) = &self.accel {
            return a.counts(x);
        }
        // Small table: branch-free linear count over midpoints computed on the fly, using
        // `m_k < x  <=>  levels[k] + levels[k+1] < 2x` in f64 (the halving is exact, and 2x
        // is exact), which saves the multiply.
        let l = &self.levels;
        let x2 = 2.0 * x as f64;
        let (mut lt, mut le) = (0usize, 0usize);
        for (&a, &b) in l[..l.len() - 1].iter().zip(&l[1..]) {
            let sum = a as f64 + b as f64;
            lt += (sum < x2) as usize;
            le += (sum <= x2) as usize;
        }
        (lt, le)
    }

    /// Index of the nearest level; an exact midpoint tie goes to the even index. Below the
    /// first level → 0, above the last → last index, NaN → 0.
    #[inline]
    pub fn nearest(&self, x: f32) -> u8 {
        let l = &self.levels;
        let last = l.len() - 1;
        if x.is_nan() || x <= l[0] {
            return 0;
        }
        if x >= l[last] {
            return last as u8;
        }
        // x lies in level lt's cell; lt < le means x == m_lt, a tie between lt and lt + 1,
        // which goes to the even one.
        let (lt, le) = self.counts(x);
        (lt + ((lt != le) as usize & lt & 1)) as u8
    }

    /// Stochastic rounding with random word `r`: an exact level returns its index; otherwise,
    /// between adjacent levels `lo < x < hi`, returns `hi` iff
    /// `r < trunc((x - lo) / (hi - lo) * 2^32)` (in f64). Outside the table: clamp. NaN → 0.
    #[inline]
    pub fn stochastic(&self, x: f32, r: u32) -> u8 {
        let l = &self.levels;
        let last = l.len() - 1;
        if x.is_nan() || x <= l[0] {
            return 0;
        }
        if x >= l[last] {
            return last as u8;
        }
        // Level c is the only level in (m_{c-1}, m_c], which holds x.
        // c = 0 implies x > levels[0] = l[c], so `c - 1` never underflows. When x == l[c]
        // exactly, lo = c and the fraction is 0, so the level never moves.
        let c = self.counts(x).0;
        let lo = c - (x < l[c]) as usize;
        let (a, b) = (l[lo] as f64, l[lo + 1] as f64);
        // In [0, 2^32]: `as i64` is the same truncation as `as u64` here, and cheaper on x86.
        let threshold = ((x as f64 - a) / (b - a) * 4294967296.0) as i64 as u64;
        (lo + ((r as u64) < threshold) as usize) as u8
    }

    /// The level of `code`. A code `≥ len` is the caller's to reject; it decodes to NaN.
    #[inline]
    pub fn decode(&self, code: u8) -> f32 {
        self.levels.get(code as usize).copied().unwrap_or(f32::NAN)
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

    #[test]
    fn crowded_buckets_are_scanned() {
        let t = Table::new(crowded()).unwrap();
        assert!(t.accel.as_ref().unwrap().crowded);
        // The common 8-bit maps take the two-compare path.
        let mut maps = vec![];
        for signed in [false, true] {
            maps.push(crate::dynamic::dynamic_levels(8, signed).unwrap());
            maps.push(crate::linear::linear_levels(8, signed, true).unwrap());
            maps.push(crate::logfmt::log_levels(8, signed, 0.9, true).unwrap());
        }
        maps.push(crate::linear::linear_levels(8, false, false).unwrap());
        maps.push(crate::logfmt::log_levels(8, false, 0.95, false).unwrap());
        for l in maps {
            let t = Table::new(l.clone()).unwrap();
            assert!(!t.accel.as_ref().unwrap().crowded, "{l:?}");
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
            assert_eq!(t.accel.is_some(), l.len() > ACCEL_MIN_LEN);
            let lo = l[0].min(-1.0);
            let hi = l[l.len() - 1].max(1.0);
            let mut xs = probes(&l);
            let n = if l.len() > ACCEL_MIN_LEN { 1_000_000 } else { 20_000 };
            for _ in 0..n {
                let u = (rng.unit() + 1.0) / 2.0;
                xs.push(lo + (hi - lo) * u * 1.1);
            }
            for _ in 0..n / 4 {
                // random bit patterns (any magnitude)
                xs.push(f32::from_bits(rng.next()));
            }
            for &x in &xs {
                assert_eq!(t.nearest(x), nearest_ref(&l, x), "x {x:e} table {l:?}");
                let r = rng.next();
                assert_eq!(t.stochastic(x, r), stochastic_ref(&l, x, r), "x {x:e}");
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
        let l = crate::dynamic::dynamic_levels(8, true).unwrap();
        let t = Table::new(l).unwrap();
        let mut rng = Lcg(5);
        let xs: Vec<f32> = (0..1 << 22).map(|_| rng.unit()).collect();
        let rs: Vec<u32> = (0..1 << 22).map(|_| rng.next()).collect();
        let mut out = vec![0u8; xs.len()];
        let reps = 20;
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            for (o, &x) in out.iter_mut().zip(std::hint::black_box(&xs)) {
                *o = t.nearest(x);
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        println!("nearest: {:.0} M elem/s", (xs.len() * reps) as f64 / dt / 1e6);
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            for ((o, &x), &r) in out.iter_mut().zip(std::hint::black_box(&xs)).zip(&rs) {
                *o = t.stochastic(x, r);
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        println!("stochastic: {:.0} M elem/s", (xs.len() * reps) as f64 / dt / 1e6);
        let small = Table::new((0..16).map(|i| i as f32 / 15.0).collect()).unwrap();
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            for (o, &x) in out.iter_mut().zip(std::hint::black_box(&xs)) {
                *o = small.nearest(x);
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        println!("nearest (16 levels): {:.0} M elem/s", (xs.len() * reps) as f64 / dt / 1e6);
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
