//! Memory bandwidth of this machine, 1 and 2 threads: the bound under the E sweep's large-E
//! end, where every step must stream the expert weights (forward and backward) and write
//! their gradient. `cargo run --release -p switchyard-bench --example bandwidth`
use rayon::prelude::*;
use std::time::Instant;

const BYTES: usize = 1 << 30;

fn best(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let n = BYTES / 4;
    let a = vec![1f32; n];
    let mut b = vec![0f32; n];
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let chunk = n / 64;
            let read = best(|| {
                // 16 independent sums, so the loop vectorises and is not add-latency bound
                let s: f32 = a
                    .par_chunks(chunk)
                    .map(|c| {
                        let mut acc = [0f32; 16];
                        for v in c.chunks_exact(16) {
                            for l in 0..16 {
                                acc[l] += v[l];
                            }
                        }
                        acc.iter().sum::<f32>()
                    })
                    .sum();
                std::hint::black_box(s);
            });
            let write = best(|| {
                b.par_chunks_mut(chunk).for_each(|c| c.fill(2.0));
                std::hint::black_box(&b);
            });
            let copy = best(|| {
                b.par_chunks_mut(chunk)
                    .zip(a.par_chunks(chunk))
                    .for_each(|(d, s)| d.copy_from_slice(s));
                std::hint::black_box(&b);
            });
            let gb = BYTES as f64 / 1e9;
            println!(
                "threads {threads}: read {:.1} GB/s, write {:.1} GB/s, copy {:.1} GB/s (read + write counted)",
                gb / read,
                gb / write,
                2.0 * gb / copy
            );
        });
    }
}
