//! `switchyard export`: a Switchyard checkpoint (or an HF directory) → a HuggingFace
//! directory that transformers loads (the work is in `switchyard_interop::commands`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_interop::commands::export_model_dir;
use switchyard_interop::{supported_architectures, HfArch};

#[derive(Args)]
pub struct ExportArgs {
    /// A Switchyard run or step directory (imported or trained), or an HF directory.
    #[arg(long, visible_alias = "model")]
    pub ckpt: PathBuf,
    /// The HF directory to write: config.json, generation_config.json, safetensors shards
    /// and the tokenizer files.
    #[arg(long)]
    pub out: PathBuf,
    // help text from the family registry, so a new family appears here without an edit
    #[arg(long, help = arch_help())]
    pub arch: Option<HfArch>,
}

/// `--arch`'s help: the architectures the family registry can write.
fn arch_help() -> String {
    format!(
        "The HF architecture to write: {} (default: the architecture it was imported from, \
         else the first that expresses the model).",
        supported_architectures().join(", ")
    )
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let r = export_model_dir(&args.ckpt, &args.out, args.arch)
        .with_context(|| format!("exporting {}", args.ckpt.display()))?;
    println!(
        "exported as {} ({} tensors) to {}",
        r.arch,
        r.tensors,
        r.dir.display()
    );
    Ok(())
}
