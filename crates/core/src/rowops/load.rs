//! The column sums of Shazeer et al.'s (2017) smooth load estimator, fused, with its backward:
//! `load[e] = Σ_t Φ((clean[t, e] − thr[t, e]) / std[t, e])`, where `thr[t, e]` is the
//! (k+1)-th largest noisy logit of row `t` if `e` is among the row's top-k noisy logits, else
//! the k-th largest ([`crate::losses::load`] takes its squared coefficient of variation).
//!
//! Composed from candle ops ([`load_sums_composed`], the reference) this is two gathers, two
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

use super::{data, dims2, fused, RowFloat, ROWS_PER_JOB};
use crate::{MoeError, Result};

/// `Σ_t P(t, e)` → `[E]` for `clean`, `noisy`, `std` of shape `[T, E]` and `1 ≤ k < E`.
pub fn load_sums(clean: &Tensor, noisy: &Tensor, std: &Tensor, k: usize) -> Result<Tensor> {
    let (t, _) = check(clean, noisy, std, k)?;
    let same = |a: &Tensor| a.dtype() == noisy.dtype();
    if !(fused(clean) && fused(noisy) && fused(std) && same(clean) && same(std)) {
        return load_sums_composed(clean, noisy, std, k);
    }
    let top = Arc::new(top_rows(noisy, t, k)?);
    Ok(clean.contiguous()?.apply_op3(
        &noisy.contiguous()?,
        &std.contiguous()?,
        LoadSums { top, k },
    )?)
}

/// The same sums from candle ops (the reference; other devices and dtypes use it).
pub fn load_sums_composed(
    clean: &Tensor,
    noisy: &Tensor,
    std: &Tensor,
    k: usize,
) -> Result<Tensor> {
    let (t, e) = check(clean, noisy, std, k)?;
    let top = top_rows(noisy, t, k)?;
    let (mut idx_in, mut idx_out, mut is_in) = (
        Vec::with_capacity(t),
        Vec::with_capacity(t),
        vec![0f64; t * e],
    );
    for (tok, row) in top.chunks_exact(k + 1).enumerate() {
        idx_in.push(row[k]); // (k+1)-th largest
        idx_out.push(row[k - 1]); // k-th largest
        for &x in &row[..k] {
            is_in[tok * e + x as usize] = 1.0;
        }
    }
    let dev = noisy.device();
    let thr_in = noisy.gather(&Tensor::from_vec(idx_in, (t, 1), dev)?, 1)?;
    let thr_out = noisy.gather(&Tensor::from_vec(idx_out, (t, 1), dev)?, 1)?;
    let is_in = Tensor::from_vec(is_in, (t, e), dev)?.to_dtype(noisy.dtype())?;
    let p_in = crate::losses::normal_cdf(&clean.broadcast_sub(&thr_in)?.div(std)?)?;
    let p_out = crate::losses::normal_cdf(&clean.broadcast_sub(&thr_out)?.div(std)?)?;
    // torch: prob = torch.where(is_in, p_in, p_out)
    let prob = ((&is_in * p_in)? + ((1.0 - &is_in)? * p_out)?)?;
    Ok(prob.sum(0)?)
}

fn check(clean: &Tensor, noisy: &Tensor, std: &Tensor, k: usize) -> Result<(usize, usize)> {
    let (t, e) = noisy.dims2()?;
    for (what, x) in [("clean logits", clean), ("noise scales", std)] {
        if x.dims() != [t, e] {
            return Err(MoeError::input(
                "load loss",
                format!(
                    "{what} have shape {:?}, the noisy logits [{t}, {e}]",
                    x.dims()
                ),
            ));
        }
    }
    if k == 0 || k >= e {
        return Err(MoeError::input(
            "load loss",
            format!("k = {k} with {e} experts: needs 1 ≤ k < E"),
        ));
    }
    Ok((t, e))
}

/// Each row's k+1 largest noisy logits' experts, best first (ties to the lower index, as
/// the router's selection).
fn top_rows(noisy: &Tensor, t: usize, k: usize) -> Result<Vec<u32>> {
    let pairs = crate::router::top_k_pairs(noisy, k + 1, None)?;
    debug_assert_eq!(pairs.len(), t * (k + 1));
    Ok(pairs.into_iter().map(|(_, x)| x).collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gradcheck;
    use candle_core::{Device, Var};

    /// `[T, E]` clean logits (a row with ties, a row with an unavailable expert at −1e9),
    /// noise scales above the router's floor, and noisy logits `clean + ε · std` (with a row
    /// of ties if `ties`: the selection's tie-break is not differentiable there).
    fn inputs(t: usize, e: usize, dtype: DType, ties: bool) -> (Var, Var, Var) {
        let f = |i: usize, a: usize, b: usize| ((i * a % b) as f64 - (b / 2) as f64) / b as f64;
        let mut c: Vec<f64> = (0..t * e).map(|i| 2.0 * f(i, 37, 23)).collect();
        if t >= 4 {
            c[e..2 * e].iter_mut().for_each(|x| *x = 0.25);
            c[2 * e + 1] = -1e9;
        }
        let s: Vec<f64> = (0..t * e).map(|i| 0.3 + f(i, 17, 11).abs()).collect();
        let eps: Vec<f64> = (0..t * e).map(|i| 1.5 * f(i, 29, 19)).collect();
        let mut n: Vec<f64> = (0..t * e).map(|i| c[i] + eps[i] * s[i]).collect();
        if ties && t >= 4 {
            n[3 * e..4 * e].iter_mut().for_each(|x| *x = -0.5);
        }
        let v = |x: Vec<f64>| {
            Var::from_tensor(
                &Tensor::from_vec(x, (t, e), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap()
        };
        (v(c), v(n), v(s))
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        let b = b.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f64::max)
    }

    #[test]
    fn fused_sums_match_the_composed_ops_with_their_gradients() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 3e-6)] {
            for (t, e, k) in [(150, 7, 2), (70, 5, 1), (9, 6, 5), (130, 64, 8)] {
                let (c, n, s) = inputs(t, e, dtype, true);
                // a weighting of the columns so that every gradient entry matters
                let wcol: Vec<f64> = (0..e).map(|j| 1.0 + (j as f64 * 0.7).sin()).collect();
                let wcol = Tensor::from_vec(wcol, e, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let run = |f: &dyn Fn(&Tensor, &Tensor, &Tensor, usize) -> Result<Tensor>| {
                    let y = f(c.as_tensor(), n.as_tensor(), s.as_tensor(), k).unwrap();
                    let gs = (&y * &wcol).unwrap().sum_all().unwrap().backward().unwrap();
                    let g = |v: &Var| gs.get(v.as_tensor()).unwrap().clone();
                    (y, [g(&c), g(&n), g(&s)])
                };
                let (a, ga) = run(&load_sums);
                let (b, gb) = run(&load_sums_composed);
                let what = format!("{dtype:?} T={t} E={e} k={k}");
                assert!(max_rel(&a, &b) < tol, "sums {what}");
                for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
                    assert!(max_rel(x, y) < tol, "gradient {i} {what}");
                }
            }
        }
    }

    #[test]
    fn fused_sums_pass_gradcheck() {
        let (c, n, s) = inputs(40, 6, DType::F64, false);
        // (the unavailable expert's −1e9 sits where Φ is flat: a derivative of 0 both ways)
        let wcol = Tensor::new(&[1.0f64, -0.5, 2.0, 0.25, 1.5, -1.0], &Device::Cpu).unwrap();
        let rep = gradcheck(
            &[c.clone(), n.clone(), s.clone()],
            || Ok((load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 2)? * &wcol)?.sum_all()?),
            1e-6,
            1e-7,
            1e-5,
        )
        .unwrap();
        assert!(rep.ok(), "load sums: {rep:?}");
    }

    #[test]
    fn fused_sums_do_not_depend_on_the_thread_count() {
        let (c, n, s) = inputs(1000, 16, DType::F32, true);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 3).unwrap();
                let gs = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                let mut bits = y.to_vec1::<f32>().unwrap();
                for v in [&c, &n, &s] {
                    bits.extend(
                        gs.get(v.as_tensor())
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap(),
                    );
                }
                bits.into_iter().map(f32::to_bits).collect::<Vec<_>>()
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn no_rows_give_zero_sums_and_empty_gradients() {
        let (c, n, s) = inputs(0, 5, DType::F32, false);
        let y = load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 2).unwrap();
        let z = load_sums_composed(c.as_tensor(), n.as_tensor(), s.as_tensor(), 2).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0; 5]);
        assert_eq!(z.to_vec1::<f32>().unwrap(), vec![0.0; 5]);
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(c.as_tensor()).unwrap().dims(), &[0, 5]);
    }

    #[test]
    fn bad_shapes_and_k_are_errors() {
        let (c, n, s) = inputs(4, 5, DType::F32, true);
        let short = c.as_tensor().narrow(1, 0, 4).unwrap();
        assert!(load_sums(&short, n.as_tensor(), s.as_tensor(), 2).is_err());
        assert!(load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 0).is_err());
        assert!(load_sums(c.as_tensor(), n.as_tensor(), s.as_tensor(), 5).is_err());
    }
}
