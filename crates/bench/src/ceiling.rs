//! The dense-GEMM ceiling: the GEMMs of a dense layer with the layer's active FLOPs, run
//! through `gemm` directly (no framework), plus the 1024³ comparison rows.

use candle_core::{Device, Tensor};
use gemm::{gemm, Parallelism};
use switchyard_kernels::gemm as sy_gemm;

use crate::shapes::LayerShape;
use crate::timing::median_secs;
use crate::{BenchError, BenchRow, Result};

/// Side of the square GEMM in the `*_1024` rows.
pub const SQUARE: usize = 1024;

/// Row-major `C[m,n] (+)= A·B` where `A` is read with strides `(a_rs, a_cs)` and `B` with
/// `(b_rs, b_cs)`, parallel inside `gemm` over the current rayon pool.
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    acc: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    assert!(c.len() >= m * n);
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts keep every access inside the slices; c is row-major [m, n].
    unsafe {
        gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            acc,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::Rayon(0),
        )
    }
}

fn filled(n: usize, seed: u32) -> Vec<f32> {
    // cheap deterministic values in [-0.5, 0.5): GEMM speed does not depend on them
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect()
}

/// The dense ceiling of a layer shape: a dense SwiGLU FFN of width `k·h` plus the gate on
/// the same `T` tokens, as plain GEMMs on preallocated buffers.
///
/// forward:  `L = X·Wg [T,E]`, `H = X·W13 [T,2kh]`, `Y = A·W2 [T,d]` (A: `[T,kh]`);
/// backward: `dX = dL·Wgᵀ + dH·W13ᵀ`, `dWg = Xᵀ·dL`, `dA = dY·W2ᵀ`, `dW2 = Aᵀ·dY`, `dW13 = Xᵀ·dH`
/// — exactly the forward's FLOPs and twice them, as [`LayerShape::flops`] counts the layer.
pub struct DenseCeiling {
    t: usize,
    d: usize,
    e: usize,
    kh: usize,
    x: Vec<f32>,
    wg: Vec<f32>,
    w13: Vec<f32>,
    w2: Vec<f32>,
    a: Vec<f32>,
    dl: Vec<f32>,
    dh: Vec<f32>,
    dy: Vec<f32>,
    out: [Vec<f32>; 8],
}

impl DenseCeiling {
    pub fn new(s: &LayerShape) -> Self {
        let (t, d, e, kh) = (s.tokens, s.d, s.experts, s.k * s.h);
        let z = |n: usize| vec![0f32; n];
        Self {
            t,
            d,
            e,
            kh,
            x: filled(t * d, 1),
            wg: filled(d * e, 2),
            w13: filled(d * 2 * kh, 3),
            w2: filled(kh * d, 4),
            a: filled(t * kh, 5),
            dl: filled(t * e, 6),
            dh: filled(t * 2 * kh, 7),
            dy: filled(t * d, 8),
            out: [
                z(t * e),
                z(t * 2 * kh),
                z(t * d),
                z(t * d),
                z(d * e),
                z(d * 2 * kh),
                z(kh * d),
                z(t * kh),
            ],
        }
    }

    pub fn fwd(&mut self) {
        let (t, d, e, kh) = (self.t, self.d, self.e, self.kh);
        let [l, h, y, ..] = &mut self.out;
        mm(t, e, d, l, false, &self.x, (d, 1), &self.wg, (e, 1));
        mm(
            t,
            2 * kh,
            d,
            h,
            false,
            &self.x,
            (d, 1),
            &self.w13,
            (2 * kh, 1),
        );
        mm(t, d, kh, y, false, &self.a, (kh, 1), &self.w2, (d, 1));
    }

    pub fn fwd_bwd(&mut self) {
        self.fwd();
        let (t, d, e, kh) = (self.t, self.d, self.e, self.kh);
        let [_, _, _, dx, dwg, dw13, dw2, da] = &mut self.out;
        mm(t, d, e, dx, false, &self.dl, (e, 1), &self.wg, (1, e));
        mm(
            t,
            d,
            2 * kh,
            dx,
            true,
            &self.dh,
            (2 * kh, 1),
            &self.w13,
            (1, 2 * kh),
        );
        mm(d, e, t, dwg, false, &self.x, (1, d), &self.dl, (e, 1));
        mm(t, kh, d, da, false, &self.dy, (d, 1), &self.w2, (1, d));
        mm(kh, d, t, dw2, false, &self.a, (1, kh), &self.dy, (d, 1));
        mm(
            d,
            2 * kh,
            t,
            dw13,
            false,
            &self.x,
            (1, d),
            &self.dh,
            (2 * kh, 1),
        );
    }
}

/// A ceiling row (`<config>:dense_ceiling`).
pub fn ceiling_row(s: &LayerShape, mode: &str, threads: usize, secs: f64) -> BenchRow {
    let gflops = s.flops(mode) / secs / 1e9;
    BenchRow {
        config: format!("{}:dense_ceiling", s.name),
        mode: mode.into(),
        threads,
        experts: s.experts,
        k: s.k,
        d: s.d,
        h: s.h,
        tokens: s.tokens,
        seconds: secs,
        gflops,
        ratio_to_ceiling: 1.0,
        ceiling_gflops: gflops,
        ns_per_token: secs * 1e9 / s.tokens as f64,
        ..Default::default()
    }
}

/// 1024³ f32 GEMM through `gemm` (AVX-512 where the CPU has it), through candle's
/// `Tensor::matmul` (same `gemm`, so the same path when feature unification works), and
/// through `gemm` forced onto its AVX2 kernels.
pub fn matmul_1024_rows(threads: usize, reps: usize) -> Result<Vec<BenchRow>> {
    let n = SQUARE;
    let flops = 2.0 * (n * n * n) as f64;
    let (a, b, mut c) = (filled(n * n, 1), filled(n * n, 2), vec![0f32; n * n]);
    let direct = median_secs::<BenchError>(reps, || {
        mm(n, n, n, &mut c, false, &a, (n, 1), &b, (n, 1));
        Ok(())
    })?;
    let avx2 = median_secs::<BenchError>(reps, || {
        sy_gemm::with_isa(sy_gemm::GemmIsa::Avx2, || {
            sy_gemm::matmul(n, n, n, &mut c, &a, &b, true)
        });
        Ok(())
    })?;
    let candle_err = |source| BenchError::Candle {
        what: "candle_matmul_1024".into(),
        source,
    };
    let ta = Tensor::from_vec(a.clone(), (n, n), &Device::Cpu).map_err(candle_err)?;
    let tb = Tensor::from_vec(b.clone(), (n, n), &Device::Cpu).map_err(candle_err)?;
    let candle = median_secs(reps, || ta.matmul(&tb).map(drop)).map_err(candle_err)?;
    let base = flops / direct / 1e9;
    let row = |config: &str, secs: f64| BenchRow {
        config: config.into(),
        mode: "matmul".into(),
        threads,
        d: n,
        h: n,
        tokens: n,
        seconds: secs,
        gflops: flops / secs / 1e9,
        ratio_to_ceiling: flops / secs / 1e9 / base,
        ceiling_gflops: base,
        ns_per_token: secs * 1e9 / n as f64,
        ..Default::default()
    };
    Ok(vec![
        row("gemm_1024", direct),
        row("candle_matmul_1024", candle),
        row("gemm_1024_avx2", avx2),
    ])
}
