//! `TrainConfig` from TOML: the shipped configs parse, overrides reach every key, and each
//! kind of mistake gives a message naming the key and what to do.

use std::path::{Path, PathBuf};

use switchyard_core::router::SwitchConfig;
use switchyard_core::{ExpertSpec, RouterConfig};
use switchyard_models::LayerFfn;
use switchyard_train::trainer::ConfigError;
use switchyard_train::TrainConfig;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn parse(text: &str, overrides: &[&str]) -> Result<TrainConfig, ConfigError> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    TrainConfig::from_toml_str(text, Some(Path::new("run.toml")), &overrides)
}

fn moe(cfg: &TrainConfig) -> &switchyard_core::MoeConfig {
    match &cfg.model.ffn.sparse {
        LayerFfn::Moe(m) => m,
        LayerFfn::Dense { .. } => panic!("expected an MoE config"),
    }
}

/// A checkpoint of `configs/tiny.toml`'s model (untrained), for `init.from`.
fn tiny_checkpoint(tag: &str) -> (PathBuf, TrainConfig) {
    let dir = std::env::temp_dir().join(format!("switchyard-cfg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = TrainConfig::from_toml_file(&configs_dir().join("tiny.toml"), &[]).unwrap();
    cfg.run_dir = dir.clone();
    let (store, _model) = switchyard_train::trainer::build_model(&cfg).unwrap();
    let contents = switchyard_train::CheckpointContents {
        params: &store,
        optimizer: None,
        state: Default::default(),
        config: serde_json::to_value(&cfg).unwrap(),
    };
    switchyard_train::save_checkpoint(&dir, 0, &contents).unwrap();
    (dir, cfg)
}

#[test]
fn every_shipped_config_parses_and_validates() {
    // configs/finetune.toml starts from a checkpoint; give it one
    let (init, tiny_cfg) = tiny_checkpoint("shipped");
    let init_override = format!("init.from={:?}", init.display().to_string());
    let mut n = 0;
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            TrainConfig::from_toml_file(&path, std::slice::from_ref(&init_override))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    // finetune.toml has no [model]: the checkpoint's model; no tokenizer.json there: bytes
    let ft = TrainConfig::from_toml_file(&configs_dir().join("finetune.toml"), &[init_override])
        .unwrap();
    assert_eq!(ft.model, tiny_cfg.model);
    assert_eq!(ft.data.tokenizer, None);
    std::fs::remove_dir_all(&init).unwrap();
    assert!(n >= 2, "found {n} configs");
    let tiny = TrainConfig::from_toml_file(&configs_dir().join("tiny.toml"), &[]).unwrap();
    assert_eq!(moe(&tiny).experts, vec![ExpertSpec::swiglu(64); 4]);
    assert_eq!(
        moe(&tiny).d_model,
        tiny.model.d_model,
        "sparse.d_model is inherited"
    );
}

#[test]
fn the_defaults_round_trip_through_toml() {
    let cfg = TrainConfig::default();
    assert_eq!(parse(&cfg.to_toml_string(), &[]).unwrap(), cfg);
}

#[test]
fn overrides_reach_nested_keys_arrays_and_tables() {
    let cfg = parse(
        "[train]\nsteps = 50\n",
        &[
            "train.steps=70",
            "optim.lr=1e-3",
            "run_dir=runs/x y",
            "model.ffn.sparse.router={ type = \"switch\", k = 1, capacity_factor = 1.25, drop_policy = \"position\" }",
            "model.ffn.sparse.experts.count=6",
            "model.ffn.sparse.experts.hidden=24",
            "model.ffn.sparse.experts.kind=swiglu",
        ],
    );
    let err = cfg.unwrap_err();
    // `experts` is still the default array, so `.count` indexes nothing: the override says so
    assert!(matches!(err, ConfigError::Override { .. }), "{err}");

    let cfg = parse(
        "[train]\nsteps = 50\n",
        &[
            "train.steps=70",
            "optim.lr=1e-3",
            "run_dir=runs/x y",
            "model.ffn.sparse.router={ type = \"switch\", k = 1, capacity_factor = 1.25, drop_policy = \"position\" }",
            "model.ffn.sparse.experts={ count = 6, kind = \"swiglu\", hidden = 24 }",
            "model.ffn.sparse.experts.2.hidden=40",
        ],
    )
    .unwrap();
    assert_eq!(cfg.train.steps, 70);
    assert_eq!(cfg.optim.lr, 1e-3);
    assert_eq!(cfg.run_dir, PathBuf::from("runs/x y"));
    let m = moe(&cfg);
    assert!(matches!(
        m.router,
        RouterConfig::Switch(SwitchConfig { k: 1, .. })
    ));
    assert_eq!(m.experts.len(), 6);
    assert_eq!(m.experts[2].hidden, 40);
    assert_eq!(m.experts[1].hidden, 24);
}

#[test]
fn an_unknown_key_is_named_with_a_suggestion() {
    let err = parse("[model]\nd_modle = 32\n", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("`model.d_modle`") && msg.contains("did you mean `model.d_model`"),
        "{msg}"
    );

    let err = parse("", &["train.stepz=3"]).unwrap_err();
    assert!(err.to_string().contains("`train.stepz`"), "{err}");
    assert!(err.to_string().contains("`train.steps`"), "{err}");

    // a key of another router variant is unknown too
    let err = parse(
        "[model.ffn.sparse]\nrouter = { type = \"top_k\", k = 2, capacity_factor = 1.0 }\n",
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("model.ffn.sparse.router.capacity_factor"),
        "{err}"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    let err = parse("[train]\nsteps = \"many\"\n", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::BadValue { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("`train.steps`") && msg.contains("invalid type"),
        "{msg}"
    );

    let err = parse("", &["model.ffn.sparse.router.k=two"]).unwrap_err();
    assert!(err.to_string().contains("model.ffn.sparse.router"), "{err}");

    let err = parse("", &["model.ffn.sparse.router={ type = \"top_q\", k = 2 }"]).unwrap_err();
    assert!(err.to_string().contains("top_q"), "{err}");
}

#[test]
fn out_of_range_values_name_the_key_and_the_fix() {
    let cases: &[(&[&str], &str)] = &[
        (&["optim.min_lr=1.0"], "optim.min_lr"),
        (&["optim.beta2=1.5"], "optim.beta2"),
        (&["train.steps=0"], "train.steps"),
        (
            &["train.steps=5", "optim.warmup_steps=10"],
            "optim.warmup_steps",
        ),
        (&["data.seq_len=512"], "data.seq_len"),
        (&["data.valid_fraction=1.0"], "data.valid_fraction"),
        (&["train.spike_factor=0.5"], "train.spike_factor"),
        (&["model.n_heads=3"], "model.n_heads"),
        (
            &["model.ffn.sparse.router.k=9"],
            "model.ffn.sparse.router.k",
        ),
        (&["model.vocab_size=100"], "model.vocab_size"),
    ];
    for (overrides, key) in cases {
        let err = parse("", overrides).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { .. }),
            "{overrides:?}: {err}"
        );
        assert!(
            err.to_string().contains(&format!("`{key}`")),
            "{overrides:?}: {err}"
        );
    }
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let err = parse("[train]\nsteps = = 3\n", &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{msg}");
    assert!(msg.contains("run.toml") && msg.contains("line 2"), "{msg}");
}

#[test]
fn malformed_overrides_are_explained() {
    for bad in ["steps", "=3", "train..steps=3", "seed.x=1"] {
        let err = parse("", &[bad]).unwrap_err();
        assert!(matches!(err, ConfigError::Override { .. }), "{bad}: {err}");
    }
}

#[test]
fn a_very_deep_override_key_is_refused_not_a_stack_overflow() {
    let key = vec!["a"; 5000].join(".");
    let err = parse("", &[&format!("{key}=1")]).unwrap_err();
    assert!(matches!(err, ConfigError::Override { .. }), "{err}");
    assert!(err.to_string().contains("at most 32 deep"), "{err}");
}

/// Regression (issue 22, item 10): fault injection left the run config (it was saved in
/// checkpoints and fired again on --resume); a config that still asks for it is told where
/// it went.
#[test]
fn a_fault_table_is_refused_with_where_fault_injection_went() {
    for (text, sets) in [
        ("[fault]\nnan_loss_at_step = 5\n", vec![]),
        ("", vec!["fault.nan_loss_at_step=5"]),
    ] {
        let err = parse(text, &sets).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`fault`") && msg.contains("SWITCHYARD_FAULT_NAN_LOSS_AT_STEP"),
            "{msg}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let err = TrainConfig::from_toml_file(Path::new("no/such/run.toml"), &[]).unwrap_err();
    assert!(err.to_string().contains("no/such/run.toml"), "{err}");
}

/// Regression (issue 22, item 1): each of these aborted `switchyard train` with "memory
/// allocation of … bytes failed" instead of naming the key.
#[test]
fn absurd_sizes_are_refused_naming_the_key() {
    let huge = "1099511627776"; // 2^40
    for (sets, key) in [
        (
            vec![format!("model.d_model={huge}"), "model.n_heads=1".into()],
            "model.d_model",
        ),
        (vec![format!("model.vocab_size={huge}")], "model.vocab_size"),
        (
            vec![format!("model.max_seq_len={huge}")],
            "model.max_seq_len",
        ),
        (vec!["model.n_layers=1000000".into()], "model.n_layers"),
        (
            vec![format!("model.ffn.sparse.experts.0.hidden={huge}")],
            "model.ffn.sparse.experts[0].hidden",
        ),
        (
            vec![
                "model.ffn.sparse.experts={ count = 1000000, kind = \"swiglu\", hidden = 64 }"
                    .into(),
            ],
            "model.ffn.sparse.experts",
        ),
        (
            vec![format!(
                "model.ffn.sparse.experts={{ count = {huge}, kind = \"swiglu\", hidden = 64 }}"
            )],
            "model.ffn.sparse.experts.count",
        ),
        (
            vec!["data.docs_per_domain=1000000000000".into()],
            "data.docs_per_domain",
        ),
        (
            vec![format!("data.doc_bytes={huge}")],
            "data.docs_per_domain",
        ),
    ] {
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let err = parse("", &sets).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                ConfigError::Invalid { .. } | ConfigError::BadValue { .. }
            ),
            "{sets:?}: {msg}"
        );
        assert!(
            msg.contains(key) && msg.contains("at most"),
            "{sets:?}: {msg}"
        );
    }
}

/// Within the limits, but more memory than any machine: refused with both sizes before the
/// model or the data is built.
#[test]
fn a_run_too_large_for_memory_is_refused_before_allocating() {
    let cfg = parse("", &["model.d_model=1048576", "model.n_heads=1"]).unwrap();
    let started = std::time::Instant::now();
    let err = switchyard_train::trainer::Trainer::new(cfg)
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("to train on batches of") && msg.matches("GiB").count() >= 2,
        "{msg}"
    );
    assert!(
        msg.contains("optimizer state") && msg.contains("activations"),
        "{msg}"
    );
    assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
}
