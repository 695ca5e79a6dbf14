//! [`TrainConfig::to_documented_toml`]: the config as TOML with a one-line description of every
//! key, for `switchyard train --print-config`. Keys that are unset (optional and off by
//! default, e.g. `data.path`) are listed too, commented out, with an example value.
//!
//! [`KEY_DOCS`] is the one list of descriptions; `tests/config_doc.rs` checks that every key
//! any config can serialise has one, and that every entry is a key some config has.

use toml::{Table, Value};

use super::config::TrainConfig;

/// One key of the config: its dotted path, a one-line description, and for a key that may be
/// unset, an example value (TOML) to show commented out, with the sibling key and value it
/// belongs with (`("type", "switch")`: only for a switch router).
#[derive(Clone, Copy, Debug)]
pub struct KeyDoc {
    pub key: &'static str,
    pub doc: &'static str,
    pub example: Option<&'static str>,
    pub only_with: Option<(&'static str, &'static str)>,
}

const fn key(key: &'static str, doc: &'static str) -> KeyDoc {
    KeyDoc {
        key,
        doc,
        example: None,
        only_with: None,
    }
}

/// A key that may be unset; `example` is shown commented out when it is.
const fn opt(key: &'static str, example: &'static str, doc: &'static str) -> KeyDoc {
    KeyDoc {
        key,
        doc,
        example: Some(example),
        only_with: None,
    }
}

/// An optional key that only exists next to `sibling = value` (a variant's field).
const fn opt_with(
    key: &'static str,
    example: &'static str,
    sibling: (&'static str, &'static str),
    doc: &'static str,
) -> KeyDoc {
    KeyDoc {
        key,
        doc,
        example: Some(example),
        only_with: Some(sibling),
    }
}

/// Every key of [`TrainConfig`], in the order `--print-config` prints them within a table.
pub const KEY_DOCS: &[KeyDoc] = &[
    key("seed", "seeds parameter initialisation, data order and routing noise"),
    key("run_dir", "directory of the checkpoints (step-*/, latest) and metrics.jsonl"),
    key("init", "where the first weights come from (fine-tuning)"),
    opt("init.from", "\"runs/imported\"", "start from this checkpoint's weights (run or step directory) at step 0; unset: fresh initialisation"),
    key("model", "the transformer (Llama/Mixtral layout: pre-norm RMSNorm, RoPE, SwiGLU or MoE FFNs)"),
    key("model.vocab_size", "token ids the embedding holds; 259 for the byte tokenizer"),
    key("model.d_model", "width of the residual stream"),
    key("model.n_layers", "transformer blocks"),
    key("model.n_heads", "attention (query) heads per block"),
    opt("model.n_kv_heads", "2", "key/value heads of grouped-query attention; unset: n_heads"),
    key("model.max_seq_len", "longest sequence in tokens (context of generate; data.seq_len at most this)"),
    key("model.rope_theta", "RoPE base frequency"),
    opt("model.rope_scaling", "{ type = \"linear\", factor = 2.0 }", "RoPE context extension (linear or yarn); unset: plain RoPE"),
    key("model.rope_scaling.type", "\"linear\" (position interpolation) or \"yarn\""),
    key("model.rope_scaling.factor", "context extension ratio, >= 1"),
    key("model.rope_scaling.original_max_seq_len", "yarn: context length of pretraining, in tokens"),
    key("model.rope_scaling.beta_fast", "yarn: rotations over the original context above which a frequency is kept"),
    key("model.rope_scaling.beta_slow", "yarn: rotations below which a frequency is fully interpolated"),
    opt_with("model.rope_scaling.mscale", "1.0", ("type", "yarn"), "yarn: attention-scale coefficient (with mscale_all_dim); unset: the default factor"),
    opt_with("model.rope_scaling.mscale_all_dim", "1.0", ("type", "yarn"), "yarn: see mscale; also DeepSeek's softmax scale factor"),
    opt_with("model.rope_scaling.attention_factor", "1.0", ("type", "yarn"), "yarn: the cos/sin factor itself, overriding mscale's"),
    key("model.rope_scaling.truncate", "yarn: round the ramp's ends outwards to whole dimensions"),
    key("model.norm_eps", "epsilon of the RMSNorms"),
    opt("model.head_dim", "16", "width of one attention head; unset: d_model / n_heads"),
    key("model.qk_norm", "RMSNorm on the full q and k projections (OLMoE)"),
    key("model.qk_norm_per_head", "RMSNorm on each head's q and k (Qwen3-MoE)"),
    key("model.qkv_bias", "biases on the q, k and v projections (Qwen2-MoE)"),
    opt("model.clip_qkv", "8.0", "clamp q, k and v to [-c, c] (OLMoE); unset: no clamp"),
    opt("model.mla", "{ kv_lora_rank = 16, qk_nope_head_dim = 8, qk_rope_head_dim = 8, v_head_dim = 8 }", "multi-head latent attention (DeepSeek-V2/V3); unset: (grouped-query) multi-head attention"),
    opt("model.mla.q_lora_rank", "32", "rank of the query compression; unset: queries projected directly"),
    key("model.mla.kv_lora_rank", "rank of the shared key/value latent"),
    key("model.mla.qk_nope_head_dim", "per-head q/k width without RoPE"),
    key("model.mla.qk_rope_head_dim", "per-head q/k width with RoPE (one key shared by all heads)"),
    key("model.mla.v_head_dim", "per-head value width"),
    key("model.mla.rope_interleave", "rotate interleaved pairs (DeepSeek's layout) instead of halves"),
    key("model.mla.lora_norm_eps", "epsilon of the q/kv latent RMSNorms"),
    key("model.tie_embeddings", "lm_head shares the embedding matrix"),
    key("model.dense_layers", "layers forced to a dense FFN (ffn.dense_hidden), e.g. [0]"),
    key("model.layer_moe", "MoE layers whose config replaces ffn.sparse's ([{ layer, moe }]; written by `switchyard experts` on some layers)"),
    key("model.ffn", "which FFN each layer gets"),
    key("model.ffn.dense_hidden", "hidden width of the dense SwiGLU layers outside the sparse slots"),
    key("model.ffn.moe_every", "every this many layers (from first_dense) holds ffn.sparse; 1: all"),
    key("model.ffn.first_dense", "layers 0..first_dense are dense"),
    key("model.ffn.sparse", "the FFN of the sparse slots: an MoE layer, or a dense SwiGLU of the same layout"),
    key("model.ffn.sparse.type", "\"moe\" (routed experts) or \"dense\" (a SwiGLU of width `hidden`)"),
    key("model.ffn.sparse.hidden", "dense: hidden width of the SwiGLU"),
    key("model.ffn.sparse.d_model", "the layer's width; left out, it follows model.d_model"),
    key("model.ffn.sparse.experts", "routed experts: { count = N, kind = \"swiglu\" | \"ffn\" (+ activation = \"relu\" | \"gelu\" | \"silu\"), hidden = width }, or a list of them"),
    key("model.ffn.sparse.shared_experts", "experts every token goes through, as `experts`; [] for none"),
    key("model.ffn.sparse.shared_gate", "scale the shared experts' output by a learned sigmoid gate (Qwen2-MoE)"),
    key("model.ffn.sparse.renormalize", "renormalise each token's kept routing weights to sum to 1"),
    key("model.ffn.sparse.jitter", "multiplicative router-input noise in training, U(1-x, 1+x); 0: off"),
    key("model.ffn.sparse.gate_in_steps", "training steps over which an expert added by surgery enters routing (its gate-in rises 0 -> 1)"),
    key("model.ffn.sparse.expert_dropout", "probability that an expert is unavailable for a training batch"),
    key("model.ffn.sparse.router", "which experts each token goes to"),
    key("model.ffn.sparse.router.type", "top_k, noisy_top_k, switch, expert_choice, hash, sigmoid_bias, group_limited, hierarchical or sinkhorn"),
    key("model.ffn.sparse.router.k", "experts per token"),
    key("model.ffn.sparse.router.capacity_factor", "capacity per expert as a multiple of the balanced share (switch: T*k/E tokens; expert_choice: T/E)"),
    opt_with("model.ffn.sparse.router.eval_capacity_factor", "2.0", ("type", "switch"), "capacity factor in evaluation; unset: the training one"),
    key("model.ffn.sparse.router.drop_policy", "which tokens an over-capacity expert keeps: \"position\" (earlier) or \"probability\""),
    key("model.ffn.sparse.router.groups", "equal groups the experts form, in index order"),
    key("model.ffn.sparse.router.topk_groups", "groups kept per token before the top-k inside them"),
    key("model.ffn.sparse.router.k_groups", "groups the primary gate keeps per token"),
    key("model.ffn.sparse.router.k_inner", "experts each kept group's gate keeps"),
    key("model.ffn.sparse.router.score", "score function of the gate logits: \"softmax\" or \"sigmoid\""),
    key("model.ffn.sparse.router.group_score", "group score: \"max\" (DeepSeek-V2) or \"top2_sum\" (DeepSeek-V3)"),
    key("model.ffn.sparse.router.bias_update_rate", "step of the aux-loss-free selection-bias update per step; 0: no bias"),
    key("model.ffn.sparse.router.scaling", "multiplier of the kept routing weights (routed scaling factor)"),
    key("model.ffn.sparse.router.seed", "hash: mixed into token ids; another seed, another fixed assignment"),
    key("model.ffn.sparse.router.iterations", "most Sinkhorn-Knopp rounds per batch"),
    key("model.ffn.sparse.gate", "the network that scores experts"),
    key("model.ffn.sparse.gate.type", "\"linear\" or \"mlp\""),
    key("model.ffn.sparse.gate.context", "also feed the gate the mean of the token's sequence (a context vector)"),
    key("model.ffn.sparse.gate.hidden", "mlp: hidden width of the gate"),
    key("model.ffn.sparse.gate.activation", "mlp: \"relu\", \"gelu\" or \"silu\""),
    key("model.ffn.sparse.losses", "weights of the auxiliary losses added to the objective (0: off; all are still logged)"),
    key("model.ffn.sparse.losses.switch_balance", "Switch Transformer load-balancing loss"),
    key("model.ffn.sparse.losses.importance", "importance loss (CV² of summed gate weights)"),
    key("model.ffn.sparse.losses.load", "load loss (CV² of the smooth load estimate)"),
    key("model.ffn.sparse.losses.z", "router z-loss (squared log-sum-exp of the gate logits)"),
    key("model.ffn.sparse.losses.domain_map", "domain -> expert mapping loss, -log P(token's domain experts); see train.domain_experts"),
    key("data", "where the text comes from and how it is cut"),
    opt("data.path", "\"examples/text\"", "a .txt file or a directory of <domain>/*.txt; unset: the built-in 7-domain corpus"),
    opt("data.tokenizer", "\"path/to/tokenizer.json\"", "a HuggingFace tokenizer.json (or its directory); unset: bytes, or init.from's tokenizer"),
    key("data.corpus_seed", "built-in corpus: generator seed"),
    key("data.docs_per_domain", "built-in corpus: documents per domain"),
    key("data.doc_bytes", "built-in corpus: bytes per document"),
    key("data.seq_len", "tokens per training window (at most model.max_seq_len)"),
    key("data.valid_fraction", "share of each domain's documents held out for validation, in (0, 1)"),
    key("data.split_seed", "seeds which documents are held out (kept apart from seed)"),
    key("data.max_valid_windows", "validation windows per domain an evaluation reads, at most"),
    opt("data.new_domain", "\"cjk\"", "a domain left out of the training batches until data.new_domain_step (a new domain appearing mid-run)"),
    key("data.new_domain_step", "the step after which data.new_domain enters the training data"),
    key("optim", "AdamW and the LR schedule (linear warmup, cosine decay to min_lr at train.steps)"),
    key("optim.lr", "peak learning rate, after warmup"),
    key("optim.min_lr", "learning rate at the last step"),
    key("optim.warmup_steps", "steps of linear warmup from 0 to lr"),
    key("optim.weight_decay", "decoupled weight decay (AdamW); 0: off"),
    key("optim.beta1", "AdamW's first-moment decay, in [0, 1)"),
    key("optim.beta2", "AdamW's second-moment decay, in [0, 1)"),
    key("optim.eps", "AdamW's denominator epsilon, > 0"),
    key("optim.clip_grad_norm", "clip the global gradient norm to this; 0: off (still logged)"),
    key("train", "the training loop"),
    key("train.steps", "optimiser updates in the whole run; the LR schedule ends here"),
    key("train.batch_size", "windows per micro-batch"),
    key("train.grad_accum", "micro-batches averaged into one update"),
    key("train.eval_every", "evaluate every this many steps; 0: only at the end"),
    key("train.checkpoint_every", "save a checkpoint every this many steps; 0: only at the end"),
    key("train.keep_last", "keep only the newest this many checkpoints; 0: keep all"),
    key("train.spike_factor", "skip an update whose loss exceeds this x the recent mean; 0: off"),
    key("train.collapse_share", "warn when one expert gets more than this share of a layer's tokens"),
    key("train.domain_experts", "domain name -> experts for losses.domain_map, e.g. { prose = [0], code = [3] }; empty: domain i -> expert i mod E"),
    key("log", "logging and progress display"),
    key("log.metrics", "append one JSON line per step and evaluation to run_dir/metrics.jsonl"),
    key("log.every", "an info log line every this many steps; 0: none"),
    key("log.progress", "show the progress bar (hidden anyway when stderr is not a terminal)"),
    key("lifecycle", "expert lifecycle during training: experts added, split and pruned by the trainer (logged in metrics.jsonl)"),
    key("lifecycle.add", "experts added at steps: [{ step = 200, count = 2, layers = [] }] (layers empty: all)"),
    key("lifecycle.add_on_new_domain", "experts added to every MoE layer when data.new_domain appears; 0: none"),
    key("lifecycle.split_load_share", "at each evaluation split the expert whose load share exceeds this; 0: never"),
    key("lifecycle.prune_dead_evals", "prune an expert without validation tokens in this many evaluations in a row; 0: never"),
    key("lifecycle.noise", "relative noise on a split expert's copy"),
    key("lifecycle.search_keep", "architecture search: each evaluation prunes every MoE layer's weakest expert until this many are left; 0: off"),
    key("lifecycle.search_by", "how the search ranks experts: \"usage\" (validation tokens) or \"ablation\" (loss increase when removed)"),
    key("lifecycle.freeze_old_experts", "when the new domain's experts are added, freeze the experts there were (weights, gate rows)"),
    key("replica", "background replicas of each expert's weights and AdamW moments; a non-finite expert is restored from its replica"),
    key("replica.every", "refresh the replicas (and check them) every this many steps; 0: off"),
];

/// The description of `key` (a dotted path), if it has one.
pub fn key_doc(key: &str) -> Option<&'static KeyDoc> {
    KEY_DOCS.iter().find(|d| d.key == key)
}

/// Comments start at this column when the `key = value` part is shorter.
const COMMENT_COLUMN: usize = 32;

impl TrainConfig {
    /// The whole config as TOML, every key with a one-line description; unset optional keys
    /// (e.g. `data.path`) are commented out with an example value. Parses back to `self`.
    pub fn to_documented_toml(&self) -> String {
        let table = match Value::try_from(self) {
            Ok(Value::Table(t)) => t,
            _ => return self.to_toml_string(),
        };
        let mut out = String::from(
            "# Every key of the run config with a one-line description; unset optional keys are\n\
             # commented out with an example value. Set any of them in a file or with --set key=value.\n\n",
        );
        emit_table(&mut out, "", &table);
        out
    }
}

fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The keys of the table at `path`, documented ones in [`KEY_DOCS`] order, then the rest.
fn ordered_names(path: &str, table: &Table) -> Vec<String> {
    let mut names: Vec<String> = KEY_DOCS
        .iter()
        .filter_map(|d| {
            let (parent, name) = d.key.rsplit_once('.').unwrap_or(("", d.key));
            (parent == path).then(|| name.to_string())
        })
        .collect();
    let rest: Vec<String> = table
        .keys()
        .filter(|k| !names.contains(k))
        .cloned()
        .collect();
    names.extend(rest);
    names
}

fn line(out: &mut String, text: &str, doc: Option<&str>) {
    out.push_str(text);
    if let Some(doc) = doc {
        let pad = COMMENT_COLUMN.saturating_sub(text.chars().count()).max(2);
        out.push_str(&" ".repeat(pad));
        out.push_str("# ");
        out.push_str(doc);
    }
    out.push('\n');
}

fn emit_table(out: &mut String, path: &str, table: &Table) {
    let mut sections = Vec::new();
    for name in ordered_names(path, table) {
        let full = child_path(path, &name);
        let doc = key_doc(&full);
        match table.get(&name) {
            Some(Value::Table(t)) => sections.push((full, t)),
            Some(Value::Array(items)) if items.iter().any(Value::is_table) => {
                line(
                    out,
                    &format!("{name} = {}", experts_value(items)),
                    doc.map(|d| d.doc),
                );
            }
            Some(v) => line(out, &format!("{name} = {v}"), doc.map(|d| d.doc)),
            None => {
                let Some(d) = doc else { continue };
                let (Some(example), true) = (d.example, applies(d, table)) else {
                    continue;
                };
                line(out, &format!("# {name} = {example}"), Some(d.doc));
            }
        }
    }
    for (full, t) in sections {
        out.push('\n');
        line(out, &format!("[{full}]"), key_doc(&full).map(|d| d.doc));
        emit_table(out, &full, t);
    }
}

/// Whether an unset optional key belongs in this table (its `only_with` sibling matches).
fn applies(d: &KeyDoc, table: &Table) -> bool {
    d.only_with
        .is_none_or(|(k, v)| table.get(k).and_then(Value::as_str) == Some(v))
}

/// A list of experts as one line: `{ count = N, … }` when they are all equal, else an inline
/// array.
fn experts_value(items: &[Value]) -> String {
    match items.first() {
        Some(Value::Table(first)) if items.iter().all(|v| v == &items[0]) => {
            let mut t = Table::new();
            t.insert("count".into(), Value::Integer(items.len() as i64));
            for (k, v) in first {
                t.insert(k.clone(), v.clone());
            }
            Value::Table(t).to_string()
        }
        _ => Value::Array(items.to_vec()).to_string(),
    }
}
