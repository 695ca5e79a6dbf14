//! The gate matmul in fixed 16-column blocks (`switchyard_core::gate::matmul_by_row_blocks`,
//! which keeps an expert's logit independent of the expert count) against one plain matmul,
//! side by side, for a few (T, d, E).
//!
//!     cargo run --release -p switchyard-bench --example gate_blocks

use std::time::Instant;

use candle_core::{Device, Tensor};
use switchyard_core::gate::matmul_by_row_blocks;

fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    println!("| T | d | E | plain ms | blocked ms | blocked / plain |");
    println!("|---|---|---|---|---|---|");
    for &(t, d, e) in &[
        (4096, 256, 8),
        (4096, 512, 8),
        (4096, 512, 64),
        (4096, 1024, 64),
        (4096, 512, 256),
    ] {
        let x = Tensor::randn(0f32, 1.0, (t, d), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1.0, (e, d), &Device::Cpu).unwrap();
        let plain = best_of(7, || {
            x.matmul(&w.t().unwrap()).unwrap();
        });
        let blocked = best_of(7, || {
            matmul_by_row_blocks(&x, &w).unwrap();
        });
        println!(
            "| {t} | {d} | {e} | {:.3} | {:.3} | {:.2} |",
            plain * 1e3,
            blocked * 1e3,
            blocked / plain
        );
    }
}
