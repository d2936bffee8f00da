"""Where beam-4 over one prompt spends the time 4 greedy rows do not: its bookkeeping, or the
network step over beam search's cache layout.

    python benchmarks/probe_beam_overhead.py [--dtypes float32,bfloat16,int8]

GPT-2 small shape, random weights, 32-token prompts, 64 new tokens (EOS off), ms per step (median of
7 alternating runs after a warm-up):
    generate      model.generate: 4 prompts greedy, and 1 prompt with num_beams=4;
    bookkeeping   the same two calls with the network replaced by a stub (decode returns a fixed
                  row of logits per token, the cache passes through): what each strategy's own
                  step costs (beam: log-softmax, top-k over beams x vocab, the finished buffer,
                  lineage);
    network       only the network's decode step, 4 rows on a plain cache against 4 beams of one
                  prompt on beam search's side-by-side cache with its lineage mask (each beam's
                  query scores the keys of all 4 beam rows; model.Transformer.attention);
    first token   a 512-token prompt, 1 new token: beam-4 against one greedy row (beam search
                  runs the prompt through the network once and copies its cache to each beam).
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

from bench_generate import SHAPES, left_pad, machine_name, write_random_checkpoint  # noqa: E402
from probe_precision import cpu_flags  # noqa: E402

PROMPT, NEW, RUNS = 32, 64, 7


def median_ms(calls: dict, steps: int) -> dict:
    """Median ms per step of each call, the calls alternating run by run."""
    times = {name: [] for name in calls}
    for _ in range(RUNS):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000 / steps)
    return {name: statistics.median(t) for name, t in times.items()}


class StubNetwork:
    """The network's interface with no network behind it: fixed logits, the cache untouched."""

    def __init__(self, real):
        import tensorflow as tf

        self.real, self.config = real, real.config
        self.table = tf.constant(np.random.default_rng(0).standard_normal((64, real.config.vocab_size)), tf.float32)

    def new_cache(self, *args, **kwargs):
        return self.real.new_cache(*args, **kwargs)

    def prefill(self, tokens, mask, cache_len, prefix=None, keep_layers=False):
        import tensorflow as tf

        from minigen import cache as kv

        rows = tf.shape(tokens)[0]
        cache = self.real.new_cache(rows, cache_len)
        hidden = tf.zeros([rows, tokens.shape[1], self.config.n_embd])
        return hidden, cache, kv.grow_key_mask(tf.cast(mask, tf.bool), cache_len)

    def lm_head(self, hidden):
        import tensorflow as tf

        return tf.gather(self.table, tf.zeros([tf.shape(hidden)[0]], tf.int32))

    def decode_one_token(self, tokens, positions, cache, view):
        import tensorflow as tf

        return tf.gather(self.table, tokens % 64), cache


def generate_calls(model, prompts):
    calls = {}
    for name, rows, options in (("4 greedy rows", prompts, {}), ("beam-4", prompts[:1], {"num_beams": 4})):
        ids, mask = left_pad(rows, 0)
        call = (lambda ids=ids, mask=mask, options=options:
                model.generate(ids, mask, max_new_tokens=NEW, eos_token_id=[], pad_token_id=0, top_k=0, **options))
        call()  # compiles
        calls[name] = call
    return calls


def network_calls(net):
    import tensorflow as tf

    from minigen import cache as kv

    slots = PROMPT + NEW
    calls = {}
    for name, group in (("4 greedy rows", 1), ("beam-4", 4)):
        cache = net.new_cache(4, slots, group)
        key_mask = tf.ones([4, slots], tf.bool)
        lineage = tf.tile(tf.range(4)[None, :, None], [1, 1, slots]) if group > 1 else None

        @tf.function(jit_compile=True, autograph=False)
        def loop(cache, key_mask=key_mask, lineage=lineage):
            def body(i, token, cache):
                view = kv.View(key_mask, PROMPT + i, lineage)
                logits, cache = net.decode_one_token(token, tf.fill([4], PROMPT + i), cache, view)
                return i + 1, tf.argmax(logits, -1, output_type=tf.int32), cache
            return tf.while_loop(lambda i, t, c: i < NEW, body, (0, tf.zeros([4], tf.int32), cache))[1]

        loop(cache)
        calls[name] = (lambda loop=loop, cache=cache: loop(cache).numpy())
    return calls


def first_token_ms(model, rng) -> dict:
    ids, mask = left_pad([rng.integers(0, model.config.vocab_size - 1, 512).tolist()], 0)
    calls = {}
    for name, options in (("4 greedy rows", {}), ("beam-4", {"num_beams": 4})):  # the greedy call: one row
        call = (lambda options=options:
                model.generate(ids, mask, max_new_tokens=1, eos_token_id=[], pad_token_id=0, top_k=0, **options))
        call()  # compiles
        calls[name] = call
    return median_ms(calls, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="float32,bfloat16,int8")
    args = parser.parse_args()
    import minigen

    work = Path(tempfile.mkdtemp(prefix="minigen-beam-"))
    write_random_checkpoint(work / "hf", SHAPES["small"])
    from weights_tools.convert import convert

    convert(str(work / "hf"), str(work / "minigen"), quiet=True)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, SHAPES["small"]["vocab_size"] - 1, PROMPT).tolist() for _ in range(4)]
    print(f"machine: {machine_name()}; CPU flags: {cpu_flags()}; GPT-2 small shape, {PROMPT} -> {NEW} tokens, "
          "ms per step (4 greedy rows | beam-4 | beam's extra)")
    for dtype in args.dtypes.split(","):
        model = minigen.load(work / "minigen", dtype=dtype)
        rows = {"generate": median_ms(generate_calls(model, prompts), NEW),
                "network": median_ms(network_calls(model.network), NEW)}
        stubbed = minigen.load(work / "minigen", dtype=dtype)  # fresh: no compiled function of the real network
        stubbed.network = StubNetwork(stubbed.network)
        rows["bookkeeping"] = median_ms(generate_calls(stubbed, prompts), NEW)
        rows["first token"] = first_token_ms(model, rng)
        for what in ("generate", "bookkeeping", "network", "first token"):
            greedy, beam = rows[what]["4 greedy rows"], rows[what]["beam-4"]
            print(f"{dtype:9s} {what:12s} {greedy:7.2f} | {beam:7.2f} | {beam - greedy:+6.2f} ms ({beam / greedy - 1:+.1%})",
                  flush=True)


if __name__ == "__main__":
    main()
