//! `switchyard upcycle`: sparse upcycling of a dense checkpoint — every FFN of its sparse
//! slots copied into N experts (plus noise) behind a fresh top-k gate — written as a new run
//! directory that training resumes from.

use clap::Args;
use switchyard_lifecycle::{upcycle, SurgeryReport, UpcycleOptions};

use crate::commands::experts::OutArgs;
use crate::surgery::{self, lifecycle_error, Before};

#[derive(Args)]
pub struct UpcycleArgs {
    // --ckpt: a dense checkpoint (e.g. the demo's `dense` run)
    #[command(flatten)]
    pub out: OutArgs,
    /// Experts per MoE layer.
    #[arg(long)]
    pub experts: usize,
    /// Experts per token.
    #[arg(long)]
    pub k: usize,
    /// Relative noise on each copy's weights (std = noise x the matrix's RMS); 0: exact
    /// copies (with k = experts the model then computes what the dense one did).
    #[arg(long, default_value_t = 0.01)]
    pub noise: f64,
}

pub fn run(a: UpcycleArgs) -> anyhow::Result<()> {
    let o = &a.out;
    let (src, new_run) = surgery::open(&o.ckpt, &o.out, o.force)?;
    let before = Before::measure(
        &src,
        o.eval_windows.unwrap_or(src.cfg.data.max_valid_windows),
    )?;
    let mut state = src.state.clone();
    let opts = UpcycleOptions {
        experts: a.experts,
        k: a.k,
        noise: a.noise,
        seed: o.seed,
    };
    upcycle(&mut state, &opts).map_err(lifecycle_error)?;
    let layers = state.model.moe_layers();
    let report = SurgeryReport {
        experts_before: vec![1; layers.len()],
        experts_after: vec![a.experts; layers.len()],
        layers,
        warnings: Vec::new(),
    };
    surgery::finish("upcycle", &src, &state, &new_run, &report, &before)
}
