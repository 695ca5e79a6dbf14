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
/// Prefix under which [`prune`] moves a step directory before deleting it
/// (`tmp-pruned-<step>-<pid>`): the rename is atomic, so a crash mid-delete leaves a `tmp-*`
/// name, which is never loaded and is removed by the next save or start, never a `step-*`
/// directory with half its files.
pub const PRUNED_DIR_PREFIX: &str = "tmp-pruned-";
/// Infix of the sibling a replaced run directory is moved to before it is deleted
/// (`.<name>.replaced-<pid>` beside it); see [`replace_run`].
const REPLACED_INFIX: &str = ".replaced-";

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

/// Removes leftovers of interrupted saves and prunes, except `keep`: `tmp-*` (a checkpoint
/// being written, or a pruned one being deleted), `old-*`, `latest.tmp-*`, the temp files of
/// atomic sidecar writes (`.<name>.tmp`), and `step-*` directories without `state.json` (a
/// delete interrupted by a version that removed a step directory in place; a save creates a
/// `step-*` directory only by renaming a complete one). Returns the paths removed.
pub fn remove_stale(run_dir: &Path, keep: &Path) -> Result<Vec<PathBuf>> {
    remove_leftovers(run_dir, Some(keep))
}

/// [`remove_stale`] at the start of a run, before anything is written: every leftover goes.
/// A run directory that does not exist yet has none.
pub fn clean_leftovers(run_dir: &Path) -> Result<Vec<PathBuf>> {
    if !run_dir.is_dir() {
        return Ok(Vec::new());
    }
    remove_leftovers(run_dir, None)
}

fn remove_leftovers(run_dir: &Path, keep: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(run_dir).map_err(CheckpointError::io("list", run_dir))? {
        let entry = entry.map_err(CheckpointError::io("list", run_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if Some(path.as_path()) == keep || !is_leftover(name, &path) {
            continue;
        }
        if path.is_dir() {
            fs::remove_dir_all(&path).map_err(CheckpointError::io("remove", &path))?;
        } else {
            fs::remove_file(&path).map_err(CheckpointError::io("remove", &path))?;
        }
        removed.push(path);
    }
    Ok(removed)
}

/// Whether the entry `name` of a run directory is a leftover of an interrupted save or prune.
fn is_leftover(name: &str, path: &Path) -> bool {
    let stale_dir = name.starts_with(TMP_DIR_PREFIX) || name.starts_with(OLD_DIR_PREFIX);
    let stale_pointer = name.starts_with(&format!("{LATEST_FILE}.{TMP_DIR_PREFIX}"));
    let stale_sidecar = name.starts_with('.') && name.ends_with(".tmp") && path.is_file();
    let incomplete_step =
        parse_step_dir_name(name).is_some() && path.is_dir() && !path.join(STATE_FILE).is_file();
    stale_dir || stale_pointer || stale_sidecar || incomplete_step
}

/// Deletes all but the `keep_last` newest complete checkpoints, never `current`. Each goes in
/// two steps: an atomic rename to `tmp-pruned-<step>-<pid>`, then the delete, so a crash
/// leaves either a complete `step-*` directory or a `tmp-*` leftover.
pub fn prune(run_dir: &Path, keep_last: usize, current: &Path) -> Result<()> {
    let mut others: Vec<_> = list_step_dirs(run_dir)?
        .into_iter()
        .filter(|(_, d)| d != current)
        .collect();
    others.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
    let doomed: Vec<_> = others
        .into_iter()
        .skip(keep_last.saturating_sub(1))
        .collect();
    if doomed.is_empty() {
        return Ok(());
    }
    let mut moved = Vec::with_capacity(doomed.len());
    for (step, dir) in doomed {
        let aside = run_dir.join(format!("{PRUNED_DIR_PREFIX}{step}-{}", std::process::id()));
        fsio::rename(&dir, &aside)?;
        moved.push(aside);
    }
    fsio::sync_dir(run_dir)?;
    for dir in moved {
        fs::remove_dir_all(&dir).map_err(CheckpointError::io("remove old checkpoint", &dir))?;
    }
    Ok(())
}

/// What is at a path a command is about to write a new run directory to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Occupant {
    /// Nothing, or an empty directory: free to use.
    Nothing,
    /// A Switchyard run directory (a `latest` pointer, `step-*` checkpoints, `metrics.jsonl`,
    /// `hf_source.json` or leftovers of a save); `latest` is the step directory it points at,
    /// `steps` the number of complete checkpoints.
    Run {
        latest: Option<String>,
        steps: usize,
    },
    /// A file, or a directory holding something that is not a run directory (`example`
    /// names one entry).
    Other { example: String },
}

/// What `path` holds, for a command about to create a run directory there.
pub fn occupant(path: &Path) -> Result<Occupant> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Occupant::Nothing),
        Err(e) => {
            return Err(CheckpointError::Io {
                op: "inspect",
                path: path.into(),
                source: e,
            })
        }
    };
    if !meta.is_dir() {
        return Ok(Occupant::Other {
            example: "a file, not a directory".into(),
        });
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(CheckpointError::io("list", path))? {
        let entry = entry.map_err(CheckpointError::io("list", path))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let is_run_file = |n: &str| {
        [LATEST_FILE, METRICS_FILE, HF_SOURCE_FILE].contains(&n)
            || parse_step_dir_name(n).is_some()
            || n.starts_with(TMP_DIR_PREFIX)
            || n.starts_with(OLD_DIR_PREFIX)
    };
    if names.iter().any(|n| is_run_file(n)) {
        // a damaged `latest` still marks a run
        let latest = read_latest(path).ok().flatten();
        let steps = list_step_dirs(path)?.len();
        return Ok(Occupant::Run { latest, steps });
    }
    Ok(match names.into_iter().next() {
        None => Occupant::Nothing,
        Some(example) => Occupant::Other { example },
    })
}

/// Deletes the run directory `path` so a new run can be written there without mixing with
/// the old one: it is first renamed to a sibling `.<name>.replaced-<pid>` (atomic), then
/// deleted; siblings left that way by an earlier interrupted replace are deleted too. The
/// caller checks with [`occupant`] that `path` holds a run, not something else.
pub fn replace_run(path: &Path) -> Result<()> {
    let abs = std::path::absolute(path).map_err(CheckpointError::io("resolve", path))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name().and_then(|n| n.to_str()))
    else {
        return Err(CheckpointError::Invalid(format!(
            "cannot replace {}: name the run directory by a path ending in its own name",
            path.display()
        )));
    };
    let prefix = format!(".{name}{REPLACED_INFIX}");
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(CheckpointError::io("remove", &p))?;
            }
        }
    }
    if fs::symlink_metadata(&abs).is_err() {
        return Ok(());
    }
    let aside = parent.join(format!("{prefix}{}", std::process::id()));
    fsio::rename(&abs, &aside)?;
    fsio::sync_dir(parent)?;
    fs::remove_dir_all(&aside).map_err(CheckpointError::io("remove the replaced run", &aside))
}
