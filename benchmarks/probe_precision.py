"""How minigen's reduced-precision dots are written: time GPT-2 small's 48 block matmuls per step
in float32, bfloat16 and int8, each in the formulations that matter on XLA's CPU backend.

    python benchmarks/probe_precision.py [--rows 1,2,4,16,64,256]

A 12-layer loop of only the block matmuls (qkv, out, up, down), compiled with XLA like the decode
loop. Weights are held [out, in]. Formulations:
    x @ W^T       one dot_general contracting both operands' `in` axis
    (W @ x^T)^T   the weight as the left operand (what minigen's float32 path does for few tokens)
    +pad          one zero token row appended when there is a single row (the 1-row dot of a
                  reduced type takes a slow matrix-vector path on some CPUs)
bfloat16: x cast to bfloat16, bf16 x bf16 -> f32 (`preferred_element_type`).
int8: x quantized per token row in the step (scale = max|x| / 127), s8 x s8 -> s32, then
dequantized by the row and column scales. Prints ms per step (best of 3 timings of 30 steps)
and the CPU flags found.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.compiler.tf2xla.python import xla  # noqa: E402
from tensorflow.compiler.xla import xla_data_pb2  # noqa: E402

from probe_matmul import ms_per_step  # noqa: E402

D, INNER, LAYERS, STEPS = 768, 3072, 12, 30


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return "unknown"
    return " ".join(f for f in ("avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags) or "none"


def dims(lhs: int, rhs: int):
    d = xla_data_pb2.DotDimensionNumbers()
    d.lhs_contracting_dimensions.append(lhs)
    d.rhs_contracting_dimensions.append(rhs)
    return d


def dot(a, b, a_axis, b_axis, out):
    return xla.dot_general(a, b, dims(a_axis, b_axis), None, preferred_element_type=out)


def barrier(y):
    return xla.optimization_barrier(y)[0]


def weights(dtype: str, seed: int = 0):
    """[(qkv, out, up, down)] per layer, each [out, in] in `dtype` (int8: (values, scale))."""
    rng = np.random.default_rng(seed)
    shapes = [(3 * D, D), (D, D), (INNER, D), (D, INNER)]
    layers = []
    for _ in range(LAYERS):
        layer = []
        for shape in shapes:
            w = rng.standard_normal(shape).astype(np.float32) * 0.02
            if dtype == "int8":
                scale = np.abs(w).max(1) / 127
                layer.append((tf.Variable(np.round(w / scale[:, None]).astype(np.int8)), tf.Variable(scale)))
            else:
                layer.append((tf.Variable(tf.cast(w, dtype)), None))
        layers.append(layer)
    return layers


def linear(dtype: str, orient: str):
    def f32(x, w, _):
        if orient == "wx":
            return tf.transpose(barrier(tf.matmul(w, x, transpose_b=True)))
        return barrier(tf.matmul(x, w, transpose_b=True))

    def bf16(x, w, _):
        xb = tf.cast(x, tf.bfloat16)
        if orient == "wx":
            return tf.transpose(barrier(dot(w, xb, 1, 1, tf.float32)))
        return barrier(dot(xb, w, 1, 1, tf.float32))

    def int8(x, w, w_scale):
        x_scale = tf.maximum(tf.reduce_max(tf.abs(x), axis=1, keepdims=True), 1e-12) / 127.0  # [rows, 1]
        xq = tf.cast(tf.clip_by_value(tf.round(x / x_scale), -127, 127), tf.int8)
        if orient == "wx":
            y = tf.transpose(barrier(dot(w, xq, 1, 1, tf.int32)))
        else:
            y = barrier(dot(xq, w, 1, 1, tf.int32))
        return tf.cast(y, tf.float32) * x_scale * w_scale

    return {"float32": f32, "bfloat16": bf16, "int8": int8}[dtype]


def blocks(layers, lin, pad):
    def step(x):
        if pad:
            x = tf.concat([x, tf.zeros_like(x)], 0)
        for (qkv, qs), (out, os_), (up, us), (down, ds) in layers:
            x = x + lin(x, qkv, qs)[:, :D] + lin(x, out, os_)
            x = x + lin(tf.nn.relu(lin(x, up, us)), down, ds)
        return x[:1] if pad else x

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1,2,4,16,64,256", help="token rows per step, comma-separated")
    parser.add_argument("--dtypes", default="float32,bfloat16,int8")
    args = parser.parse_args()
    print(f"CPU flags: {cpu_flags()}; TensorFlow {tf.__version__}")
    for dtype in args.dtypes.split(","):
        layers = weights(dtype)
        for rows in [int(r) for r in args.rows.split(",")]:
            for orient in ("xw", "wx"):
                for pad in ((False, True) if rows == 1 else (False,)):
                    step = blocks(layers, linear(dtype, orient), pad)

                    best = ms_per_step(step, rows)
                    name = ("x @ W^T" if orient == "xw" else "(W @ x^T)^T") + (" +pad" if pad else "")
                    print(f"{dtype:9s} rows={rows:<4d} {name:17s} {best:7.2f} ms/step", flush=True)


if __name__ == "__main__":
    main()
