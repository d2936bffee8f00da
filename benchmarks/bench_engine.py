"""Many requests of mixed lengths: the request engine vs today's generate grouped by hand vs CTranslate2.

    python benchmarks/bench_engine.py               # GPT-2 small shape, 256 requests: greedy, seeded sampling, few-shot
    python benchmarks/bench_engine.py --quick       # tiny model, 24 requests: checks the script works

The workload (issue 26): prompts of 16-256 random tokens, requested new tokens log-normal (median
45, clipped to 8-256), EOS off, so every system computes what was asked. Reported: useful tokens/s
(only the tokens requests asked for) for
  - engine: lm.generate_many(requests, slots=S)
  - naive:  lm.generate over batches of S in input order, each run to its longest member
  - oracle: the same over batches of S sorted by requested length
  - CTranslate2 float32 / int8 generate_batch over the oracle's batches (one max_length per call)
  - bound:  the steady rate of one full S-row batch (prompts of the same distribution, 64 new
            tokens, prefill included): what perfect packing would give
and a few-shot workload (a 300-token header shared by every request, questions of 4-40 tokens):
the engine with and without its shared-prefix cache, with the time each spends prefilling.
Each system is timed after one warm-up pass (whose time is reported as "first call": the compiles),
median of --runs passes, the systems alternating pass by pass. Writes benchmarks/results/engine.md.
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

from bench_generate import SHAPES, machine_name, write_random_checkpoint  # noqa: E402


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "?"
    return " ".join(f for f in ("avx512_vnni", "avx512_bf16", "amx_int8") if f in flags) or "none of vnni/bf16/amx"


def workload(n: int, vocab: int, sampling: bool, quick: bool, seed: int = 0) -> list[dict]:
    """The requests: prompt ids, max_new_tokens, EOS off; sampled ones seeded per request."""
    rng = np.random.default_rng(seed)
    low, high, median, top = (4, 48, 12, 40) if quick else (16, 256, 45, 256)
    requests = []
    for i in range(n):
        new = int(np.clip(round(rng.lognormal(np.log(median), 0.8)), 8 if not quick else 2, top))
        r = dict(input_ids=rng.integers(0, vocab - 1, int(rng.integers(low, high + 1))).tolist(),
                 max_new_tokens=new, eos_token_id=[])
        if sampling:
            r.update(do_sample=True, top_k=0, top_p=0.9, temperature=1.0, seed=[i, 1])
        requests.append(r)
    return requests


def fewshot(n: int, vocab: int, quick: bool, seed: int = 1) -> list[dict]:
    """A few-shot evaluation's shape: one shared header (200-400 tokens) + a short question each."""
    rng = np.random.default_rng(seed)
    header = rng.integers(0, vocab - 1, 40 if quick else 300).tolist()
    return [dict(input_ids=header + rng.integers(0, vocab - 1, int(rng.integers(4, 12 if quick else 40))).tolist(),
                 max_new_tokens=int(np.clip(round(rng.lognormal(np.log(8 if quick else 20), 0.6)), 2, 64)),
                 eos_token_id=[]) for _ in range(n)]


def engine_run(model, requests, slots: int, prefix_cache: int, seconds: dict) -> int:
    """The engine over the requests; adds its prefill time to seconds["prefill"]; returns the tokens asked."""
    engine = model.engine(slots=slots, max_length=max(len(r["input_ids"]) + r["max_new_tokens"] for r in requests),
                          prefix_cache=prefix_cache)
    for r in requests:
        engine.submit(r)
    for _ in engine:
        pass
    seconds.setdefault("prefill", []).append(engine.stats()["prefill_seconds"])
    return sum(r["max_new_tokens"] for r in requests)


def left_pad(prompts):
    width = max(len(p) for p in prompts)
    ids = np.zeros([len(prompts), width], np.int32)
    mask = np.zeros([len(prompts), width], np.int32)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    return ids, mask


def grouped(requests, slots: int, oracle: bool) -> list[list[dict]]:
    order = sorted(requests, key=lambda r: r["max_new_tokens"]) if oracle else list(requests)
    return [order[i:i + slots] for i in range(0, len(order), slots)]


def minigen_grouped(model, requests, slots: int, oracle: bool) -> int:
    """today's API: one generate per group, run to the group's longest request; returns computed tokens."""
    computed = 0
    for group in grouped(requests, slots, oracle):
        ids, mask = left_pad([r["input_ids"] for r in group])
        new = max(r["max_new_tokens"] for r in group)
        options = {k: v for k, v in group[0].items() if k not in ("input_ids", "max_new_tokens", "seed")}
        model.generate(ids, mask, max_new_tokens=new, **options)
        computed += new * len(group)
    return computed


def ctranslate2_generator(hf_dir: Path, work: Path, compute_type: str):
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    out = work / "ct2"
    if not out.exists():
        TransformersConverter(str(hf_dir)).convert(str(out), quantization="float32")
    return ctranslate2.Generator(str(out), device="cpu", compute_type=compute_type, intra_threads=os.cpu_count() or 1)


def ctranslate2_grouped(generator, requests, slots: int) -> int:
    computed = 0
    for group in grouped(requests, slots, oracle=True):
        new = max(r["max_new_tokens"] for r in group)
        kwargs = dict(max_length=new, min_length=new, include_prompt_in_result=False)
        if group[0].get("do_sample"):
            kwargs.update(sampling_topk=0, sampling_topp=0.9, sampling_temperature=1.0)
        generator.generate_batch([[f"t{i}" for i in r["input_ids"]] for r in group], **kwargs)
        computed += new * len(group)
    return computed


def fewshot_table(model, requests, args) -> list[str]:
    """The engine with and without its shared-prefix cache on the few-shot workload (and the oracle grouping)."""
    useful = sum(r["max_new_tokens"] for r in requests)
    prefill = {"with": {}, "without": {}}
    systems = {"engine, prefix cache": lambda: engine_run(model, requests, args.slots, 4, prefill["with"]),
               "engine, no prefix cache": lambda: engine_run(model, requests, args.slots, 0, prefill["without"]),
               "oracle grouping": lambda: minigen_grouped(model, requests, args.slots, oracle=True)}
    times = {s: [] for s in systems}
    for s, run in systems.items():  # warm-up pass
        run()
    for p in prefill.values():
        p.clear()
    for _ in range(args.runs):
        for s, run in systems.items():
            began = time.perf_counter()
            run()
            times[s].append(time.perf_counter() - began)
            print(f"fewshot {s}: {times[s][-1]:.1f} s", flush=True)
    header = common = len(requests[0]["input_ids"])
    for r in requests[1:]:
        common = min(common, next((i for i, (a, b) in enumerate(zip(r["input_ids"], requests[0]["input_ids"])) if a != b),
                                  header))
    lines = [f"### fewshot: {len(requests)} requests sharing a {common}-token header, questions of "
             f"{min(len(r['input_ids']) for r in requests) - common}-{max(len(r['input_ids']) for r in requests) - common} "
             f"tokens, {useful} new tokens asked for", "",
             "| system | useful tok/s | wall (s) | prefill (s) |", "|---|---|---|---|"]
    for s in systems:
        wall = statistics.median(times[s])
        kind = "with" if "prefix cache" in s and "no" not in s else "without" if "no prefix" in s else None
        pre = f"{statistics.median(prefill[kind]['prefill']):.2f}" if kind else "-"
        lines.append(f"| {s} | {useful / wall:.1f} | {wall:.1f} | {pre} |")
    cut = 1 - statistics.median(prefill["with"]["prefill"]) / statistics.median(prefill["without"]["prefill"])
    lines += ["", f"the prefix cache cuts the engine's prefill time by {cut:.0%}", ""]
    print("\n".join(lines), flush=True)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, few requests: checks the script works")
    parser.add_argument("--requests", type=int, default=None, help="requests per workload (default 256; quick 24)")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2, help="timed passes per system (median)")
    parser.add_argument("--no-peers", action="store_true", help="skip CTranslate2")
    parser.add_argument("--workloads", default="greedy,sampling,fewshot")
    parser.add_argument("--out", default=str(HERE / "results" / "engine.md"))
    args = parser.parse_args(argv)
    n = args.requests or (24 if args.quick else 256)
    shape = SHAPES["quick" if args.quick else "small"]

    import minigen

    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    write_random_checkpoint(work / "hf", shape)
    from weights_tools.convert import convert

    convert(str(work / "hf"), str(work / "minigen"), quiet=True)
    model = minigen.load(work / "minigen", compile_cache_size=512)
    peers = {}
    if not args.no_peers:
        try:
            peers = {f"CTranslate2 {t}": ctranslate2_generator(work / "hf", work, t) for t in ("float32", "int8")}
        except ImportError:
            print("CTranslate2 is not installed (pip install -e .[bench]): its rows are skipped", flush=True)

    lines = [f"Machine: {machine_name()} (CPU flags: {cpu_flags()}); GPT-2 {'quick' if args.quick else 'small'} shape, "
             f"random weights; {n} requests, {args.slots} slots; median of {args.runs} timed passes after a warm-up "
             "pass, systems alternating.", ""]
    for name in args.workloads.split(","):
        if name == "fewshot":
            lines += fewshot_table(model, fewshot(n, shape["vocab_size"], args.quick), args)
            continue
        requests = workload(n, shape["vocab_size"], name == "sampling", args.quick)
        useful = sum(r["max_new_tokens"] for r in requests)
        prompts = [len(r["input_ids"]) for r in requests]
        bound_rows = [r["input_ids"] for r in requests[:args.slots]]
        bound_opts = {k: v for k, v in requests[0].items() if k not in ("input_ids", "max_new_tokens", "seed")}
        systems = {
            "engine": lambda: (model.generate_many(requests, slots=args.slots, progress=False), useful)[1],
            "naive grouping": lambda: minigen_grouped(model, requests, args.slots, oracle=False),
            "oracle grouping": lambda: minigen_grouped(model, requests, args.slots, oracle=True),
            "bound (full batch)": lambda: (model.generate(*left_pad(bound_rows), max_new_tokens=64, **bound_opts),
                                           64 * len(bound_rows))[1],
        }
        for label, gen in peers.items():
            systems[label] = lambda gen=gen: ctranslate2_grouped(gen, requests, args.slots)
        first, times, computed, traces = {}, {s: [] for s in systems}, {}, {}
        for s, run in systems.items():
            before, began = model.trace_count, time.perf_counter()
            computed[s] = run()
            first[s], traces[s] = time.perf_counter() - began, model.trace_count - before
            print(f"{name} {s}: first pass {first[s]:.1f} s ({traces[s]} traces)", flush=True)
        for _ in range(args.runs):
            for s, run in systems.items():
                began = time.perf_counter()
                run()
                times[s].append(time.perf_counter() - began)
                print(f"{name} {s}: {times[s][-1]:.1f} s", flush=True)
        rate = {s: (64 * len(bound_rows) if s.startswith("bound") else useful) / statistics.median(times[s])
                for s in systems}
        lines += [f"### {name}: {useful} tokens asked for; prompts {min(prompts)}-{max(prompts)} tokens; requested "
                  f"new tokens median {int(np.median([r['max_new_tokens'] for r in requests]))}, max "
                  f"{max(r['max_new_tokens'] for r in requests)}", "",
                  "| system | useful tok/s | x naive | tokens computed / asked | first pass (s) | compiles |",
                  "|---|---|---|---|---|---|"]
        for s in systems:
            asked = "-" if s.startswith("bound") else f"{computed[s] / useful:.2f}"
            lines.append(f"| {s} | {rate[s]:.1f} | {rate[s] / rate['naive grouping']:.2f} | {asked} | "
                         f"{first[s]:.1f} | {traces[s] if not s.startswith('CTranslate2') else '-'} |")
        lines += ["", f"engine / oracle {rate['engine'] / rate['oracle grouping']:.2f}x, engine / bound "
                      f"{rate['engine'] / rate['bound (full batch)']:.0%}", ""]
        print("\n".join(lines[-len(systems) - 6:]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(["# Request engine benchmark", "",
                              "`python benchmarks/bench_engine.py " + " ".join(argv or sys.argv[1:]) + "`", ""] + lines))
    print("wrote", out)


if __name__ == "__main__":
    main()
