"""Golden values for tests/rope.rs: HF Llama's rotate-half RoPE, written out by hand.

Run with: python3 crates/models/scripts/reference/rope.py   (standard library only)

torch equivalent (transformers/models/llama/modeling_llama.py):
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    emb = torch.cat((freqs, freqs), dim=-1); cos, sin = emb.cos(), emb.sin()
    q_embed = (q * cos) + (rotate_half(q) * sin)   # rotate_half(x) = cat(-x2, x1)
"""
import math

base, dim = 10000.0, 4
x = [1.0, 2.0, 3.0, 4.0]
inv_freq = [1.0 / base ** (i / dim) for i in range(0, dim, 2)]
for pos in (1, 3):
    ang = [pos * f for f in inv_freq] * 2
    rot = [-x[2], -x[3], x[0], x[1]]
    out = [x[i] * math.cos(ang[i]) + rot[i] * math.sin(ang[i]) for i in range(dim)]
    print(f"pos {pos}: [{', '.join(repr(v) for v in out)}]")
