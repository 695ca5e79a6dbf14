#!/usr/bin/env python3
"""Reference numbers for RoPE scaling (linear, YaRN), printed as Rust constants for
`crates/models/tests/rope.rs`.

Uses transformers' own functions: `ROPE_INIT_FUNCTIONS[rope_type]` (for YaRN
`_compute_yarn_parameters`) for the inverse frequencies and the cos/sin factor,
`DeepseekV3RotaryEmbedding` for the cos/sin tables, and DeepSeek-V3's
`yarn_apply_mscale` for the factor on the attention softmax scale.

Usage: .venv-ref/bin/python scripts/reference/rope_scaling.py
"""

import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3RotaryEmbedding,
    yarn_apply_mscale,
)

POSITIONS = [5, 37]

# name -> (rope dim, max_position_embeddings, rope_parameters)
CASES = {
    # DeepSeek-V3's config on the Hub (qk_rope_head_dim 64)
    "V3": (64, 163840, dict(rope_theta=10000.0, rope_type="yarn", factor=40.0,
                            original_max_position_embeddings=4096, beta_fast=32, beta_slow=1,
                            mscale=1.0, mscale_all_dim=1.0)),
    # the deepseek_v3_yarn fixture
    "FIXTURE": (16, 128, dict(rope_theta=10000.0, rope_type="yarn", factor=4.0,
                              original_max_position_embeddings=32, beta_fast=32, beta_slow=1,
                              mscale=1.0, mscale_all_dim=1.0)),
    # no mscale keys: cos/sin factor 0.1 ln(factor) + 1, no softmax factor
    "PLAIN": (8, 256, dict(rope_theta=1e6, rope_type="yarn", factor=4.0,
                           original_max_position_embeddings=64)),
    # mscale != mscale_all_dim, truncate off, non-default betas
    "ODD": (8, 4096, dict(rope_theta=500.0, rope_type="yarn", factor=8.0,
                          original_max_position_embeddings=512, beta_fast=16, beta_slow=2,
                          mscale=0.9, mscale_all_dim=0.5, truncate=False)),
    "LINEAR": (8, 256, dict(rope_theta=10000.0, rope_type="linear", factor=2.0)),
}


def main():
    transformers.logging.set_verbosity_error()
    for name, (dim, max_pos, rp) in CASES.items():
        cfg = transformers.DeepseekV3Config(
            hidden_size=64, num_attention_heads=4, qk_rope_head_dim=dim,
            max_position_embeddings=max_pos, rope_parameters=dict(rp),
        )
        inv, af = ROPE_INIT_FUNCTIONS[rp["rope_type"]](cfg)
        softmax = yarn_apply_mscale(cfg.rope_parameters, 1.0)
        cos, sin = DeepseekV3RotaryEmbedding(cfg)(torch.zeros(1), torch.tensor([POSITIONS]))
        half = dim // 2
        print(f"// {name}: {rp}")
        print(f"const {name}_INV_FREQ: [f64; {half}] = {[float(x) for x in inv]};")
        print(f"const {name}_ATTENTION_FACTOR: f64 = {float(af)!r};")
        print(f"const {name}_SOFTMAX_FACTOR: f64 = {float(softmax)!r};")
        for i, p in enumerate(POSITIONS):
            print(f"const {name}_COS_{p}: [f64; {half}] = {cos[0, i, :half].tolist()};")
            print(f"const {name}_SIN_{p}: [f64; {half}] = {sin[0, i, :half].tolist()};")


if __name__ == "__main__":
    main()
