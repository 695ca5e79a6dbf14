//! The noisy top-k router's training logits, fused, with their backward: from the gate's
//! output `[clean | raw] [T, 2E]` and the noise `ε [T, E]`,
//! `std = softplus(raw) + floor` and `noisy = clean + ε · std`, as one `[2, T, E]` tensor
//! (`noisy`, then `std`; [`noisy_logits`] hands back the two halves).
//!
//! Composed from candle ops ([`noisy_logits_composed`], the reference) this is two narrowed,
//! strided views of the gate output, seven ops for the softplus, three more for the noise, and
//! as many again in the backward, each with its own `[T, E]` gradient added into fresh zeros:
//! with the load loss, most of what the noisy router cost over plain top-k. Here each
//! direction is one pass over the rows, split over the pool by rows (the same bits at any
//! thread count). The backward writes the gate output's gradient
//! `[∂noisy | (∂noisy · ε + ∂std) · σ(raw)]`, and the noise's, `∂noisy · std`, only when the
//! noise is itself tracked (the router's is a constant).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{data, dims2, fused, RowFloat, ROWS_PER_JOB};
use crate::router::UNAVAILABLE_LOGIT;
use crate::{MoeError, Result};

/// `(noisy, std)`, each `[T, E]`, from `gate_out [T, 2E]` and `eps [T, E]`; experts marked
/// unavailable get −1e9 added to their clean logit, as the router's
/// `mask_unavailable` does.
pub fn noisy_logits(
    gate_out: &Tensor,
    eps: &Tensor,
    available: Option<&[bool]>,
    floor: f64,
) -> Result<(Tensor, Tensor)> {
    let e = check(gate_out, eps, available)?;
    if !(fused(gate_out) && fused(eps) && gate_out.dtype() == eps.dtype()) {
        return noisy_logits_composed(gate_out, eps, available, floor);
    }
    let out = gate_out.contiguous()?.apply_op2(
        &eps.contiguous()?,
        NoisyLogits {
            unavailable: available.map(|a| a.iter().map(|&ok| !ok).collect()),
            floor,
        },
    )?;
    debug_assert_eq!(out.dims()[2], e);
    Ok((out.get(0)?, out.get(1)?))
}

/// The same from candle ops (the reference; other devices and dtypes use it).
pub fn noisy_logits_composed(
    gate_out: &Tensor,
    eps: &Tensor,
    available: Option<&[bool]>,
    floor: f64,
) -> Result<(Tensor, Tensor)> {
    let e = check(gate_out, eps, available)?;
    let clean = crate::router::mask_unavailable(&gate_out.narrow(1, 0, e)?, available)?;
    let std = (crate::expert::softplus(&gate_out.narrow(1, e, e)?)? + floor)?;
    let noisy = (clean + (eps * &std)?)?;
    Ok((noisy, std))
}

fn check(gate_out: &Tensor, eps: &Tensor, available: Option<&[bool]>) -> Result<usize> {
    let (t, e2) = gate_out.dims2()?;
    let e = e2 / 2;
    if e2 % 2 != 0 || eps.dims() != [t, e] || available.is_some_and(|a| a.len() != e) {
        return Err(MoeError::input(
            "noisy logits",
            format!(
                "gate output {:?} must be [T, 2E] with noise [T, E] and E availability flags \
                 (got noise {:?}, {} flags)",
                gate_out.dims(),
                eps.dims(),
                available.map_or_else(|| "no".to_string(), |a| a.len().to_string())
            ),
        ));
    }
    Ok(e)
}

/// `softplus(r) = max(r, 0) + ln(1 + e^{−|r|})` and `σ(r)`, as the composed ops compute them.
#[inline]
fn softplus<T: RowFloat>(r: T) -> T {
    num_traits::Float::max(r, T::zero()) + (T::one() + (-r.abs()).exp()).ln()
}

#[inline]
fn sigmoid<T: RowFloat>(r: T) -> T {
    T::one() / (T::one() + (-r).exp())
}

struct NoisyLogits {
    /// Per expert, whether it is unavailable (`None`: all available).
    unavailable: Option<Vec<bool>>,
    floor: f64,
}

impl CustomOp2 for NoisyLogits {
    fn name(&self) -> &'static str {
        "noisy-logits"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: RowFloat>(
            g: &[T],
            eps: &[T],
            e: usize,
            off: Option<&[bool]>,
            floor: f64,
        ) -> Vec<T> {
            let len = eps.len();
            let mut out = vec![T::zero(); 2 * len];
            let (noisy, std) = out.split_at_mut(len);
            let from = <T as candle_core::WithDType>::from_f64;
            let (floor, masked) = (from(floor), from(UNAVAILABLE_LOGIT));
            let rows = ROWS_PER_JOB * e;
            noisy
                .par_chunks_mut(rows)
                .zip(std.par_chunks_mut(rows))
                .zip(g.par_chunks(2 * rows).zip(eps.par_chunks(rows)))
                .for_each(|((noisy, std), (g, eps))| {
                    for (((n, s), g), eps) in noisy
                        .chunks_exact_mut(e)
                        .zip(std.chunks_exact_mut(e))
                        .zip(g.chunks_exact(2 * e))
                        .zip(eps.chunks_exact(e))
                    {
                        let (clean, raw) = g.split_at(e);
                        for j in 0..e {
                            let c = match off {
                                Some(off) => clean[j] + if off[j] { masked } else { T::zero() },
                                None => clean[j],
                            };
                            s[j] = softplus(raw[j]) + floor;
                            n[j] = c + eps[j] * s[j];
                        }
                    }
                });
            out
        }
        let (t, e2) = dims2(l1, self.name())?;
        let e = e2 / 2;
        if dims2(l2, self.name())? != (t, e) {
            candle_core::bail!("noisy-logits: the noise must be [T, E]");
        }
        let (name, off) = (self.name(), self.unavailable.as_deref());
        let out = per_float!(s1, name, F => run(
            data::<F>(s1, l1, name)?,
            data::<F>(s2, l2, name)?,
            e,
            off,
            self.floor,
        ));
        Ok((out, Shape::from((2, t, e))))
    }

    fn bwd(
        &self,
        g: &Tensor,
        eps: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // ∂eps = ∂noisy · std, as the composed ops give; skipped for a constant noise
        let deps = if eps.track_op() {
            Some((grad.get(0)? * res.get(1)?)?)
        } else {
            None
        };
        Ok((
            Some(g.apply_op3(eps, &grad.contiguous()?, NoisyLogitsBwd)?),
            deps,
        ))
    }
}

/// `(gate_out, eps, [∂noisy; ∂std]) ↦ [∂noisy | (∂noisy · ε + ∂std) · σ(raw)]` (no second
/// derivative).
struct NoisyLogitsBwd;

impl CustomOp3 for NoisyLogitsBwd {
    fn name(&self) -> &'static str {
        "noisy-logits-bwd"
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
        fn run<T: RowFloat>(g: &[T], eps: &[T], grad: &[T], e: usize) -> Vec<T> {
            let len = eps.len();
            let (gn, gs) = grad.split_at(len);
            let mut dg = vec![T::zero(); 2 * len];
            let rows = ROWS_PER_JOB * e;
            dg.par_chunks_mut(2 * rows)
                .zip(g.par_chunks(2 * rows).zip(eps.par_chunks(rows)))
                .zip(gn.par_chunks(rows).zip(gs.par_chunks(rows)))
                .for_each(|((dg, (g, eps)), (gn, gs))| {
                    for ((((dg, g), eps), gn), gs) in dg
                        .chunks_exact_mut(2 * e)
                        .zip(g.chunks_exact(2 * e))
                        .zip(eps.chunks_exact(e))
                        .zip(gn.chunks_exact(e))
                        .zip(gs.chunks_exact(e))
                    {
                        let (dclean, draw) = dg.split_at_mut(e);
                        dclean.copy_from_slice(gn);
                        for j in 0..e {
                            draw[j] = (gn[j] * eps[j] + gs[j]) * sigmoid(g[e + j]);
                        }
                    }
                });
            dg
        }
        let (t, e2) = dims2(l1, self.name())?;
        let e = e2 / 2;
        if dims2(l2, self.name())? != (t, e) || l3.shape().dims() != [2, t, e] {
            candle_core::bail!("noisy-logits-bwd: shapes do not match");
        }
        let name = self.name();
        let out = per_float!(s1, name, F => run(
            data::<F>(s1, l1, name)?,
            data::<F>(s2, l2, name)?,
            data::<F>(s3, l3, name)?,
            e,
        ));
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gradcheck;
    use candle_core::{DType, Device, Var};

    /// A gate output `[T, 2E]` with raw noise scales on both sides of 0 (and large ones, where
    /// the softplus is linear), and the noise.
    fn inputs(t: usize, e: usize, dtype: DType) -> (Var, Tensor) {
        let f = |i: usize, a: usize, b: usize| ((i * a % b) as f64 - (b / 2) as f64) / b as f64;
        let mut g: Vec<f64> = (0..t * 2 * e).map(|i| 3.0 * f(i, 37, 23)).collect();
        if t > 0 {
            g[e..2 * e].iter_mut().for_each(|x| *x += 25.0);
        }
        let eps: Vec<f64> = (0..t * e).map(|i| 2.0 * f(i, 29, 19)).collect();
        let dev = &Device::Cpu;
        let g = Tensor::from_vec(g, (t, 2 * e), dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let eps = Tensor::from_vec(eps, (t, e), dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        (Var::from_tensor(&g).unwrap(), eps)
    }

    type Logits = fn(&Tensor, &Tensor, Option<&[bool]>, f64) -> Result<(Tensor, Tensor)>;

    /// Values, and the gate output's gradient under a weighting of both halves.
    fn run(f: Logits, g: &Var, eps: &Tensor, avail: Option<&[bool]>) -> [Vec<f64>; 3] {
        let (n, s) = f(g.as_tensor(), eps, avail, 1e-2).unwrap();
        let w = (eps.cos().unwrap() + 0.5).unwrap();
        let loss = ((&n * &w).unwrap().sum_all().unwrap()
            + (&s * w.sin().unwrap()).unwrap().sum_all().unwrap())
        .unwrap();
        let grad = loss.backward().unwrap();
        let host = |x: &Tensor| {
            x.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        [host(&n), host(&s), host(grad.get(g.as_tensor()).unwrap())]
    }

    #[test]
    fn fused_logits_match_the_composed_ops_with_their_gradient() {
        let mut avail = [true; 9];
        avail[4] = false;
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
            for (t, e, a) in [(150, 9, None), (70, 9, Some(&avail[..])), (3, 1, None)] {
                let (g, eps) = inputs(t, e, dtype);
                let fast = run(noisy_logits, &g, &eps, a);
                let slow = run(noisy_logits_composed, &g, &eps, a);
                for (what, x, y) in [0, 1, 2].map(|i| (i, &fast[i], &slow[i])) {
                    let worst = x
                        .iter()
                        .zip(y)
                        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
                        .fold(0.0, f64::max);
                    assert!(
                        worst < tol,
                        "{dtype:?} T={t} E={e} output {what}: {worst:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_tracked_noise_gets_the_composed_gradient_and_no_rows_work() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
            let (g, eps) = inputs(30, 4, dtype);
            let eps = Var::from_tensor(&eps).unwrap();
            let deps = |f: Logits| {
                let (n, s) = f(g.as_tensor(), eps.as_tensor(), None, 1e-2).unwrap();
                let loss = ((&n * eps.as_tensor().cos().unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    + s.sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                let d = grads.get(eps.as_tensor()).unwrap();
                d.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            let (a, b) = (deps(noisy_logits), deps(noisy_logits_composed));
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
                .fold(0.0, f64::max);
            assert!(worst < tol, "{dtype:?} noise gradient: {worst:e}");
        }
        // T = 0: empty results, as the composed ops give
        let (g, eps) = inputs(0, 3, DType::F32);
        let (n, s) = noisy_logits(g.as_tensor(), &eps, None, 1e-2).unwrap();
        assert_eq!((n.dims(), s.dims()), (&[0, 3][..], &[0, 3][..]));
        let dg = n.sum_all().unwrap().backward().unwrap();
        assert_eq!(dg.get(g.as_tensor()).unwrap().dims(), &[0, 6]);
    }

    #[test]
    fn fused_logits_pass_gradcheck() {
        let (g, eps) = inputs(20, 5, DType::F64);
        let w = (eps.cos().unwrap() + 0.5).unwrap();
        let rep = gradcheck(
            std::slice::from_ref(&g),
            || {
                let (n, s) = noisy_logits(g.as_tensor(), &eps, None, 1e-2)?;
                Ok(((&n * &w)?.sum_all()? + (&s * w.sin()?)?.sum_all()?)?)
            },
            1e-6,
            1e-7,
            1e-6,
        )
        .unwrap();
        assert!(rep.ok(), "noisy logits: {rep:?}");
    }

    #[test]
    fn fused_logits_do_not_depend_on_the_thread_count() {
        let (g, eps) = inputs(1000, 16, DType::F32);
        let at = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| run(noisy_logits, &g, &eps, None))
                .map(|v| v.into_iter().map(f64::to_bits).collect::<Vec<_>>())
        };
        assert_eq!(at(1), at(3));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let (g, eps) = inputs(4, 3, DType::F32);
        let odd = g.as_tensor().narrow(1, 0, 5).unwrap();
        assert!(noisy_logits(&odd, &eps, None, 1e-2).is_err());
        assert!(noisy_logits(g.as_tensor(), &eps.narrow(0, 0, 3).unwrap(), None, 1e-2).is_err());
        assert!(noisy_logits(g.as_tensor(), &eps, Some(&[true, false]), 1e-2).is_err());
    }
}
