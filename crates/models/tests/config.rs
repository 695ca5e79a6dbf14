//! Config validation: clear errors naming the field, never a panic; serde round trip.

mod common;

use candle_core::{DType, Device};
use common::*;
use switchyard_core::router::TopKConfig;
use switchyard_core::{GateConfig, ParamBuilder, ParamStore, RouterConfig};
use switchyard_models::{LayerFfn, LmConfig, ModelError, MoeLm};

fn field_of(cfg: &LmConfig) -> String {
    match cfg.validate() {
        Err(ModelError::Config { field, reason }) => {
            assert!(!reason.is_empty());
            field
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

fn with(f: impl FnOnce(&mut LmConfig)) -> LmConfig {
    let mut c = tiny_cfg();
    f(&mut c);
    c
}

#[test]
fn the_tiny_and_default_configs_are_valid() {
    tiny_cfg().validate().unwrap();
    LmConfig::default().validate().unwrap();
    tiny_cfg().dense_equivalent().validate().unwrap();
}

#[test]
fn invalid_configs_name_their_field() {
    let cases: Vec<(LmConfig, &str)> = vec![
        (with(|c| c.n_heads = 3), "n_heads"),
        (with(|c| c.n_heads = 0), "n_heads"),
        (with(|c| c.n_heads = 16), "n_heads"), // head_dim 1 is odd: no RoPE
        (with(|c| c.n_layers = 0), "n_layers"),
        (with(|c| c.vocab_size = 0), "vocab_size"),
        (with(|c| c.d_model = 0), "d_model"),
        (with(|c| c.n_kv_heads = Some(3)), "n_kv_heads"),
        (with(|c| c.n_kv_heads = Some(0)), "n_kv_heads"),
        (with(|c| c.max_seq_len = 0), "max_seq_len"),
        (with(|c| c.rope_theta = -1.0), "rope_theta"),
        (with(|c| c.norm_eps = f64::NAN), "norm_eps"),
        (with(|c| c.ffn.moe_every = 0), "ffn.moe_every"),
        (with(|c| c.ffn.first_dense = 3), "ffn.first_dense"),
        (
            with(|c| {
                c.ffn.first_dense = 1;
                c.ffn.dense_hidden = 0
            }),
            "ffn.dense_hidden",
        ),
        (
            with(|c| c.ffn.sparse = LayerFfn::Dense { hidden: 0 }),
            "ffn.sparse.hidden",
        ),
        (with(|c| c.d_model = 32), "ffn.sparse.d_model"),
        (
            with(|c| {
                if let LayerFfn::Moe(m) = &mut c.ffn.sparse {
                    m.router = RouterConfig::TopK(TopKConfig { k: 9 });
                }
            }),
            "ffn.sparse.router.k",
        ),
        (
            with(|c| {
                if let LayerFfn::Moe(m) = &mut c.ffn.sparse {
                    m.gate = GateConfig::Linear { context: true };
                }
            }),
            "ffn.sparse.gate.context",
        ),
    ];
    for (cfg, want) in cases {
        assert_eq!(field_of(&cfg), want, "config {cfg:?}");
        // building reports the same error instead of panicking
        let store = ParamStore::new();
        assert!(MoeLm::new(
            &ParamBuilder::new(&store, 0, DType::F32, &Device::Cpu),
            &cfg
        )
        .is_err());
    }
}

#[test]
fn error_messages_say_what_to_change() {
    let msg = with(|c| c.n_heads = 3).validate().unwrap_err().to_string();
    assert!(
        msg.contains("n_heads") && msg.contains("d_model = 16"),
        "{msg}"
    );
}

#[test]
fn configs_round_trip_through_json() {
    let cfg = with(|c| {
        c.ffn.first_dense = 1;
        c.n_kv_heads = Some(1);
    });
    let json = serde_json::to_string_pretty(&cfg).unwrap();
    assert!(json.contains("\"type\": \"moe\""), "{json}");
    let back: LmConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cfg);
    let dense = cfg.dense_equivalent();
    let back: LmConfig = serde_json::from_str(&serde_json::to_string(&dense).unwrap()).unwrap();
    assert_eq!(back, dense);
    // missing fields take their defaults
    let partial: LmConfig = serde_json::from_str(r#"{"d_model": 64, "n_layers": 4}"#).unwrap();
    assert_eq!(partial.n_layers, 4);
    partial.validate().unwrap();
}
