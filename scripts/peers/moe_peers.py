#!/usr/bin/env python3
"""PyTorch peers of `switchyard bench`: the same MoE shapes, forward+backward, on CPU.

Two implementations per config, both with a linear gate, softmax top-k routing renormalised
over the kept experts (as Mixtral), SwiGLU experts, f32:
  - hf_eager:  HF transformers' `MixtralSparseMoeBlock` with `_experts_implementation = "eager"`
               (its per-expert loop over a one-hot mask);
  - sorted:    a sorted grouped implementation: argsort the T·k assignments by expert, gather
               the rows once, one pair of matmuls per expert on its contiguous block, scale,
               `index_add_` back.
Active FLOPs are counted exactly as switchyard-bench counts them:
  forward = T·k·3·2·d·h + T·d·E·2, forward+backward = 3 × forward.

Usage (not part of CI; needs torch and transformers, e.g. the repo's .venv-ref):
  .venv-ref/bin/python scripts/peers/moe_peers.py --threads 1,2 [--ours bench.json] [--json peers.json]
With --ours (switchyard-bench --json output) it prints our fwd+bwd GFLOP/s over each peer's.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

CONFIGS = {
    # name: (experts, k, d, h)
    "mixtral8": (8, 2, 512, 1024),
    "fine64": (64, 8, 512, 256),
}
SEED = 17


def fwd_flops(t, e, k, d, h):
    return t * k * 3 * 2 * d * h + t * d * e * 2


class SortedMoe(torch.nn.Module):
    """Sort assignments by expert, per-expert matmuls on contiguous blocks, index_add back."""

    def __init__(self, e, k, d, h):
        super().__init__()
        self.e, self.k, self.h = e, k, h
        self.gate = torch.nn.Linear(d, e, bias=False)
        self.w13 = torch.nn.Parameter(torch.randn(e, 2 * h, d) * d**-0.5)
        self.w2 = torch.nn.Parameter(torch.randn(e, d, h) * h**-0.5)

    def forward(self, x):
        t, d = x.shape
        probs = F.softmax(self.gate(x), dim=-1)
        # torch: w, idx = torch.topk(probs, k); w /= w.sum(-1, keepdim=True)
        w, idx = torch.topk(probs, self.k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        flat_e = idx.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        tok = order // self.k
        counts = torch.bincount(flat_e, minlength=self.e).tolist()
        xs = x[tok]
        outs = []
        # unbind once: indexing the stacked weights per expert would make autograd add a full
        # zero-filled [E, ...] gradient per expert
        w13s, w2s = self.w13.unbind(0), self.w2.unbind(0)
        for e, block in enumerate(torch.split(xs, counts)):
            if block.shape[0] == 0:
                continue
            g, u = (block @ w13s[e].t()).chunk(2, dim=-1)
            outs.append((F.silu(g) * u) @ w2s[e].t())
        o = torch.cat(outs) * w.reshape(-1)[order, None]
        return torch.zeros_like(x).index_add(0, tok, o)


def hf_block(e, k, d, h):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    cfg = MixtralConfig(hidden_size=d, intermediate_size=h, num_local_experts=e, num_experts_per_tok=k,
                        router_jitter_noise=0.0, hidden_act="silu")
    cfg._experts_implementation = "eager"
    block = MixtralSparseMoeBlock(cfg)
    with torch.no_grad():
        for p in block.parameters():  # the 3-D expert weights start uninitialised
            p.normal_(0.0, d**-0.5)
    return block


def median_secs(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fwd_bwd(module, x, hf):
    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        y = module(x.unsqueeze(0) if hf else x)
        y.sum().backward()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--configs", default="mixtral8,fine64")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ours", help="switchyard-bench --json output to compare against")
    ap.add_argument("--json", help="write one JSON object per row here")
    args = ap.parse_args()

    ours = {}
    if args.ours:
        for line in open(args.ours):
            r = json.loads(line)
            if r["mode"] == "fwd_bwd":
                ours[(r["config"], r["threads"])] = r["gflops"]

    rows = []
    print(f"torch {torch.__version__}, BLAS: {torch.backends.mkl.is_available() and 'MKL' or 'other'}, "
          f"CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'impl':<10} {'config':<10} {'thr':>3} {'ms':>9} {'GFLOP/s':>8} {'ours/peer':>9}")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        s = median_secs(lambda: a @ b, args.reps)
        dense = 2 * n**3 / s / 1e9
        print(f"{'matmul':<10} {'1024^3':<10} {threads:>3} {s * 1e3:>9.2f} {dense:>8.1f}")
        rows.append(dict(impl="torch_matmul", config="matmul_1024", threads=threads, seconds=s, gflops=dense))
        for name in args.configs.split(","):
            e, k, d, h = CONFIGS[name]
            flops = 3 * fwd_flops(args.tokens, e, k, d, h)
            for impl in ["hf_eager", "sorted"]:
                torch.manual_seed(SEED)
                module = hf_block(e, k, d, h) if impl == "hf_eager" else SortedMoe(e, k, d, h)
                x = torch.randn(args.tokens, d, requires_grad=True)
                s = median_secs(fwd_bwd(module, x, impl == "hf_eager"), args.reps)
                g = flops / s / 1e9
                mine = ours.get((name, threads))
                ratio = f"{mine / g:>9.2f}" if mine else f"{'-':>9}"
                print(f"{impl:<10} {name:<10} {threads:>3} {s * 1e3:>9.2f} {g:>8.1f} {ratio}")
                rows.append(dict(impl=impl, config=name, mode="fwd_bwd", threads=threads, seconds=s, gflops=g,
                                 ours_gflops=mine, ours_over_peer=(mine / g) if mine else None))
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
