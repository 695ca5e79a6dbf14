//! Exit codes, one rule for every command:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | I/O failure or damaged data: a disk error, a corrupt or truncated file, a checkpoint or HF tensor that does not match its config |
//! | 2 | the user's input is wrong: command line, config (`--set`, TOML, `data.path`, sizes that do not fit the data), a path that does not exist, a refusal (an existing run directory, a model or job too large for the memory) |
//! | 3 | training diverged: the loss or gradient norm was not finite |
//!
//! [`exit_code`] reads the code from the error's chain: the outermost error with a known kind
//! decides. Errors of unknown kind (a failed tensor op, plain `anyhow` messages) are 1.

use std::error::Error as StdError;
use std::io::ErrorKind;

use switchyard_core::MoeError;
use switchyard_data::DataError;
use switchyard_interop::InteropError;
use switchyard_io::{CheckpointError, LoadError};
use switchyard_models::ModelError;
use switchyard_train::trainer::{ConfigError, RunError};
use switchyard_train::TrainError;

/// I/O failure or damaged data.
pub const EXIT_ERROR: u8 = 1;
/// The user's input is wrong (clap uses 2 for usage errors too).
pub const EXIT_USAGE: u8 = 2;
/// Training stopped because the loss or gradient norm was not finite.
pub const EXIT_NON_FINITE: u8 = 3;

/// A command refused what it was asked to do because of its input: exits with 2 and prints
/// `hint` after the message.
#[derive(Debug)]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for UserError {}

/// The exit code an error deserves (see the module docs); `None` for an error of unknown kind,
/// which exits with [`EXIT_ERROR`].
pub fn exit_code(err: &anyhow::Error) -> Option<u8> {
    err.chain().find_map(code_of)
}

fn code_of(e: &(dyn StdError + 'static)) -> Option<u8> {
    if e.is::<UserError>() {
        return Some(EXIT_USAGE);
    }
    if let Some(r) = e.downcast_ref::<RunError>() {
        return run_code(r);
    }
    if e.is::<ConfigError>() {
        return Some(EXIT_USAGE);
    }
    if let Some(d) = e.downcast_ref::<DataError>() {
        return Some(data_code(d));
    }
    if let Some(c) = e.downcast_ref::<CheckpointError>() {
        return Some(checkpoint_code(c));
    }
    if let Some(l) = e.downcast_ref::<LoadError>() {
        return load_code(l);
    }
    if let Some(i) = e.downcast_ref::<InteropError>() {
        return interop_code(i);
    }
    if let Some(m) = e.downcast_ref::<ModelError>() {
        return model_code(m);
    }
    if let Some(m) = e.downcast_ref::<MoeError>() {
        return moe_code(m);
    }
    if let Some(t) = e.downcast_ref::<TrainError>() {
        return train_code(t);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return Some(io_code(io));
    }
    None
}

/// A path the user gave that is not there is their input; any other I/O failure is the
/// machine's.
fn io_code(e: &std::io::Error) -> u8 {
    match e.kind() {
        ErrorKind::NotFound => EXIT_USAGE,
        _ => EXIT_ERROR,
    }
}

fn run_code(r: &RunError) -> Option<u8> {
    match r {
        RunError::NonFinite { .. } => Some(EXIT_NON_FINITE),
        RunError::Config(_) | RunError::Resume { .. } => Some(EXIT_USAGE),
        RunError::Data(d) => Some(data_code(d)),
        RunError::Model(m) => model_code(m),
        RunError::Optim(t) => train_code(t),
        RunError::Checkpoint(c) => Some(checkpoint_code(c)),
        RunError::Io { .. } => Some(EXIT_ERROR),
        _ => None,
    }
}

fn data_code(d: &DataError) -> u8 {
    match d {
        DataError::Io { source, .. } => io_code(source),
        // a tokenizer.json that does not parse, an index built from other documents
        DataError::Tokenizer { .. } | DataError::UnknownDomain { .. } => EXIT_ERROR,
        // data.path, data.tokenizer, the split and batch sizes: all chosen by the user
        _ => EXIT_USAGE,
    }
}

fn checkpoint_code(c: &CheckpointError) -> u8 {
    match c {
        CheckpointError::NotFound { .. } | CheckpointError::TooLarge { .. } => EXIT_USAGE,
        _ => EXIT_ERROR,
    }
}

fn load_code(l: &LoadError) -> Option<u8> {
    match l {
        LoadError::Checkpoint(c) => Some(checkpoint_code(c)),
        LoadError::Data(d) => Some(data_code(d)),
        // a model too large for the memory asks too much; a checkpoint's own config.json
        // that does not build a model is damaged data
        LoadError::Model(ModelError::TooLarge(_)) => Some(EXIT_USAGE),
        LoadError::Model(_) | LoadError::Incompatible { .. } => Some(EXIT_ERROR),
    }
}

fn interop_code(i: &InteropError) -> Option<u8> {
    Some(match i {
        // the model given is not one this build can use, or asks for more than the machine has
        InteropError::UnknownArchitecture { .. }
        | InteropError::Config { .. }
        | InteropError::Unsupported { .. }
        | InteropError::NoWeights { .. }
        | InteropError::NotRepresentable { .. } => EXIT_USAGE,
        // config.json missing: not a model directory; a listed shard missing: damage
        InteropError::MissingFile { listed_in, .. } => match listed_in {
            None => EXIT_USAGE,
            Some(_) => EXIT_ERROR,
        },
        InteropError::Io { source, .. } => io_code(source),
        InteropError::Checkpoint(c) => checkpoint_code(c),
        InteropError::Load(l) => return load_code(l),
        InteropError::Model(m) => return model_code(m),
        InteropError::Moe(m) => return moe_code(m),
        InteropError::Data(d) => data_code(d),
        _ => EXIT_ERROR,
    })
}

fn model_code(m: &ModelError) -> Option<u8> {
    match m {
        ModelError::Config { .. } | ModelError::Input { .. } | ModelError::TooLarge(_) => {
            Some(EXIT_USAGE)
        }
        ModelError::Moe(e) => moe_code(e),
        _ => None,
    }
}

fn moe_code(m: &MoeError) -> Option<u8> {
    match m {
        MoeError::Config { .. } | MoeError::Input { .. } => Some(EXIT_USAGE),
        _ => None,
    }
}

fn train_code(t: &TrainError) -> Option<u8> {
    match t {
        TrainError::Config { .. } => Some(EXIT_USAGE),
        TrainError::OptimizerState { .. } => Some(EXIT_ERROR),
        _ => None,
    }
}
