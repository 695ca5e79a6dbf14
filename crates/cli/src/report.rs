//! Plain-text tables: validation loss per domain, the domain × expert routing table, and the
//! demo's whole report.

use std::fmt::Write;

use switchyard_train::trainer::{EvalResult, LayerRouting};

use crate::demo::DemoResult;

/// Width of the first (domain name) column.
const NAME_WIDTH: usize = 9;

/// Validation loss per domain, one column per labelled result (all from the same data).
pub fn eval_table(columns: &[(&str, &EvalResult)]) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:<NAME_WIDTH$}", "domain");
    for (label, _) in columns {
        let _ = write!(s, " {label:>10}");
    }
    s.push('\n');
    let Some((_, first)) = columns.first() else {
        return s;
    };
    for (i, d) in first.domains.iter().enumerate() {
        let _ = write!(s, "{:<NAME_WIDTH$}", d.domain);
        for (_, r) in columns {
            let _ = write!(
                s,
                " {:>10.4}",
                r.domains.get(i).map_or(f64::NAN, |d| d.loss)
            );
        }
        s.push('\n');
    }
    let _ = write!(s, "{:<NAME_WIDTH$}", "overall");
    for (_, r) in columns {
        let _ = write!(s, " {:>10.4}", r.loss);
    }
    s.push('\n');
    s
}

/// One layer's domain × expert table: the percentage of each domain's routing assignments
/// that went to each expert; each domain's most used expert is marked with `*`.
pub fn routing_table(layer: &LayerRouting, domains: &[String]) -> String {
    let shares = layer.shares();
    let experts = shares.iter().map(Vec::len).max().unwrap_or(0);
    let mut s = format!("{:<NAME_WIDTH$}", format!("layer {}", layer.layer));
    for e in 0..experts {
        let _ = write!(s, " {:>4}", format!("e{e}"));
    }
    s.push('\n');
    for (name, row) in domains.iter().zip(&shares) {
        let _ = write!(s, "{name:<NAME_WIDTH$}");
        let top = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(e, _)| e);
        for (e, share) in row.iter().enumerate() {
            let mark = if Some(e) == top { "*" } else { " " };
            let _ = write!(s, " {:>3.0}{mark}", 100.0 * share);
        }
        s.push('\n');
    }
    s
}

fn millions(n: usize) -> String {
    format!("{:.2}M", n as f64 / 1e6)
}

/// Everything `switchyard demo` prints after training.
pub fn demo_report(r: &DemoResult) -> String {
    let mut s = String::new();
    let (moe, dense) = (&r.moe, &r.dense);
    let _ = writeln!(
        s,
        "\n== Validation loss (nats per byte, lower is better) =="
    );
    s.push_str(&eval_table(&[("MoE", &moe.eval), ("dense", &dense.eval)]));
    let diff = moe.eval.loss - dense.eval.loss;
    let verdict = if diff < 0.0 {
        "MoE is better"
    } else {
        "dense is better"
    };
    let _ = writeln!(s, "MoE - dense: {diff:+.4} nats ({verdict})");
    let _ = writeln!(s, "\n== Parameters ==");
    for m in [moe, dense] {
        let _ = writeln!(
            s,
            "{:<6} {} total, {} active per token; {} steps in {:.1}s",
            m.name,
            millions(m.params_total),
            millions(m.params_active),
            m.steps,
            m.wall_time_s
        );
    }
    let _ = writeln!(
        s,
        "\n== Where each domain's tokens go (MoE, % of the domain's assignments per expert) =="
    );
    let domains: Vec<String> = moe.eval.domains.iter().map(|d| d.domain.clone()).collect();
    for layer in &moe.eval.routing {
        s.push_str(&routing_table(layer, &domains));
        s.push('\n');
    }
    let _ = writeln!(s, "== Routing report (MoE) ==");
    for m in &r.analysis.layers {
        let _ = writeln!(
            s,
            "layer {}: NMI(domain, expert) {:.3}, load CV {:.3}",
            m.layer, m.nmi, m.load_cv
        );
    }
    let _ = writeln!(s, "report: {}", r.analysis.report.display());
    let _ = writeln!(s, "\n== Files ==");
    let _ = writeln!(s, "MoE checkpoint:   {}", moe.checkpoint.display());
    let _ = writeln!(s, "dense checkpoint: {}", dense.checkpoint.display());
    let _ = writeln!(s, "summary:          {}", r.summary_path.display());
    let _ = writeln!(s, "total wall time:  {:.1}s", r.wall_time_s);
    let _ = writeln!(
        s,
        "\ntry: switchyard generate --ckpt {} --prompt 'the ' --max-tokens 60",
        moe.run_dir.display()
    );
    s
}

/// The line `switchyard train` ends with: the steps of this invocation, and for a resumed run
/// the total, so `--resume --steps 400` after 200 steps does not claim 400.
pub fn train_line(s: &switchyard_train::trainer::TrainSummary) -> String {
    let this_run = s.steps - s.from_step.min(s.steps);
    let steps = if s.from_step == 0 {
        format!("trained {this_run} steps")
    } else {
        format!(
            "trained {this_run} steps this run (resumed at step {}, {} in total)",
            s.from_step, s.steps
        )
    };
    format!(
        "{steps} ({} tokens in total, {} skipped) in {:.1}s; checkpoint: {}",
        s.tokens_seen,
        s.skipped_steps,
        s.wall_time_s,
        s.checkpoint.display()
    )
}

/// A signed difference as README writes it: `+0.007`, `−0.265` (a minus sign, not a hyphen).
fn signed(x: f64) -> String {
    format!("{x:+.3}").replace('-', "−")
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// README's demo table (markdown: validation loss per domain and overall for both models and
/// their difference) and the sentence on parameter counts, from the `summary.json` that
/// `switchyard demo` writes; `switchyard demo --table <summary.json>` prints it, so README's
/// figures can be re-measured and pasted.
pub fn demo_markdown(summary: &serde_json::Value) -> anyhow::Result<String> {
    use anyhow::Context;
    let field = |model: &str, key: &str| -> anyhow::Result<&serde_json::Value> {
        summary
            .get(model)
            .and_then(|m| m.get(key))
            .with_context(|| {
                format!("summary.json has no `{model}.{key}`; was it written by `switchyard demo`?")
            })
    };
    let number = |model: &str, key: &str| -> anyhow::Result<f64> {
        field(model, key)?
            .as_f64()
            .with_context(|| format!("summary.json: `{model}.{key}` is not a number"))
    };
    let domains: Vec<&str> = summary
        .get("domains")
        .and_then(|d| d.as_array())
        .context("summary.json has no `domains` list; was it written by `switchyard demo`?")?
        .iter()
        .filter_map(|d| d.as_str())
        .collect();
    let mut s =
        String::from("| domain | MoE | dense | MoE − dense |\n| --- | ---: | ---: | ---: |\n");
    for d in &domains {
        let loss = |model: &str| -> anyhow::Result<f64> {
            field(model, "val_loss_by_domain")?
                .get(*d)
                .and_then(|v| v.as_f64())
                .with_context(|| format!("summary.json: no `{model}.val_loss_by_domain.{d}`"))
        };
        let (m, dn) = (loss("moe")?, loss("dense")?);
        let _ = writeln!(s, "| {d} | {m:.3} | {dn:.3} | {} |", signed(m - dn));
    }
    let (m, dn) = (number("moe", "val_loss")?, number("dense", "val_loss")?);
    let _ = writeln!(
        s,
        "| **overall** | **{m:.3}** | **{dn:.3}** | **{}** |",
        signed(m - dn)
    );
    let count = |model: &str, key: &str| -> anyhow::Result<u64> {
        field(model, key)?
            .as_u64()
            .with_context(|| format!("summary.json: `{model}.{key}` is not a count"))
    };
    let (moe_active, dense_active) = (
        count("moe", "params_active_per_token")?,
        count("dense", "params_active_per_token")?,
    );
    let _ = writeln!(
        s,
        "\nBoth models touch {} parameters per token (MoE {}, dense {}); the MoE holds {} in total.",
        millions(moe_active as usize),
        thousands(moe_active),
        thousands(dense_active),
        millions(count("moe", "params_total")? as usize)
    );
    Ok(s)
}
