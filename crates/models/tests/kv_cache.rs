//! Incremental decoding through the KV cache gives the same logits as a full forward.

mod common;

use candle_core::DType;
use common::*;
use switchyard_core::router::HashConfig;
use switchyard_core::{ExpertSpec, RouterConfig};
use switchyard_models::{KvCache, LayerFfn, LmConfig, LmCtx, MoeLm, Sampler};

const TOL: f64 = 1e-5;

/// Prefill `prefill` positions, then feed the rest one at a time; compare every position.
fn check_cache_matches_full(cfg: &LmConfig, prefill: usize) {
    let (_, lm) = build(cfg, 5, DType::F32);
    let (b, l) = (2, 9);
    let x = ids(b, l);
    let full = lm.forward(&x, &mut LmCtx::new(false, 0)).unwrap().logits;

    let mut cache = KvCache::new(cfg.n_layers);
    let mut ctx = LmCtx::new(false, 0);
    let first = lm
        .forward_cached(&x.narrow(1, 0, prefill).unwrap(), &mut cache, &mut ctx)
        .unwrap()
        .logits;
    let d = max_abs_diff(&first, &full.narrow(1, 0, prefill).unwrap());
    assert!(d < TOL, "prefill logits differ by {d}");
    for t in prefill..l {
        let step = lm
            .forward_cached(&x.narrow(1, t, 1).unwrap(), &mut cache, &mut ctx)
            .unwrap()
            .logits;
        let d = max_abs_diff(&step, &full.narrow(1, t, 1).unwrap());
        assert!(d < TOL, "position {t}: cached logits differ by {d}");
        assert_eq!(cache.len(), t + 1);
    }
}

#[test]
fn cache_matches_full_forward() {
    check_cache_matches_full(&tiny_cfg(), 3);
}

#[test]
fn cache_matches_full_forward_from_one_token() {
    check_cache_matches_full(&tiny_cfg(), 1);
}

#[test]
fn cache_matches_with_grouped_query_heads_and_qk_norm() {
    let cfg = LmConfig {
        n_heads: 4,
        n_kv_heads: Some(2),
        qk_norm: true,
        tie_embeddings: false,
        ..tiny_cfg()
    };
    check_cache_matches_full(&cfg, 4);
}

#[test]
fn cache_matches_with_hash_routing_shared_experts_and_a_dense_first_layer() {
    // hash routing reads the token ids, so this also checks they reach the MoE layers
    let mut cfg = LmConfig {
        n_layers: 3,
        ..tiny_cfg()
    };
    cfg.ffn.first_dense = 1;
    if let LayerFfn::Moe(m) = &mut cfg.ffn.sparse {
        m.router = RouterConfig::Hash(HashConfig { seed: 1 });
        m.shared_experts = vec![ExpertSpec::swiglu(8)];
    }
    check_cache_matches_full(&cfg, 2);
}

#[test]
fn greedy_generation_follows_the_full_forward_argmax() {
    let (_, lm) = build(&tiny_cfg(), 9, DType::F32);
    let prompt = [1u32, 5, 9];
    let new = lm
        .generate(
            &prompt,
            6,
            &mut Sampler::greedy(),
            &mut LmCtx::new(false, 0),
        )
        .unwrap();
    assert_eq!(new.len(), 6);
    let mut seq = prompt.to_vec();
    for &tok in &new {
        let want = argmax_last(&lm, &seq);
        assert_eq!(tok, want, "after {seq:?}");
        seq.push(tok);
    }
}

#[test]
fn generation_stops_at_max_seq_len() {
    let (_, lm) = build(
        &LmConfig {
            max_seq_len: 6,
            ..tiny_cfg()
        },
        9,
        DType::F32,
    );
    let new = lm
        .generate(
            &[1, 2, 3, 4],
            10,
            &mut Sampler::new(1.0, 0.9, 3),
            &mut LmCtx::new(false, 0),
        )
        .unwrap();
    // positions 4 and 5 are fed back; the token after position 5 is the last one predicted
    assert_eq!(new.len(), 3);
    assert!(lm
        .generate(
            &[1; 7],
            1,
            &mut Sampler::greedy(),
            &mut LmCtx::new(false, 0)
        )
        .is_err());
    assert!(lm
        .generate(&[], 1, &mut Sampler::greedy(), &mut LmCtx::new(false, 0))
        .is_err());
}

#[test]
fn sampling_is_reproducible_from_the_seed() {
    let (_, lm) = build(&tiny_cfg(), 9, DType::F32);
    let run = |seed| {
        lm.generate(
            &[1, 2],
            12,
            &mut Sampler::new(1.5, 0.95, seed),
            &mut LmCtx::new(false, 0),
        )
        .unwrap()
    };
    assert_eq!(run(4), run(4));
    assert_ne!(run(4), run(5));
}

fn argmax_last(lm: &MoeLm, seq: &[u32]) -> u32 {
    let x =
        candle_core::Tensor::from_slice(seq, (1, seq.len()), &candle_core::Device::Cpu).unwrap();
    let logits = lm.forward(&x, &mut LmCtx::new(false, 0)).unwrap().logits;
    let last = logits
        .narrow(1, seq.len() - 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap();
    last.argmax(0).unwrap().to_scalar::<u32>().unwrap()
}
