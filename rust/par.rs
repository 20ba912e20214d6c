//! The thread pools the core runs on, and the fixed chunking it uses.
//!
//! Results never depend on the number of threads: work is split into chunks of a
//! fixed size (`CHUNK` elements, independent of the pool), and anything random is keyed
//! by the global element index (see `rng.rs`), never by thread or chunk.
//!
//! Small calls stay on the calling thread (`SERIAL_MAX`): entering the pool costs more
//! than the work (an optimizer step over many small tensors is dominated by it). The
//! serial path runs the same per-item code on the same items, so its bits are the same.

use crate::error::{Error, Result};
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{Arc, Mutex, OnceLock};

/// Elements per parallel work item. A multiple of 8 (so packed chunks end on byte
/// boundaries for every bit width) and of 4 (one Philox call per 4 elements).
pub const CHUNK: usize = 1 << 15;

/// The core's pools: `main` (`n` threads) runs rayon calls ([`install`]); `helpers` (`n − 1`,
/// none for one thread) join the calling thread in [`try_zip_chunks`]. Separate so that every
/// helper takes part in every such call, and so stays awake between calls ([`linger`]).
#[derive(Clone)]
struct Pools {
    main: Arc<ThreadPool>,
    helpers: Option<Arc<ThreadPool>>,
}

static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();

fn build(n: usize, name: &'static str) -> Result<Arc<ThreadPool>> {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(move |i| format!("lowfp-{name}{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::value("n", format!("could not start {n} threads: {e}")))
}

fn build_pools(n: usize) -> Result<Pools> {
    let helpers = if n > 1 { Some(build(n - 1, "helper-")?) } else { None };
    Ok(Pools { main: build(n, "")?, helpers })
}

fn default_threads() -> usize {
    std::env::var("LOWFP_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Set in a child process after `fork` (lowfp's `os.register_at_fork` hook calls
/// [`forked`]): the pools' threads did not survive it, so a call that entered them would
/// wait for ever. The next use builds new pools of the same size instead.
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Note that this process is the child of a `fork`; only sets a flag (no lock, no allocation).
pub fn forked() {
    FORKED.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn init_pools(n: usize) -> Pools {
    build_pools(n).unwrap_or_else(|_| build_pools(1).expect("one thread"))
}

/// Put `new` in place of `pools`. After a fork the old pools are forgotten, not dropped:
/// dropping signals threads that do not exist in the child, through locks the parent's
/// threads may have held at the fork.
fn replace_pools(pools: &mut Pools, new: Pools) {
    let old = std::mem::replace(pools, new);
    if FORKED.swap(false, std::sync::atomic::Ordering::SeqCst) {
        std::mem::forget(old);
    }
}

fn pools<R>(f: impl FnOnce(&Pools) -> R) -> R {
    let cell = POOLS.get_or_init(|| Mutex::new(init_pools(default_threads())));
    let mut pools = cell.lock().unwrap_or_else(|p| p.into_inner());
    if FORKED.load(std::sync::atomic::Ordering::SeqCst) {
        let n = pools.main.current_num_threads();
        replace_pools(&mut pools, init_pools(n));
    }
    f(&pools)
}

/// Use `n` threads from now on (`0` = all available cores).
pub fn set_num_threads(n: usize) -> Result<()> {
    if n > 4096 {
        return Err(Error::value("n", format!("expected 0..=4096 threads, got {n}")));
    }
    let n = if n == 0 { default_threads() } else { n };
    let new = build_pools(n)?;
    let cell = POOLS.get_or_init(|| Mutex::new(new.clone()));
    replace_pools(&mut cell.lock().unwrap_or_else(|p| p.into_inner()), new);
    Ok(())
}

/// Number of threads the core uses.
pub fn num_threads() -> usize {
    pools(|p| p.main.current_num_threads())
}

/// Calls whose work totals at most this many elements run on the calling thread.
///
/// Measured (2-core Xeon VM, release build; fused AdamW, two Dynamic(8) states, block 64):
/// handing a call to the pool costs ~4.5 µs (`all_finite` of 64 values: 4.4 µs through the
/// pool, 0.2 µs on the calling thread); the step itself costs ~2.1 ns per element on one
/// thread. A single tensor of at most `CHUNK` elements is one work item, so the pool only
/// adds its cost (32Ki: 72 µs vs 70 µs); at 64Ki it halves the time on 2 threads (77 vs
/// 138 µs). Many 64-element tensors are dominated by the (serial) argument parsing: 16Ki
/// in all 300 µs pooled vs 289 µs here, 32Ki 695 vs 633–677 µs, 128K 3.4–3.7 vs 4.2 ms.
/// So 32Ki (= `CHUNK`): nothing below it gains from the pool. Rejected: a threshold per
/// core count (results never depend on it, timings would, for little gain), and a larger
/// one for `all_finite` alone (serial up to ~128Ki there, but it saves ~3 µs per call).
pub const SERIAL_MAX: usize = CHUNK;

/// How long the caller of [`try_zip_chunks`] spins, at most, for the helpers to finish
/// before it sleeps. Measured (float32 → float16 encodes, 2 threads, both builds in one
/// process, 2 rounds): 64Ki values 6.3–6.9 → 4.2 µs, 256Ki 14.5–15.3 → 9.3 µs, 1Mi 116–120
/// → 96–117 µs, 16Mi the same within 2% (torch's cast: 3.5, 10.2–10.5, 97–130 µs, and
/// within 1% of lowfp at 16Mi).
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// How long a helper of [`try_zip_chunks`] stays awake after a call for the next one. A
/// helper that has gone to sleep is woken by the caller, which costs the caller ~30 µs in
/// the system call on this VM and the helper ~30 µs more before it starts (traced at 16Mi
/// float16 encodes, 2 threads), out of ~2 ms. Measured (float32 → float16, 16Mi, 2 threads,
/// 550 calls back to back, one process per build, 3 runs): 10th percentile / median / 90th
/// percentile 1966–2006 / 2037–2095 / 2171–2226 µs lingering against 2007–2091 / 2101–2190 /
/// 2440–4219 µs without (at the 90th percentile of two runs the helper missed whole calls;
/// torch's cast: 2061–2121 / 2154–2220 / 2295–2382); 256Ki and 1Mi elements the same within
/// noise (there rayon's own idle rounds keep the helper awake between calls). OpenMP runtimes
/// do the same (`OMP_WAIT_POLICY`, `KMP_BLOCKTIME`).
const LINGER: std::time::Duration = std::time::Duration::from_micros(200);

/// Counts the calls that enter a pool ([`try_zip_chunks`] and [`install`]): a lingering
/// helper leaves when it changes, so that it neither delays the next call's start nor takes
/// a core from [`install`]'s threads.
static ENTERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Spin until a call enters a pool (`ENTERED` is no longer `seen`) or `limit` has passed.
fn linger(seen: u64, limit: std::time::Duration) {
    use std::sync::atomic::Ordering::Relaxed;
    let t = std::time::Instant::now();
    while ENTERED.load(Relaxed) == seen && t.elapsed() < limit {
        for _ in 0..64 {
            std::hint::spin_loop();
        }
    }
}

/// Whether a call over `elems` elements in all runs on the calling thread.
pub fn serial(elems: usize) -> bool {
    elems <= SERIAL_MAX
}

/// Whether self-contained chunk loops (no rayon call inside) run on the calling thread:
/// small calls, and every call while the pool has one thread (handing work to a lone pool
/// thread only adds a cross-thread wake-up; the chunks, and so the results, are the same).
fn inline(elems: usize) -> bool {
    serial(elems) || num_threads() == 1
}

/// `f` on every item: in the pool, or on the calling thread when the items hold at most
/// `SERIAL_MAX` elements together (`elems`). Items must not depend on each other, so both
/// give the same results; the first error (in item order) is returned serially, some
/// item's error in the pool.
pub fn try_for_each_mut<T: Send, E: Send>(
    items: &mut [T],
    elems: usize,
    f: impl Fn(&mut T) -> std::result::Result<(), E> + Sync + Send,
) -> std::result::Result<(), E> {
    use rayon::prelude::*;
    if inline(elems) {
        items.iter_mut().try_for_each(f)
    } else {
        install(|| items.par_iter_mut().try_for_each(f))
    }
}

/// `f(k, a_k, b_k)` on the k-th chunks of `a` (`ca` elements each) and `b` (`cb` each,
/// zipped: the shorter decides the count): on the calling thread when the call holds at most
/// `SERIAL_MAX` elements (`elems`) or the pool has one thread, without touching the pool at
/// all (entering a pool from outside costs a cross-thread wake-up: 10–60 µs). Otherwise the
/// calling thread and `threads − 1` jobs in the pool each take the chunks of one contiguous
/// range, then help with the others' ranges until none is left: the caller starts at once
/// and a worker joins when it wakes up (handing the whole call to the pool made 2 threads
/// slower than 1 on float16 encodes of 64Ki and 256Ki elements: 45 µs at 256Ki, against
/// 22–32 µs on one thread and 20 µs this way). One range per thread rather than one shared
/// counter: at 1Mi elements, 2 threads, repeated calls (float16 encode and float8_e4m3fn
/// decode, 3 A/B rounds) made 6.3–8.4 and 7.2–11.9 G/s against 5.3–6.3 and 5.9–7.8; at 4Mi
/// and 16Mi the same within noise. The chunking is the same either way, so results are too,
/// and the error returned is the one of the first failing chunk: a failure stops the chunks
/// after it, and every chunk before it still runs to its end.
pub fn try_zip_chunks<A: Sync, B: Send, E: Send>(
    a: &[A],
    ca: usize,
    b: &mut [B],
    cb: usize,
    elems: usize,
    f: impl Fn(usize, &[A], &mut [B]) -> std::result::Result<(), E> + Sync + Send,
) -> std::result::Result<(), E> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
    let helpers = if serial(elems) { None } else { pools(|p| p.helpers.clone()) };
    let Some(pool) = helpers else {
        return a
            .chunks(ca)
            .zip(b.chunks_mut(cb))
            .enumerate()
            .try_for_each(|(k, (x, y))| f(k, x, y));
    };
    // each pair of chunks, taken once
    let slots: Vec<Mutex<Option<_>>> =
        a.chunks(ca).zip(b.chunks_mut(cb)).map(|p| Mutex::new(Some(p))).collect();
    let parts = (pool.current_num_threads() + 1).min(slots.len()).max(1);
    // participant p's own chunks are the p-th of `parts` contiguous ranges, taken from the
    // front by `next[p]`; when its range is done it helps with the others'. A contiguous
    // range per thread keeps each thread's part of an input that fits in the caches in
    // that thread's own caches from call to call.
    let bounds: Vec<usize> = (0..=parts).map(|p| p * slots.len() / parts).collect();
    let next: Vec<AtomicUsize> = bounds[..parts].iter().map(|&b| AtomicUsize::new(b)).collect();
    // chunks from `limit` on are skipped: the first failing chunk lowers it, and every chunk
    // below it still runs, so the error returned is the first failing chunk's whatever the
    // timing
    let limit = AtomicUsize::new(slots.len());
    let first_err: Mutex<Option<(usize, E)>> = Mutex::new(None);
    let work = |me: usize| {
        for p in (me..parts).chain(0..me) {
            loop {
                let k = next[p].fetch_add(1, Relaxed);
                if k >= bounds[p + 1] || k >= limit.load(Relaxed) {
                    break;
                }
                let taken = slots[k].lock().unwrap_or_else(|p| p.into_inner()).take();
                let Some((x, y)) = taken else { continue };
                if let Err(e) = f(k, x, y) {
                    limit.fetch_min(k, Relaxed);
                    let mut g = first_err.lock().unwrap_or_else(|p| p.into_inner());
                    if g.as_ref().is_none_or(|(j, _)| k < *j) {
                        *g = Some((k, e));
                    }
                }
            }
        }
    };
    // the caller is participant 0 and starts at once; a helper takes the next free number,
    // and when done queues a linger for itself (it runs next on that thread, once the job
    // has left). When its work is done the caller spins (at most SPIN) until every helper
    // that joined has left, before the scope's own wait, which sleeps: a sleeping caller is
    // woken by the last helper, a cross-thread wake-up
    let (joined, left) = (AtomicUsize::new(1), AtomicUsize::new(1));
    let call = ENTERED.fetch_add(1, SeqCst) + 1;
    pool.in_place_scope(|s| {
        for _ in 1..parts {
            s.spawn(|_| {
                work(joined.fetch_add(1, SeqCst) % parts);
                rayon::spawn(move || linger(call, LINGER));
                left.fetch_add(1, SeqCst);
            });
        }
        work(0);
        let t = std::time::Instant::now();
        while left.load(SeqCst) < joined.load(SeqCst) && t.elapsed() < SPIN {
            std::hint::spin_loop();
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Run `f` inside the core's pool, or on the calling thread when the call holds at most
/// `SERIAL_MAX` elements (`elems`). Only for an `f` that runs inline (no rayon call) on so
/// few elements, as `pack::pack` does: rayon outside the pool would start its global one.
pub fn install_if<R: Send>(elems: usize, f: impl FnOnce() -> R + Send) -> R {
    if serial(elems) {
        f()
    } else {
        install(f)
    }
}

/// Run `f` inside the core's pool (so rayon calls inside it use that pool).
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    ENTERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    pools(|p| p.main.clone()).install(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lingering_helper_leaves_when_a_call_enters_a_pool() {
        use std::time::{Duration, Instant};
        let seen = ENTERED.load(std::sync::atomic::Ordering::SeqCst);
        let t = Instant::now();
        let h = std::thread::spawn(move || linger(seen, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        install(|| ());
        h.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn zip_chunks_visits_every_chunk_once_and_reports_the_first_error() {
        // the core's pool (as many threads as cores unless LOWFP_NUM_THREADS says otherwise)
        let n = 40 * CHUNK + 5;
        let a: Vec<u32> = (0..n as u32).collect();
        let mut b = vec![0u64; n];
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let ok: std::result::Result<(), usize> =
            try_zip_chunks(&a, CHUNK, &mut b, CHUNK, n, |_, x, y| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = v as u64 * 2;
                }
                Ok(())
            });
        assert_eq!(ok, Ok(()));
        assert_eq!(seen.into_inner(), 41);
        assert!(b.iter().enumerate().all(|(i, &v)| v == 2 * i as u64));
        // always the first failing chunk's error, whichever thread gets to a failure first
        // (with 2 or more threads, 25 and 30 lie in a later thread's range than 3, 7 and 9;
        // chunks 0..3 are slowed down in one case so that 25 fails first)
        for (fail, first) in [(&[7, 9, 30][..], 7), (&[3, 25], 3), (&[30], 30), (&[40], 40)] {
            for _ in 0..20 {
                let r = try_zip_chunks(&a, CHUNK, &mut b, CHUNK, n, |k, _, _| {
                    if first == 3 && k < 3 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    if fail.contains(&k) {
                        return Err(k);
                    }
                    Ok(())
                });
                assert_eq!(r, Err(first));
            }
        }
    }
}
