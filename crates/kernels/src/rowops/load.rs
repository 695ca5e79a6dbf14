//! The column sums of Shazeer et al.'s (2017) smooth load estimator, fused, with its backward:
//! `load[e] = Σ_t Φ((clean[t, e] − thr[t, e]) / std[t, e])`, where `thr[t, e]` is the
//! (k+1)-th largest noisy logit of row `t` if `e` is among the row's top-k noisy logits, else
//! the k-th largest (`switchyard_core::losses::load` takes its squared coefficient of variation).
//!
//! Composed from candle ops (`switchyard_core::rowops::load_sums_composed`, the reference) this is two gathers, two
//! subtractions, two divisions, two normal CDFs (three ops each), a select built from a
//! `[T, E]` membership mask and a column sum: about fifteen `[T, E]` graph nodes, each with its
//! own gradient tensor in the backward, and most of the noisy top-k router's routing time.
//! Here the forward is one pass over the rows (partial column sums in f64 per block of
//! [`ROWS_PER_JOB`] rows, merged in block order: the same result at any thread count) and the
//! backward one pass writing the three `[T, E]` gradients:
//! with `z = (clean − thr) / std` and `ġ = g[e] · φ(z)`,
//! `∂/∂clean = ġ / std`, `∂/∂std = −ġ · z / std`, and `∂/∂noisy` at the row's k-th and
//! (k+1)-th entries: minus the sums of `ġ / std` over the experts that took each as threshold.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{data, dims2, RowFloat, ROWS_PER_JOB};
use crate::{KernelError, Result};

/// `Σ_t P(t, e)` → `[E]` for `clean`, `noisy`, `std` of shape `[T, E]` and `1 ≤ k < E`, fused
/// (see [`super::fusable`]; all three of one dtype). `top` holds each row's k+1 largest noisy
/// logits' experts, best first (ties to the lower index, as the router's selection), `T·(k+1)`
/// in all.
pub fn load_sums(
    clean: &Tensor,
    noisy: &Tensor,
    std: &Tensor,
    k: usize,
    top: Vec<u32>,
) -> Result<Tensor> {
    let (t, _) = check_load_sums(clean, noisy, std, k)?;
    if top.len() != t * (k + 1) {
        return Err(KernelError::input(
            "load loss",
            format!(
                "{} top experts for {t} rows of k + 1 = {}",
                top.len(),
                k + 1
            ),
        ));
    }
    Ok(clean.contiguous()?.apply_op3(
        &noisy.contiguous()?,
        &std.contiguous()?,
        LoadSums {
            top: Arc::new(top),
            k,
        },
    )?)
}

/// Checks the shapes and `k` of a load-sums call; returns `(T, E)`.
pub fn check_load_sums(
    clean: &Tensor,
    noisy: &Tensor,
    std: &Tensor,
    k: usize,
) -> Result<(usize, usize)> {
    let (t, e) = noisy.dims2()?;
    for (what, x) in [("clean logits", clean), ("noise scales", std)] {
        if x.dims() != [t, e] {
            return Err(KernelError::input(
                "load loss",
                format!(
                    "{what} have shape {:?}, the noisy logits [{t}, {e}]",
                    x.dims()
                ),
            ));
        }
    }
    if k == 0 || k >= e {
        return Err(KernelError::input(
            "load loss",
            format!("k = {k} with {e} experts: needs 1 ≤ k < E"),
        ));
    }
    Ok((t, e))
}

/// `Φ(z)` and `φ(z)` of the standard normal.
#[inline]
fn cdf<T: RowFloat>(z: T) -> T {
    let half = T::from(0.5).unwrap();
    (T::one() + (z * T::from(std::f64::consts::FRAC_1_SQRT_2).unwrap()).erf()) * half
}

#[inline]
fn pdf<T: RowFloat>(z: T) -> T {
    // 1/√(2π)
    const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    (-(z * z) * T::from(0.5).unwrap()).exp() * T::from(INV_SQRT_2PI).unwrap()
}

/// Row `r`'s thresholds: `(in the top-k, out of it)`.
#[inline]
fn thresholds<T: Copy>(n: &[T], top: &[u32], k: usize) -> (T, T) {
    (n[top[k] as usize], n[top[k - 1] as usize])
}

struct LoadSums {
    /// `T·(k+1)` experts: each row's k+1 largest noisy logits, best first.
    top: Arc<Vec<u32>>,
    k: usize,
}

impl CustomOp3 for LoadSums {
    fn name(&self) -> &'static str {
        "load-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: RowFloat>(c: &[T], n: &[T], s: &[T], top: &[u32], k: usize, e: usize) -> Vec<T> {
            let rows = ROWS_PER_JOB * e;
            let parts: Vec<Vec<f64>> = c
                .par_chunks(rows)
                .zip(n.par_chunks(rows).zip(s.par_chunks(rows)))
                .zip(top.par_chunks(ROWS_PER_JOB * (k + 1)))
                .map(|((c, (n, s)), top)| {
                    let mut acc = vec![0f64; e];
                    let mut inset = vec![false; e];
                    for (((c, n), s), top) in c
                        .chunks_exact(e)
                        .zip(n.chunks_exact(e))
                        .zip(s.chunks_exact(e))
                        .zip(top.chunks_exact(k + 1))
                    {
                        let (thr_in, thr_out) = thresholds(n, top, k);
                        top[..k].iter().for_each(|&x| inset[x as usize] = true);
                        for (j, a) in acc.iter_mut().enumerate() {
                            let thr = if inset[j] { thr_in } else { thr_out };
                            *a += candle_core::WithDType::to_f64(cdf((c[j] - thr) / s[j]));
                        }
                        top[..k].iter().for_each(|&x| inset[x as usize] = false);
                    }
                    acc
                })
                .collect();
            let mut sum = vec![0f64; e];
            for p in parts {
                sum.iter_mut().zip(p).for_each(|(a, v)| *a += v);
            }
            sum.into_iter()
                .map(<T as candle_core::WithDType>::from_f64)
                .collect()
        }
        let (t, e) = dims2(l1, self.name())?;
        same_shape(self.name(), (t, e), [l2, l3])?;
        if self.top.len() != t * (self.k + 1) {
            candle_core::bail!("load-sums: the selection does not match the logits");
        }
        let name = self.name();
        let out = per_float!(s1, name, F => run(
            data::<F>(s1, l1, name)?,
            data::<F>(s2, l2, name)?,
            data::<F>(s3, l3, name)?,
            &self.top,
            self.k,
            e,
        ));
        Ok((out, Shape::from(e)))
    }

    fn bwd(
        &self,
        clean: &Tensor,
        noisy: &Tensor,
        std: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let grads = clean.apply_op3(
            noisy,
            std,
            LoadSumsBwd {
                top: self.top.clone(),
                k: self.k,
                g,
            },
        )?;
        Ok((
            Some(grads.get(0)?),
            Some(grads.get(1)?),
            Some(grads.get(2)?),
        ))
    }
}

fn same_shape(op: &str, (t, e): (usize, usize), ls: [&Layout; 2]) -> candle_core::Result<()> {
    for l in ls {
        if dims2(l, op)? != (t, e) {
            candle_core::bail!("{op}: inputs of different shapes");
        }
    }
    Ok(())
}

/// `(clean, noisy, std) ↦ [∂/∂clean, ∂/∂noisy, ∂/∂std]` as one `[3, T, E]` tensor, given the
/// gradient `g [E]` of the sums (no second derivative).
struct LoadSumsBwd {
    top: Arc<Vec<u32>>,
    k: usize,
    g: Vec<f64>,
}

impl CustomOp3 for LoadSumsBwd {
    fn name(&self) -> &'static str {
        "load-sums-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        #[allow(clippy::too_many_arguments)]
        fn run<T: RowFloat>(
            c: &[T],
            n: &[T],
            s: &[T],
            top: &[u32],
            k: usize,
            g: &[f64],
            e: usize,
        ) -> Vec<T> {
            let len = c.len();
            let mut out = vec![T::zero(); 3 * len];
            let (dc, rest) = out.split_at_mut(len);
            let (dn, ds) = rest.split_at_mut(len);
            let g: Vec<T> = g
                .iter()
                .map(|&v| <T as candle_core::WithDType>::from_f64(v))
                .collect();
            let rows = ROWS_PER_JOB * e;
            dc.par_chunks_mut(rows)
                .zip(dn.par_chunks_mut(rows).zip(ds.par_chunks_mut(rows)))
                .zip(
                    c.par_chunks(rows)
                        .zip(n.par_chunks(rows).zip(s.par_chunks(rows))),
                )
                .zip(top.par_chunks(ROWS_PER_JOB * (k + 1)))
                .for_each(|(((dc, (dn, ds)), (c, (n, s))), top)| {
                    let mut inset = vec![false; e];
                    for (r, top) in top.chunks_exact(k + 1).enumerate() {
                        let at = r * e..(r + 1) * e;
                        let (c, n, s) = (&c[at.clone()], &n[at.clone()], &s[at.clone()]);
                        let (dc, ds) = (&mut dc[at.clone()], &mut ds[at.clone()]);
                        let (thr_in, thr_out) = thresholds(n, top, k);
                        top[..k].iter().for_each(|&x| inset[x as usize] = true);
                        // ∂/∂thr summed over the experts that use each threshold
                        let (mut g_in, mut g_out) = (T::zero(), T::zero());
                        for j in 0..e {
                            let thr = if inset[j] { thr_in } else { thr_out };
                            let z = (c[j] - thr) / s[j];
                            let gz = g[j] * pdf(z);
                            let d = gz / s[j];
                            dc[j] = d;
                            ds[j] = -(d * z);
                            if inset[j] {
                                g_in -= d;
                            } else {
                                g_out -= d;
                            }
                        }
                        top[..k].iter().for_each(|&x| inset[x as usize] = false);
                        let dn = &mut dn[at];
                        dn[top[k] as usize] = g_in;
                        dn[top[k - 1] as usize] = g_out;
                    }
                });
            out
        }
        let (t, e) = dims2(l1, self.name())?;
        same_shape(self.name(), (t, e), [l2, l3])?;
        if self.top.len() != t * (self.k + 1) || self.g.len() != e {
            candle_core::bail!("load-sums-bwd: the selection does not match the logits");
        }
        let name = self.name();
        let out = per_float!(s1, name, F => run(
            data::<F>(s1, l1, name)?,
            data::<F>(s2, l2, name)?,
            data::<F>(s3, l3, name)?,
            &self.top,
            self.k,
            &self.g,
            e,
        ));
        Ok((out, Shape::from((3, t, e))))
    }
}
