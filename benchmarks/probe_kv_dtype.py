"""Should the KV cache follow the weights into bfloat16? Time the attention reads of a decode step
(GPT-2 small: 12 layers, 12 heads of 64) with the keys and values held in float32 or bfloat16.

    python benchmarks/probe_kv_dtype.py

Per layer: scores = q . K^T, softmax, probs . V, as minigen's decode step does them (one batched
dot over rows x heads), inside a compiled while loop. bfloat16: q and the probabilities cast to
bfloat16, both dots accumulating in float32 (`preferred_element_type`), the cache read as it is
held. Two orientations: "q left" (minigen's) and "keys left" (the cache as the dot's left operand,
the way minigen streams weight matrices). Beam rows are laid out as minigen's beam search holds
them: a prompt's 4 beams side by side on the slot axis, each query scoring all of them. Prints ms
per step (median of 7 timings of 32 steps) and the floor: the cache bytes read at this machine's
bandwidth.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.compiler.tf2xla.python import xla  # noqa: E402
from tensorflow.compiler.xla import xla_data_pb2  # noqa: E402

from bench_generate import memory_bandwidth_gbs  # noqa: E402
from probe_precision import cpu_flags  # noqa: E402

LAYERS, HEADS, HEAD_DIM, STEPS = 12, 12, 64, 32

# name: (leading dim = rows x heads (beam: prompts x heads), queries per leading index, slots read)
SHAPES = {
    "greedy, 4 rows, 160 slots": (4 * HEADS, 1, 160),
    "greedy, 64 rows, 96 slots": (64 * HEADS, 1, 96),
    "greedy, 16 rows, 1024 slots": (16 * HEADS, 1, 1024),
    "greedy, 64 rows, 512 slots": (64 * HEADS, 1, 512),
    "beam-4, 160 slots per beam": (HEADS, 4, 4 * 160),
    "beam-4, 1024 slots per beam": (HEADS, 4, 4 * 1024),
}


def dims(lhs_contract: int, rhs_contract: int):
    d = xla_data_pb2.DotDimensionNumbers()
    d.lhs_contracting_dimensions.append(lhs_contract)
    d.rhs_contracting_dimensions.append(rhs_contract)
    d.lhs_batch_dimensions.append(0)
    d.rhs_batch_dimensions.append(0)
    return d


def dot(a, b, lhs_contract, rhs_contract):
    return xla.dot_general(a, b, dims(lhs_contract, rhs_contract), None, preferred_element_type=tf.float32)


def attention_step(lead: int, queries: int, slots: int, dtype, keys_left: bool):
    """A compiled loop of STEPS decode steps' attention reads over a cache of `dtype`."""
    rng = np.random.default_rng(0)
    caches = [(tf.Variable(tf.cast(rng.standard_normal((lead, slots, HEAD_DIM)), dtype)),
               tf.Variable(tf.cast(rng.standard_normal((lead, slots, HEAD_DIM)), dtype))) for _ in range(LAYERS)]
    q0 = tf.constant(rng.standard_normal((lead, queries, HEAD_DIM)).astype(np.float32))

    def layer(q, k, v):
        q = tf.cast(q, dtype)
        if keys_left:
            probs = tf.nn.softmax(dot(k, q, 2, 2), axis=1)  # [lead, slots, queries]
            return tf.transpose(dot(v, tf.cast(probs, dtype), 1, 1), [0, 2, 1])  # [lead, queries, head_dim]
        probs = tf.nn.softmax(dot(q, k, 2, 2), axis=-1)  # [lead, queries, slots]
        return dot(tf.cast(probs, dtype), v, 2, 1)  # [lead, queries, head_dim]

    @tf.function(jit_compile=True, autograph=False)
    def loop(q):
        def body(i, q):
            for k, v in caches:
                q = q + 1e-3 * layer(q, k, v)
            return i + 1, q
        return tf.while_loop(lambda i, q: i < STEPS, body, (0, q))[1]

    loop(q0)
    return lambda: loop(q0).numpy()


def main():
    bandwidth = memory_bandwidth_gbs(1.0)
    print(f"CPU flags: {cpu_flags()}; TensorFlow {tf.__version__}; memory read {bandwidth:.1f} GB/s")
    print(f"{'shape':30s} {'cache':9s} {'q left':>8s} {'keys left':>10s} {'floor':>7s}  (ms per step, 12 layers)")
    for name, (lead, queries, slots) in SHAPES.items():
        for dtype in (tf.float32, tf.bfloat16):
            runs = {left: attention_step(lead, queries, slots, dtype, left) for left in (False, True)}
            times = {left: [] for left in runs}
            for _ in range(7):
                for left, run in runs.items():
                    start = time.perf_counter()
                    run()
                    times[left].append((time.perf_counter() - start) * 1000 / STEPS)
            floor = 2 * LAYERS * lead * slots * HEAD_DIM * dtype.size / bandwidth / 1e6
            print(f"{name:30s} {dtype.name:9s} {statistics.median(times[False]):8.2f} "
                  f"{statistics.median(times[True]):10.2f} {floor:7.2f}", flush=True)


if __name__ == "__main__":
    main()
