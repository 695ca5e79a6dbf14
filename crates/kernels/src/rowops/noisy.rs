//! The noisy top-k router's training logits, fused, with their backward: from the gate's
//! output `[clean | raw] [T, 2E]` and the noise `ε [T, E]`,
//! `std = softplus(raw) + floor` and `noisy = clean + ε · std`, as one `[2, T, E]` tensor
//! (`noisy`, then `std`; [`noisy_logits`] hands back the two halves).
//!
//! Composed from candle ops (`switchyard_core::rowops::noisy_logits_composed`, the reference) this is two narrowed,
//! strided views of the gate output, seven ops for the softplus, three more for the noise, and
//! as many again in the backward, each with its own `[T, E]` gradient added into fresh zeros:
//! with the load loss, most of what the noisy router cost over plain top-k. Here each
//! direction is one pass over the rows, split over the pool by rows (the same bits at any
//! thread count). The backward writes the gate output's gradient
//! `[∂noisy | (∂noisy · ε + ∂std) · σ(raw)]`, and the noise's, `∂noisy · std`, only when the
//! noise is itself tracked (the router's is a constant).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{data, dims2, RowFloat, ROWS_PER_JOB};
use crate::{KernelError, Result};

/// `(noisy, std)`, each `[T, E]`, from `gate_out [T, 2E]` and `eps [T, E]`, fused (see
/// [`super::fusable`]; both of one dtype); experts marked unavailable get `masked_logit` added
/// to their clean logit, as the router's `mask_unavailable` does.
pub fn noisy_logits(
    gate_out: &Tensor,
    eps: &Tensor,
    available: Option<&[bool]>,
    floor: f64,
    masked_logit: f64,
) -> Result<(Tensor, Tensor)> {
    let e = check_noisy_logits(gate_out, eps, available)?;
    let out = gate_out.contiguous()?.apply_op2(
        &eps.contiguous()?,
        NoisyLogits {
            unavailable: available.map(|a| a.iter().map(|&ok| !ok).collect()),
            floor,
            masked_logit,
        },
    )?;
    debug_assert_eq!(out.dims()[2], e);
    Ok((out.get(0)?, out.get(1)?))
}

/// Checks the shapes of a noisy-logits call; returns `E`.
pub fn check_noisy_logits(
    gate_out: &Tensor,
    eps: &Tensor,
    available: Option<&[bool]>,
) -> Result<usize> {
    let (t, e2) = gate_out.dims2()?;
    let e = e2 / 2;
    if e2 % 2 != 0 || eps.dims() != [t, e] || available.is_some_and(|a| a.len() != e) {
        return Err(KernelError::input(
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
    /// Added to the clean logit of an unavailable expert.
    masked_logit: f64,
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
            (floor, masked): (f64, f64),
        ) -> Vec<T> {
            let len = eps.len();
            let mut out = vec![T::zero(); 2 * len];
            let (noisy, std) = out.split_at_mut(len);
            let from = <T as candle_core::WithDType>::from_f64;
            let (floor, masked) = (from(floor), from(masked));
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
            (self.floor, self.masked_logit),
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
