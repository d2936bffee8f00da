"""`make demo`: text generation with each strategy, timed, on the model shipped in the package.

The shipped model (minigen/models/gutenberg-6l, trained by us on public-domain novels; see
weights_tools/TRAINING.md) continues a few prompts with greedy search, top-p sampling and beam
search, printing the one-off XLA compile time apart from the steady-state speed. `--random`
(or an installation without the shipped model) uses a randomly initialised GPT-2 instead and
prints token ids, saying so.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from minigen.config import GPT2Config  # noqa: E402
from minigen.status import import_tensorflow_quietly  # noqa: E402
from minigen.weights import DEFAULT_MODEL, load, shipped_models  # noqa: E402


def random_model(n_layer=4, n_embd=256, n_head=4, vocab_size=50257, n_positions=1024, seed=0):
    """A GPT-2 with random weights (std 0.2, so its logits are peaked, not flat)."""
    # imported here: only --random needs the network's initialiser
    from minigen import GPT2
    from minigen.model import random_params

    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size, n_positions=n_positions)
    return GPT2(config, random_params(config, seed, std=0.2, scale_residual=False))


PROMPTS = [
    "It was a dark and stormy night, and",
    "\"My dear Watson,\" said Holmes,",
    "The ship sailed",
]


def strategies(max_new_tokens: int):
    return [
        ("greedy", dict(max_new_tokens=max_new_tokens)),
        ("top-p sampling (p 0.9, T 0.8)", dict(max_new_tokens=max_new_tokens, do_sample=True, top_p=0.9,
                                                temperature=0.8, top_k=0, seed=(0, 1))),
        ("beam search (4 beams)", dict(max_new_tokens=max_new_tokens, num_beams=4, no_repeat_ngram_size=3)),
    ]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def text_demo(model, max_new_tokens: int) -> None:
    for label, options in strategies(max_new_tokens):
        texts, first = timed(lambda: model.generate_text(PROMPTS, **options))
        _, again = timed(lambda: model.generate_text(PROMPTS, **options))
        tokens = len(PROMPTS) * max_new_tokens
        print(f"\n== {label}: first call {first:.2f}s (includes the XLA compile), "
              f"second call {again:.3f}s = {tokens / again:.0f} new tokens/s")
        for prompt, text in zip(PROMPTS, texts):
            print(f"  {prompt}\033[1m{text}\033[0m" if os.isatty(1) else f"  {prompt}[{text}]")


def random_demo(layers: int, width: int, max_new_tokens: int) -> None:
    print(f"minigen demo: a RANDOMLY INITIALISED GPT-2 ({layers} layers, {width} wide, vocab 50257);"
          " the tokens are not text.")
    model = random_model(n_layer=layers, n_embd=width)
    prompts = np.array([[0, 0, 0, 464, 2068, 7586], [40, 716, 257, 1310, 286, 262]])
    mask = np.array([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    for label, options in strategies(max_new_tokens):
        out, first = timed(lambda: model.generate(prompts, mask, **options))
        _, again = timed(lambda: model.generate(prompts, mask, **options))
        tokens = prompts.shape[0] * max_new_tokens
        print(f"\n{label}: first call {first:.2f}s (includes the XLA compile), "
              f"second call {again:.3f}s = {tokens / again:.0f} new tokens/s")
        for row in out:
            print("  ", row[prompts.shape[1]:].tolist())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigen.demo", description=__doc__)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--random", action="store_true", help="use a random GPT-2 instead of the shipped model")
    parser.add_argument("--layers", type=int, default=4, help="with --random")
    parser.add_argument("--width", type=int, default=256, help="with --random")
    args = parser.parse_args(argv)
    import_tensorflow_quietly()  # no CUDA probe noise before the demo's first line
    if args.random or DEFAULT_MODEL not in shipped_models():
        if not args.random:
            print(f"(the shipped model {DEFAULT_MODEL!r} is not installed here: falling back to random weights)")
        random_demo(args.layers, args.width, args.max_new_tokens)
        return 0
    model = load()
    print(f"minigen demo: {DEFAULT_MODEL}, a {model.config.n_layer}-layer GPT-2 trained by us on 12 "
          "public-domain novels (weights_tools/TRAINING.md); continuations in brackets or bold.")
    text_demo(model, args.max_new_tokens)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
