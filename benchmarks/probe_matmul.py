"""Why minigen computes each linear layer as W @ x^T: time GPT-2 small's 48 block matmuls per step.

    python benchmarks/probe_matmul.py [--rows 1,4,8]

A 12-layer loop of only the block matmuls (qkv, out, up, down), compiled with XLA like the decode
loop, in three formulations:
    x @ W        W held [in, out] (the Hugging Face file layout)
    x @ W^T      W held [out, in], transpose_b
    (W @ x^T)^T  W held [out, in] as the left operand (what minigen does)
Prints ms per step (best of 3 timings of 30 steps).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.compiler.tf2xla.python import xla  # noqa: E402

D, INNER, LAYERS, STEPS = 768, 3072, 12, 30


def block_weights(seed: int = 0):
    """GPT-2 small's block matrices (qkv, out, up, down per layer) as variables, held [in, out] and [out, in]."""
    rng = np.random.default_rng(seed)
    shapes = [(D, 3 * D), (D, D), (D, INNER), (INNER, D)]  # [in, out]
    in_out = [[tf.Variable(rng.standard_normal(s).astype(np.float32) * 0.02) for s in shapes] for _ in range(LAYERS)]
    out_in = [[tf.Variable(tf.transpose(w)) for w in layer] for layer in in_out]
    return in_out, out_in


def barrier(y):
    return xla.optimization_barrier(y)[0]  # keep the residual adds out of the dot, as model.linear does


def ms_per_step(step, rows: int) -> float:
    """Best of 3 timings of STEPS calls of `step` on [rows, D] inside one compiled while loop, in ms per call."""

    @tf.function(jit_compile=True, autograph=False)
    def loop(x):
        return tf.while_loop(lambda i, x: i < STEPS, lambda i, x: (i + 1, step(x)), (0, x))[1]

    x = tf.ones([rows, D]) * 0.01
    loop(x)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        loop(x).numpy()
        best = min(best, (time.perf_counter() - start) / STEPS * 1000)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1,4,8", help="token rows per step, comma-separated")
    args = parser.parse_args()
    in_out, out_in = block_weights()

    def x_w(x, w):
        return barrier(tf.matmul(x, w))

    def x_wt(x, w):
        return barrier(tf.matmul(x, w, transpose_b=True))

    def w_xt(x, w):
        return tf.transpose(barrier(tf.matmul(w, x, transpose_b=True)))

    def blocks(weights, lin):
        def step(x):
            for qkv, out, up, down in weights:
                x = x + lin(x, qkv)[:, :D] + lin(x, out)
                x = x + lin(tf.nn.relu(lin(x, up)), down)
            return x

        return step

    variants = {"x @ W": blocks(in_out, x_w), "x @ W^T": blocks(out_in, x_wt), "(W @ x^T)^T": blocks(out_in, w_xt)}
    for rows in [int(r) for r in args.rows.split(",")]:
        for name, step in variants.items():

            print(f"rows={rows}  {name:12s} {ms_per_step(step, rows):6.2f} ms/step", flush=True)


if __name__ == "__main__":
    main()
