"""`make demo`: generation with each strategy, timed, on a model minigen builds itself.

No trained model ships with the package yet, so the demo initialises a GPT-2 with random weights
(it says so) and prints token ids, the one-off XLA compile time and the steady-state speed.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def random_model(n_layer=4, n_embd=256, n_head=4, vocab_size=50257, n_positions=1024, seed=0):
    """A GPT-2 with random weights (initializer_range 0.2, so its logits are peaked, not flat)."""
    from minigen import GPT2, GPT2Config
    from minigen.model import tensor_shapes

    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size, n_positions=n_positions)
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in tensor_shapes(config).items():
        if name.endswith(".scale"):
            params[name] = np.ones(shape, np.float32)
        elif name.endswith(".bias"):
            params[name] = np.zeros(shape, np.float32)
        else:
            params[name] = (rng.standard_normal(shape) * 0.2).astype(np.float32)
    return GPT2(config, params)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigen.demo", description=__doc__)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args(argv)
    print(f"minigen demo: a RANDOMLY INITIALISED GPT-2 ({args.layers} layers, {args.width} wide, vocab 50257);"
          " the tokens are not text. A trained model will ship with the package later.")
    model = random_model(n_layer=args.layers, n_embd=args.width)
    prompts = np.array([[0, 0, 0, 464, 2068, 7586], [40, 716, 257, 1310, 286, 262]])
    mask = np.array([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    runs = [
        ("greedy", dict()),
        ("top-p sampling", dict(do_sample=True, top_p=0.9, temperature=0.8, seed=(0, 1))),
        ("beam search (4 beams)", dict(num_beams=4)),
    ]
    for label, options in runs:
        options["max_new_tokens"] = args.max_new_tokens
        start = time.perf_counter()
        out = model.generate(prompts, mask, **options)
        first = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(prompts, mask, **options)
        again = time.perf_counter() - start
        tokens = prompts.shape[0] * args.max_new_tokens
        print(f"\n{label}: first call {first:.2f}s (includes the XLA compile), "
              f"second call {again:.3f}s = {tokens / again:.0f} new tokens/s")
        for row in out:
            print("  ", row[prompts.shape[1]:].tolist())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
