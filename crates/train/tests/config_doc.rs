//! `switchyard train --print-config` (`TrainConfig::to_documented_toml`): every key any config
//! can have is described, unset optional keys are listed commented out, and the text parses
//! back to the same config.

use std::collections::BTreeSet;
use std::path::Path;

use switchyard_core::router::SwitchConfig;
use switchyard_core::{Activation, ExpertSpec, GateConfig, MoeConfig, RouterConfig};
use switchyard_models::{LayerFfn, MlaConfig, RopeScaling, YarnScaling};
use switchyard_train::trainer::config_doc::{key_doc, KEY_DOCS};
use switchyard_train::TrainConfig;

/// Dotted paths of every key in `v` (tables are keys too; arrays are leaves).
fn keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(t) = v {
        for (k, child) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            keys(child, &path, out);
            out.insert(path);
        }
    }
}

/// Configs that between them hold every optional key and every variant of every enum.
fn covering_configs() -> Vec<TrainConfig> {
    let base = TrainConfig::default();
    let mut out = vec![base.clone()];
    let moe = |f: &dyn Fn(&mut MoeConfig)| {
        let mut c = base.clone();
        if let LayerFfn::Moe(m) = &mut c.model.ffn.sparse {
            f(m);
        }
        c
    };
    for router in RouterConfig::defaults() {
        out.push(moe(&|m| m.router = router.clone()));
    }
    out.push(moe(&|m| {
        m.router = RouterConfig::Switch(SwitchConfig {
            eval_capacity_factor: Some(2.0),
            ..Default::default()
        });
        m.gate = GateConfig::Mlp {
            hidden: 8,
            activation: Activation::Gelu,
            context: true,
        };
        m.experts = vec![ExpertSpec::ffn(Activation::Relu, 8), ExpertSpec::swiglu(16)];
    }));
    let mut c = base.clone();
    c.init.from = Some("runs/imported".into());
    c.data.path = Some("examples/text".into());
    c.data.tokenizer = Some("tokenizer.json".into());
    c.data.new_domain = Some("cjk".into());
    c.model.n_kv_heads = Some(2);
    c.model.head_dim = Some(16);
    c.model.clip_qkv = Some(8.0);
    c.model.mla = Some(MlaConfig {
        q_lora_rank: Some(8),
        ..Default::default()
    });
    c.model.rope_scaling = Some(RopeScaling::Yarn(YarnScaling {
        mscale: Some(1.0),
        mscale_all_dim: Some(1.0),
        attention_factor: Some(1.0),
        ..Default::default()
    }));
    out.push(c.clone());
    c.model.rope_scaling = Some(RopeScaling::Linear { factor: 2.0 });
    c.model.ffn.sparse = LayerFfn::Dense { hidden: 32 };
    out.push(c);
    out
}

#[test]
fn every_config_key_has_a_description_and_every_description_a_key() {
    let mut seen = BTreeSet::new();
    for cfg in covering_configs() {
        keys(&toml::Value::try_from(&cfg).unwrap(), "", &mut seen);
    }
    let missing: Vec<_> = seen.iter().filter(|k| key_doc(k).is_none()).collect();
    assert!(
        missing.is_empty(),
        "keys without a description in config_doc.rs KEY_DOCS: {missing:?}"
    );
    let stale: Vec<_> = KEY_DOCS
        .iter()
        .filter(|d| !seen.contains(d.key))
        .map(|d| d.key)
        .collect();
    assert!(
        stale.is_empty(),
        "KEY_DOCS entries that no config has (renamed or removed keys?): {stale:?}"
    );
    let router_type = key_doc("model.ffn.sparse.router.type").unwrap().doc;
    for name in RouterConfig::NAMES {
        assert!(
            router_type.contains(name),
            "router.type's description lacks {name}"
        );
    }
    for d in KEY_DOCS {
        assert!(
            !d.doc.is_empty() && !d.doc.contains('\n'),
            "{}: one line",
            d.key
        );
    }
}

/// `--print-config` omitted unset optional keys (data.path, init.from, data.tokenizer) and
/// explained none.
#[test]
fn print_config_lists_unset_keys_commented_and_describes_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny.toml");
    let cfg = TrainConfig::from_toml_file(&path, &[]).unwrap();
    let text = cfg.to_documented_toml();
    for unset in [
        "# from = ",
        "# path = ",
        "# tokenizer = ",
        "# n_kv_heads = ",
        "# mla = ",
    ] {
        assert!(text.contains(unset), "{unset} missing:\n{text}");
    }
    // every line that sets a key (or names a section) carries its description
    for l in text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        assert!(l.contains("  # "), "no description: {l}\n{text}");
    }
    // and it is the same config
    let back = TrainConfig::from_toml_str(&text, None, &[]).unwrap();
    assert_eq!(back, cfg, "{text}");
}

#[test]
fn documented_toml_parses_back_for_every_shipped_config_and_variant() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for name in ["tiny.toml", "demo.toml", "sigmoid-bias.toml"] {
        let cfg = TrainConfig::from_toml_file(&configs.join(name), &[]).unwrap();
        let text = cfg.to_documented_toml();
        let back = TrainConfig::from_toml_str(&text, None, &[]).unwrap();
        assert_eq!(back, cfg, "{name}:\n{text}");
    }
    // the variants, through deserialisation only (some combinations do not validate)
    for cfg in covering_configs() {
        let text = cfg.to_documented_toml();
        let mut table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        expand_counts(&mut table);
        let back: TrainConfig = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(back, cfg, "{text}");
    }
}

/// The `{ count = N, … }` shorthand the printer uses for equal experts, expanded as
/// `TrainConfig::from_toml_str` does.
fn expand_counts(table: &mut toml::Table) {
    let Some(toml::Value::Table(sparse)) = table
        .get_mut("model")
        .and_then(|m| m.get_mut("ffn"))
        .and_then(|f| f.get_mut("sparse"))
    else {
        return;
    };
    for list in ["experts", "shared_experts"] {
        if let Some(toml::Value::Table(spec)) = sparse.get(list) {
            let mut spec = spec.clone();
            let n = spec.remove("count").unwrap().as_integer().unwrap() as usize;
            sparse.insert(
                list.into(),
                toml::Value::Array(vec![toml::Value::Table(spec); n]),
            );
        }
    }
}
