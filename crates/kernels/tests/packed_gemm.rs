//! `packed`: the GEMM over weights packed once agrees with the plain triple loop,
//! for f32 and f64, on the AVX-512 and the AVX2+FMA microkernels, over shapes that leave
//! partial panels and partial column groups, several depth blocks, both ways of reading the
//! weights (row-major and transposed), overwrite and accumulate, and panels packed in pieces.
//!
//! One test function per ISA switch would race (the switch is process-wide), so one function.

use switchyard_kernels::gemm::{mm, set_isa, uses_avx512, GemmFloat, GemmIsa};
use switchyard_kernels::packed::{mm_packed, mm_packed_strided, mm_ref, PackedB};

fn vals<T: num_traits::Float>(n: usize, seed: u64) -> Vec<T> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            T::from(((s >> 33) % 2001) as f64 / 1000.0 - 1.0).unwrap()
        })
        .collect()
}

/// max |a − b| / max |b|
fn rel<T: num_traits::Float>(a: &[T], b: &[T]) -> f64 {
    let scale = b.iter().fold(0f64, |m, x| m.max(x.to_f64().unwrap().abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| {
        m.max((x.to_f64().unwrap() - y.to_f64().unwrap()).abs())
    }) / scale.max(1e-30)
}

fn check<T: GemmFloat + num_traits::Float>(tol: f64, what: &str) -> usize {
    let ukr = T::microkernels().expect("x86 CI machines have AVX2+FMA");
    let mut cases = 0;
    // (m rows of A, n columns of B, k depth): partial vectors, partial NR groups, k > kc
    let shapes = [
        (1, 1, 1),
        (5, 17, 3),
        (7, 65, 40),
        (13, 100, 129),
        (64, 64, 512),
        (37, 130, 1300),
        (256, 96, 48),
    ];
    for (si, &(m, n, k)) in shapes.iter().enumerate() {
        for transposed in [false, true] {
            // B [k, n] row-major (strides (n, 1)) or stored as Bᵀ [n, k] (strides (1, k))
            let strides = if transposed { (1, k) } else { (n, 1) };
            let b = vals::<T>(k * n, 10 + si as u64);
            // A's rows padded (row stride k + 3), or A stored transposed (strides (1, m + 2)),
            // read through the strided entry point
            let a_in_place = (k + 3, 1);
            let a_t = (1, m + 2);
            let a = vals::<T>(m.max(k) * (m.max(k) + 3), 20 + si as u64);
            for accumulate in [false, true] {
                // pieces: 1 = packed at once, 3 = in three panel ranges, 0 = row by row,
                // 4 = in three row ranges (`pack_rows`, contiguous and transposed storage)
                for pieces in [1, 3, 0, 4] {
                    // a reused, dirty buffer: packing must write every entry a product reads
                    let mut pb = PackedB::new(vec![T::nan(); 7], k, n, m, ukr);
                    if pieces == 0 {
                        let w = pb.row_writer();
                        for kk in (0..k).rev() {
                            let row: Vec<T> =
                                (0..n).map(|j| b[kk * strides.0 + j * strides.1]).collect();
                            // SAFETY: one row at a time
                            unsafe { w.put(kk, &row) };
                        }
                        let mut back = vec![T::zero(); n];
                        for kk in 0..k {
                            pb.row(kk, &mut back);
                            assert!((0..n).all(|j| back[j] == b[kk * strides.0 + j * strides.1]));
                        }
                    } else if pieces == 1 {
                        pb.pack(&b, strides);
                    } else if pieces == 4 {
                        let packer = pb.packer(&b, strides);
                        // SAFETY: disjoint row ranges, one after the other
                        for i in 0..3 {
                            unsafe { packer.pack_rows(i * k / 3, (i + 1) * k / 3) };
                        }
                    } else {
                        let panels = pb.panels();
                        let packer = pb.packer(&b, strides);
                        // SAFETY: disjoint panel ranges, one after the other
                        for i in 0..pieces {
                            unsafe { packer.pack(i * panels / pieces, (i + 1) * panels / pieces) };
                        }
                    }
                    for (a_strides, strided) in [(a_in_place, false), (a_t, true)] {
                        let c0 = vals::<T>(m * n, 30 + si as u64);
                        let (mut got, mut want) = (c0.clone(), c0);
                        if strided {
                            let mut scratch = Vec::new();
                            mm_packed_strided(
                                m,
                                &mut got,
                                accumulate,
                                &a,
                                a_strides,
                                &pb,
                                &mut scratch,
                            );
                        } else {
                            mm_packed(m, &mut got, accumulate, &a, a_strides.0, &pb);
                        }
                        mm_ref(m, n, k, &mut want, accumulate, &a, a_strides, &b, strides);
                        let e = rel(&got, &want);
                        assert!(
                            e <= tol,
                            "{what}: m={m} n={n} k={k} transposed={transposed} \
                             accumulate={accumulate} pieces={pieces} strided A={strided}: \
                             rel err {e:e}"
                        );
                    }
                    cases += 1;
                }
            }
        }
    }
    cases
}

/// The kernels may take either path for a tile (packed or `gemm`'s own) depending on the
/// thread count, so results stay independent of the thread count only if the two paths give
/// the same bits: same microkernels, same depth blocks, same order of accumulation.
fn bitwise_like_gemm<T: GemmFloat + num_traits::Float>(what: &str) {
    let ukr = T::microkernels().unwrap();
    // tiles of more than 64 rows (the kernels pack only for segments of several tiles)
    for (i, &(m, k, n, transposed)) in [
        (256, 512, 2048, true),
        (200, 1024, 512, false),
        (300, 2048, 512, false),
        (130, 700, 100, true),
        (257, 256, 512, false),
        (129, 1300, 70, true),
    ]
    .iter()
    .enumerate()
    {
        let strides = if transposed { (1, k) } else { (n, 1) };
        let b = vals::<T>(k * n, 40 + i as u64);
        let a = vals::<T>(m * k, 50 + i as u64);
        let (mut c1, mut c2) = (vec![T::zero(); m * n], vec![T::zero(); m * n]);
        mm(m, n, k, &mut c1, false, &a, (k, 1), &b, strides, false);
        let mut pb = PackedB::new(Vec::new(), k, n, 256, ukr);
        pb.pack(&b, strides);
        mm_packed(m, &mut c2, false, &a, k, &pb);
        let differ = c1
            .iter()
            .zip(&c2)
            .filter(|(x, y)| x.to_f64().unwrap().to_bits() != y.to_f64().unwrap().to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{what}: m={m} k={k} n={n}: {differ} entries differ from gemm's"
        );
    }
}

#[test]
fn packed_gemm_matches_the_triple_loop_on_both_isas() {
    let mut isas = vec![GemmIsa::Avx2];
    if uses_avx512() {
        isas.push(GemmIsa::Auto);
    }
    for isa in isas {
        set_isa(isa);
        let f32s = check::<f32>(1e-5, &format!("f32 {isa:?}"));
        let f64s = check::<f64>(1e-13, &format!("f64 {isa:?}"));
        bitwise_like_gemm::<f32>(&format!("f32 {isa:?}"));
        bitwise_like_gemm::<f64>(&format!("f64 {isa:?}"));
        assert_eq!(f32s, f64s);
        assert!(f32s >= 80);
    }
    set_isa(GemmIsa::Auto);
}
