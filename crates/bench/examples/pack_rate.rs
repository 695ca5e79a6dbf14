//! How fast `switchyard_kernels::packed` packs expert weights from memory: 256 distinct `[512, 512]`
//! f32 matrices (256 MiB, more than the caches hold) packed for the microkernels as the
//! forward's up projection reads them (transposed: `B = Wᵀ`, strides `(1, k)`) and as the
//! backward's `dX` reads them (plain rows: strides `(n, 1)`), 1 thread, best of 3 passes, in
//! GB/s of weights read.
//!
//! Run with: `cargo run --release -p switchyard-bench --example pack_rate`
use std::time::Instant;
use switchyard_kernels::gemm::GemmFloat;
use switchyard_kernels::packed::PackedB;

fn main() {
    let (count, k, n) = (256, 512, 512);
    let ukr = f32::microkernels().expect("no AVX-512 / AVX2 microkernels on this CPU");
    let ws: Vec<Vec<f32>> = (0..count)
        .map(|i| (0..k * n).map(|j| ((i * 7 + j) % 1000) as f32).collect())
        .collect();
    let mut pb = Some(PackedB::new(Vec::new(), k, n, 256, ukr));
    for round in 0..2 {
        for (name, strides) in [("transposed", (1, k)), ("plain rows", (n, 1))] {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for w in &ws {
                    let mut p = PackedB::new(pb.take().unwrap().into_buf(), k, n, 256, ukr);
                    p.pack(w, strides);
                    pb = Some(p);
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            let gb = (count * k * n * 4) as f64 / 1e9;
            println!(
                "round {round} {name}: {:.1} ms for {count} matrices, {:.1} GB/s",
                best * 1e3,
                gb / best
            );
        }
    }
}
