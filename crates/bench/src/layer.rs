//! The MoE layer as training runs it: gate → top-k router → plan → dispatch op → combine,
//! plus the auxiliary losses, forward and forward+backward through candle's autodiff.

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::cell::Cell;

use switchyard_core::router::TopKConfig;
use switchyard_core::{
    ExpertSpec, ForwardCtx, Init, KernelOptions, MoeBlock, MoeConfig, MoeLayer, MoeOutput,
    ParamBuilder, ParamStore, RouterConfig,
};
use switchyard_kernels::{dispatch as kernel, profile};

use crate::ceiling::{ceiling_row, DenseCeiling};
use crate::shapes::LayerShape;
use crate::timing::paired_median_secs;
use crate::{BenchError, BenchRow, MemProbe, Result};

/// Seed of the layer's parameters and inputs (fixed, so every run routes the same way).
const SEED: u64 = 17;

struct LayerBench {
    store: ParamStore,
    layer: MoeLayer,
    x: Var,
    /// The kernels' options for the next forward (A/B variants change them).
    kernel: Cell<KernelOptions>,
}

impl LayerBench {
    fn new(s: &LayerShape) -> switchyard_core::Result<Self> {
        let cfg = MoeConfig {
            d_model: s.d,
            experts: vec![ExpertSpec::swiglu(s.h); s.experts],
            router: RouterConfig::TopK(TopKConfig { k: s.k }),
            ..Default::default()
        };
        let store = ParamStore::new();
        let pb = ParamBuilder::new(&store, SEED, DType::F32, &Device::Cpu);
        let layer = MoeLayer::new(&pb.pp("moe"), &cfg)?;
        let xs = pb.sample(s.tokens * s.d, Init::Normal(1.0));
        let x = Var::from_tensor(
            &Tensor::from_vec(xs, (s.tokens, s.d), &Device::Cpu)?.to_dtype(DType::F32)?,
        )?;
        Ok(Self {
            store,
            layer,
            x,
            kernel: Cell::new(KernelOptions::default()),
        })
    }

    fn forward(&self) -> switchyard_core::Result<MoeOutput> {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let mut ctx = ForwardCtx::new(true, &mut rng);
        ctx.kernel = self.kernel.get();
        self.layer.forward(self.x.as_tensor(), &mut ctx)
    }

    /// Forward, then the backward of `sum(y) + aux_loss` through
    /// [`switchyard_core::backward`]; returns the gradient bytes.
    fn fwd_bwd(&self) -> switchyard_core::Result<usize> {
        self.fwd_bwd_with(false)
    }

    /// [`Self::fwd_bwd`], through candle's plain `loss.backward()` when `plain`.
    fn fwd_bwd_with(&self, plain: bool) -> switchyard_core::Result<usize> {
        let out = self.forward()?;
        let loss = (out.y.sum_all()? + &out.aux_loss)?;
        let grads = backward(&loss, plain)?;
        let vars =
            std::iter::once(self.x.clone()).chain(self.store.all().into_iter().map(|(_, v)| v));
        Ok(vars
            .filter_map(|v| grads.get(v.as_tensor()).map(|g| g.elem_count() * 4))
            .sum())
    }
}

fn backward(loss: &Tensor, plain: bool) -> candle_core::Result<candle_core::backprop::GradStore> {
    if plain {
        loss.backward()
    } else {
        switchyard_core::backward(loss)
    }
}

fn moe_err(s: &LayerShape) -> impl Fn(switchyard_core::MoeError) -> BenchError + '_ {
    move |source| BenchError::Moe {
        what: s.name.clone(),
        source,
    }
}

/// Ceiling and layer rows (`fwd`, `fwd_bwd`) of `s`, each layer timing interleaved with its
/// ceiling's. With `routing`, the layer's fwd+bwd row carries the routing shares, and with
/// `mem`, the peak-memory figures.
pub fn measure(
    s: &LayerShape,
    threads: usize,
    reps: usize,
    mem: Option<&dyn MemProbe>,
    routing: bool,
    modes: &[&str],
) -> Result<Vec<BenchRow>> {
    let err = moe_err(s);
    let lb = LayerBench::new(s).map_err(&err)?;
    let mut ceil = DenseCeiling::new(s);
    let mut rows = Vec::new();
    for &mode in modes {
        let (c, l) = if mode == "fwd" {
            paired_median_secs(
                reps,
                || {
                    ceil.fwd();
                    Ok(())
                },
                || lb.forward().map(drop),
            )
        } else {
            paired_median_secs(
                reps,
                || {
                    ceil.fwd_bwd();
                    Ok(())
                },
                || lb.fwd_bwd().map(drop),
            )
        }
        .map_err(&err)?;
        let c_row = ceiling_row(s, mode, threads, c);
        let gflops = s.flops(mode) / l / 1e9;
        let mut row = BenchRow {
            config: s.name.clone(),
            mode: mode.into(),
            threads,
            experts: s.experts,
            k: s.k,
            d: s.d,
            h: s.h,
            tokens: s.tokens,
            seconds: l,
            gflops,
            ratio_to_ceiling: gflops / c_row.gflops,
            ceiling_gflops: c_row.gflops,
            ns_per_token: l * 1e9 / s.tokens as f64,
            ..Default::default()
        };
        if mode == "fwd_bwd" && routing {
            let (layer_s, route_s, gs_frac) = routing_cost(&lb, reps).map_err(&err)?;
            let outside = route_s / layer_s;
            let gather_scatter = gs_frac * (1.0 - outside).max(0.0);
            row.gate_router_share = Some(outside);
            row.gather_scatter_share = Some(gather_scatter);
            row.routing_share = Some(outside + gather_scatter);
        }
        if let (Some(probe), "fwd_bwd") = (mem, mode) {
            memory(&lb, probe, &mut row).map_err(&err)?;
        }
        rows.push(c_row);
        rows.push(row);
    }
    Ok(rows)
}

/// Peak memory of one fwd+bwd from a cold kernel pool. `kept`: bytes alive after the forward
/// minus what the pool holds idle (only what the backward needs, and the output).
fn memory(
    lb: &LayerBench,
    probe: &dyn MemProbe,
    row: &mut BenchRow,
) -> switchyard_core::Result<()> {
    memory_with(lb, probe, row, false)
}

fn memory_with(
    lb: &LayerBench,
    probe: &dyn MemProbe,
    row: &mut BenchRow,
    plain: bool,
) -> switchyard_core::Result<()> {
    kernel::clear_pool();
    let base = probe.live_bytes();
    probe.reset_peak();
    let out = lb.forward()?;
    let kept = (probe.live_bytes() - kernel::pooled_bytes()).saturating_sub(base);
    let loss = (out.y.sum_all()? + &out.aux_loss)?;
    let grads = backward(&loss, plain)?;
    let peak = probe.peak_bytes().saturating_sub(base);
    let vars = std::iter::once(lb.x.clone()).chain(lb.store.all().into_iter().map(|(_, v)| v));
    let grad_bytes: usize = vars
        .filter_map(|v| grads.get(v.as_tensor()).map(|g| g.elem_count() * 4))
        .sum();
    row.kept_bytes = Some(kept);
    row.peak_bytes = Some(peak);
    row.grad_bytes = Some(grad_bytes);
    row.peak_mem_ratio = Some(peak.saturating_sub(grad_bytes) as f64 / kept.max(1) as f64);
    Ok(())
}

/// Median fwd+bwd times of the whole layer and of its routing alone, timed alternately, and
/// the share of the dispatch kernels' thread time spent gathering and scattering rows.
///
/// "Routing alone" is [`MoeLayer::route_only`] (gate, router, plan, routing weights,
/// auxiliary losses, statistics) and the backward of its auxiliary loss plus
/// `Σ c·weights` for a fixed `c`, which sends a gradient down the routing weights as the
/// dispatch op does: the routing's own forward and backward, measured directly rather than as
/// the difference of two noisy timings.
fn routing_cost(lb: &LayerBench, reps: usize) -> switchyard_core::Result<(f64, f64, f64)> {
    let n = lb
        .forward()?
        .routing
        .expect("routed layers report their routing")
        .plan
        .len();
    let c = Tensor::from_vec(
        (0..n)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.1)
            .collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )?;
    let route = || -> switchyard_core::Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let (routing, aux) = lb
            .layer
            .route_only(lb.x.as_tensor(), &mut ForwardCtx::new(true, &mut rng))?;
        let loss = (aux + (routing.weights * &c)?.sum_all()?)?;
        loss.backward()?;
        Ok(())
    };
    let (layer_s, route_s) = paired_median_secs(reps, || lb.fwd_bwd().map(drop), route)?;
    profile::set_enabled(true);
    profile::take();
    lb.fwd_bwd()?;
    let p = profile::take();
    profile::set_enabled(false);
    Ok((layer_s, route_s, p.gather_scatter_share()))
}

/// One setting of the knobs an A/B run compares (see [`ab_rows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// Candle's plain `loss.backward()` instead of `dispatch::backward`.
    pub plain_backward: bool,
    /// [`KernelOptions::wave_rows`] (0: default; `usize::MAX`: one wave).
    pub wave_rows: usize,
    /// [`KernelOptions::huge_pages`].
    pub huge_pages: bool,
    /// [`MemProbe::set_recycling`] (large freed blocks reused by the binary's allocator).
    pub recycle: bool,
}

impl Variant {
    /// What the suite measures.
    pub const CURRENT: Self = Self {
        plain_backward: false,
        wave_rows: 0,
        huge_pages: true,
        recycle: true,
    };
    /// The kernel and backward before waves, `dispatch::backward`, huge pages and recycling.
    pub const BEFORE: Self = Self {
        plain_backward: true,
        wave_rows: usize::MAX,
        huge_pages: false,
        recycle: false,
    };

    fn apply(&self, lb: &LayerBench, mem: Option<&dyn MemProbe>) {
        lb.kernel.set(KernelOptions {
            wave_rows: self.wave_rows,
            huge_pages: self.huge_pages,
            ..KernelOptions::default()
        });
        if let Some(m) = mem {
            m.set_recycling(self.recycle);
        }
    }
}

/// fwd+bwd of `s` under each variant, timed round-robin with the dense ceiling (`reps`
/// rounds after one warm-up round), each with its ratio to the ceiling; with `mem`, each
/// variant's peak-memory figures. Rows: the ceiling, then one per variant (in the row's
/// `config`: `<name>[<i>]`). Leaves the allocator at [`Variant::CURRENT`].
pub fn ab_rows(
    s: &LayerShape,
    threads: usize,
    reps: usize,
    mem: Option<&dyn MemProbe>,
    variants: &[Variant],
) -> Result<Vec<BenchRow>> {
    let err = moe_err(s);
    let lb = LayerBench::new(s).map_err(&err)?;
    let mut ceil = DenseCeiling::new(s);
    let mut tc = Vec::new();
    let mut tv = vec![Vec::new(); variants.len()];
    for round in 0..=reps {
        let t = std::time::Instant::now();
        ceil.fwd_bwd();
        let c = t.elapsed().as_secs_f64();
        if round > 0 {
            tc.push(c);
        }
        for (v, times) in variants.iter().zip(&mut tv) {
            v.apply(&lb, mem);
            let t = std::time::Instant::now();
            lb.fwd_bwd_with(v.plain_backward).map_err(&err)?;
            if round > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let c_row = ceiling_row(s, "fwd_bwd", threads, median(tc));
    let mut rows = vec![c_row.clone()];
    for (i, (v, times)) in variants.iter().zip(tv).enumerate() {
        let l = median(times);
        let gflops = s.flops("fwd_bwd") / l / 1e9;
        let mut row = BenchRow {
            config: format!("{}[{i}]", s.name),
            mode: "fwd_bwd".into(),
            threads,
            experts: s.experts,
            k: s.k,
            d: s.d,
            h: s.h,
            tokens: s.tokens,
            seconds: l,
            gflops,
            ratio_to_ceiling: gflops / c_row.gflops,
            ceiling_gflops: c_row.gflops,
            ns_per_token: l * 1e9 / s.tokens as f64,
            ..Default::default()
        };
        if let Some(probe) = mem {
            v.apply(&lb, mem);
            memory_with(&lb, probe, &mut row, v.plain_backward).map_err(&err)?;
        }
        rows.push(row);
    }
    Variant::CURRENT.apply(&lb, mem);
    Ok(rows)
}
