//! The dispatch kernel as it was before the load-balanced rewrite (commit 56f44d3), kept
//! only as the baseline of `kernel_ab`.
//!
//! CPU dispatch kernel: gather rows per expert, run the expert's matmuls with `gemm`, fuse the
//! activation, and scale-and-scatter back; plus the explicit backward.
//!
//! Work is split by expert and run with rayon, largest expert first; every per-token sum is
//! taken in plan order, so results are bitwise identical for any thread count.
//!
//! # Shapes
//! `x [T, d]`, routing weights `w [n]` (one per plan assignment), flat expert parameters
//! `p [layout.total]` (see `expert.rs`), output `y [T, d]`.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use switchyard_core::expert::{ExpertLayout, ExpertSlot};
use switchyard_core::DispatchPlan;
use switchyard_core::{Activation, ExpertKind};

/// The float types the kernels run in (f32 in production, f64 for gradient checks).
pub trait KFloat: num_traits::Float + Send + Sync + Default + std::iter::Sum + 'static {
    fn erf(self) -> Self;
}
impl KFloat for f32 {
    fn erf(self) -> Self {
        libm::erff(self)
    }
}
impl KFloat for f64 {
    fn erf(self) -> Self {
        libm::erf(self)
    }
}

/// Activations saved by the forward for the backward: pre-activations `u` (and `v` for
/// SwiGLU), per assignment, each expert's block `[n_e, h_e]` one after the other.
pub struct Saved<T> {
    pub u: Vec<T>,
    pub v: Vec<T>,
}

/// `C[m,n] (+)= A[m,k] · B[k,n]` on row/column strides (thin wrapper naming gemm's arguments).
#[allow(clippy::too_many_arguments)]
fn mm<T: KFloat>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    accumulate: bool,
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (b_rs, b_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|x| *x = T::zero());
        }
        return;
    }
    debug_assert!(c.len() >= m * n);
    debug_assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    debug_assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above keep every access of gemm inside the three slices; `c` is
    // written with row stride n, column stride 1.
    unsafe {
        gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

fn sigmoid<T: KFloat>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// `a = act(u)` (FFN) or `silu(u)·v` (SwiGLU), elementwise.
fn act_fwd<T: KFloat>(kind: ExpertKind, u: T, v: T) -> T {
    match kind {
        ExpertKind::SwiGlu => u * sigmoid(u) * v,
        ExpertKind::Ffn { activation } => match activation {
            Activation::Relu => u.max(T::zero()),
            Activation::Silu => u * sigmoid(u),
            Activation::Gelu => {
                let half = T::from(0.5).unwrap();
                u * half
                    * (T::one() + (u * T::from(std::f64::consts::FRAC_1_SQRT_2).unwrap()).erf())
            }
        },
    }
}

/// Derivative of the activation: returns `(da/du, da/dv)`.
fn act_bwd<T: KFloat>(kind: ExpertKind, u: T, v: T) -> (T, T) {
    let silu_d = |u: T| {
        let s = sigmoid(u);
        // d/du u·σ(u) = σ(u)·(1 + u·(1 − σ(u)))
        s * (T::one() + u * (T::one() - s))
    };
    match kind {
        ExpertKind::SwiGlu => (silu_d(u) * v, u * sigmoid(u)),
        ExpertKind::Ffn { activation } => {
            let d = match activation {
                Activation::Relu => {
                    if u > T::zero() {
                        T::one()
                    } else {
                        T::zero()
                    }
                }
                Activation::Silu => silu_d(u),
                Activation::Gelu => {
                    // d/du u·Φ(u) = Φ(u) + u·φ(u)
                    let half = T::from(0.5).unwrap();
                    let cdf = half
                        * (T::one()
                            + (u * T::from(std::f64::consts::FRAC_1_SQRT_2).unwrap()).erf());
                    let pdf = (-(u * u) * half).exp() * T::from(0.398_942_280_401_432_7).unwrap();
                    cdf + u * pdf
                }
            };
            (d, T::zero())
        }
    }
}

/// Per-expert offsets of the `[n_e, h_e]` blocks inside the saved-activation buffers.
fn hidden_offsets(layout: &ExpertLayout, plan: &DispatchPlan) -> Vec<usize> {
    let mut off = Vec::with_capacity(layout.num_experts() + 1);
    off.push(0);
    for (e, s) in layout.slots.iter().enumerate() {
        off.push(off[e] + plan.range(e).len() * s.spec.hidden);
    }
    off
}

/// Splits `buf` into consecutive mutable chunks at the given offsets.
fn split_by<'a, T>(mut buf: &'a mut [T], offsets: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let (head, tail) = buf.split_at_mut(w[1] - w[0]);
        out.push(head);
        buf = tail;
    }
    out
}

/// Each expert's position when experts are sorted by descending load, so that rayon starts
/// the longest jobs first and balances work by load rather than by expert count.
fn load_rank(plan: &DispatchPlan) -> Vec<usize> {
    let mut order: Vec<usize> = (0..plan.num_experts).collect();
    order.sort_by_key(|&e| std::cmp::Reverse(plan.range(e).len()));
    let mut rank = vec![0; order.len()];
    order.iter().enumerate().for_each(|(i, &e)| rank[e] = i);
    rank
}

fn gather<T: KFloat>(src: &[T], d: usize, tokens: &[u32], dst: &mut Vec<T>) {
    dst.clear();
    for &t in tokens {
        dst.extend_from_slice(&src[t as usize * d..(t as usize + 1) * d]);
    }
}

/// Runs each expert on its rows. Returns per-assignment outputs `o [n, d]` (unscaled) and the
/// saved pre-activations.
fn experts_forward<T: KFloat>(
    x: &[T],
    p: &[T],
    layout: &ExpertLayout,
    plan: &DispatchPlan,
) -> (Vec<T>, Saved<T>) {
    let d = layout.d_model;
    let hoff = hidden_offsets(layout, plan);
    let htot = *hoff.last().unwrap();
    let any_glu = layout.slots.iter().any(|s| s.w3.is_some());
    let mut u = vec![T::zero(); htot];
    let mut v = vec![T::zero(); if any_glu { htot } else { 0 }];
    let mut o = vec![T::zero(); plan.len() * d];
    let ooff: Vec<usize> = plan.offsets.iter().map(|&a| a as usize * d).collect();
    {
        let us = split_by(&mut u, &hoff);
        let vs: Vec<Option<&mut [T]>> = if any_glu {
            split_by(&mut v, &hoff).into_iter().map(Some).collect()
        } else {
            (0..layout.num_experts()).map(|_| None).collect()
        };
        let os = split_by(&mut o, &ooff);
        let mut jobs: Vec<_> = us
            .into_iter()
            .zip(vs)
            .zip(os)
            .enumerate()
            .map(|(e, ((u, v), o))| (e, u, v, o))
            .collect();
        let rank = load_rank(plan);
        jobs.sort_by_key(|j| rank[j.0]);
        jobs.into_par_iter().for_each(|(e, u, v, o)| {
            let s = &layout.slots[e];
            let rows = plan.range(e);
            let n = rows.len();
            if n == 0 {
                return;
            }
            let mut xe = Vec::new();
            gather(x, d, &plan.token[rows], &mut xe);
            expert_rows_forward(s, d, p, &xe, n, u, v, o);
        });
    }
    (o, Saved { u, v })
}

/// One expert on `n` gathered rows: fills `u`, `v` (SwiGLU) and the output rows `o`.
#[allow(clippy::too_many_arguments)]
fn expert_rows_forward<T: KFloat>(
    s: &ExpertSlot,
    d: usize,
    p: &[T],
    xe: &[T],
    n: usize,
    u: &mut [T],
    v: Option<&mut [T]>,
    o: &mut [T],
) {
    let h = s.spec.hidden;
    // u = xe · W1ᵀ   (W1 is [h, d], read transposed through strides)
    mm(n, h, d, u, false, xe, (d, 1), &p[s.w1..], (1, d));
    if let Some(b1) = s.b1 {
        for row in u.chunks_mut(h) {
            row.iter_mut()
                .zip(&p[b1..b1 + h])
                .for_each(|(x, b)| *x = *x + *b);
        }
    }
    let mut a = vec![T::zero(); n * h];
    match (s.w3, v) {
        (Some(w3), Some(v)) => {
            // v = xe · W3ᵀ
            mm(n, h, d, v, false, xe, (d, 1), &p[w3..], (1, d));
            a.iter_mut()
                .zip(u.iter().zip(v.iter()))
                .for_each(|(a, (&u, &v))| *a = act_fwd(s.spec.kind, u, v));
        }
        _ => a
            .iter_mut()
            .zip(u.iter())
            .for_each(|(a, &u)| *a = act_fwd(s.spec.kind, u, T::zero())),
    }
    // o = a · W2t
    mm(n, d, h, o, false, &a, (h, 1), &p[s.w2t..], (d, 1));
    if let Some(b2) = s.b2 {
        for row in o.chunks_mut(d) {
            row.iter_mut()
                .zip(&p[b2..b2 + d])
                .for_each(|(x, b)| *x = *x + *b);
        }
    }
}

/// `y[t] = Σ_{a ∈ token t} w[a] · rows[a]`, in plan order, parallel over tokens.
fn scatter<T: KFloat>(rows: &[T], w: Option<&[T]>, d: usize, plan: &DispatchPlan) -> Vec<T> {
    let (off, idx) = plan.by_token();
    let mut y = vec![T::zero(); plan.num_tokens * d];
    y.par_chunks_mut(d).enumerate().for_each(|(t, yt)| {
        for &a in &idx[off[t] as usize..off[t + 1] as usize] {
            let a = a as usize;
            let wa = w.map_or(T::one(), |w| w[a]);
            yt.iter_mut()
                .zip(&rows[a * d..(a + 1) * d])
                .for_each(|(y, &r)| *y = *y + wa * r);
        }
    });
    y
}

/// Forward: `y [T, d]` and the activations to save for the backward.
pub fn forward<T: KFloat>(
    x: &[T],
    w: &[T],
    p: &[T],
    layout: &ExpertLayout,
    plan: &DispatchPlan,
) -> (Vec<T>, Saved<T>) {
    let (o, saved) = experts_forward(x, p, layout, plan);
    (scatter(&o, Some(w), layout.d_model, plan), saved)
}

/// Gradients of a dispatch: `(dx [T, d], dw [n], dp [total])`.
pub struct Grads<T> {
    pub dx: Vec<T>,
    pub dw: Vec<T>,
    pub dp: Vec<T>,
}

/// Backward of [`forward`] given the upstream gradient `gy [T, d]`.
pub fn backward<T: KFloat>(
    x: &[T],
    w: &[T],
    p: &[T],
    layout: &ExpertLayout,
    plan: &DispatchPlan,
    saved: &Saved<T>,
    gy: &[T],
) -> Grads<T> {
    let d = layout.d_model;
    let hoff = hidden_offsets(layout, plan);
    let mut dw = vec![T::zero(); plan.len()];
    let mut dxa = vec![T::zero(); plan.len() * d];
    // Each expert owns a disjoint segment of dp, so experts run in parallel without locks.
    let mut dp = vec![T::zero(); layout.total];
    let mut seg: Vec<usize> = layout.slots.iter().map(|s| s.w1).collect();
    seg.push(layout.total);
    let dps = split_by(&mut dp, &seg);
    let dws = split_by(
        &mut dw,
        &plan.offsets.iter().map(|&a| a as usize).collect::<Vec<_>>(),
    );
    let dxs = split_by(
        &mut dxa,
        &plan
            .offsets
            .iter()
            .map(|&a| a as usize * d)
            .collect::<Vec<_>>(),
    );
    let mut jobs: Vec<_> = dps
        .into_iter()
        .zip(dws)
        .zip(dxs)
        .enumerate()
        .map(|(e, ((a, b), c))| (e, a, b, c))
        .collect();
    let rank = load_rank(plan);
    jobs.sort_by_key(|j| rank[j.0]);
    jobs.into_par_iter().for_each(|(e, dpe, dwe, dxe)| {
        let s = &layout.slots[e];
        let rows = plan.range(e);
        let n = rows.len();
        if n == 0 {
            return;
        }
        let h = s.spec.hidden;
        let base = s.w1;
        let toks = &plan.token[rows.clone()];
        let we = &w[rows.clone()];
        let u = &saved.u[hoff[e]..hoff[e + 1]];
        let v = if s.w3.is_some() {
            &saved.v[hoff[e]..hoff[e + 1]]
        } else {
            &[][..]
        };
        let (mut xe, mut ge) = (Vec::new(), Vec::new());
        gather(x, d, toks, &mut xe);
        gather(gy, d, toks, &mut ge);
        // term 1: dA_unscaled = G · W2tᵀ  [n, h]
        let mut da = vec![T::zero(); n * h];
        mm(n, h, d, &mut da, false, &ge, (d, 1), &p[s.w2t..], (1, d));
        // a recomputed from the saved pre-activations
        let a: Vec<T> = (0..n * h)
            .map(|i| {
                act_fwd(
                    s.spec.kind,
                    u[i],
                    if v.is_empty() { T::zero() } else { v[i] },
                )
            })
            .collect();
        // term 2: dw_a = <g_t, o_a> = <dA_unscaled_a, a_a> + <g_t, b2>
        for r in 0..n {
            let mut acc: T = da[r * h..(r + 1) * h]
                .iter()
                .zip(&a[r * h..(r + 1) * h])
                .map(|(&x, &y)| x * y)
                .sum();
            if let Some(b2) = s.b2 {
                acc = acc
                    + ge[r * d..(r + 1) * d]
                        .iter()
                        .zip(&p[b2..b2 + d])
                        .map(|(&x, &y)| x * y)
                        .sum();
            }
            dwe[r] = acc;
        }
        // term 3: dW2t = (w ⊙ a)ᵀ · G  [h, d]; db2 = Σ_a w_a g_t
        let aw: Vec<T> = a
            .chunks(h)
            .zip(we)
            .flat_map(|(row, &wa)| row.iter().map(move |&x| x * wa))
            .collect();
        let off = |o: usize| o - base;
        mm(
            h,
            d,
            n,
            &mut dpe[off(s.w2t)..],
            false,
            &aw,
            (1, h),
            &ge,
            (d, 1),
        );
        if let Some(b2) = s.b2 {
            for r in 0..n {
                for j in 0..d {
                    dpe[off(b2) + j] = dpe[off(b2) + j] + we[r] * ge[r * d + j];
                }
            }
        }
        // term 4: dU, dV through the activation, with dA = w ⊙ dA_unscaled
        let mut du = vec![T::zero(); n * h];
        let mut dv = vec![T::zero(); if s.w3.is_some() { n * h } else { 0 }];
        for r in 0..n {
            for j in 0..h {
                let i = r * h + j;
                let g = da[i] * we[r];
                let (du_i, dv_i) = act_bwd(
                    s.spec.kind,
                    u[i],
                    if v.is_empty() { T::zero() } else { v[i] },
                );
                du[i] = g * du_i;
                if !dv.is_empty() {
                    dv[i] = g * dv_i;
                }
            }
        }
        if let Some(b1) = s.b1 {
            for r in 0..n {
                for j in 0..h {
                    dpe[off(b1) + j] = dpe[off(b1) + j] + du[r * h + j];
                }
            }
        }
        // term 5: dW1 = dUᵀ · X, dW3 = dVᵀ · X   [h, d]
        mm(
            h,
            d,
            n,
            &mut dpe[off(s.w1)..],
            false,
            &du,
            (1, h),
            &xe,
            (d, 1),
        );
        if let Some(w3) = s.w3 {
            mm(
                h,
                d,
                n,
                &mut dpe[off(w3)..],
                false,
                &dv,
                (1, h),
                &xe,
                (d, 1),
            );
        }
        // term 6: dX = dU · W1 + dV · W3   [n, d]
        mm(n, d, h, dxe, false, &du, (h, 1), &p[s.w1..], (d, 1));
        if let Some(w3) = s.w3 {
            mm(n, d, h, dxe, true, &dv, (h, 1), &p[w3..], (d, 1));
        }
    });
    let dx = scatter(&dxa, None, d, plan);
    Grads { dx, dw, dp }
}
