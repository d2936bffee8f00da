"""Speed where the work grows: long generations, long prompts, a wide batch and the time to the first
token, minigen (float32) beside CTranslate2 float32 and int8, one process, GPT-2 small shape, random
weights, greedy, every row forced to its full length.

    python benchmarks/bench_scaling.py            # the figures in docs/speed.md (~15 min on 2 cores)
    python benchmarks/bench_scaling.py --quick    # tiny model, 2 runs: checks the script works

Runs alternate between systems; each figure is the median of --runs timed runs after one warm-up call
(minigen's compiles there). Time to first token is one `max_new_tokens=1` call: the prompt's prefill
and the first token. "minigen decode growth" rows run one prompt of 32 tokens to 128 / 512 / 896 new
tokens, minigen alone: a decode step attends over every slot of the cache it is given, so tokens/s
falls as max_new_tokens grows if reading unwritten slots costs (wide batches decode in segments over a
growing cache for that reason: generation/core.py `windows`; the b32 -> 512 row shows it).

Writes benchmarks/results/scaling.md and scaling.png (the throughput rows; scaling-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import bench_generate as bench

SYSTEMS = ("minigen", "ctranslate2", "ctranslate2-int8")


def workloads(vocab: int, quick: bool):
    """(name, prompts as id lists, new tokens, systems): throughput rows, then time-to-first-token rows."""
    rng = np.random.default_rng(0)

    def prompts(lengths):
        return [rng.integers(0, vocab - 1, n).tolist() for n in lengths]

    if quick:
        return [("b1 8 -> 32", prompts([8]), 32, SYSTEMS), ("b4 4-12 -> 8", prompts([4, 7, 9, 12]), 8, SYSTEMS),
                ("ttft 64", prompts([64]), 1, SYSTEMS)]
    growth = [(f"minigen decode growth b1 32 -> {n}", prompts([32]), n, ("minigen",)) for n in (128, 896)]
    b32, b64 = prompts(np.linspace(16, 64, 32).astype(int)), prompts(np.linspace(16, 64, 64).astype(int))
    return [
        ("b1 32 -> 512", prompts([32]), 512, SYSTEMS),
        ("b1 800 -> 128", prompts([800]), 128, SYSTEMS),
        ("b32 16-64 -> 64", b32, 64, SYSTEMS),
        ("b64 16-64 -> 64", b64, 64, SYSTEMS),
        ("ttft 128", prompts([128]), 1, SYSTEMS),
        ("ttft 512", prompts([512]), 1, SYSTEMS),
        ("ttft 1000", prompts([1000]), 1, SYSTEMS),
        *growth,
        ("minigen decode growth b32 16-64 -> 512", b32, 512, ("minigen",)),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and 2 runs: a smoke test of the script")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per system and workload (default 5)")
    parser.add_argument("--out", default=None, help="directory for the table (default benchmarks/results/)")
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help="comma-separated workload names to run (written to scaling-subset.*)")
    args = parser.parse_args(argv)
    only = None if args.only is None else args.only.split(",")
    shape = bench.SHAPES["quick" if args.quick else "small"]
    runs = 2 if args.quick else args.runs
    work = tempfile.mkdtemp(prefix="minigen-bench-scaling-")
    hf_dir, mg_dir = Path(work) / "hf", Path(work) / "minigen"
    print(f"machine: {bench.machine_name()}", flush=True)
    bench.write_random_checkpoint(hf_dir, shape)
    from weights_tools.convert import convert

    convert(hf_dir, mg_dir)
    systems = {}
    for name, make in (("minigen", lambda: bench.minigen_system(mg_dir, 1)),
                       ("ctranslate2", lambda: bench.ctranslate2_system(hf_dir, 1, work)),
                       ("ctranslate2-int8", lambda: bench.ctranslate2_system(hf_dir, 1, work, "int8"))):
        try:
            systems[name] = make()
        except ImportError as err:
            print(f"skipping {name}: {err} (pip install -e .[bench])", flush=True)

    results = {}  # (workload, system) -> {"times", "first", "value", "unit"}
    for wname, prompts, new, wanted in workloads(shape["vocab_size"], args.quick):
        if only is not None and wname not in only:
            continue
        active = [s for s in wanted if s in systems]
        for s in active:  # warm-up (minigen compiles here) and the length check
            start = time.perf_counter()
            lengths = systems[s](prompts, {}, new=new)
            if any(n != new for n in lengths):
                raise SystemExit(f"{s} on {wname!r} generated {lengths} tokens, not {new} per row")
            results[(wname, s)] = dict(first=time.perf_counter() - start, times=[])
        for _ in range(runs):
            for s in active:
                start = time.perf_counter()
                systems[s](prompts, {}, new=new)
                results[(wname, s)]["times"].append(time.perf_counter() - start)
        for s in active:
            r = results[(wname, s)]
            median = statistics.median(r["times"])
            r["value"], r["unit"] = (median, "s") if new == 1 else (len(prompts) * new / median, "tok/s")
            print(f"{wname:40s} {s:18s} {r['value']:9.3f} {r['unit']}", flush=True)
    report = render(results, runs)
    stem = "scaling-quick" if args.quick else "scaling" if only is None else "scaling-subset"
    out = bench.write_report(args, work, stem, report,
                             {"machine": bench.machine_name(), "results": {f"{w} | {s}": r for (w, s), r in results.items()}})
    shared = {w for w, s in results if s != "minigen"}  # rows with peers beside minigen
    throughput = {(w, s): {"tok_s": r["value"]} for (w, s), r in results.items() if r["unit"] == "tok/s" and w in shared}
    if throughput:  # a subset of minigen-only rows has nothing to chart
        bench.chart(throughput, out / f"{stem}.png")


def render(results, runs: int) -> str:
    names = list(dict.fromkeys(w for w, _ in results))
    lines = [f"Machine: {bench.machine_name()}. GPT-2 small shape, random weights, greedy, median of {runs} runs "
             "(`python benchmarks/bench_scaling.py`). Throughput in tokens/s (higher is better); time to first "
             "token in seconds (lower is better). Ratio: minigen over CTranslate2 int8 (for ttft, int8's time over "
             "minigen's: > 1 means minigen is faster).", "",
             "| workload | minigen fp32 | CTranslate2 fp32 | CTranslate2 int8 | minigen vs int8 |", "|---|---|---|---|---|"]
    for w in names:
        cells = []
        for s in SYSTEMS:
            r = results.get((w, s))
            cells.append("" if r is None else f"{r['value']:.3f} s" if r["unit"] == "s" else f"{r['value']:.1f}")
        ours, int8 = results.get((w, "minigen")), results.get((w, "ctranslate2-int8"))
        ratio = ""
        if ours and int8:
            ratio = f"{int8['value'] / ours['value']:.2f}x" if ours["unit"] == "s" else f"{ours['value'] / int8['value']:.2f}x"
        lines.append(f"| {w} | {' | '.join(cells)} | {ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
