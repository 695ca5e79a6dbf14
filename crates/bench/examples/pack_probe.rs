//! The kernels' weight GEMMs at their tile shapes (256 rows, 8 experts of 1024 rows each),
//! 1 thread, alternating: `gemm` called per tile (it packs the expert's weights on every call)
//! against `switchyard_kernels::packed` (weights packed once per expert, then every
//! tile through `gemm`'s microkernels), and how much of the latter the packing itself takes.
//!
//! Run with: `cargo run --release -p switchyard-bench --example pack_probe`
use std::time::Instant;
use switchyard_kernels::gemm::{mm, GemmFloat};
use switchyard_kernels::packed::{mm_packed, PackedB};

fn fill(n: usize, s: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(s) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn main() {
    let e = 8;
    let rows = 1024;
    let ukr = f32::microkernels().unwrap();
    // (name, k, n, B strides given n and k): up = x·W_upᵀ (W_up [n, k]), down = a·W2t (W2t [k, n])
    for &(name, k, n, transposed) in &[
        ("mixtral8 up   ", 512usize, 2048usize, true),
        ("mixtral8 down ", 1024, 512, false),
        ("mixtral8 dx   ", 2048, 512, false),
        ("fine64 up     ", 512, 512, true),
        ("fine64 down   ", 256, 512, false),
    ] {
        let strides = if transposed { (1, k) } else { (n, 1) };
        let ws: Vec<Vec<f32>> = (0..e).map(|i| fill(k * n, i as u32)).collect();
        let x = fill(rows * k, 99);
        let mut out = vec![0f32; rows * n];
        for &tile in &[256usize] {
            let (mut tg, mut tp, mut tk) = (f64::MAX, f64::MAX, f64::MAX);
            let mut bufs: Vec<Vec<f32>> = (0..e).map(|_| Vec::new()).collect();
            for _ in 0..7 {
                let t = Instant::now();
                for w in &ws {
                    for r0 in (0..rows).step_by(tile) {
                        mm(
                            tile,
                            n,
                            k,
                            &mut out[r0 * n..],
                            false,
                            &x[r0 * k..],
                            (k, 1),
                            w,
                            strides,
                            false,
                        );
                    }
                }
                tg = tg.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                for (w, buf) in ws.iter().zip(bufs.iter_mut()) {
                    let mut pb = PackedB::new(std::mem::take(buf), k, n, tile, ukr);
                    pb.pack(w, strides);
                    for r0 in (0..rows).step_by(tile) {
                        mm_packed(tile, &mut out[r0 * n..], false, &x[r0 * k..], k, &pb);
                    }
                    *buf = pb.into_buf();
                }
                tp = tp.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                for (w, buf) in ws.iter().zip(bufs.iter_mut()) {
                    let mut pb = PackedB::new(std::mem::take(buf), k, n, tile, ukr);
                    pb.pack(w, strides);
                    *buf = pb.into_buf();
                }
                tk = tk.min(t.elapsed().as_secs_f64());
            }
            let flops = (e * rows * n * k * 2) as f64;
            println!(
                "{name} tile {tile}: gemm {:6.1} GFLOP/s, packed once {:6.1} GFLOP/s ({:.2}x), packing alone {:.1} % of packed",
                flops / tg / 1e9,
                flops / tp / 1e9,
                tg / tp,
                tk / tp * 100.0
            );
        }
    }
}
