//! `switchyard demo --new-domain`: the expert lifecycle on the demo model. Three runs of the
//! demo's MoE LM, the same number of steps each:
//!
//! - `grow/`: six domains; at step `S` the seventh (`cjk`) enters the data, the trainer adds
//!   experts to every MoE layer for it (closed, opening over `gate_in_steps`) and freezes the
//!   experts there were; training goes on to `2S` on all seven;
//! - `continue/`: the same data schedule without new experts (nothing frozen);
//! - `all/`: all seven domains from the start (the reference the new domain should reach).
//!
//! The table: validation loss per domain of `grow` at step `S` (before the new domain) and
//! at the end, and of the other two at the end. What it should show: the new domain's loss in
//! `grow` close to `all`'s (within 5%), the six old domains' loss in `grow` moving little from
//! step `S` (< 2%). `summary.json` holds the same, plus the runs' surgery events.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use switchyard_models::LayerFfn;
use switchyard_train::trainer::{metrics::MetricsWriter, EvalResult, TrainConfig, Trainer};

use crate::demo::{self, DemoOptions};
use crate::new_run::{Flags, NewRun};
use crate::UserError;

/// The domain that appears mid-run (the most unlike the others: multi-byte UTF-8).
pub const NEW_DOMAIN: &str = "cjk";
/// Experts added to each MoE layer when it appears.
pub const ADDED_EXPERTS: usize = 2;

/// `runs/demo-new-domain`, or `runs/demo-new-domain-quick`.
pub fn default_out(quick: bool) -> PathBuf {
    PathBuf::from(if quick {
        "runs/demo-new-domain-quick"
    } else {
        "runs/demo-new-domain"
    })
}

/// One run's losses.
#[derive(Clone, Debug, Serialize)]
pub struct RunLosses {
    pub name: String,
    pub run_dir: PathBuf,
    /// Per domain (in domain order) at the end.
    pub end: Vec<f64>,
    pub wall_time_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct NewDomainResult {
    pub domains: Vec<String>,
    pub new_domain: String,
    /// The step the new domain appears after, and the run's last.
    pub appear_step: u64,
    pub steps: u64,
    /// `grow` per domain at `appear_step`.
    pub grow_before: Vec<f64>,
    pub grow: RunLosses,
    pub cont: RunLosses,
    pub all: RunLosses,
    /// `grow`'s new-domain loss over `all`'s.
    pub new_domain_ratio: f64,
    /// Largest relative change of an old domain's loss in `grow` from `appear_step` to the end
    /// (signed, the largest in size), and the same for `continue`.
    pub old_max_change_grow: f64,
    pub old_max_change_continue: f64,
    /// Largest relative difference of an old domain's final loss, `grow` against `continue`:
    /// what adding (and freezing) experts for the new domain did to the old domains.
    pub old_max_vs_continue: f64,
    pub experts_before: usize,
    pub experts_after: usize,
    /// Whether `grow` froze the experts there were when the new domain appeared.
    pub freeze_old: bool,
}

fn config(opts: &DemoOptions, name: &str) -> anyhow::Result<TrainConfig> {
    let mut cfg = demo::moe_config(opts)?;
    cfg.run_dir = opts.out.join(name);
    // twice the demo's steps: the first half before the new domain appears
    let s = cfg.train.steps;
    cfg.train.steps = 2 * s;
    cfg.train.eval_every = s;
    cfg.train.checkpoint_every = s;
    if name != "all" {
        cfg.data.new_domain = Some(NEW_DOMAIN.into());
        cfg.data.new_domain_step = s;
    }
    if name != "grow" {
        // the baselines change no expert, whatever --set says about the lifecycle
        cfg.lifecycle = Default::default();
    } else {
        cfg.lifecycle.add_on_new_domain = ADDED_EXPERTS;
        cfg.lifecycle.freeze_old_experts = true;
        if let LayerFfn::Moe(m) = &mut cfg.model.ffn.sparse {
            m.gate_in_steps = (s / 10).max(1) as usize;
        }
        // the user's --set lifecycle.* wins over the demo's choices (e.g.
        // lifecycle.freeze_old_experts = false)
        let lifecycle: Vec<String> = opts
            .overrides
            .iter()
            .filter(|o| o.trim_start().starts_with("lifecycle."))
            .cloned()
            .collect();
        cfg = TrainConfig::from_toml_str(&cfg.to_toml_string(), None, &lifecycle)
            .context("applying --set lifecycle.* to the grow run")?;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn losses(e: &EvalResult) -> Vec<f64> {
    e.domains.iter().map(|d| d.loss).collect()
}

/// Largest relative change over the domains other than `skip`, signed.
fn max_change(before: &[f64], after: &[f64], skip: usize) -> f64 {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(i, _)| *i != skip)
        .map(|(_, (b, a))| (a - b) / b)
        .fold(0.0, |m: f64, x| if x.abs() > m.abs() { x } else { m })
}

/// Trains the three runs and writes `summary.json`.
pub fn run(opts: &DemoOptions) -> anyhow::Result<NewDomainResult> {
    let names = ["grow", "continue", "all"];
    let cfgs: Vec<TrainConfig> = names
        .iter()
        .map(|n| config(opts, n))
        .collect::<anyhow::Result<_>>()
        .context("the new-domain demo's configs")?;
    let summary_path = opts.out.join(demo::SUMMARY_FILE);
    if summary_path.exists() && !opts.force {
        return Err(UserError::new(format!(
            "{} already holds a new-domain demo; refusing to replace it",
            opts.out.display()
        ))
        .with_hint("write it elsewhere with `--out <dir>`, or replace it with `--force`")
        .into());
    }
    let runs: Vec<NewRun> = cfgs
        .iter()
        .map(|c| NewRun::check(&c.run_dir, opts.force, &Flags::OUT))
        .collect::<anyhow::Result<_>>()?;
    let mut trainers: Vec<Trainer> = cfgs
        .iter()
        .map(|c| Trainer::new(c.clone()))
        .collect::<Result<_, _>>()?;
    for r in &runs {
        r.prepare()?;
    }
    let appear = cfgs[0].data.new_domain_step;
    let steps = cfgs[0].train.steps;
    let domains: Vec<String> = trainers[0].data.domains.names().to_vec();
    let new_idx = domains
        .iter()
        .position(|d| d == NEW_DOMAIN)
        .context("the corpus has the new domain")?;
    let experts_before = trainers[0]
        .cfg
        .model
        .layer_moe_config(trainers[0].cfg.model.moe_layers()[0])
        .map_or(0, |m| m.experts.len());

    // grow: first half by hand, to evaluate right when the new domain appears
    let started = Instant::now();
    let grow = &mut trainers[0];
    tracing::info!(
        "new-domain demo: `grow` trains on six domains for {appear} steps, then `{NEW_DOMAIN}` \
         appears and {ADDED_EXPERTS} experts per layer are added"
    );
    let mut metrics = MetricsWriter::open(&cfgs[0].run_dir, cfgs[0].log.metrics, None)?;
    while grow.step() < appear {
        let record = grow.train_step()?;
        metrics.write(&record)?;
        grow.run_step_hooks(&mut metrics)?;
    }
    drop(metrics); // flushed: `run` goes on appending to the same file
    let grow_before = losses(&grow.evaluate()?);
    let g = grow.run().context("training `grow`")?;
    let experts_after = grow
        .cfg
        .model
        .layer_moe_config(grow.cfg.model.moe_layers()[0])
        .map_or(0, |m| m.experts.len());
    let grow_run = RunLosses {
        name: "grow".into(),
        run_dir: cfgs[0].run_dir.clone(),
        end: losses(&g.eval),
        wall_time_s: started.elapsed().as_secs_f64(),
    };
    let mut others = Vec::new();
    for (i, name) in names.iter().enumerate().skip(1) {
        tracing::info!("new-domain demo: training `{name}`");
        let t0 = Instant::now();
        let s = trainers[i]
            .run()
            .with_context(|| format!("training `{name}`"))?;
        others.push(RunLosses {
            name: name.to_string(),
            run_dir: cfgs[i].run_dir.clone(),
            end: losses(&s.eval),
            wall_time_s: t0.elapsed().as_secs_f64(),
        });
    }
    let all = others.pop().expect("all");
    let cont = others.pop().expect("continue");
    let result = NewDomainResult {
        new_domain_ratio: grow_run.end[new_idx] / all.end[new_idx],
        old_max_change_grow: max_change(&grow_before, &grow_run.end, new_idx),
        old_max_change_continue: max_change(&grow_before, &cont.end, new_idx),
        old_max_vs_continue: max_change(&cont.end, &grow_run.end, new_idx),
        domains,
        new_domain: NEW_DOMAIN.into(),
        appear_step: appear,
        steps,
        grow_before,
        grow: grow_run,
        cont,
        all,
        experts_before,
        experts_after,
        freeze_old: cfgs[0].lifecycle.freeze_old_experts,
    };
    let json = serde_json::to_string_pretty(&result)?;
    std::fs::write(&summary_path, json + "\n")
        .with_context(|| format!("writing {}", summary_path.display()))?;
    Ok(result)
}

/// The table `demo --new-domain` prints (`freeze` says whether `grow` froze its old experts).
pub fn report(r: &NewDomainResult) -> String {
    let mut s =
        format!(
        "validation loss (nats/token); `{}` appears after step {} of {}; grow: {} -> {} experts \
         per layer{}\n\n",
        r.new_domain,
        r.appear_step,
        r.steps,
        r.experts_before,
        r.experts_after,
        if r.freeze_old { ", old ones frozen" } else { "" }
    );
    s += &format!(
        "| domain | grow @ {} | grow @ {} | continue @ {} | all seven @ {} |\n|---|---|---|---|---|\n",
        r.appear_step, r.steps, r.steps, r.steps
    );
    for (i, d) in r.domains.iter().enumerate() {
        let mark = if *d == r.new_domain { " (new)" } else { "" };
        s += &format!(
            "| {d}{mark} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            r.grow_before[i], r.grow.end[i], r.cont.end[i], r.all.end[i]
        );
    }
    let cont_ratio = r.cont.end[r
        .domains
        .iter()
        .position(|d| *d == r.new_domain)
        .unwrap_or(0)]
        / r.all.end[r
            .domains
            .iter()
            .position(|d| *d == r.new_domain)
            .unwrap_or(0)];
    s += &format!(
        "\nnew domain: grow / all seven = {:.3} (target <= 1.05); continue / all seven = {:.3}\n\
         old domains, grow against continue at the end: largest difference {:+.1}% (target within 2%)\n\
         old domains since step {}: grow {:+.1}%, continue {:+.1}% (largest change; negative: still improving)\n",
        r.new_domain_ratio,
        cont_ratio,
        100.0 * r.old_max_vs_continue,
        r.appear_step,
        100.0 * r.old_max_change_grow,
        100.0 * r.old_max_change_continue
    );
    s
}
