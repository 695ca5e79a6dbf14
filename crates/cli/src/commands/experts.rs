//! `switchyard experts add|split|merge|prune`: expert surgery on a checkpoint, written as a
//! new run directory that training resumes from (the work is in `switchyard-lifecycle`; the
//! shared loading, evaluation and saving in [`crate::surgery`]).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use switchyard_lifecycle::{self as lifecycle, AddInit, SurgeryReport};

use crate::surgery::{self, lifecycle_error, Before};
use crate::UserError;

#[derive(Args)]
pub struct ExpertsArgs {
    #[command(subcommand)]
    pub op: ExpertsOp,
}

/// Where the result goes and how the loss change is measured (every operation).
#[derive(Args, Clone)]
pub struct OutArgs {
    /// The checkpoint to operate on: a run directory (its latest step) or a step directory.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// The new run directory to write (resume it with `train --resume OUT`).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the run already in --out.
    #[arg(long)]
    pub force: bool,
    /// Validation windows per domain for the before/after loss (default: the run's
    /// data.max_valid_windows); 0 skips the evaluation (add, split and merge only).
    #[arg(long)]
    pub eval_windows: Option<usize>,
    /// Seeds the noise and the fresh initialisations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Subcommand)]
pub enum ExpertsOp {
    /// Add experts to MoE layers. They start closed (gate-in 0: the model's outputs are
    /// bitwise unchanged) and enter routing over the layer's gate_in_steps training steps.
    Add {
        #[command(flatten)]
        out: OutArgs,
        /// Experts to add to each layer.
        #[arg(long)]
        count: usize,
        /// The MoE layers (comma-separated); default: all.
        #[arg(long, value_delimiter = ',')]
        layers: Vec<usize>,
        /// Copy this expert (plus --noise) instead of initialising fresh experts.
        #[arg(long, conflicts_with = "like")]
        from: Option<usize>,
        /// Fresh experts take this expert's architecture (kind and width).
        #[arg(long, default_value_t = 0)]
        like: usize,
        /// Relative noise on copied weights (std = noise x the matrix's RMS).
        #[arg(long, default_value_t = 0.01)]
        noise: f64,
    },
    /// Split a (hot) expert into itself and a noisy copy, each with half its routing mass.
    Split {
        #[command(flatten)]
        out: OutArgs,
        #[arg(long)]
        layer: usize,
        #[arg(long)]
        expert: usize,
        /// Relative noise on the copy's weights and gate row.
        #[arg(long, default_value_t = 0.01)]
        noise: f64,
    },
    /// Merge experts of one layer into one: weights, gate rows and moments averaged by how
    /// many validation tokens each received.
    Merge {
        #[command(flatten)]
        out: OutArgs,
        #[arg(long)]
        layer: usize,
        /// Two or more experts, comma-separated (e.g. 2,5).
        #[arg(long, value_delimiter = ',', required = true)]
        experts: Vec<usize>,
    },
    /// Remove experts: named ones, the dead ones, or all but the N most useful per layer.
    Prune {
        #[command(flatten)]
        out: OutArgs,
        /// layer:expert pairs, comma-separated (e.g. 0:3,1:5).
        #[arg(long, value_delimiter = ',', required_unless_present_any = ["dead", "keep"], conflicts_with_all = ["dead", "keep"])]
        experts: Vec<String>,
        /// Every expert that received no validation token.
        #[arg(long, conflicts_with = "keep")]
        dead: bool,
        /// Keep this many experts per MoE layer.
        #[arg(long)]
        keep: Option<usize>,
        /// How --keep ranks experts: tokens routed to them, or the validation-loss increase
        /// when each is removed (one pass per expert).
        #[arg(long, value_enum, default_value_t = Rank::Usage)]
        by: Rank,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rank {
    Usage,
    Ablation,
}

impl ExpertsOp {
    fn out(&self) -> &OutArgs {
        match self {
            ExpertsOp::Add { out, .. }
            | ExpertsOp::Split { out, .. }
            | ExpertsOp::Merge { out, .. }
            | ExpertsOp::Prune { out, .. } => out,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            ExpertsOp::Add { .. } => "experts add",
            ExpertsOp::Split { .. } => "experts split",
            ExpertsOp::Merge { .. } => "experts merge",
            ExpertsOp::Prune { .. } => "experts prune",
        }
    }
}

/// `layer:expert` pairs.
fn parse_pairs(items: &[String]) -> anyhow::Result<Vec<(usize, usize)>> {
    items
        .iter()
        .map(|s| {
            let parsed = s
                .split_once(':')
                .and_then(|(l, e)| Some((l.trim().parse().ok()?, e.trim().parse().ok()?)));
            parsed.ok_or_else(|| {
                UserError::new(format!("--experts: `{s}` is not layer:expert"))
                    .with_hint("e.g. --experts 0:3,1:5")
                    .into()
            })
        })
        .collect()
}

pub fn run(args: ExpertsArgs) -> anyhow::Result<()> {
    let op = args.op;
    let o = op.out().clone();
    let (src, new_run) = surgery::open(&o.ckpt, &o.out, o.force)?;
    let windows = o.eval_windows.unwrap_or(src.cfg.data.max_valid_windows);
    let needs_usage = matches!(
        op,
        ExpertsOp::Merge { .. } | ExpertsOp::Prune { dead: true, .. }
    ) || matches!(
        op,
        ExpertsOp::Prune {
            keep: Some(_),
            by: Rank::Usage,
            ..
        }
    );
    if windows == 0 && (needs_usage || matches!(op, ExpertsOp::Prune { .. })) {
        return Err(UserError::new(format!(
            "{} measures expert usage on validation data; --eval-windows must be at least 1",
            op.name()
        ))
        .into());
    }
    let before = Before::measure(&src, windows)?;
    let data = before.data.as_ref();
    let mut state = src.state.clone();
    let report: SurgeryReport = match &op {
        ExpertsOp::Add {
            count,
            layers,
            from,
            like,
            noise,
            ..
        } => {
            let init = match from {
                Some(from) => AddInit::Copy { from: *from },
                None => AddInit::Fresh { like: *like },
            };
            lifecycle::add_experts(&mut state, layers, *count, &init, *noise, o.seed)
        }
        ExpertsOp::Split {
            layer,
            expert,
            noise,
            ..
        } => lifecycle::split_expert(&mut state, *layer, *expert, *noise, o.seed),
        ExpertsOp::Merge { layer, experts, .. } => {
            let usage = surgery::usage(before.eval.as_ref().expect("evaluated"), *layer);
            lifecycle::merge_experts(&mut state, *layer, experts, &usage)
        }
        ExpertsOp::Prune {
            experts,
            dead,
            keep,
            by,
            ..
        } => {
            let eval = before.eval.as_ref().expect("evaluated");
            let remove = if *dead {
                dead_experts(&state, eval)?
            } else if let Some(n) = keep {
                let scores = match by {
                    Rank::Usage => state
                        .model
                        .moe_layers()
                        .into_iter()
                        .map(|l| (l, surgery::usage(eval, l)))
                        .collect(),
                    Rank::Ablation => ablation_scores(&state, data.expect("data"), windows)?,
                };
                keep_best(&scores, *n)?
            } else {
                parse_pairs(experts)?
            };
            lifecycle::prune_experts(&mut state, &remove)
        }
    }
    .map_err(lifecycle_error)?;
    surgery::finish(op.name(), &src, &state, &new_run, &report, &before)
}

/// Experts that received no validation token, as `(layer, expert)`; refused when there are
/// none (nothing to do) or when a layer would lose all.
fn dead_experts(
    state: &lifecycle::ModelState,
    eval: &switchyard_train::trainer::EvalResult,
) -> anyhow::Result<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    for l in state.model.moe_layers() {
        let u = surgery::usage(eval, l);
        out.extend(
            u.iter()
                .enumerate()
                .filter(|(_, &c)| c == 0.0)
                .map(|(e, _)| (l, e)),
        );
    }
    if out.is_empty() {
        return Err(UserError::new(
            "--dead: every expert received validation tokens; nothing to prune",
        )
        .with_hint("use --keep N or --experts layer:expert")
        .into());
    }
    Ok(out)
}

/// Per MoE layer, how much the validation loss rises when each expert is removed (mean
/// over domains).
fn ablation_scores(
    state: &lifecycle::ModelState,
    data: &switchyard_data::Dataset,
    windows: usize,
) -> anyhow::Result<Vec<(usize, Vec<f64>)>> {
    let model = surgery::build(state)?;
    let batches = crate::analyze::validation_batches(data, windows.min(4));
    let names = data.domains.names().to_vec();
    let a = switchyard_analyze::ablation::ablate(&model, &batches, &names)?;
    Ok(a.layers
        .iter()
        .map(|l| {
            let s = l
                .delta
                .iter()
                .map(|d| {
                    let finite: Vec<f64> = d.iter().copied().filter(|x| x.is_finite()).collect();
                    finite.iter().sum::<f64>() / finite.len().max(1) as f64
                })
                .collect();
            (l.layer, s)
        })
        .collect())
}

/// All but the `n` best-scoring experts of each layer (ties keep the lower index).
fn keep_best(scores: &[(usize, Vec<f64>)], n: usize) -> anyhow::Result<Vec<(usize, usize)>> {
    if n == 0 {
        return Err(UserError::new("--keep must be at least 1").into());
    }
    let mut out = Vec::new();
    for (l, s) in scores {
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        out.extend(order.into_iter().skip(n).map(|e| (*l, e)));
    }
    if out.is_empty() {
        return Err(UserError::new(format!(
            "--keep {n}: no layer has more than {n} experts; nothing to prune"
        ))
        .into());
    }
    Ok(out)
}
