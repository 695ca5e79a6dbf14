#!/usr/bin/env python3
"""Executable spec: the forward pass of every fixture architecture, written
from the on-disk checkpoint alone (config.json + *.safetensors), without
transformers.

This is what Switchyard's importer has to implement. It reads the tensors by
their Hub names, runs the model in float32 with plain torch ops, and compares
with `expected.safetensors` (logits, router logits, chosen experts, routing
weights, greedy tokens). It does not import transformers, so it is an
independent check of the description in scripts/reference/README.md.

    .venv-ref/bin/python scripts/reference/hf_spec_forward.py            # all fixtures
    .venv-ref/bin/python scripts/reference/hf_spec_forward.py olmoe

Greedy decoding here recomputes the whole sequence at each step (no KV cache).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "crates" / "interop" / "tests" / "fixtures"


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load_checkpoint(d: Path) -> dict[str, torch.Tensor]:
    idx = d / "model.safetensors.index.json"
    files = sorted(set(json.loads(idx.read_text())["weight_map"].values())) if idx.exists() else ["model.safetensors"]
    w = {}
    for f in files:
        with safe_open(str(d / f), "pt") as s:
            for k in s.keys():
                w[k] = s.get_tensor(k).float()
    return w


def load_config(d: Path) -> dict:
    c = json.loads((d / "config.json").read_text())
    # transformers 5 writes rope_parameters; Hub (transformers 4) configs write rope_theta/rope_scaling.
    rp = c.get("rope_parameters") or {}
    c["_rope_theta"] = rp.get("rope_theta", c.get("rope_theta", 10000.0))
    scaling = c.get("rope_scaling") or ({k: v for k, v in rp.items() if k != "rope_theta"} if rp else None)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind not in ("default", "linear", "yarn"):
        raise NotImplementedError(f"rope scaling {scaling} not covered by the fixtures")
    c["_rope_scaling"] = None if kind == "default" else dict(scaling, _type=kind)
    # expert count appears under three names (transformers 5 writes num_local_experts for Qwen3-MoE).
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if c.get(key) is not None:
            c["_num_experts"] = c[key]
            break
    return c


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


def rms_norm(x, w, eps):
    # computed in float32; weight multiplies the normalised value
    v = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(v + eps))


def linear(x, w, b=None):
    y = x @ w.t()
    return y if b is None else y + b


def swiglu(x, gate_w, up_w, down_w):
    return linear(F.silu(linear(x, gate_w)) * linear(x, up_w), down_w)


def yarn_mscale(scale, a):
    return 1.0 if scale <= 1 else 0.1 * a * math.log(scale) + 1.0


def rope_cos_sin(dim, c, positions):
    """cos/sin [L, dim/2] of the frequencies theta^(-2i/dim), scaled as config.json says."""
    theta, s = c["_rope_theta"], c["_rope_scaling"]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))  # [dim/2]
    factor = 1.0  # multiplies cos and sin
    if s is not None and s["_type"] == "linear":
        inv_freq = inv_freq / s["factor"]
    elif s is not None:  # YaRN
        f = s["factor"]
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        factor = s.get("attention_factor") or (
            yarn_mscale(f, m) / yarn_mscale(f, m_all) if m and m_all else yarn_mscale(f, 1.0))
        orig = c.get("original_max_position_embeddings") or s.get("original_max_position_embeddings") \
            or c["max_position_embeddings"]

        def dim_of(rotations):  # the dimension whose frequency turns `rotations` times in `orig`
            return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low, high = dim_of(s.get("beta_fast") or 32), dim_of(s.get("beta_slow") or 1)
        if s.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        keep = 1 - ramp  # 1: frequency kept, 0: divided by factor
        inv_freq = inv_freq / f * (1 - keep) + inv_freq * keep
    freqs = positions.float()[:, None] * inv_freq[None, :]  # [L, dim/2]
    return freqs.cos() * factor, freqs.sin() * factor


def rope_half(x, cos, sin):
    """NeoX / Llama layout: rotate pairs (i, i + dim/2). x: [H, L, dim]."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def rope_interleaved(x, cos, sin):
    """DeepSeek layout: rotate pairs (2i, 2i+1). Output stays interleaved."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.flatten(-2)


def attention(q, k, v, scale):
    """q: [H, L, Dk], k: [H, L, Dk], v: [H, L, Dv] (kv heads already repeated). Causal."""
    L = q.shape[1]
    s = (q @ k.transpose(-1, -2)) * scale
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    s = s.masked_fill(mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return p @ v  # [H, L, Dv]


def repeat_kv(x, n_rep):
    # kv head j serves query heads j*n_rep .. j*n_rep + n_rep - 1
    return x.repeat_interleave(n_rep, dim=0)


# ---------------------------------------------------------------------------
# Attention variants
# ---------------------------------------------------------------------------


def gqa_attention(arch, c, w, p, x, pos):
    H, KV = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or c["hidden_size"] // H
    L = x.shape[0]
    eps = c["rms_norm_eps"]
    q = linear(x, w[p + "q_proj.weight"], w.get(p + "q_proj.bias"))
    k = linear(x, w[p + "k_proj.weight"], w.get(p + "k_proj.bias"))
    v = linear(x, w[p + "v_proj.weight"], w.get(p + "v_proj.bias"))
    if arch == "olmoe":
        # OLMoE: RMSNorm over the whole projection (all heads together), before the head split.
        q = rms_norm(q, w[p + "q_norm.weight"], eps)
        k = rms_norm(k, w[p + "k_norm.weight"], eps)
        if c.get("clip_qkv") is not None:
            q, k, v = (t.clamp(-c["clip_qkv"], c["clip_qkv"]) for t in (q, k, v))
    q = q.view(L, H, hd).transpose(0, 1)
    k = k.view(L, KV, hd).transpose(0, 1)
    v = v.view(L, KV, hd).transpose(0, 1)
    if arch == "qwen3_moe":
        # Qwen3: RMSNorm per head over head_dim, after the head split.
        q = rms_norm(q, w[p + "q_norm.weight"], eps)
        k = rms_norm(k, w[p + "k_norm.weight"], eps)
    cos, sin = rope_cos_sin(hd, c, pos)
    q, k = rope_half(q, cos, sin), rope_half(k, cos, sin)
    o = attention(q, repeat_kv(k, H // KV), repeat_kv(v, H // KV), hd**-0.5)
    o = o.transpose(0, 1).reshape(L, H * hd)
    return linear(o, w[p + "o_proj.weight"], w.get(p + "o_proj.bias"))


def mla_attention(arch, c, w, p, x, pos):
    H = c["num_attention_heads"]
    dn, dr, dv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    r_kv = c["kv_lora_rank"]
    L = x.shape[0]
    # q_a_layernorm / kv_a_layernorm use eps 1e-6 (class default), not rms_norm_eps.
    if c.get("q_lora_rank") is None:
        q = linear(x, w[p + "q_proj.weight"])
    else:
        q = linear(rms_norm(linear(x, w[p + "q_a_proj.weight"]), w[p + "q_a_layernorm.weight"], 1e-6), w[p + "q_b_proj.weight"])
    q = q.view(L, H, dn + dr).transpose(0, 1)  # [H, L, dn+dr]
    q_nope, q_rot = q[..., :dn], q[..., dn:]
    ckv = linear(x, w[p + "kv_a_proj_with_mqa.weight"])  # [L, r_kv + dr]
    kv_lat, k_rot = ckv[:, :r_kv], ckv[:, r_kv:]
    kv_lat = rms_norm(kv_lat, w[p + "kv_a_layernorm.weight"], 1e-6)
    kv = linear(kv_lat, w[p + "kv_b_proj.weight"]).view(L, H, dn + dv).transpose(0, 1)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    cos, sin = rope_cos_sin(dr, c, pos)
    # V2 always and V3 with rope_interleave=true rotate interleaved pairs (2i, 2i+1).
    interleave = True if arch == "deepseek_v2" else c.get("rope_interleave", True)
    rope = rope_interleaved if interleave else rope_half
    q_rot = rope(q_rot, cos, sin)
    k_rot = rope(k_rot[None], cos, sin).expand(H, L, dr)  # one rope key shared by all heads
    qf = torch.cat([q_nope, q_rot], -1)
    kf = torch.cat([k_nope, k_rot], -1)
    scale = (dn + dr) ** -0.5
    s = c["_rope_scaling"]
    if s is not None and s.get("mscale_all_dim"):
        # DeepSeek: any RoPE scaling with mscale_all_dim multiplies the softmax scale
        scale *= yarn_mscale(s["factor"], s["mscale_all_dim"]) ** 2
    o = attention(qf, kf, v, scale)
    o = o.transpose(0, 1).reshape(L, H * dv)
    return linear(o, w[p + "o_proj.weight"])


# ---------------------------------------------------------------------------
# Routers and MoE blocks. Each router returns (logits, idx [L,k], weights [L,k]).
# ---------------------------------------------------------------------------


def topk_desc(s, k):
    return torch.topk(s, k, dim=-1)


def route(arch, c, w, p, x):
    logits = linear(x, w[p + "gate.weight"])  # [L, E]
    E = logits.shape[-1]
    k = c["num_experts_per_tok"]
    if arch in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"):
        probs = torch.softmax(logits, -1)
        wts, idx = topk_desc(probs, k)
        if arch == "mixtral" or c.get("norm_topk_prob", False):
            wts = wts / wts.sum(-1, keepdim=True)
        return logits, idx, wts
    if arch == "deepseek_v2":
        probs = torch.softmax(logits, -1)
        if c.get("topk_method", "greedy") == "group_limited_greedy":
            G, TG = c["n_group"], c["topk_group"]
            gs = probs.view(-1, G, E // G).max(-1).values  # group score: best expert in the group
            gi = topk_desc(gs, TG).indices
            keep = torch.zeros_like(gs).scatter_(1, gi, 1.0).bool().repeat_interleave(E // G, dim=1)
            probs_sel = probs.masked_fill(~keep, 0.0)
        else:
            probs_sel = probs
        wts, idx = topk_desc(probs_sel, k)
        return logits, idx, wts * c["routed_scaling_factor"]  # never renormalised in V2
    if arch == "deepseek_v3":
        s = torch.sigmoid(logits)
        bias = w[p + "gate.e_score_correction_bias"]
        sc = s + bias  # bias only for *choosing*
        G, TG = c["n_group"], c["topk_group"]
        gs = sc.view(-1, G, E // G).topk(2, -1).values.sum(-1)  # group score: sum of its top-2
        gi = topk_desc(gs, TG).indices
        keep = torch.zeros_like(gs).scatter_(1, gi, 1.0).bool().repeat_interleave(E // G, dim=1)
        idx = topk_desc(sc.masked_fill(~keep, float("-inf")), k).indices
        wts = s.gather(1, idx)  # weights from the unbiased sigmoid
        if c.get("norm_topk_prob", True):
            wts = wts / (wts.sum(-1, keepdim=True) + 1e-20)
        return logits, idx, wts * c["routed_scaling_factor"]
    raise KeyError(arch)


def expert_names(arch, p, e):
    if arch == "mixtral":
        b = f"{p}block_sparse_moe.experts.{e}."
        return b + "w1.weight", b + "w3.weight", b + "w2.weight"  # gate, up, down
    b = f"{p}mlp.experts.{e}."
    return b + "gate_proj.weight", b + "up_proj.weight", b + "down_proj.weight"


def moe_block(arch, c, w, p, x, rec, layer):
    mp = p + ("block_sparse_moe." if arch == "mixtral" else "mlp.")
    logits, idx, wts = route(arch, c, w, mp, x)
    rec[layer] = (logits, idx, wts)
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            g, u, d = expert_names(arch, p, int(idx[t, j]))
            out[t] += wts[t, j] * swiglu(x[t], w[g], w[u], w[d])
    if arch == "qwen2_moe":
        sp = mp + "shared_expert."
        shared = swiglu(x, w[sp + "gate_proj.weight"], w[sp + "up_proj.weight"], w[sp + "down_proj.weight"])
        gate = torch.sigmoid(linear(x, w[mp + "shared_expert_gate.weight"]))  # [L, 1]
        out = out + gate * shared
    if arch in ("deepseek_v2", "deepseek_v3"):
        sp = mp + "shared_experts."
        out = out + swiglu(x, w[sp + "gate_proj.weight"], w[sp + "up_proj.weight"], w[sp + "down_proj.weight"])
    return out


def is_moe_layer(arch, c, i):
    if arch in ("mixtral", "olmoe"):
        return True
    if arch in ("qwen2_moe", "qwen3_moe"):
        return i not in (c.get("mlp_only_layers") or []) and c["_num_experts"] > 0 and (i + 1) % c.get("decoder_sparse_step", 1) == 0
    if arch in ("deepseek_v2", "deepseek_v3"):
        # transformers ignores moe_layer_freq (always 1 in released checkpoints)
        return i >= c.get("first_k_dense_replace", 0)
    raise KeyError(arch)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def forward(arch, c, w, ids):
    L = ids.shape[0]
    pos = torch.arange(L)
    eps = c["rms_norm_eps"]
    x = w["model.embed_tokens.weight"][ids]
    rec = {}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        attn = mla_attention if arch.startswith("deepseek") else gqa_attention
        x = x + attn(arch, c, w, p + "self_attn.", h, pos)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        if is_moe_layer(arch, c, i):
            x = x + moe_block(arch, c, w, p, h, rec, i)
        else:
            mp = p + "mlp."
            x = x + swiglu(h, w[mp + "gate_proj.weight"], w[mp + "up_proj.weight"], w[mp + "down_proj.weight"])
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else w["lm_head.weight"]
    return linear(x, head), rec


def check(name: str, d: Path) -> bool:
    c = load_config(d)
    arch = c["model_type"]  # the fixture name, except for deepseek_v3_yarn
    w = load_checkpoint(d)
    exp = load_file(str(d / "expected.safetensors"))
    ids = exp["input_ids"][0]
    with torch.no_grad():
        logits, rec = forward(arch, c, w, ids)
    ok = True
    dl = (logits - exp["logits"][0]).abs().max().item()
    ok &= dl <= 1e-4
    msgs = [f"logits {dl:.2e}"]
    for i, (rl, idx, wts) in sorted(rec.items()):
        dr = (rl - exp[f"router_logits.{i}"]).abs().max().item()
        same = [sorted(r) for r in idx.tolist()] == [sorted(r) for r in exp[f"chosen_experts.{i}"].tolist()]
        # compare weights keyed by expert id
        ew = {(t, int(e)): float(v) for t in range(idx.shape[0]) for e, v in zip(exp[f"chosen_experts.{i}"][t], exp[f"routing_weights.{i}"][t])}
        dw = max(abs(float(wts[t, j]) - ew.get((t, int(idx[t, j])), float("inf"))) for t in range(idx.shape[0]) for j in range(idx.shape[1]))
        ok &= same and dr <= 1e-4 and dw <= 1e-4
        msgs.append(f"L{i}: router {dr:.1e} experts {'same' if same else 'DIFF'} weights {dw:.1e}")
    seq = ids.clone()
    with torch.no_grad():
        for _ in range(exp["greedy"].numel()):
            lg, _ = forward(arch, c, w, seq)
            seq = torch.cat([seq, lg[-1].argmax().view(1)])
    g_ok = torch.equal(seq[ids.numel():], exp["greedy"])
    ok &= g_ok
    msgs.append(f"greedy {'same' if g_ok else 'DIFF'}")
    print(f"{'ok  ' if ok else 'FAIL'} {name}: " + "; ".join(msgs))
    return ok


def main():
    torch.set_num_threads(1)
    names = sys.argv[1:] or ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "deepseek_v3_yarn"]
    ok = True
    for n in names:
        ok &= check(n, FIXTURES / n)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
