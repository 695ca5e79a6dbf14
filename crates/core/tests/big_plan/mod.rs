//! A dispatch plan large enough for several waves, shared by `waves.rs` and `wave_rows.rs`.
#![allow(dead_code)]

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use switchyard_core::dispatch::{dispatch_reference, dispatch_with};
use switchyard_core::expert::ExpertLayout;
use switchyard_core::KernelOptions;
use switchyard_core::{Activation, DispatchPlan, ExpertSpec, Init, ParamBuilder, ParamStore};
use switchyard_kernels::dispatch::WGRAD_ROWS;

pub fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

const TOKENS: usize = 2600;
const D_MODEL: usize = 16;
const K: usize = 4;
const E: usize = 7;

pub struct Big {
    pub layout: Arc<ExpertLayout>,
    pub plan: Arc<DispatchPlan>,
    pub x: Var,
    pub w: Var,
    pub p: Var,
    pub proj: Tensor,
}

/// 2600 tokens × top-4 over 7 experts of mixed kinds: 10 400 assignments, so several waves
/// (of 1/8 of the rows, rounded down to a multiple of 512: 1024, or up to 1280 to finish an
/// expert), experts of ~1500 rows (several row tiles each, more than a wave holds, so they
/// are cut across waves and the packed weights carry over from wave to wave).
pub fn big() -> Big {
    let mut pairs: Vec<(u32, u32)> = (0..TOKENS as u32)
        .flat_map(|t| (0..K as u32).map(move |j| (t, (t * 3 + j * 2 + t / 7) % E as u32)))
        .collect();
    pairs.sort();
    pairs.dedup();
    build(TOKENS, E, &pairs)
}

/// Experts of 530, 700, 0, 100, 450 and 1300 rows (one expert per token): with waves of 512
/// rows (the smallest budget), the first expert finishes in one wave over budget, the second
/// is cut, and 530 rows make two row tiles of 265 — the plan where `KernelOptions::overfill`
/// changes the waves and tiles; the third expert gets no rows (its gradient must be zero).
pub fn uneven() -> Big {
    let rows = [530, 700, 0, 100, 450, 1300];
    let mut pairs = Vec::new();
    for (e, &n) in rows.iter().enumerate() {
        let t0 = pairs.len() as u32;
        pairs.extend((t0..t0 + n).map(|t| (t, e as u32)));
    }
    build(pairs.len(), rows.len(), &pairs)
}

fn build(tokens: usize, experts: usize, pairs: &[(u32, u32)]) -> Big {
    let specs: Vec<ExpertSpec> = (0..experts)
        // widths of 16 and up get their weights packed (`switchyard_kernels::packed`), narrower ones
        // keep `gemm`
        .map(|e| match e % 3 {
            0 => ExpertSpec::swiglu(16 + e),
            1 => ExpertSpec::ffn(Activation::Gelu, 12),
            _ => ExpertSpec::ffn(Activation::Relu, 5 + e),
        })
        .collect();
    let dev = Device::Cpu;
    let pb = ParamBuilder::new(&ParamStore::new(), 8, DType::F32, &dev);
    let layout = Arc::new(ExpertLayout::new(D_MODEL, &specs));
    let plan = Arc::new(DispatchPlan::from_assignments(tokens, experts, pairs).unwrap());
    assert!(plan.len() > 3 * WGRAD_ROWS, "several waves");
    let mk = |n: usize, shape: &[usize]| {
        let t = Tensor::from_vec(pb.sample(n, Init::Normal(0.5)), shape, &dev)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        Var::from_tensor(&t).unwrap()
    };
    Big {
        x: mk(tokens * D_MODEL, &[tokens, D_MODEL]),
        w: mk(plan.len(), &[plan.len()]),
        p: mk(layout.total, &[layout.total]),
        proj: mk(tokens * D_MODEL, &[tokens, D_MODEL]).as_tensor().clone(),
        layout,
        plan,
    }
}

impl Big {
    pub fn vars(&self) -> [&Var; 3] {
        [&self.x, &self.w, &self.p]
    }

    /// The bits of the kernel's output and of the three gradients (through
    /// `dispatch::backward`) on a pool of `threads` threads; `check` sees the output and the
    /// gradient store first.
    pub fn kernel_bits(
        &self,
        threads: usize,
        check: impl Fn(&Tensor, &candle_core::backprop::GradStore) + Send + Sync,
    ) -> Vec<Vec<u32>> {
        self.kernel_bits_with(threads, &KernelOptions::default(), check)
    }

    /// [`Self::kernel_bits`] with the kernels tuned by `opts`.
    pub fn kernel_bits_with(
        &self,
        threads: usize,
        opts: &KernelOptions,
        check: impl Fn(&Tensor, &candle_core::backprop::GradStore) + Send + Sync,
    ) -> Vec<Vec<u32>> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let (y, loss) = self.run_with(false, opts);
                let g = switchyard_core::backward(&loss).unwrap();
                check(&y, &g);
                let mut out = vec![bits(&y)];
                out.extend(self.vars().map(|v| bits(g.get(v.as_tensor()).unwrap())));
                out
            })
    }

    /// The reference's output and gradients.
    pub fn reference(&self) -> (Tensor, candle_core::backprop::GradStore) {
        let (y, loss) = self.run(true);
        (y, loss.backward().unwrap())
    }

    /// Asserts that an output and its gradients are within 1e-5 (relative) of the reference's.
    pub fn assert_close(
        &self,
        y: &Tensor,
        g: &candle_core::backprop::GradStore,
        (y_ref, g_ref): &(Tensor, candle_core::backprop::GradStore),
        what: &str,
    ) {
        assert!(rel_err(y, y_ref) < 1e-5, "{what}: forward");
        for v in self.vars() {
            let (a, r) = (
                g.get(v.as_tensor()).unwrap(),
                g_ref.get(v.as_tensor()).unwrap(),
            );
            assert!(rel_err(a, r) < 1e-5, "{what}: {}", rel_err(a, r));
        }
    }

    /// `(y, loss)` through the kernel or the reference.
    pub fn run(&self, reference: bool) -> (Tensor, Tensor) {
        self.run_with(reference, &KernelOptions::default())
    }

    /// [`Self::run`] with the kernels tuned by `opts`.
    pub fn run_with(&self, reference: bool, opts: &KernelOptions) -> (Tensor, Tensor) {
        let (x, w, p) = (self.x.as_tensor(), self.w.as_tensor(), self.p.as_tensor());
        let y = if reference {
            dispatch_reference(x, w, p, &self.layout, &self.plan).unwrap()
        } else {
            dispatch_with(x, w, p, &self.layout, &self.plan, opts).unwrap()
        };
        let loss = (y.clone() * &self.proj).unwrap().sum_all().unwrap();
        (y, loss)
    }
}
