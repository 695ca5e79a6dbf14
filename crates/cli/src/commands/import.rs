//! `switchyard import`: a HuggingFace MoE checkpoint → a Switchyard run directory (the work
//! is in `switchyard_interop::commands`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_interop::commands::import_to_checkpoint;

#[derive(Args)]
pub struct ImportArgs {
    /// A HuggingFace checkpoint directory: config.json, *.safetensors (+ index), tokenizer.json.
    pub hf_dir: PathBuf,
    /// The Switchyard run directory to write (generate, eval, analyze and export read it).
    #[arg(long)]
    pub out: PathBuf,
}

/// The command's one-line help, listing the architectures of the family registry.
pub fn about() -> String {
    format!(
        "Convert a HuggingFace MoE checkpoint ({}) into a Switchyard run directory.",
        switchyard_interop::supported_architectures().join(", ")
    )
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let s = import_to_checkpoint(&args.hf_dir, &args.out)
        .with_context(|| format!("importing {}", args.hf_dir.display()))?;
    println!(
        "imported {} ({} parameters, MoE layers {:?}{}) into {}",
        s.arch,
        s.params,
        s.moe_layers,
        if s.tokenizer {
            ", with tokenizer.json"
        } else {
            ""
        },
        s.step_dir.display()
    );
    Ok(())
}
