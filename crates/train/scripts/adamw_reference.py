#!/usr/bin/env python3
"""Reference values for switchyard-train's AdamW (crates/train/tests/optim.rs).

Runs torch.optim.AdamW (float32, CPU, single-tensor path: foreach=False) for 3 steps on two
small parameters, one in a weight-decay group and one (a bias) in a no-decay group, with a
different learning rate each step. Also recomputes every value in float64 straight from the
formula and checks both agree. Prints the float32 results in Rust literal form; they are
pasted into the test. Not run in CI.

    .venv-ref/bin/python crates/train/scripts/adamw_reference.py
"""

import math

import numpy as np
import torch

BETA1, BETA2, EPS, WD = 0.9, 0.999, 1e-8, 0.1
LRS = [1e-2, 2e-2, 5e-3]  # the scheduler's lr for steps 1, 2, 3
W0 = [[0.5, -1.0, 0.25], [2.0, 0.0, -0.75]]
B0 = [0.1, -0.2, 0.3]
# Gradient of step s (1-based) for element i (row-major): fixed, varied, one exact zero.
GW = [
    [[0.1, -0.2, 0.0], [0.4, 1.5, -0.05]],
    [[-0.3, 0.1, 0.0], [0.2, 1.0, 0.05]],
    [[0.2, 0.3, 0.0], [-0.1, 0.5, -0.02]],
]
GB = [[0.01, -0.5, 2.0], [0.02, 0.5, -1.0], [0.03, -0.1, 0.5]]


def torch_run():
    w = torch.tensor(W0, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(B0, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.AdamW(
        [{"params": [w], "weight_decay": WD}, {"params": [b], "weight_decay": 0.0}],
        lr=LRS[0], betas=(BETA1, BETA2), eps=EPS, foreach=False,
    )
    out = []
    for s in range(3):
        for g in opt.param_groups:
            g["lr"] = LRS[s]
        w.grad = torch.tensor(GW[s], dtype=torch.float32)
        b.grad = torch.tensor(GB[s], dtype=torch.float32)
        opt.step()
        out.append((w.detach().clone(), b.detach().clone()))
    st = opt.state[w]
    return out, st["exp_avg"].clone(), st["exp_avg_sq"].clone()


def formula_run(p0, grads, wd):
    """float64, element by element:
    p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)"""
    p = list(p0)
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    hist = []
    for s in range(3):
        t, lr = s + 1, LRS[s]
        for i, g in enumerate(grads[s]):
            p[i] -= lr * wd * p[i]
            m[i] = BETA1 * m[i] + (1 - BETA1) * g
            v[i] = BETA2 * v[i] + (1 - BETA2) * g * g
            mhat = m[i] / (1 - BETA1 ** t)
            vhat = v[i] / (1 - BETA2 ** t)
            p[i] -= lr * mhat / (math.sqrt(vhat) + EPS)
        hist.append(list(p))
    return hist, m, v


def flat(x):
    return [float(v) for v in torch.tensor(x).flatten()]


def rust(name, xs):
    # str(np.float32(v)) is the shortest text that reads back as the same f32.
    vals = ", ".join(str(np.float32(v)) for v in xs)
    print(f"const {name}: [f32; {len(xs)}] = [{vals}];")


if __name__ == "__main__":
    steps, m_w, v_w = torch_run()
    hw, fm, fv = formula_run(flat(W0), [flat(g) for g in GW], WD)
    hb, _, _ = formula_run(B0, GB, 0.0)
    for s in range(3):
        tw, tb = steps[s][0].flatten().tolist(), steps[s][1].tolist()
        assert max(abs(a - b) for a, b in zip(tw, hw[s])) < 1e-6, (s, tw, hw[s])
        assert max(abs(a - b) for a, b in zip(tb, hb[s])) < 1e-6, (s, tb, hb[s])
        rust(f"W_STEP{s + 1}", tw)
        rust(f"B_STEP{s + 1}", tb)
    rust("W_EXP_AVG", m_w.flatten().tolist())
    rust("W_EXP_AVG_SQ", v_w.flatten().tolist())
    print("# float64 formula, step 3, W:", hw[2])
    print("# torch", torch.__version__)
