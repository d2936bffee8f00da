"""What the generate options cost per step: each option's tok/s beside the same call without it.

    python benchmarks/bench_options.py            # the shipped model and a GPT-2-small-shape model
    python benchmarks/bench_options.py --quick    # shipped model only, 2 runs: checks the script works

Batch 1, prompt 32 tokens -> --new-tokens new (every row forced to the full length: no EOS), median of
--runs timed runs after a warm-up call (which compiles), the plain call and the option's call
alternating so drift hits both alike. The cost column is the extra time per generated token.
Stop strings need a tokenizer, so they run on the shipped model only; its strings are chosen so that
none occurs (the check runs every step, and nothing stops early).
Writes benchmarks/results/options.md.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, the plain call's options, the option's call's options); the sampled pairs share a seed
SEARCH = dict(do_sample=False)
SAMPLE = dict(do_sample=True, top_k=0, seed=(1, 2))
OPTIONS = [
    ("output_logprobs", SEARCH, dict(output_logprobs=True)),
    ("output_scores (each step's [1, vocab] kept)", SEARCH, dict(output_scores=True)),
    ("output_scores + output_logits", SEARCH, dict(output_scores=True, output_logits=True)),
    ("top_logprobs 5", SEARCH, dict(top_logprobs=5)),
    ("layers: output_hidden_states", SEARCH, dict(output_hidden_states=True)),
    ("layers: output_attentions", SEARCH, dict(output_attentions=True)),
    ("repetition_penalty 1.3", SEARCH, dict(repetition_penalty=1.3)),
    ("presence_penalty 0.5 + frequency_penalty 0.3", SEARCH, dict(presence_penalty=0.5, frequency_penalty=0.3)),
    ("no_repeat_ngram_size 3", SEARCH, dict(no_repeat_ngram_size=3)),
    ("logits_processor (one tf.where)", SEARCH, dict(logits_processor=None)),  # filled in below
    ("stop_strings (3 strings)", SEARCH, dict(stop_strings=["\n\nTHE END", "Chapter XX", "zzzq"])),
    ("top_p 0.9 (sampling)", SAMPLE, dict(top_p=0.9)),
    ("min_p 0.05 (sampling)", SAMPLE, dict(min_p=0.05)),
    ("top_n_sigma 1.0 (sampling)", SAMPLE, dict(top_n_sigma=1.0)),
    ("top_h 0.4 (sampling)", SAMPLE, dict(top_h=0.4)),
    ("typical_p 0.9 (sampling)", SAMPLE, dict(typical_p=0.9)),
    ("eta_cutoff 3e-4 (sampling)", SAMPLE, dict(eta_cutoff=3e-4)),
    ("contrastive search k4 a0.6 (vs greedy)", SEARCH, dict(penalty_alpha=0.6, top_k=4)),
    ("new: guidance_scale 1.5 (the unconditional stream)", SEARCH, dict(guidance_scale=1.5)),
    ("new: dola_layers high", SEARCH, dict(dola_layers="high")),
    ("beam sampling, no warper (vs beam search, 4 beams)", dict(num_beams=4), dict(do_sample=True, top_k=0, seed=(1, 2))),
    ("beam sampling top_k 50 (vs beam search, 4 beams)", dict(num_beams=4), dict(do_sample=True, top_k=50, seed=(1, 2))),
    ("diverse beam search, 2 groups, penalty 1.0 (vs beam search, 4 beams)", dict(num_beams=4),
     dict(num_beam_groups=2, diversity_penalty=1.0)),
]


def ban_first_token(sequences, valid, generated, logits):
    import tensorflow as tf

    return tf.where(tf.range(logits.shape[-1])[None, :] == 0, float("-inf"), logits)


def measure(model, prompt, new, runs, base, extra):
    """(plain tok/s, option tok/s), alternating runs."""
    def call(options):
        start = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=new, eos_token_id=[], **options)
        seconds = time.perf_counter() - start
        sequences = out.sequences if hasattr(out, "sequences") else out
        assert sequences.shape[1] == prompt.shape[1] + new
        return seconds

    plain, option = base, {**base, **extra}
    call(plain), call(option)  # compile both
    times = {"plain": [], "option": []}
    for _ in range(runs):
        times["plain"].append(call(plain))
        times["option"].append(call(option))
    return tuple(new / statistics.median(times[k]) for k in ("plain", "option"))


def random_small(work: Path):
    import torch
    import transformers

    from weights_tools.convert import convert

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    transformers.GPT2LMHeadModel(config).save_pretrained(work / "hf")
    convert(str(work / "hf"), str(work / "minigen"), quiet=True)
    import minigen

    return minigen.load(work / "minigen")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="only the options whose label contains TEXT (written to options-subset.md)")
    args = parser.parse_args(argv)
    import minigen

    runs, new = (2, 16) if args.quick else (args.runs, args.new_tokens)
    options = [(label, base, extra if "logits_processor" not in extra else {"logits_processor": [ban_first_token]})
               for label, base, extra in OPTIONS if args.only is None or args.only in label]
    models = [("shipped gutenberg-6l", minigen.load())]
    if not args.quick:
        models.append(("GPT-2 small shape (random)", random_small(Path(tempfile.mkdtemp(prefix="minigen-options-")))))
    lines = [f"Batch 1, prompt 32 -> {new} new tokens, median of {runs} runs, plain and option alternating. "
             "Command: `python benchmarks/bench_options.py`.", "",
             "| model | option | plain tok/s | with the option tok/s | cost per token |", "|---|---|---|---|---|"]
    for name, model in models:
        prompt = np.random.default_rng(0).integers(0, model.config.vocab_size - 1, (1, 32))
        for label, base, extra in options:
            if "stop_strings" in extra and model.tokenizer is None:
                continue
            plain, with_option = measure(model, prompt, new, runs, base, extra)
            cost = (1 / with_option - 1 / plain) * 1000
            lines.append(f"| {name} | {label} | {plain:.1f} | {with_option:.1f} | {cost:+.2f} ms |")
            print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    out = Path(tempfile.mkdtemp()) if args.quick else ROOT / "benchmarks" / "results"
    name = "options.md" if args.only is None else "options-subset.md"
    (out / name).write_text(report)
    print(report)
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
