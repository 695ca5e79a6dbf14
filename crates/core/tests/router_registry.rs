//! The router registry: every router in it has a serde tag equal to its name, a default config
//! that is valid, round-trips through JSON and TOML and routes a batch; and the configs written
//! before routers moved to one file each still read and write the same bytes.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use switchyard_core::router::{self, RouterInput, SwitchConfig};
use switchyard_core::{DropPolicy, MoeConfig, RouterConfig};

/// A router as it sits in a TOML file: `router = { type = "top_k", k = 2 }`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct InToml {
    router: RouterConfig,
}

#[test]
fn every_router_is_named_by_its_serde_tag() {
    let defaults = RouterConfig::defaults();
    let names: Vec<&str> = defaults.iter().map(|r| r.name()).collect();
    assert_eq!(names, RouterConfig::NAMES);
    for (i, name) in names.iter().enumerate() {
        assert!(!names[..i].contains(name), "`{name}` registered twice");
    }
    for r in &defaults {
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["type"], r.name(), "{json}");
    }
}

#[test]
fn every_default_config_is_valid_in_the_default_layer() {
    for r in RouterConfig::defaults() {
        let cfg = MoeConfig {
            router: r,
            ..Default::default()
        };
        cfg.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", cfg.router.name()));
    }
}

#[test]
fn every_default_config_round_trips_through_json_and_toml() {
    for r in RouterConfig::defaults() {
        let json = serde_json::to_string(&r).unwrap();
        let back: RouterConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r, "{json}");
        assert_eq!(serde_json::to_string(&back).unwrap(), json);

        let toml_text = toml::to_string(&InToml { router: r.clone() }).unwrap();
        let back: InToml = toml::from_str(&toml_text).unwrap();
        assert_eq!(back.router, r, "{toml_text}");
        assert_eq!(toml::to_string(&back).unwrap(), toml_text);
    }
}

#[test]
fn every_router_routes_a_batch_and_reports_its_config() {
    let (t, e) = (12, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for cfg in RouterConfig::defaults() {
        let r = router::build(&cfg, e).unwrap();
        assert_eq!(r.config(), cfg);
        assert_eq!(r.num_experts(), e);
        let cols = r.gate_outputs().max(1);
        let vals: Vec<f64> = (0..t * cols).map(|_| rng.random::<f64>() - 0.5).collect();
        let logits = Tensor::from_vec(vals, (t, cols), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let ids: Vec<u32> = (0..t as u32).collect();
        for train in [false, true] {
            let out = r
                .route(RouterInput {
                    gate_out: &logits,
                    token_ids: Some(&ids),
                    available: None,
                    train,
                    rng: &mut rng,
                })
                .unwrap_or_else(|err| panic!("{}: {err}", cfg.name()));
            out.plan.check().unwrap();
            assert_eq!(out.probs.dims(), &[t, e], "{}", cfg.name());
        }
    }
}

// Captured with serde_json and toml from the code before each router's config moved to its
// own file, when `RouterConfig` held struct variants (`RouterConfig::TopK { k: 2 }`).
const BEFORE: &[(&str, &str, &str)] = &[
    // (name, JSON, TOML of `InToml`)
    (
        "top_k",
        r#"{"type":"top_k","k":2}"#,
        "[router]\ntype = \"top_k\"\nk = 2\n",
    ),
    (
        "noisy_top_k",
        r#"{"type":"noisy_top_k","k":2}"#,
        "[router]\ntype = \"noisy_top_k\"\nk = 2\n",
    ),
    (
        "switch",
        r#"{"type":"switch","k":1,"capacity_factor":1.25,"eval_capacity_factor":null,"drop_policy":"position"}"#,
        "[router]\ntype = \"switch\"\nk = 1\ncapacity_factor = 1.25\ndrop_policy = \"position\"\n",
    ),
    (
        "expert_choice",
        r#"{"type":"expert_choice","capacity_factor":2.0}"#,
        "[router]\ntype = \"expert_choice\"\ncapacity_factor = 2.0\n",
    ),
    (
        "hash",
        r#"{"type":"hash","seed":0}"#,
        "[router]\ntype = \"hash\"\nseed = 0\n",
    ),
    (
        "sigmoid_bias",
        r#"{"type":"sigmoid_bias","k":2,"bias_update_rate":0.001,"scaling":1.0}"#,
        "[router]\ntype = \"sigmoid_bias\"\nk = 2\nbias_update_rate = 0.001\nscaling = 1.0\n",
    ),
    (
        "group_limited",
        r#"{"type":"group_limited","k":2,"groups":2,"topk_groups":1,"score":"sigmoid","group_score":"top2_sum","bias_update_rate":0.001,"scaling":1.0}"#,
        "[router]\ntype = \"group_limited\"\nk = 2\ngroups = 2\ntopk_groups = 1\nscore = \"sigmoid\"\ngroup_score = \"top2_sum\"\nbias_update_rate = 0.001\nscaling = 1.0\n",
    ),
    (
        "hierarchical",
        r#"{"type":"hierarchical","groups":2,"k_groups":1,"k_inner":2}"#,
        "[router]\ntype = \"hierarchical\"\ngroups = 2\nk_groups = 1\nk_inner = 2\n",
    ),
    (
        "sinkhorn",
        r#"{"type":"sinkhorn","k":1,"iterations":30}"#,
        "[router]\ntype = \"sinkhorn\"\nk = 1\niterations = 30\n",
    ),
];

#[test]
fn default_configs_serialize_as_before() {
    let defaults = RouterConfig::defaults();
    for &(name, json, toml_text) in BEFORE {
        let r = defaults
            .iter()
            .find(|r| r.name() == name)
            .unwrap_or_else(|| panic!("`{name}` left the registry"));
        assert_eq!(serde_json::to_string(r).unwrap(), json);
        assert_eq!(serde_json::from_str::<RouterConfig>(json).unwrap(), *r);
        let wrapped = InToml { router: r.clone() };
        assert_eq!(toml::to_string(&wrapped).unwrap(), toml_text);
        assert_eq!(toml::from_str::<InToml>(toml_text).unwrap(), wrapped);
    }
}

#[test]
fn configs_of_saved_checkpoints_still_load() {
    // `eval_capacity_factor` may be absent (None) or null, as before; unknown keys are
    // ignored here (the trainer's config reader names them)
    let r: RouterConfig = serde_json::from_str(
        r#"{"type":"switch","k":1,"capacity_factor":1.25,"drop_policy":"probability"}"#,
    )
    .unwrap();
    let want = RouterConfig::Switch(SwitchConfig {
        k: 1,
        capacity_factor: 1.25,
        eval_capacity_factor: None,
        drop_policy: DropPolicy::Probability,
    });
    assert_eq!(r, want);
    let r: RouterConfig = serde_json::from_str(
        r#"{"type":"switch","k":1,"capacity_factor":1.25,"eval_capacity_factor":null,"drop_policy":"probability","extra":3}"#,
    )
    .unwrap();
    assert_eq!(r, want);
    let moe: MoeConfig = serde_json::from_str(MOE_BEFORE).unwrap();
    assert_eq!(moe, MoeConfig::default());
    // keys added since come with their defaults after the old ones
    // (losses.domain_map, then gate_in_steps)
    let before = MOE_BEFORE.replace(r#""z":0.001}"#, r#""z":0.001,"domain_map":0.0}"#);
    let added = r#","gate_in_steps":100}"#;
    let now = format!("{}{added}", &before[..before.len() - 1]);
    assert_eq!(serde_json::to_string(&moe).unwrap(), now);
}

#[test]
fn bad_router_configs_get_the_same_errors_as_before() {
    for &(input, err) in ERRORS_BEFORE {
        let got = serde_json::from_str::<RouterConfig>(input)
            .unwrap_err()
            .to_string();
        if err.starts_with("unknown variant `top_q`") {
            // lists every router: the ones there before, in the same order, then any new ones
            let (listed, at) = err.split_once(" at ").unwrap();
            assert!(got.starts_with(listed) && got.ends_with(at), "{got}");
            let last = RouterConfig::NAMES.last().unwrap();
            assert!(got.contains(&format!("`{last}` at ")), "{got}");
        } else {
            assert_eq!(got, err, "{input}");
        }
    }
}

/// `MoeConfig::default()` as `config.json` held it before.
const MOE_BEFORE: &str = r#"{"d_model":64,"experts":[{"kind":"swiglu","hidden":128},{"kind":"swiglu","hidden":128},{"kind":"swiglu","hidden":128},{"kind":"swiglu","hidden":128},{"kind":"swiglu","hidden":128},{"kind":"swiglu","hidden":128},{"kind":"swiglu","hidden":128},{"kind":"swiglu","hidden":128}],"shared_experts":[],"shared_gate":false,"router":{"type":"top_k","k":2},"gate":{"type":"linear","context":false},"renormalize":true,"losses":{"switch_balance":0.01,"importance":0.0,"load":0.0,"z":0.001},"jitter":0.0,"expert_dropout":0.0}"#;

/// serde_json's errors for bad routers before.
const ERRORS_BEFORE: &[(&str, &str)] = &[
    (
        r#"{"type":"top_q","k":2}"#,
        "unknown variant `top_q`, expected one of `top_k`, `noisy_top_k`, `switch`, `expert_choice`, `hash`, `sigmoid_bias`, `group_limited`, `hierarchical`, `sinkhorn` at line 1 column 15",
    ),
    (
        r#"{"type":"top_k"}"#,
        "missing field `k`",
    ),
    (
        r#"{"type":"top_k","k":"two"}"#,
        "invalid type: string \"two\", expected usize",
    ),
    (
        r#"{"k":2}"#,
        "missing field `type` at line 1 column 7",
    ),
    (
        r#"{"type":"switch","k":1,"capacity_factor":1.25,"drop_policy":"posit"}"#,
        "unknown variant `posit`, expected `position` or `probability`",
    ),
    (
        r#"{"type":"top_k","k":-1}"#,
        "invalid value: integer `-1`, expected usize",
    ),
    (
        r#"{"type":"hash","seed":[1]}"#,
        "invalid type: sequence, expected u64",
    ),
    (
        r#"{"type":"top_k","k":2,"type":"hash"}"#,
        "duplicate field `type` at line 1 column 28",
    ),
    (
        r#"[1,2]"#,
        "invalid type: integer `1`, expected variant identifier at line 1 column 2",
    ),
    (
        r#"{"type":"hierarchical","groups":2,"k_groups":1}"#,
        "missing field `k_inner`",
    ),
    (
        r#"5"#,
        "invalid type: integer `5`, expected internally tagged enum RouterConfig at line 1 column 1",
    ),
];
