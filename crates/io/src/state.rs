//! `state.json`: the non-tensor training state and the checksums of the other files.
//!
//! On disk the file is `{"crc32": "<8 hex>", "state": <body>}` where the CRC-32 covers the
//! body's exact bytes, so a flipped digit in a data cursor is caught like one in a tensor.
//! The body is pretty-printed JSON, readable with `jq .state`.

use std::collections::BTreeMap;
use std::path::Path;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::fsio::{crc32_hex, FileDigest};
use crate::CheckpointError;

/// `state.json`'s `format` field.
pub const FORMAT_NAME: &str = "switchyard-checkpoint";
/// Bumped on any incompatible change to the checkpoint layout.
pub const FORMAT_VERSION: u32 = 1;

const HEADER: &[u8] = b"{\"crc32\": \"";
const BETWEEN: &[u8] = b"\", \"state\": ";
const FOOTER: &[u8] = b"}\n";
const CRC_HEX_LEN: usize = 8;

/// Training state that is not a tensor. Everything here round-trips exactly.
///
/// `L` is the trainer's learning-rate schedule (`switchyard_train::LrSchedule`, whose alias
/// `switchyard_train::TrainState` fixes it); readers that do not resume training, such as
/// the model loader, keep it as raw JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState<L = serde_json::Value> {
    /// Named random streams (`"dropout"`, `"router_noise"`, ...).
    pub rngs: BTreeMap<String, RngState>,
    /// Where the data iterator stands, in the data crate's own serialised form
    /// (e.g. `switchyard_data::Cursor`).
    pub data_cursor: serde_json::Value,
    /// The schedule the run was started with, to detect a changed schedule on resume.
    pub lr_schedule: Option<L>,
    /// Non-gradient router buffers (e.g. aux-loss-free selection biases), by name. Must be
    /// finite (JSON has no NaN); f32 values round-trip bitwise.
    pub buffers: BTreeMap<String, Vec<f32>>,
    /// Anything else the caller wants back on resume.
    pub user: serde_json::Value,
}

impl<L> Default for TrainState<L> {
    fn default() -> Self {
        Self {
            rngs: BTreeMap::new(),
            data_cursor: serde_json::Value::Null,
            lr_schedule: None,
            buffers: BTreeMap::new(),
            user: serde_json::Value::Null,
        }
    }
}

/// A ChaCha8 stream's exact position: key, stream id and word position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key as 64 lower-case hex digits.
    pub seed: String,
    pub stream: u64,
    /// Position in 32-bit words; a decimal string because it is a `u128`.
    pub word_pos: String,
}

impl RngState {
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        let seed = rng.get_seed().iter().map(|b| format!("{b:02x}")).collect();
        Self {
            seed,
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// A generator that continues exactly where the captured one stood.
    pub fn to_rng(&self) -> Result<ChaCha8Rng, String> {
        use rand::SeedableRng;
        let hex = self.seed.as_bytes();
        if hex.len() != 64 {
            return Err(format!("seed has {} hex digits, expected 64", hex.len()));
        }
        let mut seed = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| "seed is not hex".to_string())?;
            seed[i] = u8::from_str_radix(s, 16)
                .map_err(|_| format!("seed digit pair {s:?} is not hex"))?;
        }
        let word_pos: u128 = self
            .word_pos
            .parse()
            .map_err(|_| format!("word_pos {:?} is not a decimal integer", self.word_pos))?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(word_pos);
        Ok(rng)
    }
}

/// The body of `state.json`.
#[derive(Serialize, Deserialize)]
struct StateBody<L> {
    format: String,
    version: u32,
    step: u64,
    /// Size and CRC-32 of every other file of the checkpoint.
    checksums: BTreeMap<String, FileDigest>,
    #[serde(flatten)]
    state: TrainState<L>,
}

/// What `state.json` holds, decoded and checked.
pub struct DecodedState<L> {
    pub step: u64,
    pub checksums: BTreeMap<String, FileDigest>,
    pub state: TrainState<L>,
}

pub fn encode<L: Serialize + Clone>(
    step: u64,
    checksums: BTreeMap<String, FileDigest>,
    state: &TrainState<L>,
) -> Result<Vec<u8>, CheckpointError> {
    for (name, values) in &state.buffers {
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(CheckpointError::Invalid(format!(
                "buffer `{name}`[{i}] is {}; JSON cannot hold it, and a non-finite router buffer \
                 means training has diverged",
                values[i]
            )));
        }
    }
    let body = StateBody {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        step,
        checksums,
        state: state.clone(),
    };
    let body = serde_json::to_vec_pretty(&body)
        .map_err(|e| CheckpointError::Invalid(format!("state cannot be serialised: {e}")))?;
    Ok(frame(&body))
}

/// Frames a `state.json` body (the JSON object) with its CRC-32, as [`encode`] writes it and
/// [`decode`] expects it. Tests and the fuzz targets build files with hand-made bodies this way.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let crc = crc32_hex(body);
    [HEADER, crc.as_bytes(), BETWEEN, body, FOOTER].concat()
}

pub fn decode<L: serde::de::DeserializeOwned>(
    path: &Path,
    data: &[u8],
) -> Result<DecodedState<L>, CheckpointError> {
    let fmt = |reason: String| CheckpointError::format(path, reason);
    let min_len = HEADER.len() + CRC_HEX_LEN + BETWEEN.len() + FOOTER.len();
    let framed = data.len() >= min_len
        && data.starts_with(HEADER)
        && data[HEADER.len() + CRC_HEX_LEN..].starts_with(BETWEEN)
        && data.ends_with(FOOTER);
    if !framed {
        return Err(CheckpointError::Corrupt {
            path: path.into(),
            reason: format!(
                "not a complete Switchyard state file ({} bytes; expected `{{\"crc32\": ..., \"state\": ...}}`)",
                data.len()
            ),
        });
    }
    let recorded =
        String::from_utf8_lossy(&data[HEADER.len()..HEADER.len() + CRC_HEX_LEN]).into_owned();
    let body = &data[HEADER.len() + CRC_HEX_LEN + BETWEEN.len()..data.len() - FOOTER.len()];
    let actual = crc32_hex(body);
    if actual != recorded {
        let reason = format!(
            "CRC-32 of the state is {actual}, {recorded} recorded (changed on disk, or edited by hand)"
        );
        return Err(CheckpointError::Corrupt {
            path: path.into(),
            reason,
        });
    }
    let body: StateBody<L> =
        serde_json::from_slice(body).map_err(|e| fmt(format!("invalid state: {e}")))?;
    if body.format != FORMAT_NAME {
        return Err(fmt(format!(
            "format is {:?}, expected {FORMAT_NAME:?}",
            body.format
        )));
    }
    if body.version != FORMAT_VERSION {
        return Err(fmt(format!(
            "checkpoint format version {} is not supported (this build reads version {FORMAT_VERSION}); \
             use the Switchyard version that wrote it",
            body.version
        )));
    }
    for (name, rng) in &body.state.rngs {
        rng.to_rng()
            .map_err(|e| fmt(format!("RNG state `{name}`: {e}")))?;
    }
    Ok(DecodedState {
        step: body.step,
        checksums: body.checksums,
        state: body.state,
    })
}
