#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the repository's own test inputs.

    python3 fuzz/seeds.py [--switchyard target/debug/switchyard] [--out fuzz/corpus]

- run_config: every configs/*.toml, some with `--set` overrides (NUL-separated after the TOML).
- tokenizer:  every HF fixture's tokenizer.json with its config.json and a text.
- hf_import:  every HF fixture directory (crates/interop/tests/fixtures/*) as a bundle.
- checkpoint: step directories made by the `switchyard` binary: each HF fixture imported, and
  a one-step `train` run of configs/tiny.toml (skipped, with a note, when no binary is given
  or found).

The bundle format is described in fuzz/src/lib.rs. Seeds are rewritten on every run, so the
corpus follows the fixtures; inputs the fuzzer adds beside them are kept.
"""
import argparse
import hashlib
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates/interop/tests/fixtures"
STATE_HEADER = b'{"crc32": "'
STATE_BETWEEN = b'", "state": '
STATE_FOOTER = b"}\n"


def bundle(files):
    out = b""
    for name, data in files:
        n = name.encode()
        out += bytes([len(n)]) + n + struct.pack("<I", len(data)) + data
    return out


def write_seed(out_dir, data):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def fixture_dirs():
    return sorted(d for d in FIXTURES.iterdir() if (d / "config.json").is_file())


def dir_files(d, skip=("expected.safetensors", "meta.json")):
    return [(f.name, f.read_bytes()) for f in sorted(d.iterdir()) if f.is_file() and f.name not in skip]


def run_config_seeds(out):
    for cfg in sorted((ROOT / "configs").glob("*.toml")):
        text = cfg.read_bytes()
        write_seed(out, text)
        write_seed(out, text + b"\0model.n_layers=3\0model.ffn.sparse.router.k=1")
        write_seed(out, text + b'\0model.ffn.sparse.router={ type = "expert_choice", capacity_factor = 2.0 }')
    write_seed(out, b"\0optim.lr=1e-3\0train.steps=10")
    write_seed(out, b"")


def tokenizer_seeds(out):
    for d in fixture_dirs():
        if (d / "tokenizer.json").is_file():
            files = [(n, b) for n, b in dir_files(d) if n in ("tokenizer.json", "tokenizer_config.json", "config.json")]
            write_seed(out, bundle(files + [("text", b"def f(x): return {\"id\": 42}  # \xc3\xa9t\xc3\xa9")]))


def hf_import_seeds(out):
    for d in fixture_dirs():
        write_seed(out, bundle(dir_files(d)))


def checkpoint_seeds(out, exe):
    if exe is None:
        print("seeds.py: no switchyard binary; checkpoint seeds skipped", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        runs = []
        for d in fixture_dirs()[:3]:
            run = tmp / d.name
            subprocess.run([exe, "import", str(d), "--out", str(run)], check=True, capture_output=True)
            runs.append(run)
        run = tmp / "tiny"
        subprocess.run([exe, "train", "--config", str(ROOT / "configs/tiny.toml"), "--steps", "1",
                        "--set", "model.d_model=16", "--set", "model.n_layers=1", "--set", "data.docs_per_domain=4",
                        "--set", "data.seq_len=32", "--set", "model.max_seq_len=32", "--set", "optim.warmup_steps=0",
                        "--set", "train.eval_every=1", "--set", "train.checkpoint_every=1", "--batch-size", "2",
                        "--run-dir", str(run)], check=True, capture_output=True)
        runs.append(run)
        for run in runs:
            step = run / (run / "latest").read_text().strip()
            files = dir_files(step, skip=())
            state = dict(files)["state.json"]
            assert state.startswith(STATE_HEADER) and state.endswith(STATE_FOOTER)
            body = state[len(STATE_HEADER) + 8 + len(STATE_BETWEEN):-len(STATE_FOOTER)]
            framed = [(n, body if n == "state.json" else b) for n, b in files]
            write_seed(out, b"\x03" + bundle(framed))  # body, framed and checksummed by the target
            write_seed(out, b"\x00" + bundle(files))  # the files exactly as written


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--switchyard", help="the switchyard binary (default: target/debug/switchyard if built)")
    ap.add_argument("--out", default=str(ROOT / "fuzz/corpus"))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    exe = args.switchyard
    if exe is None:
        cand = ROOT / "target/debug/switchyard"
        exe = str(cand) if cand.is_file() else None
    run_config_seeds(out / "run_config")
    tokenizer_seeds(out / "tokenizer")
    hf_import_seeds(out / "hf_import")
    checkpoint_seeds(out / "checkpoint", exe)
    for t in sorted(out.iterdir()):
        print(f"{t.name}: {len(list(t.iterdir()))} inputs")


if __name__ == "__main__":
    main()
