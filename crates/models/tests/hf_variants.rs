//! The architecture variants HF MoE models need (explicit head_dim, q/k/v biases, per-head
//! q/k norm, clip_qkv, multi-head latent attention with interleaved partial RoPE, forced dense
//! layers, a sigmoid-gated shared expert): parameter counts from the config equal the model's,
//! the KV cache reproduces a full forward, gradients match central differences, and the
//! interleaved RoPE rotates the pairs it should. Parity of each with transformers is tested in
//! `crates/interop/tests/parity.rs`.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use switchyard_core::router::GroupLimitedConfig;
use switchyard_core::testing::gradcheck;
use switchyard_core::{ExpertSpec, GroupScore, MoeConfig, MoeError, RouterConfig, ScoreFn};
use switchyard_models::{FfnConfig, KvCache, LayerFfn, LmConfig, LmCtx, MlaConfig, Rope};

const TOL: f64 = 1e-5;

fn qwen2_like() -> LmConfig {
    let moe = MoeConfig {
        shared_experts: vec![ExpertSpec::swiglu(12)],
        shared_gate: true,
        ..tiny_moe(D)
    };
    LmConfig {
        n_layers: 3,
        n_kv_heads: Some(1),
        qkv_bias: true,
        ffn: FfnConfig {
            sparse: LayerFfn::Moe(moe),
            ..tiny_cfg().ffn
        },
        dense_layers: vec![1],
        tie_embeddings: false,
        ..tiny_cfg()
    }
}

fn qwen3_like() -> LmConfig {
    LmConfig {
        head_dim: Some(12),
        qk_norm_per_head: true,
        n_kv_heads: Some(1),
        ..tiny_cfg()
    }
}

fn olmoe_like() -> LmConfig {
    LmConfig {
        qk_norm: true,
        clip_qkv: Some(0.5),
        ..tiny_cfg()
    }
}

fn deepseek_like(q_lora_rank: Option<usize>, score: ScoreFn) -> LmConfig {
    let group_score = if score == ScoreFn::Softmax {
        GroupScore::Max
    } else {
        GroupScore::Top2Sum
    };
    let router = RouterConfig::GroupLimited(GroupLimitedConfig {
        k: 2,
        groups: 2,
        topk_groups: 1,
        score,
        group_score,
        bias_update_rate: 0.0,
        scaling: 1.5,
    });
    let moe = MoeConfig {
        router,
        shared_experts: vec![ExpertSpec::swiglu(8)],
        renormalize: false,
        ..tiny_moe(D)
    };
    LmConfig {
        n_layers: 2,
        mla: Some(MlaConfig {
            q_lora_rank,
            kv_lora_rank: 6,
            qk_nope_head_dim: 4,
            qk_rope_head_dim: 4,
            v_head_dim: 6,
            rope_interleave: true,
            lora_norm_eps: 1e-6,
        }),
        ffn: FfnConfig {
            sparse: LayerFfn::Moe(moe),
            first_dense: 1,
            ..tiny_cfg().ffn
        },
        ..tiny_cfg()
    }
}

fn variants() -> Vec<(&'static str, LmConfig)> {
    vec![
        ("qwen2_like", qwen2_like()),
        ("qwen3_like", qwen3_like()),
        ("olmoe_like", olmoe_like()),
        ("mla_direct_q", deepseek_like(None, ScoreFn::Softmax)),
        ("mla_low_rank_q", deepseek_like(Some(10), ScoreFn::Sigmoid)),
    ]
}

#[test]
fn config_param_counts_equal_the_models() {
    for (name, cfg) in variants() {
        let (_, lm) = build(&cfg, 1, DType::F32);
        assert_eq!(cfg.param_count().unwrap(), lm.param_count(), "{name}");
    }
}

#[test]
fn forced_dense_layers_get_a_dense_ffn() {
    let cfg = qwen2_like();
    assert_eq!(cfg.moe_layers(), vec![0, 2]);
    let (store, _) = build(&cfg, 1, DType::F32);
    let names: Vec<String> = store.all().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"model.layers.1.mlp.gate_proj.weight".to_string()));
    assert!(
        names.contains(&"model.layers.0.block_sparse_moe.shared_expert_gate.weight".to_string())
    );
    assert!(names.contains(&"model.layers.0.self_attn.q_proj.bias".to_string()));
    let bad = LmConfig {
        dense_layers: vec![3],
        ..cfg
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("dense_layers"));
}

#[test]
fn kv_cache_matches_full_forward_for_every_variant() {
    for (name, cfg) in variants() {
        let (_, lm) = build(&cfg, 5, DType::F32);
        let (b, l, prefill) = (2, 8, 3);
        let x = ids(b, l);
        let full = lm.forward(&x, &mut LmCtx::new(false, 0)).unwrap().logits;
        let mut cache = KvCache::new(cfg.n_layers);
        let mut ctx = LmCtx::new(false, 0);
        let first = lm
            .forward_cached(&x.narrow(1, 0, prefill).unwrap(), &mut cache, &mut ctx)
            .unwrap()
            .logits;
        assert!(
            max_abs_diff(&first, &full.narrow(1, 0, prefill).unwrap()) < TOL,
            "{name}: prefill"
        );
        for t in prefill..l {
            let step = lm
                .forward_cached(&x.narrow(1, t, 1).unwrap(), &mut cache, &mut ctx)
                .unwrap()
                .logits;
            let d = max_abs_diff(&step, &full.narrow(1, t, 1).unwrap());
            assert!(d < TOL, "{name}: position {t} differs by {d}");
        }
    }
}

/// f64 gradients of the new attention parameters (and the shared-expert gate) against
/// central differences (eps 1e-6, atol 1e-5, rtol 1e-3).
#[test]
fn gradients_of_the_new_attention_parameters() {
    let which = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "q_norm",
        "k_norm",
        "q_a_",
        "q_b_proj",
        "kv_a_",
        "kv_b_proj",
        "shared_expert_gate",
    ];
    let x = Tensor::new(&[[1u32, 4, 2, 6, 3]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[[4u32, 2, 6, 3, 0]], &Device::Cpu).unwrap();
    for (name, mut cfg) in variants() {
        cfg.n_layers = cfg.n_layers.min(2);
        cfg.dense_layers.retain(|&i| i < 2);
        if name == "olmoe_like" {
            cfg.clip_qkv = Some(50.0); // the clamp's kink is not differentiable
        }
        let (_, lm) = build(&cfg, 2, DType::F64);
        let named: Vec<(String, Var)> = lm
            .named_vars()
            .into_iter()
            .filter(|(n, _)| which.iter().any(|w| n.contains(w)))
            .collect();
        let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
        let objective = || {
            let (ce, _) = lm
                .loss(&x, &y, &mut LmCtx::new(false, 0))
                .map_err(|e| MoeError::input("lm", e.to_string()))?;
            Ok(ce)
        };
        let rep = gradcheck(&vars, objective, 1e-6, 1e-5, 1e-3).unwrap();
        if let Some((vi, i, a, n)) = rep.worst {
            panic!(
                "{name}: d/d{}[{i}] analytic {a} vs numeric {n}",
                named[vi].0
            );
        }
    }
}

/// DeepSeek's layout: pair `(2i, 2i+1)` turns by `p · θ_i`, output interleaved.
#[test]
fn interleaved_rope_rotates_adjacent_pairs() {
    let (d, theta) = (4usize, 100.0f64);
    let rope = Rope::new(d, 8, theta, DType::F64, &Device::Cpu)
        .unwrap()
        .with_interleave(true);
    let x: Vec<f64> = vec![1.0, 2.0, 3.0, 4.0];
    let p = 3usize;
    let t = Tensor::from_vec(x.clone(), (1, 1, 1, d), &Device::Cpu).unwrap();
    let got = rope
        .apply(&t, p)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    for i in 0..d / 2 {
        let a = p as f64 * theta.powf(-((2 * i) as f64) / d as f64);
        let (x1, x2) = (x[2 * i], x[2 * i + 1]);
        assert!((got[2 * i] - (x1 * a.cos() - x2 * a.sin())).abs() < 1e-12);
        assert!((got[2 * i + 1] - (x2 * a.cos() + x1 * a.sin())).abs() < 1e-12);
    }
}
