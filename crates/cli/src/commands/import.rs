//! `switchyard import`: a HuggingFace MoE checkpoint → a Switchyard run directory (the work
//! is in `switchyard_interop`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_interop::{import, save_checkpoint_dir};

use crate::new_run::{Flags, NewRun};

#[derive(Args)]
pub struct ImportArgs {
    /// A HuggingFace checkpoint directory: config.json, *.safetensors (+ index), tokenizer.json.
    pub hf_dir: PathBuf,
    /// The Switchyard run directory to write (generate, eval, analyze and export read it); a
    /// new or empty directory, or a run to replace with --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the run already in --out: it is deleted as a whole once the model has been
    /// read, so the two models never mix. Without it, an --out holding a run is refused.
    #[arg(long)]
    pub force: bool,
}

/// The command's one-line help, listing the architectures of the family registry.
pub fn about() -> String {
    format!(
        "Convert a HuggingFace MoE checkpoint ({}) into a Switchyard run directory.",
        switchyard_interop::supported_architectures().join(", ")
    )
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let new_run = NewRun::check(&args.out, args.force, &Flags::OUT)?;
    new_run.refuse_reading(&args.hf_dir, "the HF directory")?;
    let importing = || format!("importing {}", args.hf_dir.display());
    let m = import(&args.hf_dir).with_context(importing)?;
    new_run.prepare()?;
    let step_dir = save_checkpoint_dir(&m, &args.out).with_context(importing)?;
    println!(
        "imported {} ({} parameters, MoE layers {:?}{}) into {}",
        m.arch,
        m.model.num_params_total(),
        m.cfg.moe_layers(),
        if m.tokenizer.is_some() {
            ", with tokenizer.json"
        } else {
            ""
        },
        step_dir.display()
    );
    Ok(())
}
