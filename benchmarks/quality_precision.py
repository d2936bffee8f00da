"""What int8 and bfloat16 cost in quality: minigen's reduced dtypes beside CTranslate2 on the same weights.

    python benchmarks/quality_precision.py            # the table in docs/precision.md
    python benchmarks/quality_precision.py --quick    # fewer windows, no GPT-2 small: checks the script

Two models:
  - the shipped gutenberg-6l (fixed trained weights), teacher-forced over windows of 256 tokens of
    its validation book (../shared/data/corpora/gutenberg-classics/98-a-tale-of-two-cities.txt,
    never trained on; weights_tools/TRAINING.md);
  - the GPT-2 small shape with random weights (seed 0), over random tokens: its logits are nearly
    flat, so top-1 agreement there is a harsh test of rounding, and perplexity means nothing.
For each: top-1 agreement of every position's argmax with float32's, the largest logit difference,
perplexity and its change against float32, for minigen bfloat16 / int8 and CTranslate2 float32 /
int8 (the model written with weights_tools.export_hf and converted by CTranslate2's own converter),
then greedy continuations of three openings side by side (shipped model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_generate import SHAPES, machine_name, write_random_checkpoint  # noqa: E402

HELD_OUT = ROOT.parent / "shared" / "data" / "corpora" / "gutenberg-classics" / "98-a-tale-of-two-cities.txt"
WINDOW = 256
OPENINGS = ("It was the best of times,", "The old man looked at the door and", "She said that")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def figures(logits: np.ndarray, ids: np.ndarray) -> dict:
    """Per-position argmax and the perplexity of ids [rows, WINDOW] under logits [rows, WINDOW, vocab]."""
    logp = log_softmax(logits)
    nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1).mean()
    return {"top1": logits.argmax(-1), "ppl": float(np.exp(nll)), "logits": logits}


def ct2_system(hf_dir: Path, work: Path, compute_type: str):
    """logits(ids) through CTranslate2's converter and forward pass at `compute_type`."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    out = work / f"ct2-{hf_dir.name}"
    if not out.exists():
        TransformersConverter(str(hf_dir)).convert(str(out), quantization="float32")
    generator = ctranslate2.Generator(str(out), device="cpu", compute_type=compute_type,
                                      intra_threads=os.cpu_count() or 1)
    vocab = json.loads((out / "vocabulary.json").read_text())  # id -> token string

    def logits(ids: np.ndarray) -> np.ndarray:
        rows = [[vocab[i] for i in row] for row in ids.tolist()]
        return np.asarray(generator.forward_batch(rows), np.float32)

    return logits


def measure(name: str, minigen_dir: Path, hf_dir: Path, ids: np.ndarray, work: Path) -> list[dict]:
    import minigen

    systems = {f"minigen {d}": (lambda d=d: minigen.load(minigen_dir, dtype=d).logits) for d in
               ("float32", "bfloat16", "int8")}
    systems.update({f"CTranslate2 {c}": (lambda c=c: ct2_system(hf_dir, work, c)) for c in ("float32", "int8")})
    out = {}
    for system, make in systems.items():
        fn = make()
        out[system] = figures(np.concatenate([fn(ids[i:i + 4]) for i in range(0, len(ids), 4)]), ids)
        print(f"{name:14s} {system:20s} perplexity {out[system]['ppl']:10.3f}", flush=True)
    base = out["minigen float32"]
    rows = []
    for system, f in out.items():
        rows.append(dict(model=name, system=system, ppl=f["ppl"], ppl_change=f["ppl"] / base["ppl"] - 1,
                         top1=float((f["top1"] == base["top1"]).mean()),
                         max_diff=float(np.abs(f["logits"] - base["logits"]).max())))
    return rows


def continuations(new: int = 24) -> list[tuple[str, dict]]:
    import minigen

    models = {d: minigen.load(dtype=d) for d in ("float32", "bfloat16", "int8")}
    tok = models["float32"].tokenizer
    out = []
    for opening in OPENINGS:
        ids = np.array([tok.encode(opening)])
        out.append((opening, {d: tok.decode(m.generate(ids, max_new_tokens=new)[0, ids.shape[1]:].tolist())
                              for d, m in models.items()}))
    return out


def render(rows, texts, windows: int) -> str:
    lines = [f"Machine: {machine_name()}; CPU flags: {cpu_flags()}.", "",
             f"Teacher-forced over {windows} windows of {WINDOW} tokens (shipped: its validation book; GPT-2 "
             "small: random weights and tokens). top-1: share of positions whose argmax equals minigen "
             "float32's. Command: `python benchmarks/quality_precision.py`.", "",
             "| model | system | perplexity | vs float32 | top-1 agreement | max logit diff |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ppl = f"{r['ppl']:.3f}" if r["model"] == "gutenberg-6l" else "-"
        change = f"{100 * r['ppl_change']:+.2f} %" if r["model"] == "gutenberg-6l" else "-"
        lines.append(f"| {r['model']} | {r['system']} | {ppl} | {change} | {100 * r['top1']:.2f} % | "
                     f"{r['max_diff']:.3g} |")
    lines += ["", "Greedy continuations (shipped model, 24 new tokens):", "",
              "| opening | float32 | bfloat16 | int8 |", "|---|---|---|---|"]
    for opening, by_dtype in texts:
        cells = [by_dtype[d].replace("\n", " ").replace("|", "\\|") for d in ("float32", "bfloat16", "int8")]
        lines.append(f"| {opening} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cpu_flags() -> str:
    from minigen.cpu import cpu_flags as flags

    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return " ".join(f for f in wanted if f in flags()) or "none found"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--out", default=str(HERE / "results" / "precision-quality.md"))
    args = parser.parse_args()
    if not HELD_OUT.is_file():
        raise SystemExit(f"{HELD_OUT} is absent: the held-out text comes from ../shared/data")
    import minigen
    from minigen.weights import check_model_dir
    from weights_tools.convert import convert
    from weights_tools.export_hf import export_hf

    windows = 4 if args.quick else args.windows
    work = Path(tempfile.mkdtemp(prefix="minigen-quality-"))
    shipped = Path(check_model_dir(None))
    export_hf(str(shipped), str(work / "gutenberg-6l"))
    tok = minigen.load().tokenizer
    text = HELD_OUT.read_text(encoding="utf-8")
    ids = np.array(tok.encode(text[len(text) // 3:])[: windows * WINDOW]).reshape(windows, WINDOW)
    rows = measure("gutenberg-6l", shipped, work / "gutenberg-6l", ids, work)
    if not args.quick:
        write_random_checkpoint(work / "small", SHAPES["small"])
        convert(str(work / "small"), str(work / "small-minigen"), quiet=True)
        rand = np.random.default_rng(0).integers(0, SHAPES["small"]["vocab_size"] - 1, (windows, WINDOW))
        rows += measure("GPT-2 small", work / "small-minigen", work / "small", rand, work)
    report = render(rows, continuations(), windows)
    print(report)
    if not args.quick:
        Path(args.out).write_text("# int8 and bfloat16 quality\n\n" + report)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
