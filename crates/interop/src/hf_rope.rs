//! RoPE keys of `config.json` ↔ [`LmConfig`]'s `rope_theta` and `rope_scaling`, for every
//! family: the Hub layout (top-level `rope_theta`, `rope_scaling`) and transformers 5's
//! `rope_parameters` are read; the Hub layout is written.
//!
//! [`LmConfig`]: switchyard_models::LmConfig

use serde_json::{json, Value};
use switchyard_models::{RopeScaling, YarnScaling};

use crate::error::{InteropError, Result};
use crate::family::HfFamily;
use crate::hf_config::{Raw, DEFAULT_ROPE_THETA};

/// `rope_parameters.rope_theta` (transformers 5) or `rope_theta` (Hub), and the RoPE scaling
/// of `rope_scaling` (Hub) or `rope_parameters` (transformers 5): `default`, `linear` and
/// `yarn` are implemented, other types are refused. Defaults as transformers':
/// `original_max_position_embeddings` from the top level, else the scaling's, else
/// `max_position_embeddings`; `beta_fast` / `beta_slow` 32 / 1 when missing or 0.
pub(crate) fn rope(c: &Raw<'_>, family: &dyn HfFamily) -> Result<(f64, Option<RopeScaling>)> {
    let params = c.get("rope_parameters").and_then(Value::as_object);
    let theta = match params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
    {
        Some(t) => t,
        None => c.f64_or("rope_theta", DEFAULT_ROPE_THETA)?,
    };
    let (key, scaling) = match c.get("rope_scaling").and_then(Value::as_object) {
        Some(s) => ("rope_scaling", s),
        None => match params {
            Some(p) => ("rope_parameters", p),
            None => return Ok((theta, None)),
        },
    };
    // errors name the key inside the scaling object: `rope_scaling.factor`
    let s = Raw {
        v: scaling,
        path: c.path,
    };
    let within = |e: InteropError| match e {
        InteropError::Config {
            path,
            key: k,
            reason,
        } => InteropError::Config {
            path,
            key: format!("{key}.{k}"),
            reason,
        },
        other => other,
    };
    let kind = match s.get("rope_type") {
        Some(_) => s.str_or("rope_type", "default"),
        None => s.str_or("type", "default"),
    }
    .map_err(within)?;
    let factor = || {
        s.opt_f64("factor")?
            .ok_or_else(|| s.err("factor", "required for RoPE scaling but missing"))
    };
    let scaling = match kind {
        "default" => None,
        "linear" => {
            // transformers' DeepSeek (the MLA families) would put m(factor, mscale_all_dim)²
            // on the softmax scale under any scaling type; Switchyard only does so for YaRN
            if family.features().mla
                && s.opt_f64("mscale_all_dim")
                    .map_err(within)?
                    .is_some_and(|m| m != 0.0)
            {
                return Err(InteropError::Unsupported {
                    arch: family.model_type().to_string(),
                    what: "linear RoPE scaling with `mscale_all_dim`".into(),
                    hint: Some("mscale_all_dim is implemented with yarn scaling only".into()),
                });
            }
            Some(RopeScaling::Linear {
                factor: factor().map_err(within)?,
            })
        }
        "yarn" => {
            let original = match c.opt_usize("original_max_position_embeddings")? {
                Some(n) => n,
                None => match s
                    .opt_usize("original_max_position_embeddings")
                    .map_err(within)?
                {
                    Some(n) => n,
                    None => c.usize_or("max_position_embeddings", 4096)?,
                },
            };
            let nonzero_or = |k: &str, d: f64| -> Result<f64> {
                Ok(s.opt_f64(k)?.filter(|&v| v != 0.0).unwrap_or(d))
            };
            let y = (|| {
                Ok::<_, InteropError>(YarnScaling {
                    factor: factor()?,
                    original_max_seq_len: original,
                    beta_fast: nonzero_or("beta_fast", 32.0)?,
                    beta_slow: nonzero_or("beta_slow", 1.0)?,
                    mscale: s.opt_f64("mscale")?,
                    mscale_all_dim: s.opt_f64("mscale_all_dim")?,
                    attention_factor: s.opt_f64("attention_factor")?,
                    truncate: s.bool_or("truncate", true)?,
                })
            })()
            .map_err(within)?;
            Some(RopeScaling::Yarn(y))
        }
        other => {
            return Err(InteropError::Unsupported {
                arch: family.model_type().to_string(),
                what: format!("RoPE scaling `{other}`"),
                hint: Some(
                    "linear and yarn RoPE scaling are implemented \
                     (dynamic, longrope, llama3 and others are not)"
                        .into(),
                ),
            })
        }
    };
    if let Some(sc) = &scaling {
        sc.validate().map_err(|e| {
            // name the HF key (`original_max_seq_len` is `original_max_position_embeddings`)
            let (field, reason) = match e {
                switchyard_models::ModelError::Config { field, reason } => (field, reason),
                other => (String::new(), other.to_string()),
            };
            let hf = match field.strip_prefix("rope_scaling.") {
                Some("original_max_seq_len") => ".original_max_position_embeddings",
                Some(_) => &field["rope_scaling".len()..],
                None => "",
            };
            InteropError::Config {
                path: c.path.into(),
                key: format!("{key}{hf}"),
                reason,
            }
        })?;
    }
    Ok((theta, scaling))
}

/// The Hub-layout `rope_scaling` of `s` (`null` when unscaled); [`rope`] reads it back.
pub(crate) fn rope_scaling_json(s: Option<&RopeScaling>) -> Value {
    match s {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => {
            json!({"type": "linear", "rope_type": "linear", "factor": factor})
        }
        Some(RopeScaling::Yarn(y)) => {
            let mut o = json!({
                "type": "yarn",
                "rope_type": "yarn",
                "factor": y.factor,
                "original_max_position_embeddings": y.original_max_seq_len,
                "beta_fast": y.beta_fast,
                "beta_slow": y.beta_slow,
            });
            let m = o.as_object_mut().expect("object");
            for (k, v) in [
                ("mscale", y.mscale),
                ("mscale_all_dim", y.mscale_all_dim),
                ("attention_factor", y.attention_factor),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            if !y.truncate {
                m.insert("truncate".into(), json!(false));
            }
            o
        }
    }
}
