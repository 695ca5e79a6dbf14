//! Reading a [`TrainConfig`] from TOML, with `key.path=value` overrides applied to the TOML
//! tree before it is deserialised, so every key can be set from the command line.
//!
//! Steps: parse the text → expand shorthands → deserialise (type errors name the full dotted
//! key) → reject keys the config does not have (by serialising the result back and comparing
//! trees; with a "did you mean"); then, if there are overrides, apply them to the whole
//! config's tree (defaults included) and deserialise and check again → `validate()`.
//!
//! Shorthands, for the keys people edit most:
//! - `model.ffn.sparse.d_model` may be left out; it is taken from `model.d_model`;
//! - `model.ffn.sparse.experts` (and `shared_experts`) may be a table
//!   `{ count = 8, kind = "swiglu", hidden = 64 }` instead of an array of 8 equal experts.

use std::path::Path;

use switchyard_core::MoeConfig;
use switchyard_models::memory::MAX_EXPERTS;
use toml::{Table, Value};

use super::config::TrainConfig;
use super::error::ConfigError;
use super::fault;

/// The table fault injection had in the run config before it became a test hook
/// ([`fault`]).
const REMOVED_FAULT_KEY: &str = "fault";
/// Key of the expert-count shorthand.
const COUNT_KEY: &str = "count";
/// Where the (internally tagged) FFN enum sits: serde buffers such enums, so errors inside
/// them carry no deeper path; [`moe_error`] finds it.
const SPARSE_KEY: &str = "model.ffn.sparse";
/// Inherits `model.d_model` unless given.
const SPARSE_D_MODEL: &[&str] = &["model", "ffn", "sparse", "d_model"];

/// Deserialises `model.ffn.sparse` as an [`MoeConfig`] on its own, for an error whose key
/// reaches inside it (up to the next tagged enum, e.g. `model.ffn.sparse.router`).
fn moe_error(input: &Value) -> Option<ConfigError> {
    let mut sparse = input
        .get("model")?
        .get("ffn")?
        .get("sparse")?
        .as_table()?
        .clone();
    if sparse.remove("type")?.as_str()? != "moe" {
        return None;
    }
    let err = serde_path_to_error::deserialize::<_, MoeConfig>(Value::Table(sparse)).err()?;
    Some(ConfigError::BadValue {
        key: format!("{SPARSE_KEY}.{}", err.path()),
        message: value_message(err.into_inner()),
    })
}

/// toml's message without its own trailing "in `key`" line (the error names the key).
fn value_message(e: toml::de::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("in `") && !l.trim().is_empty())
        .collect();
    lines.join("; ")
}

/// A model config as a TOML tree (for `init.from`'s model).
fn model_value(model: &switchyard_models::LmConfig) -> Result<Value, ConfigError> {
    Value::try_from(model).map_err(|e| ConfigError::BadValue {
        key: "model".into(),
        message: format!("the init checkpoint's model cannot be represented as TOML: {e}"),
    })
}

/// The config as a TOML tree, every key present.
fn to_table(cfg: &TrainConfig) -> Result<Table, ConfigError> {
    match Value::try_from(cfg) {
        Ok(Value::Table(t)) => Ok(t),
        Ok(_) => unreachable!("a struct serialises to a table"),
        Err(e) => Err(ConfigError::BadValue {
            key: "(config)".into(),
            message: format!("cannot be represented as TOML: {e}"),
        }),
    }
}

fn lookup<'a>(table: &'a Table, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(*p)?.as_table()?;
    }
    t.get(*last)
}

fn remove(table: &mut Table, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for p in parents {
        match t.get_mut(*p).and_then(Value::as_table_mut) {
            Some(next) => t = next,
            None => return,
        }
    }
    t.remove(*last);
}

impl TrainConfig {
    /// Parses `text`, applies `overrides` (`key.path=value`, in order), validates.
    /// `origin` names the file in syntax errors.
    ///
    /// With `init.from` set, the text has no `[model]` section and the checkpoint's model is
    /// used (overrides still apply to it), and an unset `data.tokenizer` becomes the
    /// checkpoint's `tokenizer.json` when it carries one; this reads the checkpoint's
    /// `config.json` (not its weights).
    pub fn from_toml_str(
        text: &str,
        origin: Option<&Path>,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let file: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: origin.map(Path::to_path_buf),
                message: e.to_string().trim_end().to_string(),
            })?;
        let mut cfg = Self::resolve(file.clone(), overrides)?;
        if let Some(from) = cfg.init.from.clone() {
            let model_given = file.contains_key("model");
            if !model_given {
                let init = super::restore::init_source(&from)?;
                let mut with_model = file;
                with_model.insert("model".into(), model_value(&init.model)?);
                cfg = Self::resolve(with_model, overrides)?;
                if cfg.data.tokenizer.is_none() {
                    cfg.data.tokenizer = init.tokenizer;
                }
            } else if cfg.data.tokenizer.is_none() {
                // e.g. a resumed run's own config.json: the weights come from the run, and an
                // init checkpoint that is gone by now does not matter
                if let Ok(init) = super::restore::init_source(&from) {
                    cfg.data.tokenizer = init.tokenizer;
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The file's tree with `overrides` applied, deserialised; no `validate()`.
    fn resolve(file: Table, overrides: &[String]) -> Result<Self, ConfigError> {
        let sparse_d_model_given = lookup(&file, SPARSE_D_MODEL).is_some();
        let mut cfg = Self::from_table(file)?;
        if !overrides.is_empty() {
            // Overrides edit the whole config (defaults included), so any single key can be
            // changed, e.g. `model.ffn.sparse.router.k` without restating the router.
            let mut full = to_table(&cfg)?;
            if !sparse_d_model_given {
                remove(&mut full, SPARSE_D_MODEL); // keep following model.d_model
            }
            for assignment in overrides {
                apply_override(&mut full, assignment)?;
                // so that later overrides can index the experts a shorthand made
                expand_expert_counts(&mut full)?;
            }
            cfg = Self::from_table(full)?;
        }
        Ok(cfg)
    }

    /// [`TrainConfig::from_toml_str`] of a file's contents.
    pub fn from_toml_file(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, Some(path), overrides)
    }

    /// The defaults with `overrides` applied.
    pub fn from_overrides(overrides: &[String]) -> Result<Self, ConfigError> {
        Self::from_toml_str("", None, overrides)
    }

    /// Deserialises a tree (shorthands expanded) and rejects unknown keys; no `validate()`.
    fn from_table(mut table: Table) -> Result<Self, ConfigError> {
        expand_shorthands(&mut table)?;
        let input = Value::Table(table);
        let cfg: TrainConfig = serde_path_to_error::deserialize(input.clone()).map_err(|e| {
            let key = e.path().to_string();
            if key == SPARSE_KEY {
                if let Some(inner) = moe_error(&input) {
                    return inner;
                }
            }
            let key = if key == "." {
                "(top level)".to_string()
            } else {
                key
            };
            ConfigError::BadValue {
                key,
                message: value_message(e.into_inner()),
            }
        })?;
        if input.get(REMOVED_FAULT_KEY).is_some() {
            return Err(ConfigError::BadValue {
                key: REMOVED_FAULT_KEY.into(),
                message: format!(
                    "fault injection is no longer part of the run config (it was saved in \
                     checkpoints and fired again on --resume); tests set {} or {} instead",
                    fault::NAN_LOSS_ENV,
                    fault::SPIKE_LOSS_ENV
                ),
            });
        }
        check_known_keys(&input, &Value::Table(to_table(&cfg)?), "")?;
        Ok(cfg)
    }

    /// The whole config as TOML text (every key, defaults included).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Most dotted segments in a `--set` key; the deepest real key has five
/// (`model.ffn.sparse.router.k`), and the table walk recurses once per segment.
const MAX_KEY_SEGMENTS: usize = 32;

/// Applies one `key.path=value` to the tree. The value is read as a TOML value (`3`, `1e-3`,
/// `true`, `"text"`, `[1, 2]`, `{ type = "top_k", k = 2 }`); anything that does not parse as
/// one is taken as a bare string, so `run_dir=runs/x` needs no quotes. Missing tables on the
/// path are created; a numeric segment indexes an array (`experts.0.hidden=32`).
pub fn apply_override(table: &mut Table, assignment: &str) -> Result<(), ConfigError> {
    let fail = |reason: String| ConfigError::Override {
        assignment: assignment.to_string(),
        reason,
    };
    let Some((key, raw)) = assignment.split_once('=') else {
        return Err(fail("expected KEY=VALUE, e.g. optim.lr=1e-3".into()));
    };
    let key = key.trim();
    let path: Vec<&str> = key.split('.').collect();
    if path.len() > MAX_KEY_SEGMENTS {
        return Err(fail(format!(
            "the key has {} dotted segments; config keys are at most {MAX_KEY_SEGMENTS} deep",
            path.len()
        )));
    }
    if key.is_empty() || path.iter().any(|s| s.is_empty()) {
        return Err(fail(format!(
            "`{key}` is not a dotted key path like train.steps"
        )));
    }
    let (last, parents) = path
        .split_last()
        .expect("split yields at least one segment");
    let (first, rest) = parents
        .split_first()
        .map_or((*last, &[][..]), |(f, r)| (*f, r));
    let value = parse_value(raw.trim());
    if parents.is_empty() {
        table.insert(last.to_string(), value);
        return Ok(());
    }
    let mut node = table
        .entry(first.to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    for (i, seg) in rest.iter().enumerate() {
        let at = path[..=i + 1].join(".");
        node = child_mut(node, seg).map_err(|r| fail(format!("at `{at}`: {r}")))?;
    }
    match node {
        Value::Table(t) => {
            t.insert(last.to_string(), value);
            Ok(())
        }
        Value::Array(a) => {
            let len = a.len();
            let slot = last.parse::<usize>().ok().and_then(|i| a.get_mut(i));
            *slot.ok_or_else(|| {
                fail(format!(
                    "`{last}` is not an index of the array's {len} entries"
                ))
            })? = value;
            Ok(())
        }
        _ => Err(fail(format!(
            "`{}` holds a value, not a table",
            parents.join(".")
        ))),
    }
}

/// The child `seg` of a table (created as an empty table if missing) or array (by index).
fn child_mut<'a>(node: &'a mut Value, seg: &str) -> Result<&'a mut Value, String> {
    match node {
        Value::Table(t) => Ok(t
            .entry(seg.to_string())
            .or_insert_with(|| Value::Table(Table::new()))),
        Value::Array(a) => {
            let len = a.len();
            seg.parse::<usize>()
                .ok()
                .and_then(move |i| a.get_mut(i))
                .ok_or_else(|| format!("`{seg}` is not an index of the array's {len} entries"))
        }
        other => Err(format!(
            "holds the {} {other}, not a table",
            other.type_str()
        )),
    }
}

/// A TOML value, or the text itself as a string when it is not one.
fn parse_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// See the module docs.
fn expand_shorthands(table: &mut Table) -> Result<(), ConfigError> {
    expand_expert_counts(table)?;
    let d_model = lookup(table, &["model", "d_model"]).cloned();
    if let (Some(sparse), Some(d)) = (moe_table(table), d_model) {
        sparse.entry("d_model").or_insert(d);
    }
    Ok(())
}

/// `model.ffn.sparse` when it is an MoE layer; a missing `type` is taken to be `"moe"`.
fn moe_table(table: &mut Table) -> Option<&mut Table> {
    let sparse = table
        .get_mut("model")?
        .as_table_mut()?
        .get_mut("ffn")?
        .as_table_mut()?
        .get_mut("sparse")?
        .as_table_mut()?;
    let ty = sparse
        .entry("type")
        .or_insert_with(|| Value::String("moe".into()));
    let is_moe = ty.as_str() == Some("moe");
    is_moe.then_some(sparse)
}

/// `experts = { count = N, ... }` → an array of N equal experts (also `shared_experts`).
fn expand_expert_counts(table: &mut Table) -> Result<(), ConfigError> {
    let Some(sparse) = moe_table(table) else {
        return Ok(());
    };
    for list in ["experts", "shared_experts"] {
        let Some(Value::Table(spec)) = sparse.get(list) else {
            continue;
        };
        let key = format!("model.ffn.sparse.{list}");
        let mut spec = spec.clone();
        let count = match spec.remove(COUNT_KEY) {
            Some(Value::Integer(n)) if (0..=MAX_EXPERTS as i64).contains(&n) => n as usize,
            // refused before an array of that many experts is built
            Some(Value::Integer(n)) if n > 0 => {
                return Err(ConfigError::BadValue {
                    key: format!("{key}.{COUNT_KEY}"),
                    message: format!(
                        "{n} experts is beyond what any model here can hold (at most {MAX_EXPERTS})"
                    ),
                })
            }
            Some(other) => {
                return Err(ConfigError::BadValue {
                    key: format!("{key}.{COUNT_KEY}"),
                    message: format!("expected a number of experts, got {other}"),
                })
            }
            None => {
                return Err(ConfigError::BadValue {
                    key,
                    message: format!(
                        "a table here needs `{COUNT_KEY}` (e.g. {{ {COUNT_KEY} = 8, kind = \"swiglu\", hidden = 64 }}), \
                         or give an array of experts"
                    ),
                })
            }
        };
        sparse.insert(list.into(), Value::Array(vec![Value::Table(spec); count]));
    }
    Ok(())
}

/// Every key of `input` must exist in `known` (the config serialised back); arrays are
/// compared entry by entry.
fn check_known_keys(input: &Value, known: &Value, prefix: &str) -> Result<(), ConfigError> {
    match (input, known) {
        (Value::Table(a), Value::Table(b)) => {
            for (k, v) in a {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match b.get(k) {
                    Some(kv) => check_known_keys(v, kv, &key)?,
                    None => {
                        let suggestion = closest(k, b.keys()).map(|s| {
                            if prefix.is_empty() {
                                s.to_string()
                            } else {
                                format!("{prefix}.{s}")
                            }
                        });
                        return Err(ConfigError::UnknownKey { key, suggestion });
                    }
                }
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                check_known_keys(x, y, &format!("{prefix}.{i}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The candidate nearest to `key` by edit distance, if it is close enough to be a typo.
fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let max_distance = (key.len() / 3).max(2);
    candidates
        .map(|c| (edit_distance(key, c), c))
        .filter(|(d, _)| *d <= max_distance)
        .min()
        .map(|(_, c)| c.as_str())
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
