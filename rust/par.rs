//! The thread pool the core runs on, and the fixed chunking it uses.
//!
//! Results never depend on the number of threads: work is split into chunks of a
//! fixed size (`CHUNK` elements, independent of the pool), and anything random is keyed
//! by the global element index (see `rng.rs`), never by thread or chunk.

use crate::error::{Error, Result};
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{Arc, Mutex, OnceLock};

/// Elements per parallel work item. A multiple of 8 (so packed chunks end on byte
/// boundaries for every bit width) and of 4 (one Philox call per 4 elements).
pub const CHUNK: usize = 1 << 15;

static POOL: OnceLock<Mutex<Arc<ThreadPool>>> = OnceLock::new();

fn build(n: usize) -> Result<Arc<ThreadPool>> {
    ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("lowfp-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::value("n", format!("could not start {n} threads: {e}")))
}

fn default_threads() -> usize {
    std::env::var("LOWFP_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool() -> Arc<ThreadPool> {
    let cell = POOL.get_or_init(|| {
        Mutex::new(build(default_threads()).unwrap_or_else(|_| build(1).expect("one thread")))
    });
    cell.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Use `n` threads from now on (`0` = all available cores).
pub fn set_num_threads(n: usize) -> Result<()> {
    if n > 4096 {
        return Err(Error::value("n", format!("expected 0..=4096 threads, got {n}")));
    }
    let n = if n == 0 { default_threads() } else { n };
    let new = build(n)?;
    let cell = POOL.get_or_init(|| Mutex::new(new.clone()));
    *cell.lock().unwrap_or_else(|p| p.into_inner()) = new;
    Ok(())
}

/// Number of threads the core uses.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Run `f` inside the core's pool (so rayon calls inside it use that pool).
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}
