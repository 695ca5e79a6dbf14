//! Configuration of the decoder-only LM. Defaults live here, in one place; `validate()` runs
//! once at the boundary (`MoeLm::new` calls it) and names the offending field.

use serde::{Deserialize, Serialize};
use switchyard_core::{ExpertSpec, GateConfig, MoeConfig};

use crate::{ModelError, Result};

/// Vocabulary of the byte tokenizer in `switchyard-data` (256 bytes + BOS/EOS/PAD).
pub const DEFAULT_VOCAB_SIZE: usize = 259;

/// The FFN of one layer: a dense SwiGLU or a routed MoE layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerFfn {
    /// `down(silu(gate(x)) ⊙ up(x))` with hidden width `hidden`, as in Llama.
    Dense {
        hidden: usize,
    },
    Moe(MoeConfig),
}

/// Which FFN each layer gets.
///
/// Layers `0..first_dense` are dense (DeepSeek's `first_k_dense_replace`). Counting from
/// layer `first_dense`, every `moe_every`-th layer is a *sparse slot* and gets `sparse`;
/// the others are dense SwiGLUs of width `dense_hidden`. With `first_dense = 0`:
/// `moe_every = 1` puts `sparse` in every layer, `moe_every = 2` in layers 1, 3, 5, …
/// (Qwen2-MoE's `(layer_idx + 1) % decoder_sparse_step == 0`). [`LmConfig::dense_layers`]
/// can force further layers dense; [`LmConfig::layer_ffn`] applies both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FfnConfig {
    /// Hidden width of the dense layers outside the sparse slots.
    pub dense_hidden: usize,
    /// What the sparse slots hold: normally `Moe`; `Dense` gives a same-layout dense model
    /// (see [`LmConfig::dense_equivalent`]).
    pub sparse: LayerFfn,
    pub moe_every: usize,
    pub first_dense: usize,
}

impl Default for FfnConfig {
    fn default() -> Self {
        Self {
            dense_hidden: 128,
            sparse: LayerFfn::Moe(MoeConfig::default()),
            moe_every: 1,
            first_dense: 0,
        }
    }
}

impl FfnConfig {
    /// Whether layer `i` is a sparse slot (holds `sparse`).
    pub fn is_sparse_slot(&self, i: usize) -> bool {
        i >= self.first_dense
            && self.moe_every > 0
            && (i - self.first_dense + 1).is_multiple_of(self.moe_every)
    }

    /// The FFN of layer `i`.
    pub fn layer(&self, i: usize) -> LayerFfn {
        if self.is_sparse_slot(i) {
            self.sparse.clone()
        } else {
            LayerFfn::Dense {
                hidden: self.dense_hidden,
            }
        }
    }
}

/// One MoE layer whose config differs from `ffn.sparse`: what expert surgery on some layers
/// only (`switchyard experts split|merge|prune --layer …`) leaves behind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerMoe {
    /// The layer; it must hold `ffn.sparse`'s MoE (a sparse slot not in `dense_layers`).
    pub layer: usize,
    pub moe: MoeConfig,
}

/// A decoder-only transformer LM (Llama/Mixtral layout: pre-norm RMSNorm, RoPE, SwiGLU or MoE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LmConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads for grouped-query attention (Mixtral: 8 for 32 query heads);
    /// `None` means `n_heads` (plain multi-head attention).
    pub n_kv_heads: Option<usize>,
    pub max_seq_len: usize,
    pub rope_theta: f64,
    /// RoPE context extension (HF `rope_scaling`); `None` is plain RoPE. Configs written
    /// before this field existed read as `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    pub norm_eps: f64,
    /// Width of one attention head; `None` means `d_model / n_heads`. Qwen3-MoE sets it
    /// independently (q_proj then maps `d_model → n_heads · head_dim`).
    pub head_dim: Option<usize>,
    /// RMSNorm on the full q and k projections before the head split and RoPE (OLMoE).
    pub qk_norm: bool,
    /// RMSNorm on each head's q and k (over `head_dim`, weights shared by all heads) after
    /// the head split, before RoPE (Qwen3-MoE). Excludes `qk_norm`.
    pub qk_norm_per_head: bool,
    /// Biases on the q, k and v projections (Qwen2-MoE).
    pub qkv_bias: bool,
    /// Clamp q, k and v to `[-c, c]` after the projections (and q/k norm), as OLMoE's
    /// `clip_qkv`.
    pub clip_qkv: Option<f64>,
    /// Multi-head latent attention (DeepSeek-V2/V3) instead of (grouped-query) multi-head
    /// attention; the fields above about q/k/v projections then do not apply.
    pub mla: Option<MlaConfig>,
    /// `lm_head` shares the embedding matrix.
    pub tie_embeddings: bool,
    pub ffn: FfnConfig,
    /// Layers whose FFN is dense (`ffn.dense_hidden`) whatever `ffn`'s rule says (Qwen2/3-MoE
    /// `mlp_only_layers`). Lives here rather than in [`FfnConfig`] so that existing
    /// `FfnConfig { .. }` literals stay valid.
    pub dense_layers: Vec<usize>,
    /// MoE layers whose config replaces `ffn.sparse`'s (expert counts that differ by layer
    /// after surgery); empty for a uniform model. Each layer at most once.
    pub layer_moe: Vec<LayerMoe>,
}

impl Default for LmConfig {
    fn default() -> Self {
        Self {
            vocab_size: DEFAULT_VOCAB_SIZE,
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: None,
            max_seq_len: 256,
            rope_theta: 10_000.0,
            rope_scaling: None,
            norm_eps: 1e-5,
            head_dim: None,
            qk_norm: false,
            qk_norm_per_head: false,
            qkv_bias: false,
            clip_qkv: None,
            mla: None,
            tie_embeddings: true,
            ffn: FfnConfig::default(),
            dense_layers: Vec::new(),
            layer_moe: Vec::new(),
        }
    }
}

/// RoPE scaling for contexts longer than the model was pretrained on, as transformers'
/// `rope_type`s of the same names (`modeling_rope_utils.py`); the frequencies are computed
/// by [`crate::rope::rope_frequencies`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Position interpolation (Chen et al. 2023): every frequency divided by `factor`.
    Linear { factor: f64 },
    /// YaRN (Peng et al. 2023), as DeepSeek-V2/V3 use it.
    Yarn(YarnScaling),
}

/// YaRN: frequencies that turn fewer than `beta_slow` times over the pretraining context are
/// interpolated (divided by `factor`), those that turn more than `beta_fast` times are kept,
/// with a linear ramp between; cos/sin are multiplied by an attention factor; and DeepSeek's
/// attention (MLA) additionally multiplies its softmax scale by
/// `(0.1 · mscale_all_dim · ln factor + 1)²`. Field names follow HF's `rope_scaling` keys,
/// except `original_max_seq_len` (`original_max_position_embeddings`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct YarnScaling {
    /// Context extension ratio (DeepSeek-V3: 40).
    pub factor: f64,
    /// Context length of pretraining (DeepSeek-V3: 4096).
    pub original_max_seq_len: usize,
    /// Rotations over `original_max_seq_len` above which a frequency is kept (HF default 32).
    pub beta_fast: f64,
    /// Rotations below which a frequency is fully interpolated (HF default 1).
    pub beta_slow: f64,
    /// With `mscale_all_dim` (both non-zero), the cos/sin factor is
    /// `m(factor, mscale) / m(factor, mscale_all_dim)`, `m(s, a) = 0.1 · a · ln s + 1`;
    /// otherwise it is `m(factor, 1)`.
    pub mscale: Option<f64>,
    /// See `mscale`; also sets DeepSeek's softmax factor `m(factor, mscale_all_dim)²`.
    pub mscale_all_dim: Option<f64>,
    /// The cos/sin factor itself, overriding the one `mscale` gives.
    pub attention_factor: Option<f64>,
    /// Round the ends of the ramp outwards to whole dimensions (HF `truncate`, default true).
    pub truncate: bool,
}

impl Default for YarnScaling {
    fn default() -> Self {
        Self {
            factor: 1.0,
            original_max_seq_len: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: None,
            mscale_all_dim: None,
            attention_factor: None,
            truncate: true,
        }
    }
}

impl RopeScaling {
    pub fn factor(&self) -> f64 {
        match self {
            RopeScaling::Linear { factor } => *factor,
            RopeScaling::Yarn(y) => y.factor,
        }
    }

    /// Checks the values; errors name the field under `rope_scaling`.
    pub fn validate(&self) -> Result<()> {
        let err = |field: &str, reason: String| {
            Err(ModelError::config(format!("rope_scaling.{field}"), reason))
        };
        let f = self.factor();
        if !(f.is_finite() && f >= 1.0) {
            return err(
                "factor",
                format!("must be finite and >= 1 (the context extension ratio), got {f}"),
            );
        }
        let RopeScaling::Yarn(y) = self else {
            return Ok(());
        };
        if y.original_max_seq_len == 0 {
            return err("original_max_seq_len", "must be at least 1".into());
        }
        for (field, v) in [("beta_fast", y.beta_fast), ("beta_slow", y.beta_slow)] {
            if !(v.is_finite() && v > 0.0) {
                return err(field, format!("must be finite and > 0, got {v}"));
            }
        }
        if y.beta_fast < y.beta_slow {
            return err(
                "beta_fast",
                format!(
                    "must be >= beta_slow = {}, got {} (usual: 32 and 1)",
                    y.beta_slow, y.beta_fast
                ),
            );
        }
        for (field, v) in [("mscale", y.mscale), ("mscale_all_dim", y.mscale_all_dim)] {
            if let Some(v) = v.filter(|v| !v.is_finite()) {
                return err(field, format!("must be finite, got {v}"));
            }
        }
        if let Some(a) = y.attention_factor.filter(|a| !(a.is_finite() && *a > 0.0)) {
            return err(
                "attention_factor",
                format!("must be finite and > 0, got {a}"),
            );
        }
        Ok(())
    }
}

/// Multi-head latent attention (DeepSeek-V2 §2.1): keys and values come from a low-rank
/// latent shared by all heads, plus one RoPE key shared by all heads.
///
/// Per head, q and k are `[nope (qk_nope_head_dim) | rope (qk_rope_head_dim)]` and v has
/// `v_head_dim`; only the rope part is rotated. Parameter names follow HF DeepSeek:
/// `q_proj` (or `q_a_proj`, `q_a_layernorm`, `q_b_proj` with `q_lora_rank`),
/// `kv_a_proj_with_mqa`, `kv_a_layernorm`, `kv_b_proj`, `o_proj`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MlaConfig {
    /// Rank of the query compression; `None` projects queries directly (DeepSeek-V2-Lite).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    /// Rotate interleaved pairs `(2i, 2i+1)` (DeepSeek's layout) instead of `(i, i + d/2)`.
    pub rope_interleave: bool,
    /// eps of `q_a_layernorm` and `kv_a_layernorm` (HF uses the class default 1e-6, not
    /// `rms_norm_eps`).
    pub lora_norm_eps: f64,
}

impl Default for MlaConfig {
    fn default() -> Self {
        Self {
            q_lora_rank: None,
            kv_lora_rank: 16,
            qk_nope_head_dim: 8,
            qk_rope_head_dim: 8,
            v_head_dim: 8,
            rope_interleave: true,
            lora_norm_eps: 1e-6,
        }
    }
}

impl MlaConfig {
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Parameters of one MLA block for model width `d` and `h` heads.
    pub fn params(&self, d: usize, h: usize) -> usize {
        let q = match self.q_lora_rank {
            None => d * h * self.qk_head_dim(),
            Some(r) => d * r + r + r * h * self.qk_head_dim(),
        };
        let r = self.kv_lora_rank;
        q + d * (r + self.qk_rope_head_dim)
            + r
            + r * h * (self.qk_nope_head_dim + self.v_head_dim)
            + h * self.v_head_dim * d
    }
}

/// Parameter counts of a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamCount {
    pub total: usize,
    /// Parameters one token touches: everything except the routed experts it is not sent
    /// to — `k` routed experts of the layer's mean routed-expert size, plus shared experts,
    /// gates, attention, norms and embeddings.
    pub active_per_token: usize,
}

impl LmConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.d_model / self.n_heads.max(1))
    }

    /// Dimensions RoPE rotates per head: the whole head, or MLA's rope part.
    pub fn rope_dim(&self) -> usize {
        self.mla
            .as_ref()
            .map_or(self.head_dim(), |m| m.qk_rope_head_dim)
    }

    /// Parameters of one attention block (projections, biases, q/k norms).
    pub fn attention_params(&self) -> usize {
        let (d, h) = (self.d_model, self.n_heads);
        if let Some(m) = &self.mla {
            return m.params(d, h);
        }
        let (q_dim, kv_dim) = (h * self.head_dim(), self.kv_heads() * self.head_dim());
        let mut n = 2 * d * q_dim + 2 * d * kv_dim;
        if self.qkv_bias {
            n += q_dim + 2 * kv_dim;
        }
        if self.qk_norm {
            n += q_dim + kv_dim;
        }
        if self.qk_norm_per_head {
            n += 2 * self.head_dim();
        }
        n
    }

    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    /// Whether layer `i` holds `ffn.sparse` (a sparse slot not listed in `dense_layers`).
    pub fn is_sparse_layer(&self, i: usize) -> bool {
        self.ffn.is_sparse_slot(i) && !self.dense_layers.contains(&i)
    }

    /// The FFN of layer `i`, with `dense_layers` applied.
    pub fn layer_ffn(&self, i: usize) -> LayerFfn {
        if self.dense_layers.contains(&i) {
            LayerFfn::Dense {
                hidden: self.ffn.dense_hidden,
            }
        } else {
            match self.layer_override(i) {
                Some(m) if self.ffn.is_sparse_slot(i) => LayerFfn::Moe(m.clone()),
                _ => self.ffn.layer(i),
            }
        }
    }

    /// The MoE config of layer `i` from `layer_moe`, if one is listed.
    pub fn layer_override(&self, i: usize) -> Option<&MoeConfig> {
        self.layer_moe.iter().find(|o| o.layer == i).map(|o| &o.moe)
    }

    /// The MoE config of layer `i`, `None` when its FFN is dense.
    pub fn layer_moe_config(&self, i: usize) -> Option<MoeConfig> {
        match self.layer_ffn(i) {
            LayerFfn::Moe(m) => Some(m),
            LayerFfn::Dense { .. } => None,
        }
    }

    /// Whether every MoE layer has `ffn.sparse`'s config (no `layer_moe` entry differs).
    pub fn is_uniform(&self) -> bool {
        self.layer_moe
            .iter()
            .all(|o| matches!(&self.ffn.sparse, LayerFfn::Moe(m) if *m == o.moe))
    }

    /// Sets layer `i`'s MoE config: an entry of `layer_moe`, or none when it equals
    /// `ffn.sparse`'s.
    pub fn set_layer_moe(&mut self, i: usize, moe: MoeConfig) {
        self.layer_moe.retain(|o| o.layer != i);
        if !matches!(&self.ffn.sparse, LayerFfn::Moe(m) if *m == moe) {
            self.layer_moe.push(LayerMoe { layer: i, moe });
            self.layer_moe.sort_by_key(|o| o.layer);
        }
    }

    /// Indices of the layers whose FFN is an MoE layer.
    pub fn moe_layers(&self) -> Vec<usize> {
        if !matches!(self.ffn.sparse, LayerFfn::Moe(_)) {
            return Vec::new();
        }
        let forced: std::collections::BTreeSet<usize> = self.dense_layers.iter().copied().collect();
        (0..self.n_layers)
            .filter(|&i| self.ffn.is_sparse_slot(i) && !forced.contains(&i))
            .collect()
    }

    /// Checks every field once, at the boundary: first the magnitudes
    /// ([`LmConfig::check_magnitudes`]), then each value and how they fit together.
    pub fn validate(&self) -> Result<()> {
        self.check_magnitudes()?;
        let err = |field: &str, reason: String| Err(ModelError::config(field, reason));
        if self.vocab_size == 0 {
            return err("vocab_size", "must be at least 1".into());
        }
        if self.d_model == 0 {
            return err("d_model", "must be at least 1".into());
        }
        if self.n_layers == 0 {
            return err("n_layers", "a model needs at least one layer".into());
        }
        if self.n_heads == 0 {
            return err("n_heads", "must be at least 1".into());
        }
        if self.head_dim == Some(0) {
            return err(
                "head_dim",
                "must be at least 1 (or unset for d_model / n_heads)".into(),
            );
        }
        if self.head_dim.is_none()
            && self.mla.is_none()
            && !self.d_model.is_multiple_of(self.n_heads)
        {
            return err(
                "n_heads",
                format!(
                    "n_heads = {} must divide d_model = {}; pick a divisor of d_model",
                    self.n_heads, self.d_model
                ),
            );
        }
        if !self.rope_dim().is_multiple_of(2) {
            let (field, what) = match (&self.mla, self.head_dim) {
                (Some(_), _) => ("mla.qk_rope_head_dim", "qk_rope_head_dim"),
                (None, Some(_)) => ("head_dim", "head_dim"),
                (None, None) => ("n_heads", "d_model / n_heads"),
            };
            return err(
                field,
                format!(
                    "RoPE needs an even head dimension, got {what} = {}",
                    self.rope_dim()
                ),
            );
        }
        if self.qk_norm && self.qk_norm_per_head {
            return err(
                "qk_norm_per_head",
                "choose one q/k norm: full width (qk_norm) or per head".into(),
            );
        }
        if let Some(c) = self.clip_qkv {
            if !(c.is_finite() && c > 0.0) {
                return err("clip_qkv", format!("must be finite and > 0, got {c}"));
            }
        }
        if let Some(m) = &self.mla {
            let dims = [
                ("mla.kv_lora_rank", m.kv_lora_rank),
                ("mla.qk_nope_head_dim", m.qk_nope_head_dim),
                ("mla.qk_rope_head_dim", m.qk_rope_head_dim),
                ("mla.v_head_dim", m.v_head_dim),
                ("mla.q_lora_rank", m.q_lora_rank.unwrap_or(1)),
            ];
            if let Some((f, _)) = dims.iter().find(|(_, v)| *v == 0) {
                return err(f, "must be at least 1".into());
            }
            if !(m.lora_norm_eps.is_finite() && m.lora_norm_eps > 0.0) {
                return err(
                    "mla.lora_norm_eps",
                    format!("must be finite and > 0, got {}", m.lora_norm_eps),
                );
            }
            if self.qk_norm
                || self.qk_norm_per_head
                || self.qkv_bias
                || self.n_kv_heads.is_some_and(|k| k != self.n_heads)
            {
                return err(
                    "mla",
                    "multi-head latent attention has its own projections: unset qk_norm, qk_norm_per_head, qkv_bias and n_kv_heads".into(),
                );
            }
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.n_heads.is_multiple_of(kv) {
            return err(
                "n_kv_heads",
                format!(
                    "must be >= 1 and divide n_heads = {}, got {kv}",
                    self.n_heads
                ),
            );
        }
        if self.max_seq_len == 0 {
            return err("max_seq_len", "must be at least 1".into());
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return err(
                "rope_theta",
                format!(
                    "must be finite and > 0, got {}; 10000 is usual",
                    self.rope_theta
                ),
            );
        }
        if let Some(s) = &self.rope_scaling {
            s.validate()?;
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return err(
                "norm_eps",
                format!(
                    "must be finite and > 0, got {}; 1e-5 is usual",
                    self.norm_eps
                ),
            );
        }
        self.validate_ffn()
    }

    fn validate_ffn(&self) -> Result<()> {
        let f = &self.ffn;
        if f.moe_every == 0 {
            return Err(ModelError::config(
                "ffn.moe_every",
                "must be at least 1 (1 = every layer after first_dense)",
            ));
        }
        if f.first_dense > self.n_layers {
            return Err(ModelError::config(
                "ffn.first_dense",
                format!(
                    "first_dense = {} exceeds n_layers = {}",
                    f.first_dense, self.n_layers
                ),
            ));
        }
        if let Some(&bad) = self.dense_layers.iter().find(|&&i| i >= self.n_layers) {
            return Err(ModelError::config(
                "dense_layers",
                format!("layer {bad} does not exist (n_layers = {})", self.n_layers),
            ));
        }
        // dense_layers are in range (checked above), so forcing any makes a dense layer
        let any_dense =
            !self.dense_layers.is_empty() || (0..self.n_layers).any(|i| !f.is_sparse_slot(i));
        if any_dense && f.dense_hidden == 0 {
            return Err(ModelError::config(
                "ffn.dense_hidden",
                "dense layers need a hidden width of at least 1",
            ));
        }
        match &f.sparse {
            LayerFfn::Dense { hidden: 0 } => {
                return Err(ModelError::config(
                    "ffn.sparse.hidden",
                    "a dense FFN needs a hidden width of at least 1",
                ))
            }
            LayerFfn::Dense { .. } => {}
            LayerFfn::Moe(m) => self.check_moe("ffn.sparse", m)?,
        }
        let mut seen = std::collections::BTreeSet::new();
        for (j, o) in self.layer_moe.iter().enumerate() {
            let field = format!("layer_moe[{j}]");
            if !seen.insert(o.layer) {
                return Err(ModelError::config(
                    format!("{field}.layer"),
                    format!("layer {} is listed twice", o.layer),
                ));
            }
            if !matches!(f.sparse, LayerFfn::Moe(_)) || !self.is_sparse_layer(o.layer) {
                return Err(ModelError::config(
                    format!("{field}.layer"),
                    format!(
                        "layer {} does not hold an MoE layer (n_layers = {}, MoE layers: {:?})",
                        o.layer,
                        self.n_layers,
                        self.moe_layers()
                    ),
                ));
            }
            self.check_moe(&format!("{field}.moe"), &o.moe)?;
        }
        Ok(())
    }

    /// Checks one MoE layer's config against the model; `field` prefixes the error's key.
    fn check_moe(&self, field: &str, m: &MoeConfig) -> Result<()> {
        if m.d_model != self.d_model {
            return Err(ModelError::config(
                format!("{field}.d_model"),
                format!(
                    "the MoE layer's d_model = {} must equal the model's d_model = {}",
                    m.d_model, self.d_model
                ),
            ));
        }
        m.validate()
            .map_err(|e| ModelError::from_moe_config(field, e))?;
        if m.gate.uses_context() {
            // the context vector is the mean over the whole sequence: future tokens
            // would leak into the routing of past ones
            return Err(ModelError::config(
                format!("{field}.gate.context"),
                "a context gate sees future tokens, which breaks the causal LM; set context = false",
            ));
        }
        Ok(())
    }

    /// The dense baseline with equal active parameters per token: every MoE FFN becomes a
    /// dense SwiGLU of width
    ///
    /// `h_dense = round((k · mean_routed_params + Σ shared_params + gate_params) / (3 · d_model))`,
    ///
    /// which for SwiGLU experts and a linear gate is `k · mean(h_expert) + Σ h_shared + E / 3`.
    /// The gate is counted because a token pays for it too (`d · E` multiply-adds); at
    /// realistic widths it changes `h_dense` by well under 1%, but in tiny models it would
    /// otherwise leave the baseline several percent smaller. Everything else (attention,
    /// norms, embeddings, the dense layers) is unchanged, so the two models differ in active
    /// parameters by at most the rounding, `1.5 · d_model` per MoE layer.
    ///
    /// Per-layer MoE configs (`layer_moe`) are dropped: the baseline follows `ffn.sparse`.
    pub fn dense_equivalent(&self) -> LmConfig {
        let mut c = self.clone();
        c.layer_moe.clear();
        if let LayerFfn::Moe(m) = &self.ffn.sparse {
            let d = self.d_model.max(1);
            // an invalid router has no gate to count; validate() reports it on use
            let gate = gate_params(m).unwrap_or(0) as f64;
            let active = active_routed_params(m) + shared_params(m) + gate;
            let hidden = (active / (3 * d) as f64).round().max(1.0) as usize;
            c.ffn.sparse = LayerFfn::Dense { hidden };
        }
        c
    }

    /// Parameter counts from the config alone (equal to [`crate::MoeLm`]'s counts).
    pub fn param_count(&self) -> Result<ParamCount> {
        self.validate()?;
        let (d, v) = (self.d_model, self.vocab_size);
        let embed = v * d * if self.tie_embeddings { 1 } else { 2 };
        let attn = self.attention_params();
        let norms = 2 * d;
        let (mut total, mut active) = (embed + d, (embed + d) as f64);
        // each layer's FFN is the dense one or ffn.sparse: count each kind once
        let (dense_layers, sparse_layers) = self.layer_kinds();
        let dense = 3 * d * self.ffn.dense_hidden;
        let moe_counts = |m: &MoeConfig| -> Result<(usize, f64)> {
            let fixed = gate_params(m)? as f64 + shared_params(m);
            let routed: usize = m.experts.iter().map(|e| e.params(d)).sum();
            Ok(((fixed as usize) + routed, fixed + active_routed_params(m)))
        };
        let (sparse, sparse_active) = match &self.ffn.sparse {
            LayerFfn::Dense { hidden } => (3 * d * hidden, (3 * d * hidden) as f64),
            LayerFfn::Moe(m) => moe_counts(m)?,
        };
        total += self.n_layers * (attn + norms) + dense_layers * dense + sparse_layers * sparse;
        active += (self.n_layers * (attn + norms) + dense_layers * dense) as f64
            + sparse_layers as f64 * sparse_active;
        // layers whose MoE differs from ffn.sparse (validate() checked they hold one)
        for o in &self.layer_moe {
            let (t, a) = moe_counts(&o.moe)?;
            total = total + t - sparse;
            active += a - sparse_active;
        }
        Ok(ParamCount {
            total,
            active_per_token: active.round() as usize,
        })
    }
}

/// `k · mean routed-expert size` (k capped at the number of experts).
pub(crate) fn active_routed_params(m: &MoeConfig) -> f64 {
    let e = m.experts.len().max(1);
    let sum: usize = m.experts.iter().map(|x| x.params(m.d_model)).sum();
    m.router.k().min(e) as f64 * sum as f64 / e as f64
}

fn shared_params(m: &MoeConfig) -> f64 {
    let gate = if m.shared_gate { m.d_model } else { 0 };
    (m.shared_experts
        .iter()
        .map(|x: &ExpertSpec| x.params(m.d_model))
        .sum::<usize>()
        + gate) as f64
}

/// Parameters of the gate the router asks for (0 for routers without a learned gate).
pub(crate) fn gate_params(m: &MoeConfig) -> Result<usize> {
    let router = switchyard_core::router::build(&m.router, m.experts.len())?;
    let outputs = router.gate_outputs();
    if outputs == 0 {
        return Ok(0);
    }
    let d_in = if m.gate.uses_context() {
        2 * m.d_model
    } else {
        m.d_model
    };
    Ok(match m.gate {
        GateConfig::Linear { .. } => outputs * d_in,
        GateConfig::Mlp { hidden, .. } => hidden * d_in + hidden + outputs * hidden,
    })
}
