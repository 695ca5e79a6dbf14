//! Output shapes, layer layout (`moe_every`, `first_dense`), parameter names and counts.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use switchyard_core::{ExpertSpec, ParamBuilder, ParamStore};
use switchyard_models::{
    per_token_ce, FfnConfig, LayerFfn, LmConfig, LmCtx, MoeClassifier, MoeClassifierConfig,
};

#[test]
fn forward_shapes_and_reports() {
    let (_, lm) = build(&tiny_cfg(), 0, DType::F32);
    let out = lm.forward(&ids(3, 5), &mut LmCtx::new(true, 1)).unwrap();
    assert_eq!(out.logits.dims(), &[3, 5, VOCAB]);
    assert_eq!(out.aux_loss.dims(), &[] as &[usize]);
    assert!(out.aux_loss.to_scalar::<f32>().unwrap() > 0.0);
    assert_eq!(out.layers.len(), 2);
    for (i, r) in out.layers.iter().enumerate() {
        assert_eq!(r.layer, i);
        assert!(r.is_moe);
        let stats = r.stats.as_ref().unwrap();
        // every one of the 15 tokens goes to k = 2 experts
        assert_eq!(stats.tokens_per_expert.iter().sum::<usize>(), 15 * 2);
        assert_eq!(r.routing.as_ref().unwrap().probs.dims(), &[15, 4]);
    }
}

#[test]
fn per_token_ce_averages_to_the_loss() {
    let (_, lm) = build(&tiny_cfg(), 0, DType::F32);
    let (x, y) = (ids(2, 6), ids(2, 7).narrow(1, 1, 6).unwrap());
    let (ce, out) = lm.loss(&x, &y, &mut LmCtx::new(false, 0)).unwrap();
    let per = per_token_ce(&out.logits, &y).unwrap();
    assert_eq!(per.dims(), &[2, 6]);
    let mean = per.mean_all().unwrap().to_scalar::<f32>().unwrap();
    let ce = ce.to_scalar::<f32>().unwrap();
    assert!((mean - ce).abs() < 1e-5, "{mean} vs {ce}");
    // near-uniform predictions at initialisation
    assert!((ce - (VOCAB as f32).ln()).abs() < 0.1, "initial loss {ce}");
}

#[test]
fn moe_every_and_first_dense_place_the_moe_layers() {
    let mut cfg = tiny_cfg();
    cfg.n_layers = 6;
    cfg.ffn.moe_every = 2;
    assert_eq!(cfg.moe_layers(), vec![1, 3, 5]);
    cfg.ffn.first_dense = 1;
    assert_eq!(cfg.moe_layers(), vec![2, 4]);
    cfg.ffn.moe_every = 1;
    assert_eq!(cfg.moe_layers(), vec![1, 2, 3, 4, 5]);

    let (_, mut lm) = build(&cfg, 0, DType::F32);
    assert_eq!(lm.moe_layers_mut().count(), 5);
    let out = lm.forward(&ids(1, 4), &mut LmCtx::new(false, 0)).unwrap();
    let moe: Vec<bool> = out.layers.iter().map(|r| r.is_moe).collect();
    assert_eq!(moe, vec![false, true, true, true, true, true]);
    assert!(out.layers[0].stats.is_none());
}

#[test]
fn parameters_have_hf_names() {
    let mut cfg = tiny_cfg();
    cfg.ffn.first_dense = 1;
    cfg.tie_embeddings = false;
    cfg.qk_norm = true;
    let (store, lm) = build(&cfg, 0, DType::F32);
    let names: Vec<String> = lm.named_vars().into_iter().map(|(n, _)| n).collect();
    for want in [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.self_attn.q_norm.weight",
        "model.layers.0.self_attn.k_norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.block_sparse_moe.gate.weight",
        "model.layers.1.block_sparse_moe.experts.packed",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing {want} in {names:?}"
        );
    }
    assert_eq!(names.len(), store.all().len());
    assert_eq!(lm.num_params_total(), store.num_params());
}

#[test]
fn built_param_counts_match_the_config() {
    let mut cfg = tiny_cfg();
    cfg.n_layers = 3;
    cfg.ffn.moe_every = 2;
    cfg.n_kv_heads = Some(1);
    cfg.qk_norm = true;
    if let LayerFfn::Moe(m) = &mut cfg.ffn.sparse {
        m.experts = vec![
            ExpertSpec::swiglu(8),
            ExpertSpec::swiglu(16),
            ExpertSpec::swiglu(24),
            ExpertSpec::swiglu(8),
        ];
        m.shared_experts = vec![ExpertSpec::swiglu(12)];
    }
    let (_, lm) = build(&cfg, 0, DType::F32);
    assert_eq!(lm.param_count(), cfg.param_count().unwrap());
    let dense = LmConfig {
        ffn: FfnConfig {
            sparse: LayerFfn::Dense { hidden: 24 },
            ..cfg.ffn.clone()
        },
        ..cfg.clone()
    };
    let c = dense.param_count().unwrap();
    assert_eq!(c.total, c.active_per_token);
}

#[test]
fn classifier_shapes() {
    let cfg = MoeClassifierConfig {
        in_dim: 5,
        d_model: D,
        n_classes: 3,
        moe: tiny_moe(D),
        n_layers: 2,
        norm_eps: 1e-5,
    };
    let store = ParamStore::new();
    let clf = MoeClassifier::new(
        &ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let x = Tensor::ones((7, 5), DType::F32, &Device::Cpu).unwrap();
    let out = clf.forward(&x, &mut LmCtx::new(true, 0)).unwrap();
    assert_eq!(out.logits.dims(), &[7, 3]);
    assert_eq!(out.aux_loss.dims(), &[] as &[usize]);
    assert_eq!(out.layers.len(), 2);
    let n: usize = clf.vars().iter().map(|v| v.elem_count()).sum();
    assert_eq!(n, store.num_params());
}
