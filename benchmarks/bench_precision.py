"""Speed of minigen's dtypes beside CTranslate2's: float32 / bfloat16 / int8, one process, run alone.

    python benchmarks/bench_precision.py           # GPT-2 small shape: the table in docs/precision.md
    python benchmarks/bench_precision.py --quick   # tiny model, 1 run: checks the script works

Random GPT-2 weights written once in the Hugging Face format, converted for minigen (float32 on
disk, each dtype quantized or cast at load) and for CTranslate2 (float32, compute_type float32 or
int8). Rows: greedy decoding at 1, 4, 16, 32 and 64 prompts of 32 tokens (ms per step: the time of
--new-tokens new tokens over their number, prefill included), beam-4 over one prompt, the first
token of a 128-, 512- and 1000-token prompt (seconds), and minigen's request engine over 64 mixed
requests (useful tokens/s). Every row forces the full length (no EOS). Systems alternate run by
run; figures are medians of --runs timed runs after a warm-up (compiles). Prints the CPU flags
that decide which dtype can be fast. Writes benchmarks/results/precision-speed.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_generate import (SHAPES, ctranslate2_system, machine_name, memory_bandwidth_gbs,  # noqa: E402
                            minigen_system, weight_bytes_per_token, write_random_checkpoint)
from quality_precision import cpu_flags  # noqa: E402

SYSTEMS = ("minigen float32", "minigen bfloat16", "minigen int8", "CTranslate2 float32", "CTranslate2 int8")


def workloads(vocab: int, quick: bool):
    """(name, prompts, options, new tokens, unit): unit "ms/step" or "s" (first token)."""
    rng = np.random.default_rng(0)
    prompt = 8 if quick else 32
    rows = (1, 4) if quick else (1, 4, 16, 32, 64)
    out = [(f"greedy, {r} rows", [rng.integers(0, vocab - 1, prompt).tolist() for _ in range(r)], {}, None, "ms/step")
           for r in rows]
    out.append(("beam-4, 1 prompt", [rng.integers(0, vocab - 1, prompt).tolist()], {"num_beams": 4}, None, "ms/step"))
    for n in ((32,) if quick else (128, 512, 1000)):
        out.append((f"first token, {n}-token prompt", [rng.integers(0, vocab - 1, n).tolist()], {}, 1, "s"))
    return out


def engine_requests(vocab: int, count: int, quick: bool):
    rng = np.random.default_rng(1)
    return [{"input_ids": rng.integers(0, vocab - 1, int(rng.integers(16, 64 if quick else 256))).tolist(),
             "max_new_tokens": int(np.clip(rng.lognormal(np.log(45), 0.8), 8, 32 if quick else 256)),
             "eos_token_id": []} for _ in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--only", default=None,
                        help="run only the workloads whose name contains this text (e.g. '1 rows'; 'engine')")
    parser.add_argument("--out", default=str(HERE / "results" / "precision-speed.md"))
    args = parser.parse_args()
    shape = SHAPES["quick" if args.quick else "small"]
    runs, new = (1, 8) if args.quick else (args.runs, args.new_tokens)
    work = Path(tempfile.mkdtemp(prefix="minigen-precision-"))
    print(f"machine: {machine_name()}; CPU flags: {cpu_flags()}", flush=True)
    write_random_checkpoint(work / "hf", shape)
    from weights_tools.convert import convert

    convert(str(work / "hf"), str(work / "minigen"), quiet=True)
    makers = {f"minigen {d}": (lambda d=d: minigen_system(work / "minigen", new, d)) for d in
              ("float32", "bfloat16", "int8")}
    makers.update({f"CTranslate2 {c}": (lambda c=c: ctranslate2_system(work / "hf", new, work, c))
                   for c in ("float32", "int8")})
    systems = {name: makers[name]() for name in args.systems.split(",")}

    results = {}  # (workload, system) -> median seconds
    for name, prompts, options, n, unit in workloads(shape["vocab_size"], args.quick):
        if args.only and args.only not in name:
            continue
        n = n or new
        for s, run in systems.items():
            run(prompts, options, new=n)  # warm-up: compiles
        times = {s: [] for s in systems}
        for _ in range(runs):
            for s, run in systems.items():
                start = time.perf_counter()
                lengths = run(prompts, options, new=n)
                times[s].append(time.perf_counter() - start)
                if any(length != n for length in lengths):
                    raise SystemExit(f"{s} on {name!r} generated {lengths} tokens, not {n}")
        for s in systems:
            t = statistics.median(times[s])
            results[(name, s)] = t * 1000 / n if unit == "ms/step" else t
            print(f"{name:32s} {s:20s} {results[(name, s)]:9.3f} {unit}", flush=True)

    requests = engine_requests(shape["vocab_size"], 16 if args.quick else 64, args.quick)
    useful = sum(r["max_new_tokens"] for r in requests)
    engine_name = f"engine, {len(requests)} mixed requests, 16 slots"
    for s, run in systems.items():
        if not s.startswith("minigen") or (args.only and args.only not in engine_name):
            continue
        model = run.model
        model.generate_many(requests[:16], slots=16, progress=False)  # warm-up: compiles
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model.generate_many(requests, slots=16, progress=False)
            times.append(time.perf_counter() - start)
        results[(engine_name, s)] = useful / statistics.median(times)
        print(f"{engine_name:32s} {s:20s} {results[(engine_name, s)]:9.1f} useful tok/s", flush=True)

    bandwidth = memory_bandwidth_gbs(0.25 if args.quick else 1.0)
    report = render(shape, results, list(systems), runs, new, bandwidth, engine_name)
    print(report)
    if not args.quick:
        Path(args.out).write_text("# Speed by dtype\n\n" + report)
        print(f"wrote {args.out}")


def render(shape, results, systems, runs, new, bandwidth, engine_name) -> str:
    names = list(dict.fromkeys(w for w, _ in results))
    lines = [f"Machine: {machine_name()}; CPU flags: {cpu_flags()}; memory read {bandwidth:.1f} GB/s.", "",
             f"GPT-2 of {shape['n_layer']} layers, width {shape['n_embd']}, vocabulary {shape['vocab_size']} (random "
             f"weights); greedy and beam rows: {new} new tokens, ms per step; first token: seconds; engine: useful tokens/s. "
             f"Median of {runs} runs after a warm-up. Command: `python benchmarks/bench_precision.py`.", "",
             "| workload | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for w in names:
        cells = []
        for s in systems:
            v = results.get((w, s))
            cells.append("-" if v is None else f"{v:.1f}" if w == engine_name else f"{v:.3f}" if w.startswith("first")
                         else f"{v:.1f}")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    floor_ms = {d: weight_bytes_per_token(shape, b) / (bandwidth * 1e6) for d, b in (("float32", 4), ("bfloat16", 2),
                                                                                    ("int8", 1))}
    lines += ["", "Batch-1 floors (every weight read once per step at that width, at this machine's bandwidth): "
              + ", ".join(f"{d} {ms:.1f} ms/step" for d, ms in floor_ms.items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
