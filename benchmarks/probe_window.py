"""Does attending over only the written part of the static KV cache pay at batch 32? A decode-like
XLA while loop over one layer's cache [rows * heads, slots, head_dim] (written in place each step)
whose attention reads either every slot or only the first `window` (a static slice).

    python benchmarks/probe_window.py [--rows 32] [--slots 576] [--windows 128,320,576]

Prints ms per step for each window (the attention of 12 such layers is what a GPT-2-small step does).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from tensorflow.compiler.tf2xla.python import xla  # noqa: E402

HEADS, HEAD_DIM, LAYERS, STEPS = 12, 64, 12, 32


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--slots", type=int, default=576)
    parser.add_argument("--windows", default="128,320,576")
    args = parser.parse_args()
    n = args.rows * HEADS
    for window in [int(w) for w in args.windows.split(",")]:

        @tf.function(jit_compile=True, autograph=False)
        def loop(caches, q, window=window):
            def body(i, caches, acc):
                new = []
                for k in caches:  # one cache per layer, written at slot i, then read
                    k = xla.dynamic_update_slice(k, q[:, None, :] + tf.cast(i, tf.float32), tf.stack([0, i, 0]))
                    seen = k[:, :window] if window < args.slots else k
                    scores = tf.nn.softmax(tf.matmul(q[:, None, :], seen, transpose_b=True))  # [n, 1, window]
                    acc = acc + tf.matmul(scores, seen)[:, 0]
                    new.append(k)
                return i + 1, tuple(new), acc
            return tf.while_loop(lambda i, c, a: i < STEPS, body, (0, caches, tf.zeros_like(q)))[2]

        caches = tuple(tf.zeros([n, args.slots, HEAD_DIM]) for _ in range(LAYERS))
        q = tf.ones([n, HEAD_DIM]) * 0.01
        loop(caches, q)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            loop(caches, q).numpy()
            best = min(best, (time.perf_counter() - start) / STEPS * 1000)
        print(f"rows={args.rows} slots={args.slots} window={window:4d}: {best:6.2f} ms per step ({LAYERS} layers, K only)",
              flush=True)


if __name__ == "__main__":
    main()
