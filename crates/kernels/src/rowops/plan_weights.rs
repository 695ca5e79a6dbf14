//! The combine weights of a dispatch plan from a router's dense `[T, E]` weights (or from its
//! scores masked by the plan), with the backward.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use super::{data, dims2, RowFloat};
use crate::plan::DispatchPlan;
use crate::Result;

/// One combine weight per plan assignment from a router's dense `[T, E]` weights:
/// `w[a] = dense[t_a, e_a] / D_t · scale`, with `D_t` the row sum when `renormalize` (a row
/// summing to 0 divides by 1, as the routers' `safe_row_normalize`) and 1 otherwise.
///
/// The composed form (`switchyard_core::rowops::plan_weights_composed`: row sum, zero test, add, divide, scale,
/// flatten, index select) builds seven `[T, E]` graph nodes, each with its own gradient
/// tensor in the backward; this is one pass each way, the backward writing the single
/// `[T, E]` gradient `∂L/∂dense[t, c] = scale · (g_c·[c ∈ plan_t] / D_t − Σ_a g_a·dense[t, e_a] / D_t²)`
/// (the second term for every column of a renormalised row, as the composed ops give).
///
/// With `masked`: the weights of `scores ⊙ mask(plan)` (the scores kept at the plan's assignments, zero
/// elsewhere) without building the mask or the product: `D_t` sums the token's assigned
/// scores (plus `Σ_e x·0`, so that a NaN or infinite score anywhere in the row makes it NaN,
/// as it does the product's), and the backward writes `-k·0` outside the plan — what the
/// product's backward leaves of [`plan_weights`]' gradient. The same bits as [`plan_weights`]
/// on the product, signs of zeros and NaN rows included (the plan holds each
/// `(token, expert)` once, and the row sum only skips zeros).
///
/// The top-k family of routers (softmax top-k, Switch, expert choice, …) combines by masked
/// scores; the mask, the product and their gradients would be four more `[T, E]` tensors.
pub fn plan_weights(
    dense: &Tensor,
    plan: &Arc<DispatchPlan>,
    renormalize: bool,
    scale: f64,
    masked: bool,
) -> Result<Tensor> {
    Ok(dense.contiguous()?.apply_op1(PlanWeights {
        plan: plan.clone(),
        renormalize,
        scale,
        masked,
    })?)
}

struct PlanWeights {
    plan: Arc<DispatchPlan>,
    renormalize: bool,
    scale: f64,
    /// The input holds scores to be masked by the plan (see [`plan_weights`]).
    masked: bool,
}

impl PlanWeights {
    /// `D_t` of every row (1 without renormalisation): the row's sum, or with `masked` the
    /// sum of its assigned entries (`by_token`: the plan's CSR by token). Both sum in
    /// ascending expert order.
    fn denominators<T: RowFloat>(&self, x: &[T], by_token: &(Vec<u32>, Vec<u32>)) -> Vec<T> {
        let e = self.plan.num_experts;
        let (off, idx) = by_token;
        (0..self.plan.num_tokens)
            .map(|t| {
                if !self.renormalize {
                    return T::one();
                }
                let s = if self.masked {
                    let assigned = idx[off[t] as usize..off[t + 1] as usize]
                        .iter()
                        .fold(T::zero(), |a, &i| {
                            a + x[t * e + self.plan.expert[i as usize] as usize]
                        });
                    // plus `Σ_e x·0`, as the product's row sum has it: ±0 for finite rows, NaN
                    // when any score (assigned or not) is NaN or infinite
                    let zeros = x[t * e..(t + 1) * e]
                        .iter()
                        .fold(T::zero(), |a, &v| a + v * T::zero());
                    assigned + zeros
                } else {
                    x[t * e..(t + 1) * e].iter().fold(T::zero(), |a, &v| a + v)
                };
                if s == T::zero() {
                    T::one()
                } else {
                    s
                }
            })
            .collect()
    }

    fn fwd<T: RowFloat>(&self, x: &[T]) -> Vec<T> {
        let (e, scale) = (
            self.plan.num_experts,
            T::from(self.scale).unwrap_or_else(T::one),
        );
        let den = self.denominators(x, &self.plan.by_token());
        self.plan
            .token
            .iter()
            .zip(&self.plan.expert)
            .map(|(&t, &ex)| x[t as usize * e + ex as usize] / den[t as usize] * scale)
            .collect()
    }

    #[allow(clippy::assign_op_pattern)] // `T: RowFloat` has no `AddAssign` bound
    fn bwd<T: RowFloat>(&self, x: &[T], g: &[T]) -> Vec<T> {
        let (e, scale) = (
            self.plan.num_experts,
            T::from(self.scale).unwrap_or_else(T::one),
        );
        let by_token = self.plan.by_token();
        let den = self.denominators(x, &by_token);
        let mut dx = vec![T::zero(); x.len()];
        let (off, idx) = by_token;
        for t in 0..self.plan.num_tokens {
            let row = &mut dx[t * e..(t + 1) * e];
            let assigned = &idx[off[t] as usize..off[t + 1] as usize];
            if self.renormalize && !assigned.is_empty() {
                let k = assigned.iter().fold(T::zero(), |acc, &a| {
                    let a = a as usize;
                    acc + g[a] * x[t * e + self.plan.expert[a] as usize]
                }) * scale
                    / (den[t] * den[t]);
                if self.masked {
                    // what the mask's backward leaves of it: `-k·0` outside the plan (±0, or
                    // NaN with the row's denominator), `-k` at the assignments
                    row.iter_mut().for_each(|v| *v = -k * T::zero());
                    for &a in assigned {
                        row[self.plan.expert[a as usize] as usize] = -k;
                    }
                } else {
                    row.iter_mut().for_each(|v| *v = -k);
                }
            }
            for &a in assigned {
                let c = self.plan.expert[a as usize] as usize;
                row[c] = row[c] + g[a as usize] * scale / den[t];
            }
        }
        dx
    }
}

impl CustomOp1 for PlanWeights {
    fn name(&self) -> &'static str {
        "plan-weights"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols) = dims2(l, self.name())?;
        if (rows, cols) != (self.plan.num_tokens, self.plan.num_experts) {
            candle_core::bail!(
                "plan-weights: dense is [{rows}, {cols}], the plan is [{}, {}]",
                self.plan.num_tokens,
                self.plan.num_experts
            );
        }
        let out = per_float!(s, self.name(), F => self.fwd(data::<F>(s, l, self.name())?));
        Ok((out, Shape::from(self.plan.len())))
    }

    fn bwd(&self, x: &Tensor, _w: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = match x.dtype() {
            DType::F32 => Tensor::from_vec(
                self.bwd(&x.flatten_all()?.to_vec1::<f32>()?, &g.to_vec1::<f32>()?),
                x.shape(),
                x.device(),
            )?,
            DType::F64 => Tensor::from_vec(
                self.bwd(&x.flatten_all()?.to_vec1::<f64>()?, &g.to_vec1::<f64>()?),
                x.shape(),
                x.device(),
            )?,
            dt => candle_core::bail!("plan-weights: f32 or f64 only, got {dt:?}"),
        };
        Ok(Some(dx))
    }
}
