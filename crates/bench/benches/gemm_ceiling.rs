//! Criterion benches of the dense ceiling: a 1024³ f32 GEMM through `gemm` (AVX-512 where
//! available), through candle's `Tensor::matmul`, and through `gemm` forced onto AVX2.
//!
//! Run with: `cargo bench -p switchyard-bench --bench gemm_ceiling`

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_kernels::gemm::{matmul, with_isa, GemmIsa};

/// Side of the square GEMM.
const N: usize = 1024;

fn bench(c: &mut Criterion) {
    let a: Vec<f32> = (0..N * N).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect();
    let b: Vec<f32> = (0..N * N).map(|i| (i % 89) as f32 / 89.0 - 0.5).collect();
    let mut out = vec![0f32; N * N];
    let mut g = c.benchmark_group("gemm_1024");
    g.sample_size(20);
    g.throughput(Throughput::Elements(2 * (N * N * N) as u64));
    g.bench_function("gemm", |bch| {
        bch.iter(|| matmul(N, N, N, &mut out, &a, &b, true))
    });
    g.bench_function("gemm_avx2", |bch| {
        bch.iter(|| with_isa(GemmIsa::Avx2, || matmul(N, N, N, &mut out, &a, &b, true)))
    });
    let ta = Tensor::from_vec(a.clone(), (N, N), &Device::Cpu).unwrap();
    let tb = Tensor::from_vec(b.clone(), (N, N), &Device::Cpu).unwrap();
    g.bench_function("candle_matmul", |bch| bch.iter(|| ta.matmul(&tb).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
