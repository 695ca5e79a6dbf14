//! Timing helpers: medians of repeated runs, and running under a fixed thread count.

use std::time::Instant;

use crate::{BenchError, Result};

/// Runs `f` once to warm up (caches, workspaces, page faults), then `reps` timed times;
/// returns the median wall time in seconds.
pub fn median_secs<E>(
    reps: usize,
    mut f: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<f64, E> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Times `a` and `b` alternately, `reps` times each after one warm-up of each, and returns
/// their median wall times: on a machine with other load, both see the same conditions, so
/// their ratio is far steadier than that of two separate medians.
pub fn paired_median_secs<E>(
    reps: usize,
    mut a: impl FnMut() -> std::result::Result<(), E>,
    mut b: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<(f64, f64), E> {
    a()?;
    b()?;
    let (mut ta, mut tb) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps {
        let start = Instant::now();
        a()?;
        ta.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        b()?;
        tb.push(start.elapsed().as_secs_f64());
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    Ok((ta[ta.len() / 2], tb[tb.len() / 2]))
}

/// Runs `f` inside a rayon pool of `threads` threads with `RAYON_NUM_THREADS` set to the same
/// number: our kernels and `gemm`'s `Parallelism::Rayon(0)` use the pool, while candle's CPU
/// matmul asks `candle_core::utils::get_num_threads()`, which reads that variable on each call.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|source| BenchError::Pool { threads, source })?;
    // Set while no other thread of ours is running candle ops (the pool is idle).
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let out = pool.install(|| {
        debug_assert_eq!(candle_core::utils::get_num_threads(), threads);
        debug_assert_eq!(rayon::current_num_threads(), threads);
        f()
    });
    Ok(out)
}
