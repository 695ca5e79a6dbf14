//! Limits by design (issue 22, item 1): absurd magnitudes are refused naming their key, and
//! the memory a config needs for a job is estimated from the config alone and refused with
//! both sizes when it exceeds what is available — before anything is allocated.

mod common;

use candle_core::DType;
use common::*;
use switchyard_core::ExpertSpec;
use switchyard_models::memory::{Job, MemoryNeed, MAX_LAYERS, MAX_WIDTH};
use switchyard_models::{LayerFfn, LmConfig, ModelError};

const GIB: u64 = 1 << 30;
const HUGE: usize = 1 << 40;

fn with(f: impl FnOnce(&mut LmConfig)) -> LmConfig {
    let mut c = tiny_cfg();
    f(&mut c);
    c
}

fn moe(c: &mut LmConfig) -> &mut switchyard_core::MoeConfig {
    match &mut c.ffn.sparse {
        LayerFfn::Moe(m) => m,
        LayerFfn::Dense { .. } => unreachable!("tiny_cfg is MoE"),
    }
}

/// Each of these aborted `switchyard train` with "memory allocation of … bytes failed".
#[test]
fn absurd_magnitudes_are_refused_naming_the_key() {
    let cases: Vec<(LmConfig, &str)> = vec![
        (
            with(|c| {
                c.d_model = HUGE;
                c.n_heads = 1;
            }),
            "d_model",
        ),
        (with(|c| c.vocab_size = HUGE), "vocab_size"),
        (with(|c| c.max_seq_len = HUGE), "max_seq_len"),
        (with(|c| c.n_layers = 1_000_000), "n_layers"),
        (with(|c| c.ffn.dense_hidden = HUGE), "ffn.dense_hidden"),
        (
            with(|c| moe(c).experts[1] = ExpertSpec::swiglu(HUGE)),
            "ffn.sparse.experts[1].hidden",
        ),
        (
            with(|c| moe(c).experts = vec![ExpertSpec::swiglu(8); 1_000_000]),
            "ffn.sparse.experts",
        ),
        (with(|c| c.head_dim = Some(HUGE)), "head_dim"),
    ];
    for (cfg, key) in cases {
        match cfg.validate() {
            Err(ModelError::Config { field, reason }) => {
                assert_eq!(field, key, "{reason}");
                assert!(reason.contains("at most"), "{key}: {reason}");
            }
            other => panic!("{key}: expected a config error, got {other:?}"),
        }
        assert!(MemoryNeed::of(&cfg, Job::Load).is_err(), "{key}");
    }
}

#[test]
fn every_width_within_the_limits_is_counted_without_overflow() {
    // each at its limit: the parameter count alone is past MAX_PARAMETERS, refused by name
    let cfg = with(|c| {
        c.d_model = MAX_WIDTH;
        c.n_heads = 1;
        c.vocab_size = MAX_WIDTH;
        c.n_layers = MAX_LAYERS;
    });
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("parameters"), "{err}");
}

#[test]
fn a_config_needing_more_memory_than_available_is_refused_with_both_sizes() {
    // within every limit; 4 attention matrices of 2^20 × 2^20 per layer (16 TiB each)
    let cfg = with(|c| {
        c.d_model = 1 << 20;
        c.n_heads = 1;
        moe(c).d_model = 1 << 20;
    });
    cfg.validate().unwrap();
    let need = MemoryNeed::of(&cfg, Job::Load).unwrap();
    let err = need.check(Some(64 * GIB)).unwrap_err();
    assert!(matches!(err, ModelError::TooLarge(_)), "{err}");
    let msg = err.to_string();
    let need_gib = format!("{:.1} GiB", need.total() / GIB as f64);
    assert!(
        msg.contains(&need_gib) && msg.contains("64.0 GiB") && msg.contains("parameters"),
        "{msg}"
    );
    // unknown availability passes; so does enough memory
    assert!(need.check(None).is_ok());
    let tiny = MemoryNeed::of(&tiny_cfg(), Job::Load).unwrap();
    assert!(tiny.check(Some(GIB)).is_ok());
}

#[test]
fn the_parameter_estimate_covers_the_built_model() {
    for cfg in [
        tiny_cfg(),
        LmConfig::default(),
        tiny_cfg().dense_equivalent(),
    ] {
        let (_, lm) = build(&cfg, 0, DType::F32);
        let bytes = 4.0 * lm.num_params_total() as f64;
        let est = MemoryNeed::of(&cfg, Job::Load).unwrap().parameters;
        assert!(
            est >= bytes && est <= 1.1 * bytes,
            "estimate {est} vs {bytes} bytes of parameters"
        );
        assert_eq!(cfg.param_count().unwrap(), lm.param_count());
    }
}

#[test]
fn training_needs_more_than_evaluating_which_needs_more_than_loading() {
    let cfg = tiny_cfg();
    let load = MemoryNeed::of(&cfg, Job::Load).unwrap();
    let eval = MemoryNeed::of(
        &cfg,
        Job::Infer {
            batch: 8,
            seq_len: 32,
            kv_cache: false,
        },
    )
    .unwrap();
    let train = MemoryNeed::of(
        &cfg,
        Job::Train {
            batch: 8,
            seq_len: 32,
            grad_accum: 1,
        },
    )
    .unwrap();
    assert!(load.total() < eval.total() && eval.total() < train.total());
    // gradients plus AdamW's two moments: three more copies of the parameters
    assert_eq!(train.gradients + train.optimizer, 3.0 * train.parameters);
    assert_eq!(eval.beyond_weights().parameters, 0.0);
    assert_eq!(eval.beyond_weights().activations, eval.activations);
}

#[test]
fn many_layers_are_counted_in_closed_form() {
    // a loop over layers cloning the expert list per layer took minutes here
    let cfg = with(|c| {
        c.n_layers = MAX_LAYERS;
        moe(c).experts = vec![ExpertSpec::swiglu(8); 4096];
        c.dense_layers = (0..MAX_LAYERS).step_by(2).collect();
    });
    let started = std::time::Instant::now();
    cfg.validate().unwrap();
    let count = cfg.param_count().unwrap();
    assert!(count.total > 0);
    assert_eq!(cfg.moe_layers().len(), MAX_LAYERS / 2);
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn memory_limit_sizes_parse_with_binary_units() {
    use switchyard_models::memory::parse_bytes;
    assert_eq!(parse_bytes("1000"), Some(1000));
    assert_eq!(parse_bytes("64KiB"), Some(64 << 10));
    assert_eq!(parse_bytes("512M"), Some(512 << 20));
    assert_eq!(parse_bytes(" 8GiB "), Some(8 << 30));
    assert_eq!(parse_bytes("2t"), Some(2 << 40));
    assert_eq!(parse_bytes("8 GB"), None);
    assert_eq!(parse_bytes("GiB"), None);
    assert_eq!(parse_bytes("-1"), None);
    assert_eq!(parse_bytes("99999999999T"), None);
}

/// `SWITCHYARD_MEMORY_LIMIT` caps what the checks assume is available (this test's process
/// only; no other test in this binary reads the variable).
#[test]
fn the_memory_limit_variable_caps_the_available_memory() {
    use switchyard_models::memory::{available_bytes, MEMORY_LIMIT_VAR};
    std::env::set_var(MEMORY_LIMIT_VAR, "1MiB");
    let capped = available_bytes();
    std::env::set_var(MEMORY_LIMIT_VAR, "not a size");
    let ignored = available_bytes();
    std::env::remove_var(MEMORY_LIMIT_VAR);
    assert_eq!(capped, Some(1 << 20));
    // an unreadable value is ignored: MemAvailable again (far above 1 MiB on Linux)
    assert!(ignored.is_none_or(|b| b > 1 << 20), "{ignored:?}");
}
