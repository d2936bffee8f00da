"""Does decoding in segments (minigen/generation/core.py: `windows`) pay? The same greedy call with
the decode split into segments whose cache grows (forced, whatever core.SEGMENT_FROM says), and as
one segment over the full cache, alternating in one process, GPT-2 small shape, random weights, every
row to its full length. The figures behind core.SEGMENT_FROM.

    python benchmarks/probe_segments.py [--cases 8x512,16x512,32x512,64x256] [--runs 3] [--num-beams 1]

Each case is prompts x new tokens (prompts of 16-64 tokens, bucket 64); with --num-beams N, beam search
(N cache rows per prompt). Prints, per case and mode, the
first call's time (compile + run) and the median tok/s of the timed runs after it.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import bench_generate as bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="8x512,16x512,32x512,64x256")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--num-beams", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="minigen-probe-segments-"))
    shape = bench.SHAPES["small"]
    bench.write_random_checkpoint(work / "hf", shape)
    from weights_tools.convert import convert

    convert(work / "hf", work / "minigen", quiet=True)
    from minigen.generation import core

    # one model per mode: the mode is fixed when a model's function is traced (its first call)
    runs = {"segments": bench.minigen_system(work / "minigen", 1), "one segment": bench.minigen_system(work / "minigen", 1)}
    thresholds = {"segments": 0, "one segment": 10**9}  # rows x cache slots from which to segment
    rng = np.random.default_rng(0)
    print(f"machine: {bench.machine_name()}; SEGMENT {core.SEGMENT}, SEGMENT_FROM {core.SEGMENT_FROM}", flush=True)
    for case in args.cases.split(","):
        rows, new = (int(x) for x in case.split("x"))
        lengths = np.linspace(16, 64, rows).astype(int) if rows > 1 else [64]
        prompts = [rng.integers(0, shape["vocab_size"] - 1, n).tolist() for n in lengths]
        options = {"num_beams": args.num_beams} if args.num_beams > 1 else {}
        first, times, tokens = {}, {m: [] for m in runs}, {}
        for mode, run in runs.items():
            core.SEGMENT_FROM = thresholds[mode]
            start = time.perf_counter()
            run(prompts, options, new=new)
            first[mode], tokens[mode] = time.perf_counter() - start, run.last
        for _ in range(args.runs):
            for mode, run in runs.items():
                start = time.perf_counter()
                run(prompts, options, new=new)
                times[mode].append(time.perf_counter() - start)
        agree = float(np.mean(tokens["segments"] == tokens["one segment"]))
        for mode in runs:
            tok_s = rows * new / statistics.median(times[mode])
            beams = f" x {args.num_beams} beams" if options else ""
            print(f"{rows:3d} prompts x {new:4d} new{beams}  {mode:12s} first call {first[mode]:6.2f} s  {tok_s:7.1f} tok/s",
                  flush=True)
        print(f"{'':20s}tokens equal between the modes: {agree:.1%}", flush=True)


if __name__ == "__main__":
    main()
