//! What the `experts` and `upcycle` commands share: read a checkpoint into a
//! [`ModelState`], evaluate a state on the run's validation data, and write the result as a
//! new run directory that `train --resume`, `init.from`, `generate`, `eval`, `analyze` and
//! `export` read like any other.
//!
//! ```text
//! OUT/
//!   latest, step-<n>/      the checkpoint: the source's step, data cursor, RNGs and LR
//!                          schedule; the new model, moments and router buffers
//!   tokenizer.json, ...    the files the source run carried
//!   surgery.json           what was done: the operation, the layers' expert counts, the
//!                          warnings, and the validation loss before and after
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Var;
use serde::Serialize;
use switchyard_core::ParamStore;
use switchyard_data::{ByteTokenizer, Dataset, Tokenizer};
use switchyard_io::run_dir::{
    carried_file, RunDir, HF_SOURCE_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};
use switchyard_lifecycle::{LifecycleError, ModelState, SurgeryReport};
use switchyard_models::MoeLm;
use switchyard_train::checkpoint::{load_checkpoint, Checkpoint, SaveOptions};
use switchyard_train::trainer::{self, restore, EvalResult, TrainConfig};

use crate::new_run::{Flags, NewRun};
use crate::UserError;

/// File of the surgery record in the output run directory.
pub const SURGERY_FILE: &str = "surgery.json";

/// A checkpoint read for surgery.
pub struct Source {
    pub path: PathBuf,
    pub ckpt: Checkpoint,
    pub cfg: TrainConfig,
    pub state: ModelState,
    tokenizer: Option<switchyard_data::HfTokenizer>,
}

/// Checks `out` (a new run directory; `--force` replaces a run there) and reads `ckpt`.
pub fn open(ckpt: &Path, out: &Path, force: bool) -> anyhow::Result<(Source, NewRun)> {
    let new_run = NewRun::check(out, force, &Flags::OUT)?;
    new_run.refuse_reading(ckpt, "--ckpt")?;
    let context = || format!("reading {}", ckpt.display());
    let c = load_checkpoint(ckpt).with_context(context)?;
    let cfg = restore::checkpoint_config(&c).with_context(context)?;
    let tokenizer = match restore::carried_tokenizer_file(ckpt, &c.dir) {
        Some(file) => Some(switchyard_data::HfTokenizer::from_file(&file).with_context(context)?),
        None => None,
    };
    let state = ModelState {
        model: cfg.model.clone(),
        params: c.model.clone(),
        optimizer: c.optimizer.clone(),
        buffers: c.state.buffers.clone(),
    };
    Ok((
        Source {
            path: ckpt.to_path_buf(),
            ckpt: c,
            cfg,
            state,
            tokenizer,
        },
        new_run,
    ))
}

impl Source {
    /// The run's validation data (its own data settings and tokenizer).
    pub fn data(&self) -> anyhow::Result<Dataset> {
        let tok: &dyn Tokenizer = match &self.tokenizer {
            Some(t) => t,
            None => &ByteTokenizer,
        };
        Ok(trainer::data::build_dataset_with(&self.cfg, tok)?)
    }
}

/// The model a state describes, checked.
pub fn build(state: &ModelState) -> anyhow::Result<MoeLm> {
    state.build().map_err(lifecycle_error)
}

/// Validation loss per domain and the routing counts, over the run's validation windows.
pub fn evaluate(state: &ModelState, data: &Dataset, windows: usize) -> anyhow::Result<EvalResult> {
    Ok(trainer::evaluate(&build(state)?, data, windows)?)
}

/// Tokens routed to each expert of MoE layer `layer` in `eval` (summed over domains).
pub fn usage(eval: &EvalResult, layer: usize) -> Vec<f64> {
    eval.routing
        .iter()
        .find(|r| r.layer == layer)
        .map(|r| {
            let e = r.counts.first().map_or(0, Vec::len);
            (0..e)
                .map(|x| r.counts.iter().map(|row| row[x] as f64).sum())
                .collect()
        })
        .unwrap_or_default()
}

/// A surgery error as the CLI reports it: the user's request (exit 2) or damage (exit 1).
pub fn lifecycle_error(e: LifecycleError) -> anyhow::Error {
    match e {
        LifecycleError::Input { .. } => UserError::new(e.to_string()).into(),
        other => anyhow::Error::new(other),
    }
}

/// What `surgery.json` holds.
#[derive(Serialize)]
pub struct Record<'a> {
    pub operation: &'a str,
    /// The source checkpoint (its step directory).
    pub source: PathBuf,
    pub step: u64,
    pub report: &'a SurgeryReport,
    pub before: Option<&'a EvalResult>,
    pub after: Option<&'a EvalResult>,
}

/// Writes `state` as the run directory `out`: one checkpoint at the source's step (its data
/// cursor, RNGs, LR schedule and trainer state, with the new router buffers), the files the
/// source carried, and `surgery.json`. Returns the step directory.
pub fn save(
    src: &Source,
    state: &ModelState,
    new_run: &NewRun,
    record: &Record,
) -> anyhow::Result<PathBuf> {
    let out = new_run.path().to_path_buf();
    let mut cfg = src.cfg.clone();
    cfg.model = state.model.clone();
    cfg.run_dir = out.clone();
    let store = ParamStore::new();
    for (name, t) in &state.params {
        store.insert(name, Var::from_tensor(t)?);
    }
    let mut train_state = src.ckpt.state.clone();
    train_state.buffers = state.buffers.clone();
    new_run.prepare()?;
    let contents = switchyard_io::CheckpointContents {
        params: &store,
        optimizer: state
            .optimizer
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        state: train_state,
        config: serde_json::to_value(&cfg)?,
    };
    let dir = switchyard_io::save_checkpoint_with(
        &out,
        src.ckpt.step,
        &contents,
        &SaveOptions::default(),
    )
    .with_context(|| format!("writing {}", out.display()))?;
    let run = RunDir::new(&out);
    for name in [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, HF_SOURCE_FILE] {
        if let Some(file) = carried_file(&src.path, &src.ckpt.dir, name) {
            run.carry_file(&file, name)?;
        }
    }
    let json = serde_json::to_vec_pretty(record)?;
    switchyard_io::fsio::write_atomic(&out, SURGERY_FILE, &json)
        .with_context(|| format!("writing {}", out.join(SURGERY_FILE).display()))?;
    Ok(dir)
}

/// The validation data and the loss before the surgery, measured on `windows` validation
/// windows per domain (none when 0).
pub struct Before {
    pub data: Option<Dataset>,
    pub eval: Option<EvalResult>,
    pub windows: usize,
}

impl Before {
    pub fn measure(src: &Source, windows: usize) -> anyhow::Result<Self> {
        let data = if windows > 0 { Some(src.data()?) } else { None };
        let eval = match &data {
            Some(d) => Some(evaluate(&src.state, d, windows)?),
            None => None,
        };
        Ok(Self {
            data,
            eval,
            windows,
        })
    }
}

/// After a surgery: evaluates the result (or only builds it, when nothing was measured
/// before), writes it as the new run with `surgery.json`, and prints the summary.
pub fn finish(
    operation: &str,
    src: &Source,
    state: &ModelState,
    new_run: &NewRun,
    report: &SurgeryReport,
    before: &Before,
) -> anyhow::Result<()> {
    let after = match &before.data {
        Some(d) => Some(evaluate(state, d, before.windows)?),
        None => {
            build(state)?;
            None
        }
    };
    let record = Record {
        operation,
        source: src.ckpt.dir.clone(),
        step: src.ckpt.step,
        report,
        before: before.eval.as_ref(),
        after: after.as_ref(),
    };
    let dir = save(src, state, new_run, &record)?;
    print_summary(
        operation,
        report,
        before.eval.as_ref(),
        after.as_ref(),
        &dir,
    );
    Ok(())
}

/// Prints the layers' expert counts, the warnings and the loss change.
pub fn print_summary(
    operation: &str,
    report: &SurgeryReport,
    before: Option<&EvalResult>,
    after: Option<&EvalResult>,
    dir: &Path,
) {
    println!("{operation}: wrote {}", dir.display());
    for ((l, b), a) in report
        .layers
        .iter()
        .zip(&report.experts_before)
        .zip(&report.experts_after)
    {
        println!("  layer {l}: {b} -> {a} experts");
    }
    for w in &report.warnings {
        println!("  warning: {w}");
    }
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "  validation loss {:.4} -> {:.4} ({:+.4} nats)",
            b.loss,
            a.loss,
            a.loss - b.loss
        );
        for (db, da) in b.domains.iter().zip(&a.domains) {
            println!(
                "    {:<8} {:.4} -> {:.4} ({:+.4})",
                db.domain,
                db.loss,
                da.loss,
                da.loss - db.loss
            );
        }
    }
    println!(
        "  continue training: switchyard train --resume {} --steps <more than {}>",
        dir.parent().unwrap_or(dir).display(),
        dir.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    );
}
