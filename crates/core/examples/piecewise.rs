//! An MoE layer learns a mixture of 4 linear regressions whose regime is hidden (the quadrant
//! of x₀, x₁), next to a dense MLP with the same active compute (one expert's width).
//! Run with: `cargo run --release -p switchyard-core --example piecewise`
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchyard_core::router::TopKConfig;
use switchyard_core::*;

const D: usize = 4; // input = output width
const HIDDEN: usize = 8; // every expert's width, and the dense MLP's
const REGIMES: usize = 4;

pub struct Report {
    pub purity: Vec<f64>,
    pub moe_loss: f64,
    pub dense_loss: f64,
}

/// `n` samples: x ~ U(-1, 1)^D pushed 0.5 away from 0 in x₀, x₁; regime = quadrant of
/// (x₀, x₁); y = A_r·x + b_r.
fn data(n: usize, rng: &mut ChaCha8Rng, maps: &[Vec<f64>]) -> (Tensor, Tensor, Vec<usize>) {
    let (mut xs, mut ys, mut rs) = (vec![], vec![], vec![]);
    for _ in 0..n {
        let mut x: Vec<f64> = (0..D).map(|_| rng.random_range(-1.0..1.0)).collect();
        // a gap of 1 between quadrants keeps the regimes identifiable from x
        (0..2).for_each(|j| x[j] += 0.5 * x[j].signum());
        let r = (x[0] > 0.0) as usize * 2 + (x[1] > 0.0) as usize;
        let m = &maps[r]; // D×D matrix then D bias
        ys.extend((0..D).map(|i| (0..D).map(|j| m[i * D + j] * x[j]).sum::<f64>() + m[D * D + i]));
        xs.extend(x);
        rs.push(r);
    }
    let t = |v: Vec<f64>| {
        Tensor::from_vec(v, (n, D), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    (t(xs), t(ys), rs)
}

fn train(params: Vec<Var>, steps: usize, mut loss: impl FnMut(usize) -> Tensor) {
    let mut opt = AdamW::new(
        params,
        ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    for step in 0..steps {
        // switchyard_core::backward, not loss.backward(): the same gradients, with the
        // dispatch kernels' expert gradients handed over without candle's zeros-then-add
        let grads = backward(&loss(step)).unwrap();
        opt.step(&grads).unwrap();
    }
}

pub fn run(steps: usize, seed: u64) -> Report {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let maps: Vec<Vec<f64>> = (0..REGIMES)
        .map(|_| {
            (0..D * D + D)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect()
        })
        .collect();
    let batches: Vec<_> = (0..32).map(|_| data(256, &mut rng, &maps)).collect();
    let (xt, yt, rt) = data(4096, &mut rng, &maps);
    let mse = |a: &Tensor, b: &Tensor| (a - b).unwrap().sqr().unwrap().mean_all().unwrap();

    // MoE: 4 FFN experts, switch-style top-1 weighted by the router probability
    let (moe_store, dense_store) = (ParamStore::new(), ParamStore::new());
    let cfg = MoeConfig {
        d_model: D,
        experts: vec![ExpertSpec::ffn(Activation::Relu, HIDDEN); REGIMES],
        router: RouterConfig::TopK(TopKConfig { k: 1 }),
        renormalize: false,
        losses: LossWeights {
            switch_balance: 0.1,
            z: 1e-4,
            ..Default::default()
        },
        ..Default::default()
    };
    let moe = MoeLayer::new(
        &ParamBuilder::new(&moe_store, seed, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let mut nrng = ChaCha8Rng::seed_from_u64(seed);
    let mut fwd = |x: &Tensor, train: bool| {
        moe.forward(x, &mut ForwardCtx::new(train, &mut nrng))
            .unwrap()
    };
    let vars = moe_store.all().into_iter().map(|(_, v)| v).collect();
    train(vars, steps, |s| {
        let (x, y, _) = &batches[s % batches.len()];
        let out = fwd(x, true);
        (mse(&out.y, y) + out.aux_loss).unwrap()
    });
    let out = fwd(&xt, false);
    let moe_loss = mse(&out.y, &yt).to_scalar::<f32>().unwrap() as f64;
    // purity: share of each regime's tokens that go to that regime's most common expert
    let plan = out.routing.unwrap().plan;
    let mut counts = vec![vec![0usize; REGIMES]; REGIMES];
    (0..plan.len()).for_each(|a| counts[rt[plan.token[a] as usize]][plan.expert[a] as usize] += 1);
    let purity = counts
        .iter()
        .map(|c| *c.iter().max().unwrap() as f64 / c.iter().sum::<usize>().max(1) as f64)
        .collect();

    // dense baseline of equal active compute: the same FFN as one expert
    let dense = expert::ExpertBank::new(
        &ParamBuilder::new(&dense_store, seed, DType::F32, &Device::Cpu),
        D,
        &cfg.experts[..1],
    )
    .unwrap();
    train(vec![dense.packed.clone()], steps, |s| {
        let (x, y, _) = &batches[s % batches.len()];
        mse(&dense.expert_forward(0, x).unwrap(), y)
    });
    let dense_loss = mse(&dense.expert_forward(0, &xt).unwrap(), &yt)
        .to_scalar::<f32>()
        .unwrap() as f64;
    Report {
        purity,
        moe_loss,
        dense_loss,
    }
}

#[allow(dead_code)]
fn main() {
    let steps = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let r = run(
        steps,
        std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    for (i, p) in r.purity.iter().enumerate() {
        println!("regime {i}: routing purity {p:.3}");
    }
    println!(
        "test MSE  MoE (4 experts, top-1): {:.4}   dense (1 expert's width): {:.4}",
        r.moe_loss, r.dense_loss
    );
}
