"""How a weight matrix is held and multiplied at each compute dtype.

    float32   the dot reads float32 weights (the reference's numbers).
    bfloat16  weights in bfloat16; each dot casts its activations to bfloat16 and accumulates in
              float32 (`preferred_element_type`): the CPU's bfloat16 instructions do the work.
    float16   storage only: weights are cast to float32 before the dot (XLA's CPU float16 dot
              upcasts anyway; ../shared/NOTES.md).
    int8      W8A8 as CTranslate2 does it: weights symmetric per output channel (one scale per row
              of the [out, in] matrix), activations quantized per token row inside the step, an
              s8 x s8 -> s32 dot, dequantized by both scales after it.

Layer norms, softmax, attention, residuals and sampling stay float32 at every dtype; only the
linear layers, the LM head and the token embedding read reduced-precision weights.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla
from tensorflow.compiler.xla import xla_data_pb2

from .cpu import cpu_flags
from .quantize import INT8_MAX, dequantize_rows, quantize_rows


class Matrix(NamedTuple):
    """A weight matrix as the dots read it, held [out, in] (see model.linear)."""

    values: tf.Variable  # [out, in]: float32, bfloat16, float16 or int8
    scale: tf.Variable | None  # [out] float32: int8's per-row scale (value = values * scale); else None


def matrix(value: np.ndarray, dtype: str, name: str, scale: np.ndarray | None = None) -> Matrix:
    """A Matrix of `dtype` from a [out, in] array: float values are converted (int8: quantized per
    row); int8 values come with their `scale` (a quantized file) and are kept as they are."""
    var_name = name.replace(".", "/")
    if dtype == "int8":
        if scale is None:
            value, scale = quantize_rows(value, name)
        return Matrix(tf.Variable(value, dtype=tf.int8, trainable=False, name=var_name),
                      tf.Variable(np.asarray(scale, np.float32), trainable=False, name=var_name + "/scale"))
    if scale is not None:  # an int8 file read at a float dtype
        value = dequantize_rows(value, scale)
    target = tf.as_dtype(dtype)
    value = np.asarray(value, np.float32) if value.dtype != target.as_numpy_dtype else value
    return Matrix(tf.Variable(value, dtype=target, trainable=False, name=var_name), None)


def embed(m: Matrix, ids) -> tf.Tensor:
    """Rows `ids` of m as float32: [..., in] (the token embedding; int8 rows times their scale)."""
    rows = tf.cast(tf.gather(m.values, ids), tf.float32)
    if m.scale is None:
        return rows
    return rows * tf.gather(m.scale, ids)[..., None]


def _dims(lhs: int, rhs: int):
    d = xla_data_pb2.DotDimensionNumbers()
    d.lhs_contracting_dimensions.append(lhs)
    d.rhs_contracting_dimensions.append(rhs)
    return d


def _dot(a, b, out_dtype, weight_left: bool):
    """a [tokens, in] . b [out, in] contracted over `in`: [tokens, out] in out_dtype (the
    accumulator type), with the weight as the dot's left operand when weight_left."""
    if weight_left:
        return tf.transpose(xla.optimization_barrier(xla.dot_general(b, a, _dims(1, 1), None,
                                                                     preferred_element_type=out_dtype))[0])
    return xla.dot_general(a, b, _dims(1, 1), None, preferred_element_type=out_dtype)


def quantize_activations(x) -> tuple[tf.Tensor, tf.Tensor]:
    """x [tokens, in] float32 -> (int8 [tokens, in], scale [tokens, 1]): symmetric per token row,
    computed in the step. An all-zero row (padding) gets scale 1."""
    amax = tf.reduce_max(tf.abs(x), axis=1, keepdims=True)  # [tokens, 1]
    scale = tf.where(amax > 0, amax / INT8_MAX, tf.ones_like(amax))
    return tf.cast(tf.clip_by_value(tf.round(x / scale), -INT8_MAX, INT8_MAX), tf.int8), scale


# Few-token dots of the reduced types (benchmarks/probe_precision.py, GPT-2 small's 48 block
# matmuls per step, AMD EPYC with AVX2 only, ms per step):
#                       1 row   1 row +pad   4 rows   16 rows   64 rows
#   float32  (W@x^T)     14.7      -          20.2     27.4      86.6
#   int8     x@W^T       23.5     10.8        12.0     30.1      76.6
#   int8     (W@x^T)     22.1     21.8        14.6     23.6      73.4
#   bfloat16 x@W^T       18.7     25.9        22.3     45.1     122.7
#   bfloat16 (W@x^T)     24.6     24.9        26.4     33.2     118.8
# A single token row takes a slow matrix-vector kernel in int8: one zero row appended halves it.
# Issue 32 saw the same for bfloat16 on a Xeon with AMX; here (no bfloat16 instructions) the
# unpadded bfloat16 row wins in this probe but not in a whole step (greedy at 1 row, GPT-2 small:
# 34.5 ms padded, 35.7 unpadded; benchmarks/bench_precision.py), so both reduced types pad.
# Up to REDUCED_PLAIN_UNTIL rows the activations are the dot's left operand; beyond, the caller's
# choice (model.linear) stands.
REDUCED_PLAIN_UNTIL = 8


def _reduced_dot(x, values, out_dtype, weight_left: bool):
    """x [tokens, in] (int8 or bfloat16) . values [out, in]: [tokens, out] in out_dtype, in the
    formulation measured fastest for the static token count."""
    tokens = x.shape[0]
    if tokens == 1:
        padded = tf.concat([x, tf.zeros_like(x)], 0)  # [2, in]
        return _dot(padded, values, out_dtype, weight_left=False)[:1]
    if tokens is not None and tokens <= REDUCED_PLAIN_UNTIL:
        weight_left = False
    return _dot(x, values, out_dtype, weight_left)


# int8 dots of many token rows run as bfloat16 dots of the same integers where the CPU's bfloat16
# kernel outruns its int8 one. Every int8 value is exact in bfloat16, each product (|q| <= 127**2) is
# exact in float32, and so is any float32 sum of up to EXACT_SPAN of them (127**2 * 1040 < 2**24):
# summing spans of `in` as int32 gives the s8 x s8 -> s32 result bit for bit, so the choice can only
# change the speed. [rows, 768] x [3072, 768]^T on an AMD EPYC Zen 4 (AVX512-BF16 and -VNNI, no AMX),
# ms per dot, s8 / as bfloat16 (/tmp probe, 2026-12-06; the weight's cast to bfloat16 left out, it
# reads and writes the weight once more per call): 64 rows 1.45 / 1.34, 256 rows 4.35 / 3.60, 1024
# rows 16.2 / 12.3. In the model (GPT-2 small int8, first token): 128 tokens with the route from 128
# 114.5 / 113.4 ms, 512 tokens 376 / 323, 1000 tokens 841 / 710. With AMX the int8 kernel is the
# faster (issue 32's Xeon: 3.2 vs 5.6 ms at 1024 rows); without AVX512-BF16 bfloat16 is emulated:
# both keep s8.
EXACT_SPAN = 1024
_FLAGS = cpu_flags()
INT8_AS_BFLOAT16_FROM = 256 if "avx512_bf16" in _FLAGS and "amx_int8" not in _FLAGS else None


def _int8_dot_as_bfloat16(xq, values, weight_left: bool):
    """xq [tokens, in] int8 . values [out, in] int8 as bfloat16 dots, one per EXACT_SPAN of `in`:
    [tokens, out] int32, equal to the s8 x s8 -> s32 dot (see INT8_AS_BFLOAT16_FROM)."""
    xb, wb = tf.cast(xq, tf.bfloat16), tf.cast(values, tf.bfloat16)
    parts = [tf.cast(_dot(xb[:, i:i + EXACT_SPAN], wb[:, i:i + EXACT_SPAN], tf.float32, weight_left), tf.int32)
             for i in range(0, xq.shape[1], EXACT_SPAN)]
    return tf.add_n(parts)


def _int8_dot(xq, values, weight_left: bool):
    """xq [tokens, in] int8 . values [out, in] int8: [tokens, out] int32, exact however computed."""
    tokens = xq.shape[0]
    if INT8_AS_BFLOAT16_FROM is not None and tokens is not None and tokens >= INT8_AS_BFLOAT16_FROM:
        return _int8_dot_as_bfloat16(xq, values, weight_left)
    return _reduced_dot(xq, values, tf.int32, weight_left)


def matmul(x, m: Matrix, weight_left: bool) -> tf.Tensor:
    """x [tokens, in] float32 times m^T: [tokens, out] float32, in m's compute dtype.

    weight_left: the weight as the dot's left operand, (W @ x^T)^T (model.linear says when; the
    reduced types override it for few tokens, see REDUCED_PLAIN_UNTIL).
    """
    if m.scale is not None:  # int8: s8 x s8 -> s32 is exact, so the formulation cannot change a result
        xq, x_scale = quantize_activations(x)
        acc = _int8_dot(xq, m.values, weight_left)  # [tokens, out] int32
        return tf.cast(acc, tf.float32) * x_scale * m.scale
    if m.values.dtype == tf.bfloat16:
        return _reduced_dot(tf.cast(x, tf.bfloat16), m.values, tf.float32, weight_left)
    w = tf.cast(m.values, x.dtype)  # float32 (float16 storage is read as float32)
    if weight_left:
        return tf.transpose(xla.optimization_barrier(tf.matmul(w, x, transpose_b=True))[0])
    return tf.matmul(x, w, transpose_b=True)
