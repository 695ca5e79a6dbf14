//! `switchyard export`: a Switchyard checkpoint (or an HF directory) → a HuggingFace
//! directory that transformers loads (the work is in `switchyard_interop::commands`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use switchyard_interop::commands::export_model_dir;
use switchyard_interop::{supported_architectures, HfArch};
use switchyard_io::run_dir::{self, Occupant, STATE_FILE};

use crate::new_run::is_inside;
use crate::UserError;

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
    /// Overwrite the HF model already in --out (its config.json and safetensors files are
    /// replaced, stale shards deleted). Without it, an --out holding a model is refused; a
    /// Switchyard run or step directory is refused even with it.
    #[arg(long)]
    pub force: bool,
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
    let stale = check_out(&args.ckpt, &args.out, args.force)?;
    for file in stale {
        std::fs::remove_file(&file)
            .with_context(|| format!("--force: removing {}", file.display()))?;
    }
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

/// What export writes over: the model files of an HF directory.
fn is_model_file(name: &str) -> bool {
    name == "config.json"
        || name.ends_with(".safetensors")
        || name.ends_with(".safetensors.index.json")
}

/// Checks that writing an HF directory into `out` destroys nothing silently: never into a
/// Switchyard run or step directory (two models would share it), never over the model being
/// exported, and over another HF model only with `--force`. Returns the model files to delete
/// first (with `--force`), so no stale shard of the old model is left beside the new one.
fn check_out(ckpt: &Path, out: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let shown = out.display();
    let is_run =
        matches!(run_dir::occupant(out)?, Occupant::Run { .. }) || out.join(STATE_FILE).is_file();
    if is_run {
        return Err(UserError::new(format!(
            "{shown} is a Switchyard run or step directory; exporting an HF model into it would \
             mix two models in one run"
        ))
        .with_hint("export to a new directory, e.g. `--out <ckpt>-hf`")
        .into());
    }
    if is_inside(ckpt, out) || is_inside(out, ckpt) {
        return Err(UserError::new(format!(
            "--out {shown} overlaps the model being exported ({}); it would be overwritten \
             while it is read",
            ckpt.display()
        ))
        .with_hint("export to a new directory")
        .into());
    }
    let models: Vec<PathBuf> = match std::fs::read_dir(out) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| is_model_file(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    if !models.is_empty() && !force {
        return Err(UserError::new(format!(
            "{shown} already holds a model (`{}`); refusing to overwrite it",
            models[0].file_name().unwrap_or_default().to_string_lossy()
        ))
        .with_hint("export to a new directory, or overwrite that model with `--force`")
        .into());
    }
    Ok(models)
}
