//! Side-by-side timing of the dispatch kernels alone (no candle, no routing): the kernels with
//! their default [`KernelOptions`] ("new") against the same kernels with one knob changed
//! ("old"), alternating calls on the same plan so both see the same machine load. To compare
//! against an older commit instead, build this example in a worktree of that commit and run
//! the two binaries alternately (docs/PERFORMANCE.md, "A/B against an old commit").
//!
//! Run with: `cargo run --release -p switchyard-bench --example kernel_ab -- 1`
//! (the argument is the thread count; `-- 1 1024` runs the E=1024 sweep point instead, and
//! `-- 1 1024 new` the current kernel alone; without a knob below, only the current kernel
//! runs). With `SWITCHYARD_AB_WAVE_ROWS=N`, "old" is the
//! current kernel with N rows per wave (`18446744073709551615`: one wave); with
//! `SWITCHYARD_AB_ROW_TILE=N`, the current kernel with row tiles of at most N rows; with
//! `SWITCHYARD_AB_WGRAD_JOBS=N`, with weight-gradient jobs of about 1/N of a wave's work; with
//! `SWITCHYARD_AB_PACKING=0`, without packing experts' weights once per wave; with
//! `SWITCHYARD_AB_OVERFILL=0`, with waves and tiles never over their budgets; with
//! `SWITCHYARD_AB_STREAM_MIN=N`, streaming final weight-gradient blocks of expert gradients
//! of N bytes and up (`18446744073709551615`: never); with
//! `SWITCHYARD_AB_RECYCLE_MIN=N`, with the allocator recycling freed blocks of N bytes and up
//! (the default is `Recycling::MIN_BYTES`).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchyard_kernels::alloc::Recycling;
use switchyard_kernels::dispatch as kernel;
use switchyard_kernels::{DispatchPlan, ExpertLayout, ExpertSpec, KernelOptions};

/// Large freed blocks are reused (as in `switchyard-bench`) unless `SWITCHYARD_RECYCLE=0`.
#[global_allocator]
static ALLOC: Recycling<std::alloc::System> = Recycling::new(std::alloc::System);

/// Timed calls of each kernel, alternating.
const REPS: usize = 5;
const TOKENS: usize = 4096;
const D_MODEL: usize = 512;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map_or(1, |s| s.parse().expect("thread count"));
    ALLOC.set_enabled(std::env::var("SWITCHYARD_RECYCLE").map_or(true, |v| v != "0"));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // optional: experts of a sweep point (k=8, h=256) instead of mixtral8 and fine64, and
    // `new` to time the current kernel alone (for profiling)
    let configs: Vec<(String, usize, usize, usize)> = match std::env::args().nth(2) {
        Some(e) => {
            let e: usize = e.parse().expect("number of experts");
            vec![(
                format!("sweep_e{e}"),
                e,
                (e / 4).clamp(2, 8),
                2048 / (e / 4).clamp(2, 8),
            )]
        }
        None => vec![
            ("mixtral8".into(), 8, 2, 1024),
            ("fine64".into(), 64, 8, 256),
        ],
    };
    // "old": the kernels with one knob changed, when an SWITCHYARD_AB_* variable says so (read
    // once here, outside the timed calls); the recycling threshold is the allocator's own
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<usize>().expect(name))
    };
    let current = KernelOptions::default();
    type Set = fn(&mut KernelOptions, usize);
    let knobs: [(&str, Set); 6] = [
        ("SWITCHYARD_AB_WAVE_ROWS", |o, v| o.wave_rows = v),
        ("SWITCHYARD_AB_WGRAD_JOBS", |o, v| o.wgrad_jobs = v),
        ("SWITCHYARD_AB_ROW_TILE", |o, v| o.row_tile = v),
        ("SWITCHYARD_AB_STREAM_MIN", |o, v| o.stream_min_bytes = v),
        ("SWITCHYARD_AB_PACKING", |o, v| o.packing = v != 0),
        ("SWITCHYARD_AB_OVERFILL", |o, v| o.overfill = v != 0),
    ];
    let old_opts = knobs.iter().find_map(|(name, set)| {
        env(name).map(|v| {
            let mut o = current;
            set(&mut o, v);
            o
        })
    });
    let recycle_min = env("SWITCHYARD_AB_RECYCLE_MIN");
    let only_new = std::env::args().nth(3).is_some_and(|a| a == "new")
        || (old_opts.is_none() && recycle_min.is_none());
    for (name, e, k, h) in configs {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let layout = ExpertLayout::new(D_MODEL, &vec![ExpertSpec::swiglu(h); e]);
        let mut pairs = Vec::new();
        for t in 0..TOKENS as u32 {
            let mut chosen: Vec<u32> = Vec::new();
            while chosen.len() < k {
                let x = rng.random_range(0..e as u32);
                if !chosen.contains(&x) {
                    chosen.push(x);
                }
            }
            pairs.extend(chosen.into_iter().map(|x| (t, x)));
        }
        let plan = DispatchPlan::from_assignments(TOKENS, e, &pairs).unwrap();
        let rand = |n: usize, rng: &mut ChaCha8Rng| {
            (0..n)
                .map(|_| rng.random_range(-0.5f32..0.5))
                .collect::<Vec<_>>()
        };
        let (x, w, p, gy) = (
            rand(TOKENS * D_MODEL, &mut rng),
            rand(plan.len(), &mut rng),
            rand(layout.total, &mut rng),
            rand(TOKENS * D_MODEL, &mut rng),
        );
        let new = || {
            let (_, s) = kernel::forward(&x, &w, &p, &layout, &plan, &current);
            kernel::backward(&x, &w, &p, &layout, &plan, &s, &gy, &current);
        };
        let old = || {
            if only_new {
                return;
            }
            let opts = old_opts.unwrap_or(current);
            if let Some(min) = recycle_min {
                ALLOC.set_min_bytes(min);
            }
            let (_, s) = kernel::forward(&x, &w, &p, &layout, &plan, &opts);
            kernel::backward(&x, &w, &p, &layout, &plan, &s, &gy, &opts);
            if recycle_min.is_some() {
                ALLOC.set_min_bytes(Recycling::<std::alloc::System>::MIN_BYTES);
            }
        };
        let (mut tn, mut to) = (Vec::new(), Vec::new());
        pool.install(|| {
            new();
            old();
            for _ in 0..REPS {
                let t = Instant::now();
                new();
                tn.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                old();
                to.push(t.elapsed().as_secs_f64());
            }
        });
        // how busy the threads were: job time summed over threads / (threads · wall)
        let streamed = kernel::streamed_blocks();
        let busy = pool.install(|| {
            switchyard_kernels::profile::set_enabled(true);
            switchyard_kernels::profile::take();
            let t = Instant::now();
            new();
            let wall = t.elapsed().as_secs_f64();
            let p = switchyard_kernels::profile::take();
            switchyard_kernels::profile::set_enabled(false);
            p.total_ns as f64 * 1e-9 / (wall * threads as f64)
        });
        println!(
            "{name:<9} threads {threads}: jobs busy {:.1} % of thread time, {} weight-gradient blocks streamed per call",
            busy * 100.0,
            kernel::streamed_blocks() - streamed
        );
        // the current kernel's forward and backward timed apart (medians)
        let (mut tf, mut tb) = (Vec::new(), Vec::new());
        pool.install(|| {
            for _ in 0..REPS {
                let t = Instant::now();
                let (_, s) = kernel::forward(&x, &w, &p, &layout, &plan, &current);
                tf.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                kernel::backward(&x, &w, &p, &layout, &plan, &s, &gy, &current);
                tb.push(t.elapsed().as_secs_f64());
            }
        });
        tf.sort_by(f64::total_cmp);
        tb.sort_by(f64::total_cmp);
        let fwd_flops = (TOKENS * k * 6 * D_MODEL * h) as f64;
        println!(
            "{name:<9} threads {threads}: current fwd {:6.1} ms ({:5.1} GFLOP/s), bwd {:6.1} ms ({:5.1} GFLOP/s)",
            tf[REPS / 2] * 1e3,
            fwd_flops / tf[REPS / 2] / 1e9,
            tb[REPS / 2] * 1e3,
            2.0 * fwd_flops / tb[REPS / 2] / 1e9
        );
        tn.sort_by(f64::total_cmp);
        to.sort_by(f64::total_cmp);
        let flops = 3.0 * (TOKENS * k * 6 * D_MODEL * h) as f64;
        let (n, o) = (tn[REPS / 2], to[REPS / 2]);
        println!(
            "{name:<9} threads {threads}: kernel fwd+bwd new {:7.1} ms ({:5.1} GFLOP/s), old {:7.1} ms ({:5.1} GFLOP/s), speedup {:.2}x",
            n * 1e3,
            flops / n / 1e9,
            o * 1e3,
            flops / o / 1e9,
            o / n
        );
    }
}
