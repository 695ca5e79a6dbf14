//! GFLOP/s of `gemm` on the dispatch kernels' tile shapes against Switchyard's own indexed-row
//! GEMM (`dispatch::ukr`, B packed once per expert, A rows read through a token index), one
//! process. `cargo run --release -p switchyard-bench --example gemm_shapes`
use gemm::{gemm, Parallelism};
use std::time::Instant;
use switchyard_core::dispatch::ukr;

#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    a: &[f32],
    (ars, acs): (usize, usize),
    b: &[f32],
    (brs, bcs): (usize, usize),
) {
    unsafe {
        gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

fn best(flop: f64, mut f: impl FnMut()) -> f64 {
    let reps = ((2e9 / flop) as usize).max(3);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    flop / best / 1e9
}

fn main() {
    let tokens = 4096;
    // (name, rows per expert tile, n, k, B read transposed, tiles sharing one packed B)
    let shapes: Vec<(&str, usize, usize, usize, bool, usize)> = vec![
        ("fine64 fwd up   256x512x512 B^T", 256, 512, 512, true, 2),
        ("fine64 fwd down 256x512x256 B", 256, 512, 256, false, 2),
        ("fine64 bwd dA   256x256x512 B^T", 256, 256, 512, true, 2),
        ("fine64 bwd dX   256x512x512 B", 256, 512, 512, false, 2),
        ("mix8 fwd up     256x2048x512 B^T", 256, 2048, 512, true, 4),
        ("mix8 fwd down   256x512x1024 B", 256, 512, 1024, false, 4),
        ("mix8 bwd dA     256x1024x512 B^T", 256, 1024, 512, true, 4),
    ];
    for (name, m, n, k, bt, share) in shapes {
        // A: m rows picked from a [tokens, k] matrix (ours reads them in place; gemm gets a
        // gathered copy, as the kernels make today)
        let x: Vec<f32> = (0..tokens * k).map(|i| ((i % 97) as f32) * 0.01).collect();
        let idx: Vec<usize> = (0..m).map(|i| (i * 37 + 11) % tokens).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 89) as f32) * 0.01).collect();
        let bst = if bt { (1, k) } else { (n, 1) };
        let mut c = vec![0f32; m * n];
        let mut xe = vec![0f32; m * k];
        let flop = 2.0 * (m * n * k) as f64;
        let g = best(flop, || {
            for (r, &t) in idx.iter().enumerate() {
                xe[r * k..(r + 1) * k].copy_from_slice(&x[t * k..(t + 1) * k]);
            }
            mm(m, n, k, &mut c, &xe, (k, 1), &b, bst);
        });
        let rows: Vec<*const f32> = idx.iter().map(|&t| x[t * k..].as_ptr()).collect();
        let mut packed = vec![0f32; ukr::packed_len(k, n)];
        let mut tile = 0;
        let o = best(flop, || {
            // one pack per `share` tiles, as a wave packs an expert once for all its tiles
            if tile % share == 0 {
                if bt {
                    ukr::pack_transposed(&mut packed, &b, k, k, n, 0..ukr::panels(n));
                } else {
                    unsafe {
                        ukr::pack_rows(
                            &mut packed,
                            k,
                            n,
                            |kk| b[kk * n..].as_ptr(),
                            0..ukr::panels(n),
                        )
                    };
                }
            }
            tile += 1;
            unsafe { ukr::gemm_ind(m, n, k, &mut c, n, false, &rows, 1, &packed) };
        });
        let nopack = best(flop, || unsafe {
            ukr::gemm_ind(m, n, k, &mut c, n, false, &rows, 1, &packed)
        });
        println!("{name:36} gemm+gather {g:6.1}  ours {o:6.1} ({:.2}x)  ours w/o packing {nopack:6.1} GFLOP/s", o / g);
    }
}
