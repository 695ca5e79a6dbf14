//! `switchyard demo`: an MoE LM against its dense baseline with the same active parameters
//! per token ([`LmConfig::dense_equivalent`]), trained identically on the built-in 7-domain
//! corpus, then compared per domain; the MoE's routing of each domain's validation tokens
//! shows which experts specialise in what.
//!
//! [`run`] returns a [`DemoResult`] holding both run directories and evaluations, for callers
//! that go on to analyse the checkpoints (e.g. an HTML report).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use switchyard_core::router::TopKConfig;
use switchyard_core::{ExpertSpec, MoeConfig, RouterConfig};
use switchyard_io::run_dir::{self, Occupant};
use switchyard_models::{FfnConfig, LayerFfn, LmConfig};
use switchyard_train::trainer::{EvalResult, TrainConfig, Trainer};

use crate::new_run::{Flags, NewRun};
use crate::UserError;

pub const SUMMARY_FILE: &str = "summary.json";
/// The routing analysis of the MoE model, under `out`.
pub const ANALYSIS_DIR: &str = "analysis";
/// Training window (and context) of the demo models, in bytes.
pub const SEQ_LEN: usize = 64;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The same path on a smaller model for fewer steps (well under a minute).
    pub quick: bool,
    /// Parent of the `moe/` and `dense/` run directories and `summary.json`.
    pub out: PathBuf,
    /// `key=value` overrides applied to both runs' config (before the dense baseline is
    /// derived from the MoE model).
    pub overrides: Vec<String>,
    /// Show progress bars.
    pub progress: bool,
    /// Replace a previous demo in `out` (its `moe/`, `dense/` and `analysis/` are deleted
    /// first); without it, an `out` that holds one is refused.
    pub force: bool,
}

impl DemoOptions {
    /// `runs/demo`, or `runs/demo-quick` for `quick`, so a quick smoke run never replaces the
    /// full demo's checkpoints.
    pub fn default_out(quick: bool) -> PathBuf {
        PathBuf::from(if quick {
            "runs/demo-quick"
        } else {
            "runs/demo"
        })
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            quick: false,
            out: Self::default_out(false),
            overrides: Vec::new(),
            progress: true,
            force: false,
        }
    }
}

/// One trained model of the demo.
#[derive(Clone, Debug)]
pub struct ModelRun {
    /// `"moe"` or `"dense"`.
    pub name: String,
    pub run_dir: PathBuf,
    /// The final checkpoint's step directory.
    pub checkpoint: PathBuf,
    pub config: TrainConfig,
    pub eval: EvalResult,
    pub params_total: usize,
    pub params_active: usize,
    pub steps: u64,
    pub wall_time_s: f64,
}

#[derive(Clone, Debug)]
pub struct DemoResult {
    pub out: PathBuf,
    pub moe: ModelRun,
    pub dense: ModelRun,
    pub summary_path: PathBuf,
    pub wall_time_s: f64,
    /// The routing analysis of the MoE model (report, metrics), written to `<out>/analysis`.
    pub analysis: switchyard_analyze::AnalysisSummary,
}

/// The demo's MoE model and training settings. Measured on 2 cores (see README.md): the full
/// demo beats its dense baseline; `quick` exercises the same path in seconds.
pub fn demo_config(quick: bool) -> TrainConfig {
    let (d, layers, experts, hidden) = if quick {
        (64, 2, 4, 64)
    } else {
        (128, 4, 8, 128)
    };
    let mut cfg = TrainConfig {
        model: LmConfig {
            d_model: d,
            n_layers: layers,
            n_heads: 4,
            max_seq_len: SEQ_LEN,
            ffn: FfnConfig {
                dense_hidden: 4 * d,
                sparse: LayerFfn::Moe(MoeConfig {
                    d_model: d,
                    experts: vec![ExpertSpec::swiglu(hidden); experts],
                    router: RouterConfig::TopK(TopKConfig { k: 2 }),
                    ..Default::default()
                }),
                moe_every: 1,
                first_dense: 0,
            },
            ..Default::default()
        },
        ..Default::default()
    };
    // 64-byte windows, 32 per batch: the same 2048 tokens per step as 16 × 128, with half
    // the attention cost; at 300 steps it also reached a lower loss than 16 × 128 here.
    cfg.data.seq_len = SEQ_LEN;
    cfg.train.batch_size = 32;
    cfg.optim.lr = 3e-3;
    cfg.optim.min_lr = 3e-4;
    cfg.train.keep_last = 1;
    if quick {
        cfg.data.docs_per_domain = 16;
        cfg.data.valid_fraction = 0.2;
        cfg.data.max_valid_windows = 8;
        cfg.train.steps = 30;
        cfg.train.batch_size = 16;
        cfg.optim.warmup_steps = 5;
        cfg.train.eval_every = 0;
        cfg.train.checkpoint_every = 0;
    } else {
        cfg.data.max_valid_windows = 48;
        cfg.train.steps = 300;
        cfg.optim.warmup_steps = 30;
        cfg.train.eval_every = 100;
        cfg.train.checkpoint_every = 100;
    }
    cfg
}

/// The MoE run's config: [`demo_config`] with the options applied.
pub fn moe_config(opts: &DemoOptions) -> anyhow::Result<TrainConfig> {
    let mut overrides = vec![format!(
        "run_dir={}",
        toml::Value::String(opts.out.join("moe").display().to_string())
    )];
    overrides.extend(opts.overrides.iter().cloned());
    if !opts.progress {
        overrides.push("log.progress=false".into());
    }
    TrainConfig::from_toml_str(&demo_config(opts.quick).to_toml_string(), None, &overrides)
        .context("applying --set to the demo config")
}

/// Trains the MoE model and its dense baseline, evaluates both, writes `summary.json`.
pub fn run(opts: &DemoOptions) -> anyhow::Result<DemoResult> {
    let started = Instant::now();
    let moe_cfg = moe_config(opts)?;
    let mut dense_cfg = moe_cfg.clone();
    dense_cfg.model = moe_cfg.model.dense_equivalent();
    dense_cfg.run_dir = opts.out.join("dense");
    let previous = check_out(opts, &[&moe_cfg.run_dir, &dense_cfg.run_dir])?;

    // everything the user's input can fail on is built before the old demo is deleted
    let moe_trainer = Trainer::new(moe_cfg.clone()).context("setting up the moe run")?;
    let dense_trainer = Trainer::new(dense_cfg.clone()).context("setting up the dense run")?;
    for run in &previous {
        run.prepare()?;
    }
    let summary_path = opts.out.join(SUMMARY_FILE);
    if opts.force {
        let analysis = opts.out.join(ANALYSIS_DIR);
        run_dir::replace_run(&analysis)
            .with_context(|| format!("removing the previous {}", analysis.display()))?;
        match std::fs::remove_file(&summary_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", summary_path.display()))
            }
            _ => {}
        }
    }
    let moe = train_one("moe", moe_cfg, moe_trainer)?;
    let dense = train_one("dense", dense_cfg, dense_trainer)?;
    tracing::info!("demo: analysing the MoE model's routing");
    let analysis = crate::analyze::run(&crate::analyze::AnalyzeRun {
        ckpt: moe.checkpoint.clone(),
        data: None,
        out: opts.out.join(ANALYSIS_DIR),
        windows_per_domain: if opts.quick { 8 } else { 32 },
        ablation: true,
    })?;
    let result = DemoResult {
        out: opts.out.clone(),
        moe,
        dense,
        summary_path,
        wall_time_s: started.elapsed().as_secs_f64(),
        analysis,
    };
    let summary = serde_json::to_string_pretty(&summary_json(&result, opts.quick))?;
    std::fs::write(&result.summary_path, summary + "\n")
        .with_context(|| format!("writing {}", result.summary_path.display()))?;
    Ok(result)
}

fn train_one(name: &str, cfg: TrainConfig, mut trainer: Trainer) -> anyhow::Result<ModelRun> {
    let (params_total, params_active) = (
        trainer.model.num_params_total(),
        trainer.model.num_params_active_per_token(),
    );
    tracing::info!(
        "demo: training the {name} model ({:.2}M parameters, {:.2}M active per token) in {}",
        params_total as f64 / 1e6,
        params_active as f64 / 1e6,
        cfg.run_dir.display()
    );
    let summary = trainer
        .run()
        .with_context(|| format!("training the {name} model"))?;
    Ok(ModelRun {
        name: name.to_string(),
        run_dir: cfg.run_dir.clone(),
        checkpoint: summary.checkpoint,
        config: cfg,
        eval: summary.eval,
        params_total,
        params_active,
        steps: summary.steps,
        wall_time_s: summary.wall_time_s,
    })
}

/// Checks that `out` holds no earlier demo (its run directories, `summary.json` or
/// `analysis/`), or that `opts.force` allows replacing it; returns the run directories to
/// prepare (see [`NewRun`]).
fn check_out(opts: &DemoOptions, run_dirs: &[&Path]) -> anyhow::Result<Vec<NewRun>> {
    let mut found = Vec::new();
    for dir in run_dirs {
        if let Occupant::Run { .. } = run_dir::occupant(dir)? {
            found.push(format!("{}/", dir.display()));
        }
    }
    for name in [SUMMARY_FILE, ANALYSIS_DIR] {
        let path = opts.out.join(name);
        if path.exists() {
            found.push(path.display().to_string());
        }
    }
    if !opts.force && !found.is_empty() {
        return Err(UserError::new(format!(
            "{} already holds a demo ({}); refusing to replace it",
            opts.out.display(),
            found.join(", ")
        ))
        .with_hint(
            "write the new demo elsewhere with `--out <dir>`, or replace it with `--force` (its \
             runs are deleted)",
        )
        .into());
    }
    // a directory in the way that is not a run is refused even with --force
    run_dirs
        .iter()
        .map(|dir| NewRun::check(dir, opts.force, &Flags::OUT))
        .collect()
}

fn model_json(m: &ModelRun) -> serde_json::Value {
    json!({
        "run_dir": m.run_dir,
        "checkpoint": m.checkpoint,
        "params_total": m.params_total,
        "params_active_per_token": m.params_active,
        "steps": m.steps,
        "tokens_seen": m.steps * (m.config.train.batch_size * m.config.train.grad_accum * m.config.data.seq_len) as u64,
        "wall_time_s": m.wall_time_s,
        "val_loss": m.eval.loss,
        "val_loss_by_domain": m.eval.domains.iter().map(|d| (d.domain.clone(), json!(d.loss))).collect::<serde_json::Map<_, _>>(),
        "model": m.config.model,
    })
}

/// `summary.json`: both models' losses and sizes, and the MoE's domain → expert table.
pub fn summary_json(r: &DemoResult, quick: bool) -> serde_json::Value {
    let domains: Vec<&str> = r
        .moe
        .eval
        .domains
        .iter()
        .map(|d| d.domain.as_str())
        .collect();
    let routing: Vec<serde_json::Value> = r
        .moe
        .eval
        .routing
        .iter()
        .map(|l| {
            let shares: serde_json::Map<_, _> =
                domains.iter().zip(l.shares()).map(|(d, row)| (d.to_string(), json!(row))).collect();
            json!({ "layer": l.layer, "expert_share_by_domain": shares, "assignments_by_domain": l.counts })
        })
        .collect();
    json!({
        "quick": quick,
        "wall_time_s": r.wall_time_s,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "moe": model_json(&r.moe),
        "dense": model_json(&r.dense),
        "moe_minus_dense_val_loss": r.moe.eval.loss - r.dense.eval.loss,
        "domains": domains,
        "routing": routing,
        "analysis": {
            "report": r.analysis.report,
            "trace": r.analysis.trace,
            "metrics": r.analysis.metrics_json,
            "nmi_by_layer": r.analysis.layers.iter().map(|m| json!({"layer": m.layer, "nmi": m.nmi, "load_cv": m.load_cv})).collect::<Vec<_>>(),
        },
    })
}
