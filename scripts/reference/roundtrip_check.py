#!/usr/bin/env python3
"""Check that a checkpoint exported by Switchyard loads in transformers and
gives the fixture's logits.

Typical round trip (optional, not run in CI):

    cargo run --release -- import crates/interop/tests/fixtures/mixtral --out /tmp/sy-mixtral
    cargo run --release -- export --ckpt /tmp/sy-mixtral --out /tmp/hf-mixtral
    .venv-ref/bin/python scripts/reference/roundtrip_check.py /tmp/hf-mixtral \
        --fixture crates/interop/tests/fixtures/mixtral

For a natively trained model, `switchyard logits --model RUN --ids '[...]'
--greedy 16 --out REF/expected.safetensors` writes a reference directory to
pass as --fixture REF.

The script loads EXPORT_DIR with `AutoModelForCausalLM.from_pretrained`
(float32, eager attention, eager experts), runs the fixture's `input_ids`
and compares with the fixture's `expected.safetensors`:

  * logits: prints max |delta|; fails above --tol (default 1e-4);
  * router logits and chosen experts of every MoE layer (experts compared as
    sets per token, since DeepSeek's gate uses topk(sorted=False));
  * the 32 greedy tokens (model.generate, do_sample=False, KV cache on).

Exit status: 0 when everything matches, 1 on a mismatch, 2 on a usage or
load error.

`--fixture` may be a fixture directory or a fixture name (mixtral, qwen2_moe,
qwen3_moe, olmoe, deepseek_v2, deepseek_v3, deepseek_v3_yarn). Without --fixture the script
guesses it from the exported config.json's model_type.

Passing a fixture directory as EXPORT_DIR as well checks the fixture itself
(it must give max |delta| = 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "crates" / "interop" / "tests" / "fixtures"

MODEL_TYPE_TO_FIXTURE = {
    "mixtral": "mixtral",
    "qwen2_moe": "qwen2_moe",
    "qwen3_moe": "qwen3_moe",
    "olmoe": "olmoe",
    "deepseek_v2": "deepseek_v2",
    "deepseek_v3": "deepseek_v3",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir", type=Path, help="directory written by `switchyard export`")
    ap.add_argument("--fixture", help="fixture directory or name (default: from config.json model_type)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max |delta logits| allowed (default 1e-4)")
    ap.add_argument("--no-generate", action="store_true", help="skip the greedy-token comparison")
    args = ap.parse_args()

    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)

    cfg_path = args.export_dir / "config.json"
    if not cfg_path.is_file():
        print(f"error: {cfg_path} not found", file=sys.stderr)
        return 2
    model_type = json.loads(cfg_path.read_text()).get("model_type")

    if args.fixture is None:
        name = MODEL_TYPE_TO_FIXTURE.get(model_type)
        if name is None:
            print(f"error: no fixture for model_type {model_type!r}; pass --fixture", file=sys.stderr)
            return 2
        fixture = FIXTURES / name
    else:
        p = Path(args.fixture)
        fixture = p if p.is_dir() else FIXTURES / args.fixture
    exp_path = fixture / "expected.safetensors"
    if not exp_path.is_file():
        print(f"error: {exp_path} not found", file=sys.stderr)
        return 2
    expected = load_file(str(exp_path))

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(args.export_dir),
            dtype=torch.float32,
            attn_implementation="eager",
            experts_implementation="eager",
        )
    except Exception as e:  # noqa: BLE001
        print(f"error: transformers could not load {args.export_dir}: {e}", file=sys.stderr)
        return 2
    model.eval()
    print(f"transformers {transformers.__version__}: loaded {type(model).__name__} from {args.export_dir}")
    print(f"fixture: {fixture}")

    # Record every MoE gate's (router_logits, weights, indices).
    calls: dict[int, list] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None and hasattr(gate, "top_k"):
            calls[i] = []
            hooks.append(gate.register_forward_hook(lambda m, inp, out, i=i: calls[i].append(out)))

    input_ids = expected["input_ids"]
    with torch.no_grad():
        out = model(input_ids=input_ids, use_cache=False)
    for h in hooks:
        h.remove()

    ok = True
    exp_logits = expected["logits"]
    if tuple(out.logits.shape) != tuple(exp_logits.shape):
        print(f"FAIL logits shape {tuple(out.logits.shape)} != expected {tuple(exp_logits.shape)}")
        return 1
    d = (out.logits.float() - exp_logits).abs().max().item()
    status = "ok" if d <= args.tol else "FAIL"
    ok &= d <= args.tol
    print(f"{status:4} logits: max |delta| = {d:.3e} (tol {args.tol:g})")

    exp_layers = sorted(int(k.split(".")[1]) for k in expected if k.startswith("router_logits."))
    if sorted(calls) != exp_layers:
        print(f"FAIL MoE layers {sorted(calls)} != expected {exp_layers}")
        ok = False
    for i in exp_layers:
        if i not in calls or not calls[i]:
            continue
        logits, _, idx = calls[i][0]
        want_rl = expected[f"router_logits.{i}"]
        if tuple(logits.shape) != tuple(want_rl.shape):
            print(f"FAIL layer {i}: router logits shape {tuple(logits.shape)} != expected {tuple(want_rl.shape)}")
            ok = False
            continue
        dr = (logits.float() - want_rl).abs().max().item()
        got = [sorted(r) for r in idx.tolist()]
        want = [sorted(r) for r in expected[f"chosen_experts.{i}"].tolist()]
        same = got == want
        ok &= same and dr <= args.tol
        print(f"{'ok' if dr <= args.tol else 'FAIL':4} layer {i}: router logits max |delta| = {dr:.3e}")
        if not same:
            bad = [t for t, (a, b) in enumerate(zip(got, want)) if a != b]
            print(f"FAIL layer {i}: chosen experts differ at tokens {bad}")

    if not args.no_generate:
        with torch.no_grad():
            gen = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=int(expected["greedy"].numel()),
                use_cache=True,
                pad_token_id=0,
            )
        greedy = gen[0, input_ids.shape[1]:]
        same = torch.equal(greedy, expected["greedy"])
        ok &= same
        print(f"{'ok' if same else 'FAIL':4} greedy: {greedy.tolist()}")
        if not same:
            print(f"     expected: {expected['greedy'].tolist()}")

    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
