"""What structured output costs: each constraint kind's time per token beside the same call without it,
the automaton's build time and table size, and the host-side alternative (transformers' generate with a
prefix_allowed_tokens_fn walking the same automaton) on the same weights.

    python benchmarks/bench_structured.py           # shipped model + GPT-2 small shape (needs ../shared/data)
    python benchmarks/bench_structured.py --quick   # shipped model, batch 1, 2 runs: checks the script works

Every row runs --new-tokens new tokens with EOS off and a constraint that cannot end that soon (an
unbounded regex repetition, an array of at least 60 items, choices of long texts), so the constrained
and plain calls do
the same number of steps; median of --runs timed calls after a warm-up (which compiles), plain and
constrained alternating. Writes benchmarks/results/structured.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_engine import cpu_flags  # noqa: E402
from bench_generate import machine_name  # noqa: E402

GPT2_TOKENIZER = ROOT.parent / "shared" / "data" / "gpt2-tokenizer"
WORDS = ("the sea was calm and the old man looked out at the grey water while the boat rocked slowly "
         "under a pale sky full of gulls").split()


def constraints_to_run(rng) -> list[tuple[str, str, object]]:
    """(label, option, value): none can be complete within a few hundred tokens."""
    long_texts = [" ".join(rng.choice(WORDS, 160)) for _ in range(4)]
    return [
        ("regex `[a-z ,.;]+`", "regex", r"[a-z ,.;]+"),
        ("json_schema: array of >= 60 enum strings", "json_schema",
         {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 60}),
        ("choices: 4 texts of 160 words", "choices", long_texts),
    ]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_token_ms(model, ids, mask, new, runs, option: dict) -> tuple[float, float]:
    """(plain, constrained) milliseconds per step, medians over alternating runs."""
    def call(extra):
        return timed(lambda: model.generate(ids, mask, max_new_tokens=new, eos_token_id=[], **extra))

    call({}), call(option)  # compiles
    plain, constrained = [], []
    for _ in range(runs):
        plain.append(call({}))
        constrained.append(call(option))
    return statistics.median(plain) / new * 1000, statistics.median(constrained) / new * 1000


def build_cost(model, kind, value) -> tuple[float, float, tuple]:
    """(seconds to build the automaton, MiB of the loop's tables, (states, classes))."""
    from minigen.generation import constraints

    constraints._automaton.cache_clear()
    start = time.perf_counter()
    auto = constraints.automaton(model.tokenizer, kind, value)
    seconds = time.perf_counter() - start
    tables = constraints.tables(auto, (), model.config.vocab_size)
    size = sum(a.nbytes for a in tables) / 2**20
    return seconds, size, (auto.allowed.shape[0], auto.next_state.shape[1])


def gpt2_small(work: Path):
    """GPT-2 small shape, random weights, with the real GPT-2 tokenizer; (minigen model, HF directory)."""
    import torch
    import transformers

    import minigen
    from weights_tools.convert import convert

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    transformers.GPT2LMHeadModel(config).save_pretrained(work / "hf")
    convert(str(work / "hf"), str(work / "minigen"), quiet=True)
    shutil.copy(GPT2_TOKENIZER / "tokenizer.json", work / "minigen" / "tokenizer.json")
    return minigen.load(work / "minigen"), work / "hf"


def host_side_ms(model, hf_dir, ids, mask, new, runs, kind, value) -> tuple[float, float]:
    """transformers' generate, (plain, with prefix_allowed_tokens_fn walking the same automaton) ms per
    step: the host-side way (one Python call per row per step)."""
    import torch
    import transformers

    from minigen.generation import constraints

    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    auto = constraints.automaton(model.tokenizer, kind, value)
    start = ids.shape[1]
    states: dict = {}

    def allowed(batch_id, input_ids):
        n = input_ids.shape[0] - start
        length, state = states.get(batch_id, (0, constraints.START))
        if n < length:
            length, state = 0, constraints.START
        for token in input_ids[start + length:].tolist():
            state = int(auto.next_state[state, auto.token_class[token]])
        states[batch_id] = (n, state)
        return constraints.allowed_ids(auto, state).tolist()

    def call(fn):
        states.clear()
        with torch.no_grad():
            return timed(lambda: hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=new,
                                             min_new_tokens=new, do_sample=False, pad_token_id=0,
                                             prefix_allowed_tokens_fn=fn))

    call(None), call(allowed)
    plain, constrained = [], []
    for _ in range(runs):
        plain.append(call(None))
        constrained.append(call(allowed))
    return statistics.median(plain) / new * 1000, statistics.median(constrained) / new * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--no-host", action="store_true", help="skip transformers + prefix_allowed_tokens_fn")
    args = parser.parse_args(argv)
    import minigen

    runs, new = (2, 16) if args.quick else (args.runs, args.new_tokens)
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    cases = constraints_to_run(rng)
    models = [("shipped gutenberg-6l", minigen.load(), None)]
    if not args.quick:
        if (GPT2_TOKENIZER / "tokenizer.json").exists():
            models.append(("GPT-2 small shape (random)", *gpt2_small(Path(tempfile.mkdtemp(prefix="minigen-structured-")))))
        else:
            print(f"skipping GPT-2 small: no tokenizer at {GPT2_TOKENIZER}")
    lines = [f"Machine: {machine_name()} (CPU flags: {cpu_flags()}); prompt 32 tokens -> {new} new, EOS off, "
             f"median of {runs} runs, plain and constrained alternating. Command: `python benchmarks/bench_structured.py`.",
             "", "### Cost per token inside the compiled loop", "",
             "| model | constraint | rows | plain ms/step | constrained ms/step | cost |", "|---|---|---|---|---|---|"]
    builds = ["", "### Building the automaton (once per constraint and tokenizer, then cached)", "",
              "| model (vocabulary) | constraint | states x classes | build s | tables MiB |", "|---|---|---|---|---|"]
    host = ["", "### The host-side alternative: transformers + prefix_allowed_tokens_fn (same weights, same automaton)",
            "", "| model | constraint | rows | plain ms/step | constrained ms/step | cost |", "|---|---|---|---|---|---|"]
    for name, model, hf_dir in models:
        for label, kind, value in cases:
            seconds, size, shape = build_cost(model, kind, value)
            builds.append(f"| {name} ({model.config.vocab_size}) | {label} | {shape[0]} x {shape[1]} | {seconds:.2f} | "
                          f"{size:.2f} |")
            print(builds[-1], flush=True)
        for rows in batches:
            ids = np.random.default_rng(1).integers(0, 256, (rows, 32))
            mask = np.ones_like(ids)
            for label, kind, value in cases:
                plain, constrained = per_token_ms(model, ids, mask, new, runs, {kind: value})
                lines.append(f"| {name} | {label} | {rows} | {plain:.2f} | {constrained:.2f} | "
                             f"{(constrained / plain - 1) * 100:+.1f} % |")
                print(lines[-1], flush=True)
            if hf_dir is not None and not args.no_host and rows == 1:
                label, kind, value = cases[0]
                plain, constrained = host_side_ms(model, hf_dir, ids, mask, new, max(2, runs // 2), kind, value)
                host.append(f"| {name} (transformers, PyTorch) | {label} | {rows} | {plain:.2f} | {constrained:.2f} | "
                            f"{(constrained / plain - 1) * 100:+.1f} % |")
                print(host[-1], flush=True)
    report = "# Structured output benchmark\n\n" + "\n".join(lines + builds + (host if len(host) > 5 else [])) + "\n"
    out = Path(tempfile.mkdtemp()) if args.quick else ROOT / "benchmarks" / "results"
    (out / "structured.md").write_text(report)
    print(report)
    print(f"wrote {out / 'structured.md'}")


if __name__ == "__main__":
    main()
