#!/usr/bin/env python3
"""PyTorch reference values for Switchyard's MoE auxiliary losses.

Deterministic and self-contained: inputs come from explicit closed-form
formulas (no RNG), everything is float64 on CPU. Writes
scripts/reference/losses.json (or the path given with --out; "-" = stdout).

This script is NOT run in CI. Its output is a committed fixture that the
Rust tests read. See README.md in this directory for the exact definitions.
"""

import argparse
import json
import math
import os
import sys

import torch

DTYPE = torch.float64
MIN_GAP = 1e-3  # required separation between the top-(k+1) values of a row

# (name, T, E, k, phase) -- `phase` shifts the formulas so cases differ.
CASES = [
    ("a", 8, 4, 2, 0.0),
    ("b", 16, 8, 1, 0.5),
    ("c", 12, 6, 3, 1.0),
]


# ---------------------------------------------------------------- inputs ----
def _grid(T, E, f):
    """[T][E] list with entry f(i) where i = t*E + e (row-major flat index)."""
    return [[f(t * E + e) for e in range(E)] for t in range(T)]


def _softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def make_inputs(T, E, phase):
    # logits[t,e] = round(2.5 * sin(1.7 i + 0.3 + phase), 6)
    logits = _grid(T, E, lambda i: round(math.sin(1.7 * i + 0.3 + phase) * 2.5, 6))
    # eps[t,e]    = round(cos(2.3 i + 0.7 + phase), 6)
    eps = _grid(T, E, lambda i: round(math.cos(2.3 * i + 0.7 + phase), 6))
    # noise_std   = softplus(round(sin(0.9 i + 1.1 + phase), 6))   (> 0)
    noise_std = _grid(
        T, E, lambda i: _softplus(round(math.sin(0.9 * i + 1.1 + phase), 6))
    )
    noisy = [
        [logits[t][e] + noise_std[t][e] * eps[t][e] for e in range(E)]
        for t in range(T)
    ]
    return logits, noisy, noise_std


def check_separated(name, what, rows, k):
    """Assert the top-(k+1) values of every row are pairwise >= MIN_GAP apart,
    and (when the row has one) the (k+1)-th is >= MIN_GAP above the (k+2)-th,
    so top-k / top-(k+1) selections are unambiguous."""
    for t, row in enumerate(rows):
        s = sorted(row, reverse=True)
        m = min(k + 2, len(s))
        for j in range(m - 1):
            gap = s[j] - s[j + 1]
            assert gap >= MIN_GAP, (
                f"case {name}: {what} row {t}: sorted[{j}]-sorted[{j+1}] = {gap} "
                f"< {MIN_GAP}; tweak the formula/phase"
            )


# ---------------------------------------------------------------- losses ----
def cv_squared(x):
    mean = x.mean()
    var = ((x - mean) ** 2).mean()  # population variance
    return var / (mean**2 + 1e-10)


def switch_lb(logits, k):
    T, E = logits.shape
    probs = torch.softmax(logits, dim=-1)
    topi = torch.topk(logits, k, dim=-1).indices  # [T,k]
    counts = torch.zeros(E, dtype=DTYPE).scatter_add_(
        0, topi.reshape(-1), torch.ones(T * k, dtype=DTYPE)
    )
    f = counts / (T * k)  # non-differentiable
    P = probs.mean(dim=0)
    return E * (f * P).sum()


def z_loss(logits):
    return (torch.logsumexp(logits, dim=-1) ** 2).mean()


def importance_loss(noisy_logits, k):
    vals, idx = torch.topk(noisy_logits, k, dim=-1)
    gates = torch.zeros_like(noisy_logits).scatter(1, idx, torch.softmax(vals, dim=-1))
    importance = gates.sum(dim=0)
    return cv_squared(importance)


def load_loss(logits, noisy_logits, noise_std, k):
    # noisy_logits is an independent (constant) input here: gradients are
    # taken w.r.t. logits and noise_std only.
    noisy = noisy_logits.detach()
    top = torch.sort(noisy, dim=-1, descending=True).values[:, : k + 1]
    thr_in = top[:, k : k + 1]  # (k+1)-th largest  -> used when expert IS in top-k
    thr_out = top[:, k - 1 : k]  # k-th largest     -> used when expert is NOT in top-k
    is_in = noisy > thr_in
    normal = torch.distributions.Normal(
        torch.tensor(0.0, dtype=DTYPE), torch.tensor(1.0, dtype=DTYPE)
    )
    p_in = normal.cdf((logits - thr_in) / noise_std)
    p_out = normal.cdf((logits - thr_out) / noise_std)
    prob = torch.where(is_in, p_in, p_out)
    load = prob.sum(dim=0)
    return cv_squared(load)


# ------------------------------------------------------------------ main ----
def _grad(loss_fn, *inputs):
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    loss = loss_fn(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    return loss.item(), [g.tolist() for g in grads]


def run_case(name, T, E, k, phase):
    logits_l, noisy_l, std_l = make_inputs(T, E, phase)
    check_separated(name, "logits", logits_l, k)
    check_separated(name, "noisy_logits", noisy_l, k)
    assert all(s > 0 for row in std_l for s in row)

    logits = torch.tensor(logits_l, dtype=DTYPE)
    noisy = torch.tensor(noisy_l, dtype=DTYPE)
    std = torch.tensor(std_l, dtype=DTYPE)

    lb, (g_lb,) = _grad(lambda l: switch_lb(l, k), logits)
    z, (g_z,) = _grad(z_loss, logits)
    imp, (g_imp,) = _grad(lambda n: importance_loss(n, k), noisy)
    ld, (g_ld_l, g_ld_s) = _grad(lambda l, s: load_loss(l, noisy, s, k), logits, std)

    return {
        "name": name,
        "T": T,
        "E": E,
        "k": k,
        "logits": logits_l,
        "noisy_logits": noisy_l,
        "noise_std": std_l,
        "switch_lb": lb,
        "z_loss": z,
        "importance": imp,
        "load": ld,
        "grad_switch_lb_logits": g_lb,
        "grad_z_loss_logits": g_z,
        "grad_importance_noisy_logits": g_imp,
        "grad_load_logits": g_ld_l,
        "grad_load_noise_std": g_ld_s,
    }


def _dump(obj, indent=0):
    """JSON with one matrix row per line (compact but diff-friendly).
    Floats use Python's repr, i.e. shortest string that round-trips f64."""
    pad = "  " * indent
    if isinstance(obj, dict):
        items = [
            f'{pad}  {json.dumps(k)}: {_dump(v, indent + 1).lstrip()}'
            for k, v in obj.items()
        ]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], list):
        rows = [pad + "  " + json.dumps(r) for r in obj]
        return pad + "[\n" + ",\n".join(rows) + "\n" + pad + "]"
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        return pad + "[\n" + ",\n".join(_dump(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return pad + json.dumps(obj)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "losses.json"),
                    help='output path ("-" for stdout); default: losses.json next to this script')
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    doc = {
        "generator": "scripts/reference/losses.py",
        "torch_version": torch.__version__,
        "cases": [run_case(*c) for c in CASES],
    }
    text = _dump(doc) + "\n"
    json.loads(text)  # sanity: valid JSON
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
