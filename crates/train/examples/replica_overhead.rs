//! Step time with expert replicas off and on (`[replica] every`), on a config (default
//! `configs/demo.toml`, the demo's MoE model).
//!
//! ```text
//! cargo run --release -p switchyard-train --example replica_overhead -- [CONFIG] [STEPS] [ROUNDS]
//! ```
//!
//! Each round trains `STEPS` steps from the same start once per setting (in turn, so a busy
//! machine slows them alike) and records the median step time of each; printed: the median
//! over rounds per setting and its difference to `every = 0`.

use std::path::PathBuf;
use std::time::Instant;

use switchyard_train::trainer::Trainer;
use switchyard_train::TrainConfig;

const SETTINGS: [u64; 4] = [0, 50, 10, 1];

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
            println!(
                "round {round} every {every:>2}: median step {:.2} ms (first step {:.2} ms)",
                1e3 * m,
                1e3 * first
            );
            per_setting[i].push(m);
        }
    }
    let base = median(&mut per_setting[0].clone());
    println!("\nmedian over {rounds} rounds of the median step time ({steps} steps each):");
    for (i, &every) in SETTINGS.iter().enumerate() {
        let m = median(&mut per_setting[i]);
        println!(
            "replica.every = {every:>2}: {:.2} ms/step ({:+.2}% vs off)",
            1e3 * m,
            100.0 * (m / base - 1.0)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
