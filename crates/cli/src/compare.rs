//! `switchyard compare-routers`: the demo's MoE model ([`crate::demo::demo_config`]) trained
//! once per router, everything else equal (data, seed, schedule, and the active expert
//! compute where the router lets it be chosen), then compared on the validation set: loss per
//! domain and overall, load CV, dropped fraction, NMI(domain, expert), routing purity for the
//! domain-map variants, and training tokens/s. Writes `compare.json`, `compare.md` and
//! `compare.html` (the table and two plots) beside one run directory per variant.
//!
//! Active compute: every router runs at the demo's `k` (2) experts per token where it has a
//! `k`; expert-choice gets capacity factor `k` (k experts per token on average); hierarchical
//! keeps 1 group × `k` experts; hash routing is top-1 by construction (half the expert compute,
//! noted in its row). Soft MoE is a layer, not a router of the LM, and is not compared.
//! A variant `<router>+domain_map` adds `losses.domain_map` (weight
//! [`DOMAIN_MAP_WEIGHT`]) with the default mapping, domain `d` → expert `d mod E`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use switchyard_analyze::plots::{self, Heatmap, Scale};
use switchyard_core::RouterConfig;
use switchyard_models::LayerFfn;
use switchyard_train::trainer::{TrainConfig, Trainer, METRICS_FILE};

use crate::new_run::{Flags, NewRun};
use crate::{demo, UserError};

pub const JSON_FILE: &str = "compare.json";
pub const MARKDOWN_FILE: &str = "compare.md";
pub const HTML_FILE: &str = "compare.html";
/// Suffix of a variant name that turns the domain-map loss on.
pub const DOMAIN_MAP_SUFFIX: &str = "+domain_map";
/// Weight of `losses.domain_map` in the `+domain_map` variants.
pub const DOMAIN_MAP_WEIGHT: f64 = 1.0;
/// The variants `--routers all` adds to every router.
pub const EXTRA_VARIANTS: &[&str] = &["top_k+domain_map", "sigmoid_bias+domain_map"];
/// Validation windows per domain traced for the routing metrics.
pub const TRACE_WINDOWS: usize = 16;

#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// `all`, or variant names separated by commas (router types, optionally
    /// `+domain_map`).
    pub routers: String,
    /// Training steps per variant; `None`: the demo's.
    pub steps: Option<u64>,
    pub out: PathBuf,
    /// The demo's quick model and schedule.
    pub quick: bool,
    /// Replace an earlier comparison in `out`.
    pub force: bool,
    /// `key=value` overrides of every variant's config.
    pub overrides: Vec<String>,
    pub progress: bool,
}

/// One model of the comparison.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub router: RouterConfig,
    pub domain_map: bool,
    /// How its active compute relates to the others', when it differs in kind.
    pub note: String,
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub variant: String,
    pub router: RouterConfig,
    pub k: usize,
    pub note: String,
    pub val_loss: f64,
    /// `(domain, loss)` in domain id order.
    pub val_loss_by_domain: Vec<(String, f64)>,
    /// Means over the MoE layers, on the traced validation tokens (eval mode).
    pub load_cv: f64,
    pub dropped_fraction: f64,
    pub nmi: f64,
    pub nmi_by_layer: Vec<f64>,
    /// Mean over layers, domain-map variants only.
    pub purity: Option<f64>,
    /// Median training throughput over the run's steps.
    pub tokens_per_s: f64,
    pub run_dir: PathBuf,
    pub wall_time_s: f64,
}

/// The variants `spec` names, each at `k` experts per token where the router allows.
pub fn variants(spec: &str, k: usize) -> anyhow::Result<Vec<Variant>> {
    let names: Vec<String> = if spec.trim() == "all" {
        RouterConfig::NAMES
            .iter()
            .map(|s| s.to_string())
            .chain(EXTRA_VARIANTS.iter().map(|s| s.to_string()))
            .collect()
    } else {
        spec.split(',').map(|s| s.trim().to_string()).collect()
    };
    let mut out: Vec<Variant> = Vec::new();
    for name in names {
        let (base, domain_map) = match name.strip_suffix(DOMAIN_MAP_SUFFIX) {
            Some(b) => (b, true),
            None => (name.as_str(), false),
        };
        let Some(default) = RouterConfig::defaults()
            .into_iter()
            .find(|r| r.name() == base)
        else {
            return Err(UserError::new(format!("--routers: unknown router `{base}`"))
                .with_hint(format!(
                    "use `all` or a comma-separated list of {}, each optionally with `{DOMAIN_MAP_SUFFIX}`",
                    RouterConfig::NAMES.join(", ")
                ))
                .into());
        };
        if out.iter().any(|v| v.name == name) {
            return Err(UserError::new(format!("--routers names `{name}` twice"))
                .with_hint("name each variant once")
                .into());
        }
        let (router, note) = at_k(&default, k)?;
        out.push(Variant {
            name,
            router,
            domain_map,
            note,
        });
    }
    if out.is_empty() {
        return Err(UserError::new("--routers names no router")
            .with_hint("e.g. --routers top_k,switch")
            .into());
    }
    Ok(out)
}

/// `router` with `k` experts per token where it has such a setting, and what differs.
fn at_k(router: &RouterConfig, k: usize) -> anyhow::Result<(RouterConfig, String)> {
    let mut v = serde_json::to_value(router)?;
    let obj = v
        .as_object_mut()
        .context("a router config serialises to an object")?;
    let mut note = String::new();
    match router.name() {
        "expert_choice" => {
            obj.insert("capacity_factor".into(), (k as f64).into());
            note = format!("capacity factor {k}: {k} experts per token on average");
        }
        "hierarchical" => {
            obj.insert("k_groups".into(), 1.into());
            obj.insert("k_inner".into(), k.into());
            note = format!("1 group x {k} experts");
        }
        _ if obj.contains_key("k") => {
            obj.insert("k".into(), k.into());
        }
        _ => {}
    }
    let out: RouterConfig = serde_json::from_value(v)?;
    if out.k() != k {
        note = format!(
            "k = {} (fixed by the router): {} of the others' active expert compute",
            out.k(),
            ratio(out.k(), k)
        );
    }
    Ok((out, note))
}

fn ratio(a: usize, b: usize) -> String {
    if b == 2 * a {
        "half".into()
    } else {
        format!("{a}/{b}")
    }
}

/// The run config of `v`: the demo's model and schedule with `v`'s router.
pub fn variant_config(opts: &CompareOptions, v: &Variant) -> anyhow::Result<TrainConfig> {
    let mut overrides = vec![format!(
        "run_dir={}",
        toml::Value::String(opts.out.join(&v.name).display().to_string())
    )];
    if let Some(steps) = opts.steps {
        overrides.push(format!("train.steps={steps}"));
        // the demo warms up for a tenth of its run; keep that share for a shorter one
        let warmup = demo::demo_config(opts.quick).optim.warmup_steps;
        overrides.push(format!("optim.warmup_steps={}", warmup.min(steps / 10)));
    }
    overrides.extend(opts.overrides.iter().cloned());
    if !opts.progress {
        overrides.push("log.progress=false".into());
    }
    let mut cfg = TrainConfig::from_toml_str(
        &demo::demo_config(opts.quick).to_toml_string(),
        None,
        &overrides,
    )
    .context("applying --steps / --set to the demo config")?;
    let LayerFfn::Moe(m) = &mut cfg.model.ffn.sparse else {
        return Err(UserError::new("compare-routers needs an MoE model")
            .with_hint("do not set model.ffn.sparse.type = \"dense\"")
            .into());
    };
    m.router = v.router.clone();
    if v.domain_map {
        m.losses.domain_map = DOMAIN_MAP_WEIGHT;
    }
    cfg.validate()
        .with_context(|| format!("the config of variant `{}`", v.name))?;
    Ok(cfg)
}

/// The demo's router `k`.
pub fn demo_k(quick: bool) -> usize {
    match &demo::demo_config(quick).model.ffn.sparse {
        LayerFfn::Moe(m) => m.router.k(),
        LayerFfn::Dense { .. } => 1,
    }
}

/// Trains every variant and writes the table; returns its rows.
pub fn run(opts: &CompareOptions) -> anyhow::Result<Vec<Row>> {
    let vs = variants(&opts.routers, demo_k(opts.quick))?;
    let cfgs: Vec<TrainConfig> = vs
        .iter()
        .map(|v| variant_config(opts, v))
        .collect::<anyhow::Result<_>>()?;
    let runs = check_out(opts, &cfgs)?;
    for r in &runs {
        r.prepare()?;
    }
    let mut rows = Vec::with_capacity(vs.len());
    for (v, cfg) in vs.iter().zip(cfgs) {
        tracing::info!(
            "compare-routers: training `{}` in {}",
            v.name,
            cfg.run_dir.display()
        );
        rows.push(train_one(v, cfg).with_context(|| format!("variant `{}`", v.name))?);
    }
    write_outputs(opts, &rows)?;
    Ok(rows)
}

fn train_one(v: &Variant, cfg: TrainConfig) -> anyhow::Result<Row> {
    let started = Instant::now();
    let mut t = Trainer::new(cfg.clone())?;
    let summary = t.run()?;
    let batches = crate::analyze::validation_batches(&t.data, TRACE_WINDOWS);
    let names = t.data.domains.names().to_vec();
    let trace = switchyard_analyze::trace::record(&t.model, &batches, &names)?;
    let layers = switchyard_analyze::metrics::all_layers(&trace);
    let mean = |f: &dyn Fn(&switchyard_analyze::metrics::LayerMetrics) -> f64| {
        layers.iter().map(f).sum::<f64>() / layers.len().max(1) as f64
    };
    Ok(Row {
        variant: v.name.clone(),
        router: v.router.clone(),
        k: v.router.k(),
        note: v.note.clone(),
        val_loss: summary.eval.loss,
        val_loss_by_domain: summary
            .eval
            .domains
            .iter()
            .map(|d| (d.domain.clone(), d.loss))
            .collect(),
        load_cv: mean(&|m| m.load_cv),
        dropped_fraction: mean(&|m| m.dropped_fraction),
        nmi: mean(&|m| m.nmi),
        nmi_by_layer: layers.iter().map(|m| m.nmi).collect(),
        purity: if v.domain_map {
            summary.eval.mean_purity()
        } else {
            None
        },
        tokens_per_s: median_tokens_per_s(&cfg.run_dir.join(METRICS_FILE))?,
        run_dir: cfg.run_dir.clone(),
        wall_time_s: started.elapsed().as_secs_f64(),
    })
}

/// Median `tokens_per_s` of the step lines of a `metrics.jsonl` (the first steps warm up).
fn median_tokens_per_s(path: &Path) -> anyhow::Result<f64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut v: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["event"] == "step")
        .filter_map(|j| j["tokens_per_s"].as_f64())
        .collect();
    v.sort_by(f64::total_cmp);
    Ok(v.get(v.len() / 2).copied().unwrap_or(0.0))
}

/// Refuses an `out` that holds an earlier comparison (or any run) unless `--force`.
fn check_out(opts: &CompareOptions, cfgs: &[TrainConfig]) -> anyhow::Result<Vec<NewRun>> {
    let files: Vec<PathBuf> = [JSON_FILE, MARKDOWN_FILE, HTML_FILE]
        .iter()
        .map(|f| opts.out.join(f))
        .filter(|p| p.exists())
        .collect();
    if !files.is_empty() && !opts.force {
        return Err(UserError::new(format!(
            "{} already holds a router comparison ({}); refusing to replace it",
            opts.out.display(),
            files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_hint("write it elsewhere with `--out <dir>`, or replace it with `--force`")
        .into());
    }
    let runs = cfgs
        .iter()
        .map(|c| NewRun::check(&c.run_dir, opts.force, &Flags::OUT))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for f in files {
        std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
    }
    Ok(runs)
}

/// The table as markdown: one row per variant.
pub fn markdown(rows: &[Row]) -> String {
    let domains: Vec<&str> = rows
        .first()
        .map(|r| {
            r.val_loss_by_domain
                .iter()
                .map(|(d, _)| d.as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut s = String::from("| router | k | val loss |");
    for d in &domains {
        s.push_str(&format!(" {d} |"));
    }
    s.push_str(" load CV | dropped | NMI | purity | tokens/s | note |\n|---|---|---|");
    s.push_str(&"---|".repeat(domains.len()));
    s.push_str("---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!("| {} | {} | {:.4} |", r.variant, r.k, r.val_loss));
        for (_, l) in &r.val_loss_by_domain {
            s.push_str(&format!(" {l:.3} |"));
        }
        s.push_str(&format!(
            " {:.3} | {:.1}% | {:.3} | {} | {:.0} | {} |\n",
            r.load_cv,
            100.0 * r.dropped_fraction,
            r.nmi,
            r.purity.map_or("–".into(), |p| format!("{p:.3}")),
            r.tokens_per_s,
            r.note
        ));
    }
    s
}

fn write_outputs(opts: &CompareOptions, rows: &[Row]) -> anyhow::Result<()> {
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::json!({
        "quick": opts.quick,
        "steps": opts.steps,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rows": rows,
    });
    let write = |name: &str, text: String| -> anyhow::Result<()> {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write(JSON_FILE, serde_json::to_string_pretty(&json)? + "\n")?;
    let md = markdown(rows);
    write(MARKDOWN_FILE, md.clone())?;
    write(HTML_FILE, html(out, rows, &md)?)
}

/// The HTML page: the table and two heatmaps (validation loss by domain; routing metrics).
fn html(out: &Path, rows: &[Row], md: &str) -> anyhow::Result<String> {
    let names: Vec<String> = rows.iter().map(|r| r.variant.clone()).collect();
    let domains: Vec<String> = rows
        .first()
        .map(|r| {
            r.val_loss_by_domain
                .iter()
                .map(|(d, _)| d.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut cols = domains.clone();
    cols.push("overall".into());
    let mut losses: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let mut v: Vec<f64> = r.val_loss_by_domain.iter().map(|(_, l)| *l).collect();
            v.push(r.val_loss);
            v
        })
        .collect();
    // each column relative to its best router, so the colours show the differences
    for j in 0..cols.len() {
        let best = losses.iter().map(|r| r[j]).fold(f64::INFINITY, f64::min);
        losses.iter_mut().for_each(|r| r[j] -= best);
    }
    let loss_svg = plots::save(
        &Heatmap {
            title: "validation loss above the best router's, per domain (nats/token)",
            rows: &names,
            cols: &cols,
            values: &losses,
            scale: Scale::Sequential,
            annotate: true,
        },
        &out.join("compare_loss"),
    )?;
    let metric_cols: Vec<String> = ["NMI", "CV", "drop", "pur."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let metrics: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            vec![
                r.nmi,
                r.load_cv,
                r.dropped_fraction,
                r.purity.unwrap_or(f64::NAN),
            ]
        })
        .collect();
    let routing_svg = plots::save(
        &Heatmap {
            title: "NMI, load CV, dropped share, purity (grey: n/a)",
            rows: &names,
            cols: &metric_cols,
            values: &metrics,
            scale: Scale::Sequential,
            annotate: true,
        },
        &out.join("compare_routing"),
    )?;
    let table: String = md
        .lines()
        .filter(|l| !l.starts_with("|---"))
        .enumerate()
        .map(|(i, l)| {
            let cell = if i == 0 { "th" } else { "td" };
            let cells: Vec<String> = l
                .trim_matches('|')
                .split('|')
                .map(|c| format!("<{cell}>{}</{cell}>", esc(c.trim())))
                .collect();
            format!("<tr>{}</tr>\n", cells.join(""))
        })
        .collect();
    Ok(format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Switchyard router comparison</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f3f3f3}} .plot{{display:inline-block;margin:8px;vertical-align:top}}</style>
</head><body><h1>Router comparison</h1>
<p>The demo's model trained once per router (same data, seed and schedule; k experts per token where the router has k). NMI(domain, expert), load CV and dropped share are means over the MoE layers on validation tokens; purity is the share of a domain's tokens whose top-1 expert is its mapped expert (domain-map variants only); tokens/s is the median training throughput.</p>
<table>
{table}</table>
<div class="plot">{loss_svg}</div><div class="plot">{routing_svg}</div>
</body></html>
"#
    ))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
