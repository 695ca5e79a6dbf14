//! `switchyard export`: a Switchyard checkpoint (or an HF directory) → a HuggingFace
//! directory that transformers loads (the work is in `switchyard_interop::commands`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_interop::commands::export_model_dir;
use switchyard_interop::HfArch;

#[derive(Args)]
pub struct ExportArgs {
    /// A Switchyard run or step directory (imported or trained), or an HF directory.
    #[arg(long, visible_alias = "model")]
    pub ckpt: PathBuf,
    /// The HF directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2 or deepseek_v3 (default: the
    /// architecture it was imported from, else the first that expresses the model).
    #[arg(long)]
    pub arch: Option<HfArch>,
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
