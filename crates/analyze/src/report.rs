//! The analysis driver and its outputs: terminal tables, plots, `metrics.json`, the routing
//! trace and a self-contained HTML report (inline SVG, inline CSS/JS, no network access).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use switchyard_data::{Batch, Tokenizer};
use switchyard_models::MoeLm;

use crate::ablation::{ablate, Ablation};
use crate::metrics::{all_layers, cross_layer, CrossLayer, LayerMetrics};
use crate::plots::{self, Bars, Heatmap, Scale};
use crate::trace::{self, RoutingTrace};
use crate::{AnalyzeError, Result};

/// Tokens shown per domain in the token view.
pub const SAMPLE_TOKENS: usize = 240;

#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    pub out_dir: PathBuf,
    /// Run the causal ablation (Σ E extra passes over `ablation_batches` batches).
    pub ablation: bool,
    pub ablation_batches: usize,
    pub title: String,
    /// The run's domain → expert mapping, for routing purity: `Some(None)` is the default
    /// (domain `d` → expert `d mod E`), `Some(Some(experts))` an explicit one (`experts[d]`),
    /// `None` no purity figures.
    pub domain_experts: Option<Option<Vec<Vec<usize>>>>,
}

impl AnalyzeOptions {
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            out_dir: out_dir.into(),
            ablation: true,
            ablation_batches: 4,
            title: "Switchyard routing report".into(),
            domain_experts: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AnalysisSummary {
    pub domain_names: Vec<String>,
    pub report: PathBuf,
    pub trace: PathBuf,
    pub metrics_json: PathBuf,
    pub plots: Vec<PathBuf>,
    pub layers: Vec<LayerMetrics>,
    pub cross: Vec<CrossLayer>,
    pub ablation: Option<Ablation>,
}

/// Traces `model` on `batches`, computes every metric, draws the plots and writes the report
/// into `opts.out_dir`.
pub fn analyze(
    model: &MoeLm,
    batches: &[Batch],
    domain_names: &[String],
    tok: &dyn Tokenizer,
    opts: &AnalyzeOptions,
) -> Result<AnalysisSummary> {
    let out = &opts.out_dir;
    std::fs::create_dir_all(out)
        .map_err(|e| AnalyzeError::file(out, format!("cannot create output directory: {e}")))?;
    let tr = trace::record(model, batches, domain_names)?;
    if tr.layers.is_empty() {
        return Err(AnalyzeError::input(
            "analyze",
            "the model has no MoE layer: nothing to analyse",
        ));
    }
    let trace_path = out.join("trace.safetensors");
    trace::save(&tr, &trace_path)?;
    let mut layers = all_layers(&tr);
    for m in &mut layers {
        if let Some(moe) = model.cfg.layer_moe_config(m.layer) {
            m.experts = moe
                .experts
                .iter()
                .map(|x| crate::metrics::ExpertInfo::of(x, moe.d_model))
                .collect();
        }
    }
    if let Some(map) = &opts.domain_experts {
        for (m, lt) in layers.iter_mut().zip(&tr.layers) {
            m.purity = Some(crate::metrics::purity(&tr, lt, map.as_deref()));
        }
    }
    let cross = cross_layer(&tr);
    let ablation = if opts.ablation {
        // evenly spaced batches, so every domain of a domain-ordered batch list is covered
        let n = opts.ablation_batches.min(batches.len()).max(1);
        let picked: Vec<Batch> = (0..n)
            .map(|i| batches[i * batches.len() / n].clone())
            .collect();
        Some(ablate(model, &picked, domain_names)?)
    } else {
        None
    };
    let mut plot_paths = Vec::new();
    let svgs = draw_plots(
        out,
        &tr,
        &layers,
        &cross,
        ablation.as_ref(),
        &mut plot_paths,
    )?;
    let metrics_json = out.join("metrics.json");
    let json = serde_json::json!({ "layers": layers, "cross_layer": cross, "ablation": ablation });
    std::fs::write(
        &metrics_json,
        serde_json::to_string_pretty(&json).expect("metrics serialise"),
    )
    .map_err(|e| AnalyzeError::file(&metrics_json, e.to_string()))?;
    let report = out.join("report.html");
    let html = render_html(&opts.title, &tr, &layers, &svgs, tok);
    std::fs::write(&report, html).map_err(|e| AnalyzeError::file(&report, e.to_string()))?;
    Ok(AnalysisSummary {
        domain_names: domain_names.to_vec(),
        report,
        trace: trace_path,
        metrics_json,
        plots: plot_paths,
        layers,
        cross,
        ablation,
    })
}

fn expert_labels(e: usize) -> Vec<String> {
    (0..e).map(|x| format!("e{x}")).collect()
}

/// Draws every plot; returns `(section title, svg)` pairs in report order.
fn draw_plots(
    out: &Path,
    tr: &RoutingTrace,
    layers: &[LayerMetrics],
    cross: &[CrossLayer],
    ablation: Option<&Ablation>,
    paths: &mut Vec<PathBuf>,
) -> Result<Vec<(String, String)>> {
    let mut svgs = Vec::new();
    let mut emit = |name: String, title: String, plot: &dyn plots::Plot| -> Result<()> {
        let stem = out.join(&name);
        let svg = plots::save(plot, &stem)?;
        paths.push(stem.with_extension("png"));
        paths.push(stem.with_extension("svg"));
        svgs.push((title, svg));
        Ok(())
    };
    for m in layers {
        let cols = expert_labels(m.num_experts);
        // rows: each domain's share of its assignments per expert
        let share: Vec<Vec<f64>> = m
            .domain_expert
            .iter()
            .map(|r| {
                let s = r.iter().sum::<u64>().max(1) as f64;
                r.iter().map(|&c| c as f64 / s).collect()
            })
            .collect();
        let title = format!(
            "Layer {}: domain × expert share (NMI {:.3})",
            m.layer, m.nmi
        );
        let hm = Heatmap {
            title: &title,
            rows: &tr.domain_names,
            cols: &cols,
            values: &share,
            scale: Scale::Sequential,
            annotate: m.num_experts <= 16,
        };
        emit(
            format!("layer{}_domain_expert", m.layer),
            title.clone(),
            &hm,
        )?;
        let load: Vec<f64> = m.load.iter().map(|&c| c as f64).collect();
        let title = format!("Layer {}: load per expert (CV {:.3})", m.layer, m.load_cv);
        emit(
            format!("layer{}_load", m.layer),
            title.clone(),
            &Bars {
                title: &title,
                labels: &cols,
                values: &load,
            },
        )?;
        let co: Vec<Vec<f64>> = m
            .coactivation
            .iter()
            .map(|r| r.iter().map(|&c| c as f64).collect())
            .collect();
        let title = format!("Layer {}: co-activation (tokens routed to both)", m.layer);
        let hm = Heatmap {
            title: &title,
            rows: &cols,
            cols: &cols,
            values: &co,
            scale: Scale::Sequential,
            annotate: m.num_experts <= 12,
        };
        emit(format!("layer{}_coactivation", m.layer), title.clone(), &hm)?;
    }
    for c in cross {
        let rows = expert_labels(c.counts.len());
        let cols = expert_labels(c.counts.first().map_or(0, |r| r.len()));
        let v: Vec<Vec<f64>> = c
            .counts
            .iter()
            .map(|r| r.iter().map(|&x| x as f64).collect())
            .collect();
        let title = format!("Co-activation across layers {} → {}", c.from, c.to);
        let hm = Heatmap {
            title: &title,
            rows: &rows,
            cols: &cols,
            values: &v,
            scale: Scale::Sequential,
            annotate: cols.len() <= 12,
        };
        emit(format!("cross_{}_{}", c.from, c.to), title.clone(), &hm)?;
    }
    if let Some(a) = ablation {
        for l in &a.layers {
            // rows: domains, columns: removed expert
            let v: Vec<Vec<f64>> = (0..a.domain_names.len())
                .map(|d| l.delta.iter().map(|row| row[d]).collect())
                .collect();
            let cols = expert_labels(l.delta.len());
            let title = format!(
                "Layer {}: Δ validation loss per domain with each expert removed",
                l.layer
            );
            let hm = Heatmap {
                title: &title,
                rows: &a.domain_names,
                cols: &cols,
                values: &v,
                scale: Scale::Diverging,
                annotate: cols.len() <= 16,
            };
            emit(format!("layer{}_ablation", l.layer), title.clone(), &hm)?;
        }
    }
    Ok(svgs)
}

/// Routing purity per domain and layer (share of a domain's tokens whose top-1 expert is one
/// of its mapped experts), when the run maps domains to experts.
fn purity_table(h: &mut String, domain_names: &[String], layers: &[LayerMetrics]) {
    let with: Vec<(usize, &crate::metrics::Purity)> = layers
        .iter()
        .filter_map(|m| m.purity.as_ref().map(|p| (m.layer, p)))
        .collect();
    if with.is_empty() {
        return;
    }
    h.push_str("<h2>Routing purity</h2><p>Share of each domain's tokens whose top-1 expert is one of the experts the run maps the domain to (<code>losses.domain_map</code>, <code>train.domain_experts</code>).</p><table><tr><th>domain</th>");
    for (layer, _) in &with {
        let _ = write!(h, "<th>layer {layer}</th>");
    }
    h.push_str("</tr>\n");
    for (d, name) in domain_names.iter().enumerate() {
        let _ = write!(h, "<tr><td>{}</td>", esc(name));
        for (_, p) in &with {
            match p.by_domain.get(d).copied().flatten() {
                Some(v) => {
                    let _ = write!(h, "<td>{v:.3}</td>");
                }
                None => h.push_str("<td>unmapped</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("<tr><th>all</th>");
    for (_, p) in &with {
        let _ = write!(h, "<th>{:.3}</th>", p.overall);
    }
    h.push_str("</tr></table>\n");
}

/// Plain-text tables for the terminal.
pub fn terminal_tables(s: &AnalysisSummary) -> String {
    let domain_names = &s.domain_names;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>5} {:>8} {:>8} {:>8} {:>8}  dead",
        "layer", "NMI", "load CV", "entropy", "dropped"
    );
    for m in &s.layers {
        let purity = m.purity.as_ref().map_or(String::new(), |p| {
            format!("  routing purity {:.3}", p.overall)
        });
        let _ = writeln!(
            o,
            "{:>5} {:>8.3} {:>8.3} {:>8.3} {:>7.1}%  {:?}{purity}",
            m.layer,
            m.nmi,
            m.load_cv,
            m.entropy,
            100.0 * m.dropped_fraction,
            m.dead_experts
        );
    }
    for m in &s.layers {
        let _ = writeln!(
            o,
            "\nlayer {}: share of each domain's tokens per expert (%)",
            m.layer
        );
        let _ = write!(o, "{:>8}", "");
        for e in 0..m.num_experts {
            let _ = write!(o, "{:>5}", format!("e{e}"));
        }
        let _ = writeln!(o);
        for (d, row) in m.domain_expert.iter().enumerate() {
            let total = row.iter().sum::<u64>().max(1) as f64;
            let _ = write!(o, "{:>8}", domain_names.get(d).map_or("?", |s| s.as_str()));
            for &c in row {
                let _ = write!(o, "{:>5.0}", 100.0 * c as f64 / total);
            }
            let _ = writeln!(o);
        }
    }
    if let Some(a) = &s.ablation {
        let _ = writeln!(o, "\nablation: largest loss increase per layer");
        for l in &a.layers {
            let mut best = (0, 0, f64::NEG_INFINITY);
            for (e, row) in l.delta.iter().enumerate() {
                for (d, &v) in row.iter().enumerate() {
                    if v > best.2 {
                        best = (e, d, v);
                    }
                }
            }
            let _ = writeln!(
                o,
                "  layer {}: removing e{} costs {} {:+.3} nats",
                l.layer,
                best.0,
                a.domain_names.get(best.1).map_or("?", |s| s.as_str()),
                best.2
            );
        }
    }
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Token strings for display: ids are grouped until they decode to valid text (a byte-level
/// tokenizer splits a CJK character over three ids); each group is coloured by its last id.
fn display_tokens(tok: &dyn Tokenizer, ids: &[u32]) -> Vec<(usize, String)> {
    const MAX_GROUP: usize = 4;
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..ids.len() {
        let text = tok.decode(&ids[start..=i]);
        if !text.contains('\u{FFFD}') || i + 1 - start >= MAX_GROUP {
            let shown = if text.is_empty() {
                "⏎".to_string()
            } else {
                text
            };
            out.push((i, shown));
            start = i + 1;
        }
    }
    out
}

fn render_html(
    title: &str,
    tr: &RoutingTrace,
    layers: &[LayerMetrics],
    svgs: &[(String, String)],
    tok: &dyn Tokenizer,
) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f3f3f3}}
.plot{{display:inline-block;margin:8px;vertical-align:top}} .tokens{{font-family:monospace;white-space:pre-wrap;line-height:1.7;border:1px solid #ddd;padding:8px}}
.tok{{border-radius:2px}} button{{margin:2px}} #console-errors{{color:#b00}}
</style></head><body>
<h1>{t}</h1>
<p>{n} tokens in {b} batches of {bs}×{l}; {nl} MoE layers; domains: {d}.</p>
<pre id="console-errors"></pre>
<h2>Summary</h2><table><tr><th>layer</th><th>experts</th><th>NMI(domain, expert)</th><th>load CV</th><th>entropy</th><th>dropped</th><th>dead experts</th>{purity_th}</tr>
"#,
        purity_th = if layers.iter().any(|m| m.purity.is_some()) {
            "<th>routing purity</th>"
        } else {
            ""
        },
        t = esc(title),
        n = tr.num_tokens(),
        b = tr.num_batches(),
        bs = tr.batch_size,
        l = tr.seq_len,
        nl = layers.len(),
        d = esc(&tr.domain_names.join(", "))
    );
    for m in layers {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.1}%</td><td>{:?}</td>{}</tr>",
            m.layer, m.num_experts, m.nmi, m.load_cv, m.entropy, 100.0 * m.dropped_fraction, m.dead_experts,
            m.purity.as_ref().map_or(String::new(), |p| format!("<td>{:.3}</td>", p.overall))
        );
    }
    h.push_str("</table>\n");
    purity_table(&mut h, &tr.domain_names, layers);
    h.push_str("<h2>Plots</h2>\n");
    for (title, svg) in svgs {
        let _ = writeln!(
            h,
            "<div class=\"plot\" title=\"{}\">{}</div>",
            esc(title),
            svg
        );
    }
    h.push_str("<h2>Top tokens per expert</h2>\n");
    for m in layers {
        let _ = writeln!(h, "<h3>Layer {}</h3><table><tr><th>expert</th><th>architecture</th><th>MACs/token</th><th>load</th><th>top tokens (count)</th><th>top trigrams</th></tr>", m.layer);
        for e in 0..m.num_experts {
            let toks: Vec<String> = m.top_tokens[e]
                .iter()
                .map(|(t, c)| format!("{} ({c})", esc(&format!("{:?}", tok.decode(&[*t])))))
                .collect();
            let grams: Vec<String> = m.top_ngrams[e]
                .iter()
                .take(4)
                .map(|(g, c)| format!("{} ({c})", esc(&format!("{:?}", tok.decode(g)))))
                .collect();
            let (arch, macs) = m
                .experts
                .get(e)
                .map_or((String::new(), String::new()), |x| {
                    (esc(&x.architecture), x.macs_per_token.to_string())
                });
            let _ = writeln!(h, "<tr><td>e{e}</td><td>{arch}</td><td>{macs}</td><td>{}</td><td style=\"text-align:left\">{}</td><td style=\"text-align:left\">{}</td></tr>", m.load[e], toks.join(" "), grams.join(" "));
        }
        h.push_str("</table>\n");
    }
    // token view: per domain, a sample of text; each token carries its top expert per layer
    h.push_str("<h2>Token view</h2><p>Colour = expert with the largest weight at the selected layer (hover for all layers).</p><div id=\"layer-buttons\">");
    for (i, m) in layers.iter().enumerate() {
        let _ = write!(h, "<button data-layer=\"{i}\">layer {}</button>", m.layer);
    }
    h.push_str("</div>\n");
    for (d, name) in tr.domain_names.iter().enumerate() {
        let Some(row_start) = (0..tr.num_tokens() / tr.seq_len)
            .map(|r| r * tr.seq_len)
            .find(|&s| {
                tr.domains[s..s + tr.seq_len]
                    .iter()
                    .filter(|&&x| x as usize == d)
                    .count()
                    * 2
                    > tr.seq_len
            })
        else {
            continue;
        };
        let len = SAMPLE_TOKENS.min(tr.seq_len);
        let ids = &tr.token_ids[row_start..row_start + len];
        let _ = write!(h, "<h3>{}</h3><div class=\"tokens\">", esc(name));
        for (i, text) in display_tokens(tok, ids) {
            let n = row_start + i;
            let experts: Vec<String> = tr
                .layers
                .iter()
                .map(|lt| lt.top_expert(n).map_or("-1".into(), |e| e.to_string()))
                .collect();
            let hover: Vec<String> = tr
                .layers
                .iter()
                .zip(&experts)
                .map(|(lt, e)| format!("L{}: e{e}", lt.layer))
                .collect();
            let _ = write!(
                h,
                "<span class=\"tok\" data-e=\"{}\" title=\"{}\">{}</span>",
                experts.join(","),
                hover.join(" "),
                esc(&text)
            );
        }
        h.push_str("</div>\n");
    }
    h.push_str(
        r#"<script>
(function () {
  var box = document.getElementById('console-errors');
  function report(msg) { box.textContent += msg + '\n'; }
  window.addEventListener('error', function (e) { report('error: ' + (e.message || (e.target && e.target.outerHTML))); }, true);
  var orig = console.error;
  console.error = function () { report('console.error: ' + Array.prototype.join.call(arguments, ' ')); orig.apply(console, arguments); };
  function color(e) { return e < 0 ? 'transparent' : 'hsl(' + ((e * 137.508) % 360).toFixed(1) + ',70%,80%)'; }
  function show(layer) {
    var toks = document.querySelectorAll('.tok');
    for (var i = 0; i < toks.length; i++) {
      var e = parseInt(toks[i].getAttribute('data-e').split(',')[layer], 10);
      toks[i].style.background = color(e);
    }
    var bs = document.querySelectorAll('#layer-buttons button');
    for (var j = 0; j < bs.length; j++) { bs[j].style.fontWeight = (j === layer) ? 'bold' : 'normal'; }
  }
  var buttons = document.querySelectorAll('#layer-buttons button');
  for (var k = 0; k < buttons.length; k++) {
    buttons[k].addEventListener('click', function () { show(parseInt(this.getAttribute('data-layer'), 10)); });
  }
  show(0);
  document.body.setAttribute('data-ready', '1');
})();
</script></body></html>
"#,
    );
    h
}
