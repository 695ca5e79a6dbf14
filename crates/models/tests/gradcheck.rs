//! f64 central-difference gradient checks of tiny one-layer LMs (eps 1e-6, atol 1e-5,
//! rtol 1e-3): attention, norms, embeddings, and a dense or MoE FFN.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use switchyard_core::router::TopKConfig;
use switchyard_core::testing::gradcheck;
use switchyard_core::{ExpertSpec, MoeConfig, MoeError, RouterConfig};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig, LmCtx};

const EPS: f64 = 1e-6;
const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-3;

fn one_layer(ffn: LayerFfn) -> LmConfig {
    LmConfig {
        vocab_size: 7,
        d_model: 8,
        n_layers: 1,
        n_heads: 2,
        max_seq_len: 8,
        ffn: FfnConfig {
            dense_hidden: 6,
            sparse: ffn,
            moe_every: 1,
            first_dense: 0,
        },
        ..Default::default()
    }
}

/// Checks every parameter whose name contains one of `which`.
fn check(cfg: &LmConfig, which: &[&str]) {
    let (_, lm) = common::build(cfg, 2, DType::F64);
    let x = Tensor::new(&[[1u32, 4, 2, 6, 3], [0, 5, 5, 2, 1]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[[4u32, 2, 6, 3, 0], [5, 5, 2, 1, 6]], &Device::Cpu).unwrap();
    let named: Vec<(String, Var)> = lm
        .named_vars()
        .into_iter()
        .filter(|(n, _)| which.iter().any(|w| n.contains(w)))
        .collect();
    assert!(
        named.len() >= which.len(),
        "selected {:?}",
        named.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let objective = || {
        let (ce, out) = lm
            .loss(&x, &y, &mut LmCtx::new(true, 0))
            .map_err(|e| MoeError::input("lm", e.to_string()))?;
        Ok((ce + out.aux_loss)?)
    };
    let rep = gradcheck(&vars, objective, EPS, ATOL, RTOL).unwrap();
    println!("max |Δ| = {:.3e} over {} entries", rep.max_abs, rep.checked);
    if let Some((vi, i, a, n)) = rep.worst {
        panic!("d/d{}[{i}]: analytic {a} vs numeric {n}", named[vi].0);
    }
}

const ATTENTION_AND_NORMS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "input_layernorm",
    "post_attention_layernorm",
    "model.norm",
];

#[test]
fn dense_lm_attention_norms_and_ffn() {
    let mut which = ATTENTION_AND_NORMS.to_vec();
    which.extend(["embed_tokens", "mlp.down_proj"]);
    check(&one_layer(LayerFfn::Dense { hidden: 6 }), &which);
}

#[test]
fn grouped_query_attention_with_qk_norm_and_untied_head() {
    let cfg = LmConfig {
        n_kv_heads: Some(1),
        qk_norm: true,
        tie_embeddings: false,
        ..one_layer(LayerFfn::Dense { hidden: 6 })
    };
    let mut which = ATTENTION_AND_NORMS.to_vec();
    which.extend(["q_norm", "k_norm", "lm_head"]);
    check(&cfg, &which);
}

#[test]
fn moe_lm_through_the_dispatch_kernel() {
    // k = E: every expert is selected, so routing has no discontinuity to straddle
    let moe = MoeConfig {
        d_model: 8,
        experts: vec![ExpertSpec::swiglu(4), ExpertSpec::swiglu(3)],
        router: RouterConfig::TopK(TopKConfig { k: 2 }),
        ..Default::default()
    };
    let mut which = ATTENTION_AND_NORMS.to_vec();
    which.extend(["block_sparse_moe.gate", "block_sparse_moe.experts"]);
    check(&one_layer(LayerFfn::Moe(moe)), &which);
}
