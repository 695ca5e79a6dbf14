//! Which HF tensors make up each Switchyard parameter, for one architecture and config. The
//! layout is shared; the names that differ per family come from its
//! [`HfFamily`](crate::family::HfFamily).
//!
//! Most parameters carry their HF name unchanged (`model.layers.{i}.self_attn.q_proj.weight`,
//! …). The exceptions are the MoE layers: Switchyard names them
//! `model.layers.{i}.block_sparse_moe.*` whatever the architecture, and packs all experts of
//! a layer into one flat parameter (`experts.packed`, see `switchyard_core::expert`): per
//! expert `w1 = gate [h, d]`, `w3 = up [h, d]`, `w2t = downᵀ [h, d]`.

use switchyard_models::{LayerFfn, LmConfig};

use crate::arch::HfArch;

/// Prefix of every MoE layer's parameters inside `model.layers.{i}.` in Switchyard.
pub const OUR_MOE_PREFIX: &str = "block_sparse_moe";

/// One Switchyard parameter and where its values live in an HF checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Name in the Switchyard parameter store.
    pub ours: String,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// One HF tensor with the same shape.
    Direct { hf: String, shape: Vec<usize> },
    /// A packed expert bank: per expert the HF `[gate, up, down]` names and its width `h`;
    /// gate and up are `[h, d]`, down is `[d, h]`.
    Experts {
        experts: Vec<([String; 3], usize)>,
        d_model: usize,
    },
}

/// A router buffer stored as an HF tensor (DeepSeek-V3's `e_score_correction_bias`).
#[derive(Clone, Debug, PartialEq)]
pub struct BufferEntry {
    pub layer: usize,
    /// The router's buffer name (`selection_bias`).
    pub name: &'static str,
    pub hf: String,
    pub len: usize,
}

/// The full mapping of a model.
#[derive(Clone, Debug, Default)]
pub struct Mapping {
    pub params: Vec<Entry>,
    pub buffers: Vec<BufferEntry>,
}

impl Mapping {
    /// Every HF tensor name the mapping reads or writes.
    pub fn hf_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.params {
            match &e.source {
                Source::Direct { hf, .. } => out.push(hf.clone()),
                Source::Experts { experts, .. } => {
                    out.extend(experts.iter().flat_map(|(n, _)| n.iter().cloned()))
                }
            }
        }
        out.extend(self.buffers.iter().map(|b| b.hf.clone()));
        out
    }
}

/// The mapping of `cfg` as `arch` (the config must be valid and representable).
pub fn mapping(arch: HfArch, cfg: &LmConfig) -> Mapping {
    let family = arch.family();
    let (d, v) = (cfg.d_model, cfg.vocab_size);
    let mut m = Mapping::default();
    let mut direct = |name: String, shape: Vec<usize>| {
        m.params.push(Entry {
            ours: name.clone(),
            source: Source::Direct { hf: name, shape },
        });
    };
    direct("model.embed_tokens.weight".into(), vec![v, d]);
    direct("model.norm.weight".into(), vec![d]);
    if !cfg.tie_embeddings {
        direct("lm_head.weight".into(), vec![v, d]);
    }
    for i in 0..cfg.n_layers {
        let p = format!("model.layers.{i}.");
        direct(format!("{p}input_layernorm.weight"), vec![d]);
        direct(format!("{p}post_attention_layernorm.weight"), vec![d]);
        attention(cfg, &format!("{p}self_attn."), &mut direct);
        if let LayerFfn::Dense { hidden } = cfg.layer_ffn(i) {
            let mp = format!("{p}mlp.");
            direct(format!("{mp}gate_proj.weight"), vec![hidden, d]);
            direct(format!("{mp}up_proj.weight"), vec![hidden, d]);
            direct(format!("{mp}down_proj.weight"), vec![d, hidden]);
        }
    }
    for i in cfg.moe_layers() {
        let LayerFfn::Moe(moe) = cfg.layer_ffn(i) else {
            unreachable!("an MoE layer")
        };
        let ours = format!("model.layers.{i}.{OUR_MOE_PREFIX}.");
        let hf = format!("model.layers.{i}.{}.", family.moe_prefix());
        let e = moe.experts.len();
        m.params.push(Entry {
            ours: format!("{ours}gate.weight"),
            source: Source::Direct {
                hf: format!("{hf}gate.weight"),
                shape: vec![e, d],
            },
        });
        let [g, u, dn] = family.expert_proj_names();
        let experts = moe
            .experts
            .iter()
            .enumerate()
            .map(|(x, s)| {
                let b = format!("{hf}experts.{x}.");
                (
                    [
                        format!("{b}{g}.weight"),
                        format!("{b}{u}.weight"),
                        format!("{b}{dn}.weight"),
                    ],
                    s.hidden,
                )
            })
            .collect();
        m.params.push(Entry {
            ours: format!("{ours}experts.packed"),
            source: Source::Experts {
                experts,
                d_model: d,
            },
        });
        if let (Some(shared), Some(sp)) = (moe.shared_experts.first(), family.shared_prefix()) {
            let b = format!("{hf}{sp}.");
            let names = [
                format!("{b}gate_proj.weight"),
                format!("{b}up_proj.weight"),
                format!("{b}down_proj.weight"),
            ];
            m.params.push(Entry {
                ours: format!("{ours}shared_experts.packed"),
                source: Source::Experts {
                    experts: vec![(names, shared.hidden)],
                    d_model: d,
                },
            });
        }
        if moe.shared_gate {
            m.params.push(Entry {
                ours: format!("{ours}shared_expert_gate.weight"),
                source: Source::Direct {
                    hf: format!("{hf}shared_expert_gate.weight"),
                    shape: vec![1, d],
                },
            });
        }
        for (name, hf) in family.router_buffers(&hf) {
            m.buffers.push(BufferEntry {
                layer: i,
                name,
                hf,
                len: e,
            });
        }
    }
    m
}

fn attention(cfg: &LmConfig, p: &str, direct: &mut impl FnMut(String, Vec<usize>)) {
    let (d, h) = (cfg.d_model, cfg.n_heads);
    if let Some(mla) = &cfg.mla {
        let qk = mla.qk_head_dim();
        let r = mla.kv_lora_rank;
        match mla.q_lora_rank {
            None => direct(format!("{p}q_proj.weight"), vec![h * qk, d]),
            Some(rq) => {
                direct(format!("{p}q_a_proj.weight"), vec![rq, d]);
                direct(format!("{p}q_a_layernorm.weight"), vec![rq]);
                direct(format!("{p}q_b_proj.weight"), vec![h * qk, rq]);
            }
        }
        direct(
            format!("{p}kv_a_proj_with_mqa.weight"),
            vec![r + mla.qk_rope_head_dim, d],
        );
        direct(format!("{p}kv_a_layernorm.weight"), vec![r]);
        direct(
            format!("{p}kv_b_proj.weight"),
            vec![h * (mla.qk_nope_head_dim + mla.v_head_dim), r],
        );
        direct(format!("{p}o_proj.weight"), vec![d, h * mla.v_head_dim]);
        return;
    }
    let hd = cfg.head_dim();
    let (q, kv) = (h * hd, cfg.kv_heads() * hd);
    direct(format!("{p}q_proj.weight"), vec![q, d]);
    direct(format!("{p}k_proj.weight"), vec![kv, d]);
    direct(format!("{p}v_proj.weight"), vec![kv, d]);
    direct(format!("{p}o_proj.weight"), vec![d, q]);
    if cfg.qkv_bias {
        direct(format!("{p}q_proj.bias"), vec![q]);
        direct(format!("{p}k_proj.bias"), vec![kv]);
        direct(format!("{p}v_proj.bias"), vec![kv]);
    }
    if cfg.qk_norm {
        direct(format!("{p}q_norm.weight"), vec![q]);
        direct(format!("{p}k_norm.weight"), vec![kv]);
    }
    if cfg.qk_norm_per_head {
        direct(format!("{p}q_norm.weight"), vec![hd]);
        direct(format!("{p}k_norm.weight"), vec![hd]);
    }
}

/// HF tensors that carry nothing a model needs: RoPE tables some checkpoints store, and
/// DeepSeek-V3's multi-token-prediction layers (indices `>= num_hidden_layers`).
pub fn ignorable(name: &str, n_layers: usize) -> bool {
    if name.ends_with("rotary_emb.inv_freq") {
        return true;
    }
    name.strip_prefix("model.layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i >= n_layers)
}
