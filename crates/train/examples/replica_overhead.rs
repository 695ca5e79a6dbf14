//! Step time with expert replicas off and on (`[replica] every`), on a config (default
//! `configs/demo.toml`, the demo's MoE model).
//!
//! ```text
//! cargo run --release -p switchyard-train --example replica_overhead -- [CONFIG] [STEPS] [ROUNDS]
//! ```
//!
//! Each round trains `STEPS` steps from the same start once per setting (in turn, so a busy
//! machine slows them alike) and records the median and the fastest step time of each;
//! printed: per setting the median over rounds of both, and their difference to `every = 0`.
//! Then the replica thread's own time per snapshot (submit until it has copied every expert),
//! which is what a refresh costs in CPU time besides the step.

use std::path::PathBuf;
use std::time::Instant;

use switchyard_train::trainer::replica::{expert_ranges, Replicas, ReplicatedLayer};
use switchyard_train::trainer::Trainer;
use switchyard_train::TrainConfig;

const SETTINGS: [u64; 3] = [0, 10, 1];

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = PathBuf::from(args.first().map_or("configs/demo.toml", String::as_str));
    let steps: u64 = args.get(1).map_or(Ok(40), |s| s.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let dir = std::env::temp_dir().join(format!("replica-overhead-{}", std::process::id()));
    let mut per_setting: Vec<Vec<f64>> = vec![Vec::new(); SETTINGS.len()];
    let mut fastest: Vec<Vec<f64>> = vec![Vec::new(); SETTINGS.len()];
    for round in 0..rounds {
        for (i, &every) in SETTINGS.iter().enumerate() {
            let mut cfg = TrainConfig::from_toml_file(&config, &[])?;
            cfg.run_dir = dir.join(format!("r{round}-e{every}"));
            cfg.replica.every = every;
            cfg.log.metrics = false;
            cfg.log.progress = false;
            cfg.train.steps = cfg.train.steps.max(steps);
            let mut t = Trainer::new(cfg)?;
            let mut times = Vec::new();
            for _ in 0..steps {
                let started = Instant::now();
                t.train_step()?;
                times.push(started.elapsed().as_secs_f64());
            }
            // the first step includes the replicas' start (one copy of the experts)
            let first = times[0];
            let m = median(&mut times[1..]);
            let min = times[1..].iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "round {round} every {every:>2}: median step {:.2} ms, fastest {:.2} ms (first step {:.2} ms)",
                1e3 * m,
                1e3 * min,
                1e3 * first
            );
            per_setting[i].push(m);
            fastest[i].push(min);
        }
    }
    let base = median(&mut per_setting[0].clone());
    println!("\nmedian over {rounds} rounds of the median step time ({steps} steps each):");
    let base_min = median(&mut fastest[0].clone());
    for (i, &every) in SETTINGS.iter().enumerate() {
        let m = median(&mut per_setting[i]);
        let f = median(&mut fastest[i]);
        println!(
            "replica.every = {every:>2}: median {:.2} ms/step ({:+.2}% vs off), fastest {:.2} ms ({:+.2}%)",
            1e3 * m,
            100.0 * (m / base - 1.0),
            1e3 * f,
            100.0 * (f / base_min - 1.0)
        );
    }
    thread_time(&config, &dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The replica thread's time per snapshot of the config's model (after one step, so the
/// moments are not zero), over 20 snapshots: median and fastest.
fn thread_time(
    config: &std::path::Path,
    dir: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = TrainConfig::from_toml_file(config, &[])?;
    cfg.run_dir = dir.join("thread");
    cfg.log.metrics = false;
    cfg.log.progress = false;
    let mut t = Trainer::new(cfg)?;
    t.train_step()?;
    let names = t.store.all();
    let layers: Vec<ReplicatedLayer> = t
        .model
        .moe_layers()
        .enumerate()
        .filter_map(|(i, m)| {
            let id = m.experts.packed.as_tensor().id();
            let (param, var) = names.iter().find(|(_, v)| v.as_tensor().id() == id)?;
            Some(ReplicatedLayer {
                layer: i,
                param: param.clone(),
                var: var.clone(),
                experts: expert_ranges(&m.experts.layout),
            })
        })
        .collect();
    let floats: usize = layers.iter().map(|l| 3 * l.var.elem_count()).sum();
    let mut r = Replicas::start(1, layers.clone())?;
    let mut times = Vec::new();
    for step in 0..20 {
        let mut snaps = Vec::new();
        for l in &layers {
            snaps.extend(t.optimizer().snapshot(&l.param)?);
        }
        let started = Instant::now();
        r.submit(step, snaps);
        r.wait_idle();
        times.push(started.elapsed().as_secs_f64());
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "replica thread: {:.2} ms per snapshot (median of 20; fastest {:.2} ms) for {} layers, {:.1} MB of weights + moments",
        1e3 * median(&mut times),
        1e3 * min,
        layers.len(),
        floats as f64 * 4.0 / 1e6
    );
    Ok(())
}
