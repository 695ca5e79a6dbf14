//! The run directory: its file names, the `latest` pointer, its `step-*` checkpoints and the
//! files kept beside them.
//!
//! ```text
//! runs/x/
//!   latest                  "step-00001200\n"
//!   step-00001200/          one complete checkpoint (see `checkpoint`)
//!   tokenizer.json          the HF tokenizer the run's models use, if not bytes
//!   tokenizer_config.json   its special tokens
//!   hf_source.json          the HF architecture an imported model came from (for export)
//!   metrics.jsonl           one JSON object per logged step and evaluation
//! ```
//!
//! The sidecar files (`tokenizer.json`, `hf_source.json`) belong to the run, not to one step;
//! [`carried_file`] finds them for a run or a step directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_data::SpecialIds;

use crate::fsio;
use crate::CheckpointError;

type Result<T> = std::result::Result<T, CheckpointError>;

/// Name of the pointer file in a run directory; it holds the newest step directory's name.
pub const LATEST_FILE: &str = "latest";
/// Prefix of complete checkpoint directories: `step-<step:08>`.
pub const STEP_DIR_PREFIX: &str = "step-";
/// Prefix of directories being written (`tmp-<step>-<pid>`); never loaded.
pub const TMP_DIR_PREFIX: &str = "tmp-";
/// Prefix under which an existing step directory is moved aside while it is replaced.
pub const OLD_DIR_PREFIX: &str = "old-";

/// A checkpoint's parameters, named as in the `ParamStore`.
pub const MODEL_FILE: &str = "model.safetensors";
/// A checkpoint's optimiser state (empty for an inference-only checkpoint).
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// A checkpoint's run config (a `TrainConfig` in JSON; its `model` section builds the model).
pub const CONFIG_FILE: &str = "config.json";
/// A checkpoint's non-tensor state and the checksums of its other files; written last.
pub const STATE_FILE: &str = "state.json";

/// The HF tokenizer a run's models use (beside `latest`, or in a step directory).
pub use switchyard_data::hf_tokenizer::{TOKENIZER_CONFIG_FILE, TOKENIZER_FILE};
/// Where an imported model came from: [`HfSource`] in JSON.
pub const HF_SOURCE_FILE: &str = "hf_source.json";
/// The trainer's log: one JSON object per logged step and per evaluation.
pub const METRICS_FILE: &str = "metrics.jsonl";

pub fn step_dir_name(step: u64) -> String {
    format!("{STEP_DIR_PREFIX}{step:08}")
}

/// The step of a `step-<digits>` name.
pub fn parse_step_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(STEP_DIR_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `hf_source.json`: the HF architecture (`model_type`), special token ids and source
/// `config.json` of an imported model, so `export` writes the same architecture back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HfSource {
    /// `model_type` of the source (e.g. `mixtral`).
    pub arch: String,
    /// The source `config.json`, verbatim.
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub special_ids: SpecialIds,
}

impl HfSource {
    pub fn read(path: &Path) -> Result<Self> {
        serde_json::from_slice(&fsio::read(path)?)
            .map_err(|e| CheckpointError::format(path, format!("invalid JSON: {e}")))
    }
}

/// A run directory: the checkpoints of one run and the files beside them. Writes are crash
/// safe (temp file, fsync, rename); one process writes a run directory at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where checkpoint `step` is (or would be) stored.
    pub fn step_dir(&self, step: u64) -> PathBuf {
        self.path.join(step_dir_name(step))
    }

    /// The step directory name `latest` holds, if the file exists.
    pub fn latest(&self) -> Result<Option<String>> {
        read_latest(&self.path)
    }

    /// Complete checkpoints, `(step, dir)` sorted by step.
    pub fn steps(&self) -> Result<Vec<(u64, PathBuf)>> {
        list_step_dirs(&self.path)
    }

    /// Writes the sidecar `name` (e.g. [`HF_SOURCE_FILE`]) atomically, creating the directory.
    pub fn write_file(&self, name: &str, data: &[u8]) -> Result<()> {
        fs::create_dir_all(&self.path)
            .map_err(CheckpointError::io("create run directory", &self.path))?;
        fsio::write_atomic(&self.path, name, data)
    }

    /// Writes `hf_source.json`.
    pub fn write_hf_source(&self, source: &HfSource) -> Result<()> {
        let text = serde_json::to_string_pretty(source).map_err(|e| {
            CheckpointError::Invalid(format!("hf_source cannot be serialised: {e}"))
        })?;
        self.write_file(HF_SOURCE_FILE, (text + "\n").as_bytes())
    }

    /// Copies `src` into the run directory as `name` unless a file of that name is already
    /// there; returns whether it copied.
    pub fn carry_file(&self, src: &Path, name: &str) -> Result<bool> {
        if self.path.join(name).exists() || !src.is_file() {
            return Ok(false);
        }
        self.write_file(name, &fsio::read(src)?)?;
        Ok(true)
    }
}

/// The step directory a checkpoint path means: `path` itself when it holds `state.json`, else
/// (a run directory) the one `latest` names, or, if `latest` is missing or names a directory
/// that is gone, the newest complete `step-*` directory.
pub fn find_step_dir(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(CheckpointError::NotFound { path: path.into() });
    }
    let is_step_dir = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_step_dir_name)
        .is_some();
    if is_step_dir && (path.join(MODEL_FILE).is_file() || path.join(CONFIG_FILE).is_file()) {
        return Err(CheckpointError::Corrupt {
            path: path.join(STATE_FILE),
            reason: "the file is missing (an interrupted save or an incomplete copy)".into(),
        });
    }
    if let Some(name) = read_latest(path)? {
        let dir = path.join(name);
        if dir.join(STATE_FILE).is_file() {
            return Ok(dir);
        }
    }
    match list_step_dirs(path)?.pop() {
        Some((_, dir)) => Ok(dir),
        None => Err(CheckpointError::NotFound { path: path.into() }),
    }
}

/// The file `name` that goes with a checkpoint: in the directory given, in the step
/// directory, or in its run directory (where `switchyard import` and a fine-tuning run put
/// `tokenizer.json` and `hf_source.json`).
pub fn carried_file(given: &Path, step_dir: &Path, name: &str) -> Option<PathBuf> {
    [Some(given), Some(step_dir), step_dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Atomically points `run_dir/latest` at `dir_name`: write a temp file, fsync, rename, fsync
/// the run directory. A crash leaves either the old pointer or the new one.
pub fn write_latest(run_dir: &Path, dir_name: &str) -> Result<()> {
    let tmp = run_dir.join(format!(
        "{LATEST_FILE}.{TMP_DIR_PREFIX}{}",
        std::process::id()
    ));
    fsio::write_synced(&tmp, format!("{dir_name}\n").as_bytes())?;
    fsio::rename(&tmp, &run_dir.join(LATEST_FILE))?;
    fsio::sync_dir(run_dir)
}

/// The directory name `run_dir/latest` holds, if the file exists. It must be a plain
/// `step-*` name, so a damaged pointer cannot lead outside the run directory.
pub fn read_latest(run_dir: &Path) -> Result<Option<String>> {
    let path = run_dir.join(LATEST_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CheckpointError::Io {
                op: "read",
                path,
                source: e,
            })
        }
    };
    let name = text.trim();
    if parse_step_dir_name(name).is_none() {
        let reason = format!(
            "holds {name:?}, not a step-<number> directory name; delete the file to load the \
             newest step-* directory instead"
        );
        return Err(CheckpointError::Format { path, reason });
    }
    Ok(Some(name.to_string()))
}

/// Complete checkpoints of a run, `(step, dir)` sorted by step. A `step-*` directory is only
/// created by renaming a fully written and fsynced temp directory; one without `state.json`
/// (written last) was not made by us and is skipped.
pub fn list_step_dirs(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(run_dir).map_err(CheckpointError::io("list", run_dir))? {
        let entry = entry.map_err(CheckpointError::io("list", run_dir))?;
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(parse_step_dir_name) else {
            continue;
        };
        let dir = entry.path();
        if dir.join(STATE_FILE).is_file() {
            out.push((step, dir));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes leftovers of interrupted saves (`tmp-*`, `old-*`, `latest.tmp-*`), except `keep`.
pub fn remove_stale(run_dir: &Path, keep: &Path) -> Result<()> {
    for entry in fs::read_dir(run_dir).map_err(CheckpointError::io("list", run_dir))? {
        let entry = entry.map_err(CheckpointError::io("list", run_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let stale_dir = name.starts_with(TMP_DIR_PREFIX) || name.starts_with(OLD_DIR_PREFIX);
        let stale_pointer = name.starts_with(&format!("{LATEST_FILE}.{TMP_DIR_PREFIX}"));
        if path == keep || !(stale_dir || stale_pointer) {
            continue;
        }
        if path.is_dir() {
            fs::remove_dir_all(&path).map_err(CheckpointError::io("remove", &path))?;
        } else {
            fs::remove_file(&path).map_err(CheckpointError::io("remove", &path))?;
        }
    }
    Ok(())
}

/// Deletes all but the `keep_last` newest complete checkpoints, never `current`.
pub fn prune(run_dir: &Path, keep_last: usize, current: &Path) -> Result<()> {
    let mut others: Vec<_> = list_step_dirs(run_dir)?
        .into_iter()
        .filter(|(_, d)| d != current)
        .collect();
    others.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
    for (_, dir) in others.into_iter().skip(keep_last.saturating_sub(1)) {
        fs::remove_dir_all(&dir).map_err(CheckpointError::io("remove old checkpoint", &dir))?;
    }
    Ok(())
}
