//! Crash-safe checkpoints (DESIGN.md §5).
//!
//! A run directory holds complete checkpoints `step-<step:08>/` and a `latest` pointer file:
//!
//! ```text
//! runs/x/
//!   latest                  "step-00001200\n"
//!   step-00001200/
//!     model.safetensors      parameters, named as in the ParamStore
//!     optimizer.safetensors  AdamW state: <param>.exp_avg, <param>.exp_avg_sq, <param>.step
//!     config.json            the caller's config, opaque here
//!     state.json             step, RNG states, data cursor, LR schedule, router buffers,
//!                            user data, and size + CRC-32 of the three files above
//! ```
//!
//! Saving writes everything into `tmp-<step>-<pid>/`, fsyncs each file and the directory,
//! renames it to `step-<step:08>/`, fsyncs the run directory, then replaces `latest` by
//! temp file + fsync + rename. A crash at any point leaves the previous checkpoint and
//! pointer intact; leftovers (`tmp-*`) are never loaded and are removed by the next save
//! (and by the trainer when it starts, [`run_dir::clean_leftovers`]). Pruning old checkpoints
//! (`keep_last`) renames each to `tmp-pruned-*` before deleting it, for the same reason.
//! Loading verifies every file's size and checksum before parsing it, so truncation and
//! bit flips are reported with the file's path rather than surfacing as odd training, and
//! refuses a tensor holding NaN or infinity, naming it ([`crate::finite`]).
//!
//! One process writes a run directory at a time: a save removes every `tmp-*` it did not
//! create. Re-saving an existing step (a run resumed from an earlier checkpoint) moves the old
//! directory aside before renaming the new one in; a crash in that instant leaves the old one
//! as `old-<step>-<pid>/`, and loading the run falls back to the newest `step-*` directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{de::DeserializeOwned, Serialize};
use switchyard_core::ParamStore;

use crate::finite::non_finite;
use crate::fsio::{self, mem_available_bytes, FileDigest};
use crate::run_dir::{
    self, step_dir_name, CONFIG_FILE, MODEL_FILE, OLD_DIR_PREFIX, OPTIMIZER_FILE, STATE_FILE,
    TMP_DIR_PREFIX,
};
use crate::state::{self, TrainState};
use crate::CheckpointError;

pub use crate::run_dir::find_step_dir;

type Result<T> = std::result::Result<T, CheckpointError>;

/// What to save. `L` is the learning-rate schedule type of [`TrainState`].
pub struct CheckpointContents<'a, L = serde_json::Value> {
    pub params: &'a ParamStore,
    /// The optimiser's state tensors; empty writes an empty `optimizer.safetensors` (an
    /// inference-only checkpoint).
    pub optimizer: Vec<(String, Tensor)>,
    pub state: TrainState<L>,
    /// The caller's run/model config, stored verbatim as `config.json`.
    pub config: serde_json::Value,
}

/// How to save.
#[derive(Clone, Copy, Debug, Default)]
pub struct SaveOptions {
    /// Keep only this many newest checkpoints (by step, the new one included); older ones are
    /// deleted after the new one is complete and `latest` points at it. `None` keeps all.
    pub keep_last: Option<usize>,
}

/// A loaded, verified checkpoint. Tensors are on the CPU.
#[derive(Debug)]
pub struct Checkpoint<L = serde_json::Value> {
    /// The step directory it was read from.
    pub dir: PathBuf,
    pub step: u64,
    pub model: BTreeMap<String, Tensor>,
    /// Empty when saved without an optimiser.
    pub optimizer: BTreeMap<String, Tensor>,
    pub state: TrainState<L>,
    pub config: serde_json::Value,
}

/// [`save_checkpoint_with`] keeping every checkpoint.
pub fn save_checkpoint<L: Serialize + Clone>(
    run_dir: impl AsRef<Path>,
    step: u64,
    contents: &CheckpointContents<L>,
) -> Result<PathBuf> {
    save_checkpoint_with(run_dir, step, contents, &SaveOptions::default())
}

/// Writes `run_dir/step-<step:08>/` crash-safely (see the module docs), points `latest` at
/// it and returns its path. An existing directory for the same step (a run resumed from an
/// earlier checkpoint) is replaced.
pub fn save_checkpoint_with<L: Serialize + Clone>(
    run_dir: impl AsRef<Path>,
    step: u64,
    contents: &CheckpointContents<L>,
    opts: &SaveOptions,
) -> Result<PathBuf> {
    let run_dir = run_dir.as_ref();
    if opts.keep_last == Some(0) {
        return Err(CheckpointError::Invalid(
            "keep_last must be at least 1 (or None to keep all)".into(),
        ));
    }
    std::fs::create_dir_all(run_dir)
        .map_err(CheckpointError::io("create run directory", run_dir))?;
    let tmp = run_dir.join(format!("{}{step}-{}", TMP_DIR_PREFIX, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(CheckpointError::io("remove stale", &tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(CheckpointError::io("create", &tmp))?;
    let written = write_files(&tmp, step, contents);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp); // best effort; the next save removes it anyway
        return Err(e);
    }

    let name = step_dir_name(step);
    let final_dir = run_dir.join(&name);
    let moved_aside = if final_dir.exists() {
        let old = run_dir.join(format!("{}{step}-{}", OLD_DIR_PREFIX, std::process::id()));
        fsio::rename(&final_dir, &old)?;
        Some(old)
    } else {
        None
    };
    fsio::rename(&tmp, &final_dir)?;
    fsio::sync_dir(run_dir)?;
    run_dir::write_latest(run_dir, &name)?;
    if let Some(old) = moved_aside {
        std::fs::remove_dir_all(&old)
            .map_err(CheckpointError::io("remove replaced checkpoint", &old))?;
    }
    run_dir::remove_stale(run_dir, &final_dir)?;
    if let Some(keep) = opts.keep_last {
        run_dir::prune(run_dir, keep, &final_dir)?;
    }
    Ok(final_dir)
}

/// Writes and fsyncs the four files and the directory `dir`.
fn write_files<L: Serialize + Clone>(
    dir: &Path,
    step: u64,
    contents: &CheckpointContents<L>,
) -> Result<()> {
    let model: Vec<(String, Tensor)> = contents
        .params
        .all()
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect();
    let optimizer = contents.optimizer.clone();
    let config = serde_json::to_vec_pretty(&contents.config)
        .map_err(|e| CheckpointError::Invalid(format!("config cannot be serialised: {e}")))?;
    let files = [
        (MODEL_FILE, serialize_tensors(model, dir.join(MODEL_FILE))?),
        (
            OPTIMIZER_FILE,
            serialize_tensors(optimizer, dir.join(OPTIMIZER_FILE))?,
        ),
        (CONFIG_FILE, [config.as_slice(), b"\n"].concat()),
    ];
    let mut checksums = BTreeMap::new();
    for (file, data) in &files {
        fsio::write_synced(&dir.join(file), data)?;
        checksums.insert(file.to_string(), FileDigest::of(data));
    }
    // state.json last: a step directory without it is incomplete by definition.
    let state = state::encode(step, checksums, &contents.state)?;
    fsio::write_synced(&dir.join(STATE_FILE), &state)?;
    fsio::sync_dir(dir)
}

fn serialize_tensors(tensors: Vec<(String, Tensor)>, path: PathBuf) -> Result<Vec<u8>> {
    // `format: pt` is what HuggingFace loaders look for in the header.
    let metadata = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    safetensors::serialize(tensors, Some(metadata))
        .map_err(|e| CheckpointError::format(path, format!("cannot serialise tensors: {e}")))
}

/// Loads a checkpoint from a step directory, or from a run directory: the one `latest` names,
/// or, if `latest` is missing or names a directory that is gone, the newest complete
/// `step-*` directory. Every file is size- and checksum-verified before it is parsed.
pub fn load_checkpoint<L: DeserializeOwned>(path: impl AsRef<Path>) -> Result<Checkpoint<L>> {
    load_step_dir(&find_step_dir(path.as_ref())?)
}

/// Refuses, before reading, a checkpoint whose tensor files would not fit in memory: each
/// file's bytes and the tensors made from them are alive together, so 2× their size.
/// Unknown availability passes.
pub fn check_load_fits(dir: &Path, available: Option<u64>) -> Result<()> {
    let bytes: u64 = [MODEL_FILE, OPTIMIZER_FILE]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let need = 2 * bytes;
    const GIB: f64 = (1u64 << 30) as f64;
    match available {
        Some(avail) if need > avail => Err(CheckpointError::TooLarge {
            path: dir.to_path_buf(),
            need_gib: need as f64 / GIB,
            available_gib: avail as f64 / GIB,
        }),
        _ => Ok(()),
    }
}

fn load_step_dir<L: DeserializeOwned>(dir: &Path) -> Result<Checkpoint<L>> {
    check_load_fits(dir, mem_available_bytes())?;
    let state_path = dir.join(STATE_FILE);
    let decoded = state::decode(&state_path, &fsio::read(&state_path)?)?;
    let mut verified = BTreeMap::new();
    for file in [MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE] {
        let path = dir.join(file);
        let Some(digest) = decoded.checksums.get(file) else {
            let reason = format!("`checksums` has no entry for {file}");
            return Err(CheckpointError::format(&state_path, reason));
        };
        let data = fsio::read(&path)?;
        digest.verify(&path, &data)?;
        verified.insert(file, (path, data));
    }
    let load = |file: &str| -> Result<BTreeMap<String, Tensor>> {
        let (path, data) = &verified[file];
        let tensors = candle_core::safetensors::load_buffer(data, &Device::Cpu).map_err(|e| {
            CheckpointError::format(path, format!("not a valid safetensors file: {e}"))
        })?;
        for (name, t) in &tensors {
            if let Some(f) = non_finite(t)? {
                return Err(CheckpointError::NonFinite {
                    path: path.clone(),
                    tensor: name.clone(),
                    count: f.count,
                    first_index: f.first_index,
                    first: f.first,
                });
            }
        }
        Ok(tensors.into_iter().collect())
    };
    let (config_path, config_data) = &verified[CONFIG_FILE];
    let config = serde_json::from_slice(config_data)
        .map_err(|e| CheckpointError::format(config_path, format!("invalid JSON: {e}")))?;
    Ok(Checkpoint {
        dir: dir.into(),
        step: decoded.step,
        model: load(MODEL_FILE)?,
        optimizer: load(OPTIMIZER_FILE)?,
        state: decoded.state,
        config,
    })
}

/// Copies the checkpoint's parameters into `store`'s `Var`s. Checks names, shapes and dtypes
/// first and reports every mismatch in one [`CheckpointError::Mismatch`]; on error nothing
/// is changed.
pub fn restore_into<L>(store: &ParamStore, checkpoint: &Checkpoint<L>) -> Result<()> {
    let params = store.all();
    let mut problems = Vec::new();
    for (name, var) in &params {
        match checkpoint.model.get(name) {
            None => problems.push(format!(
                "missing `{name}` (model has {:?} {:?})",
                var.dtype(),
                var.dims()
            )),
            Some(t) => {
                if t.dims() != var.dims() {
                    problems.push(format!(
                        "`{name}`: shape {:?} in the checkpoint vs {:?} in the model",
                        t.dims(),
                        var.dims()
                    ));
                }
                if t.dtype() != var.dtype() {
                    problems.push(format!(
                        "`{name}`: dtype {:?} in the checkpoint vs {:?} in the model",
                        t.dtype(),
                        var.dtype()
                    ));
                }
            }
        }
    }
    let known: std::collections::BTreeSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    for (name, t) in &checkpoint.model {
        if !known.contains(name.as_str()) {
            problems.push(format!(
                "unexpected `{name}` ({:?} {:?}; no such parameter in the model)",
                t.dtype(),
                t.dims()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(CheckpointError::Mismatch {
            path: checkpoint.dir.join(MODEL_FILE),
            problems,
        });
    }
    for (name, var) in &params {
        var.set(&checkpoint.model[name].to_device(var.device())?)?;
    }
    Ok(())
}
