"""A prompt's prefill, matmuls only: GPT-2 small's 48 block matmuls over many token rows at once.

    python benchmarks/probe_prefill.py [--rows 32,128,256,1008]

Formulations (one XLA-compiled function each, ms, best of 5):
    (W @ x^T)^T   XLA float32, W held [out, in] as the left operand (minigen's decode orientation)
    x @ W^T       XLA float32, the plain orientation (minigen's from model.PLAIN_FROM rows on)
and, for the question of a reduced-precision prefill:
    TF fp32 / TF bf16   TensorFlow's own MatMul (oneDNN, no XLA) in float32 and bfloat16
    XLA bf16            XLA with bfloat16 weights and activations
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from tensorflow.compiler.tf2xla.python import xla  # noqa: E402

from probe_matmul import D, block_weights  # noqa: E402


def blocks(weights, matmul, dtype=tf.float32):
    """The 48 matmuls of 12 blocks (qkv, out, up, down) with residual adds, over x [rows, D]."""
    def run(x):
        x = tf.cast(x, dtype)
        for qkv, out, up, down in weights:
            x = x + matmul(x, qkv)[:, :D] + matmul(x, out)
            x = x + matmul(tf.nn.relu(matmul(x, up)), down)
        return tf.cast(x, tf.float32)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="32,128,256,1008", help="token rows, comma-separated")
    args = parser.parse_args()
    in_out, out_in = block_weights()
    bf16 = [[tf.Variable(tf.cast(w, tf.bfloat16)) for w in layer] for layer in in_out]

    def left(x, w):  # w [out, in]
        return tf.transpose(xla.optimization_barrier(tf.matmul(w, x, transpose_b=True))[0])

    def plain(x, w):  # w [out, in]
        return tf.matmul(x, w, transpose_b=True)

    variants = {
        "(W @ x^T)^T": tf.function(blocks(out_in, left), jit_compile=True),
        "x @ W^T": tf.function(blocks(out_in, plain), jit_compile=True),
        "TF fp32": tf.function(blocks(in_out, tf.matmul)),
        "TF bf16": tf.function(blocks(bf16, tf.matmul, tf.bfloat16)),
        "XLA bf16": tf.function(blocks(bf16, tf.matmul, tf.bfloat16), jit_compile=True),
    }
    for rows in [int(r) for r in args.rows.split(",")]:
        x = tf.ones([rows, D]) * 0.01
        for name, fn in variants.items():
            fn(x)
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                fn(x).numpy()
                best = min(best, time.perf_counter() - start)
            print(f"rows={rows:5d}  {name:12s} {best * 1000:7.1f} ms", flush=True)


if __name__ == "__main__":
    main()
