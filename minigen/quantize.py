"""int8 weights as minigen's files and matrices hold them: symmetric, one scale per output channel.

NumPy only (no TensorFlow): `weights_tools convert --dtype int8` writes what `quantize_tensors`
returns, `minigen.load` checks it and minigen/precision.py multiplies it; `dequantize_tensors` is
what `export_hf` and `verify` read an int8 file as.
"""

from __future__ import annotations

import numpy as np

from .layout import SCALE_SUFFIX, quantized

INT8_MAX = 127  # symmetric: -127..127, so a value and its negation round alike


def quantize_rows(w: np.ndarray, name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row of w [rows, cols]: (q int8 [rows, cols], scale float32 [rows]) with
    w ~= q * scale[:, None]. A zero row gets scale 1 (its q is 0): nothing divides by zero.
    ValueError naming `name` if w holds NaN or inf (a scale of inf would poison every row it meets)."""
    w = np.asarray(w, np.float32)
    if not np.isfinite(w).all():
        raise ValueError(f"tensor {name!r} holds NaN or infinite values; it cannot be quantized")
    amax = np.abs(w).max(axis=1)  # [rows]
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 [rows, cols] from quantize_rows' output."""
    return q.astype(np.float32) * np.asarray(scale, np.float32)[:, None]


def channels_first(name: str) -> bool:
    """wte and lm_head are held [out=vocab, in=d] in the file; the block kernels [in, out]."""
    return name in ("wte", "lm_head")


def quantize_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A float model's tensors (file layout) as an int8 file holds them: every matrix a dot reads
    int8 per output channel plus its scales under name + SCALE_SUFFIX; the rest unchanged.
    ValueError naming the first tensor holding NaN or inf (checked before anything is returned)."""
    out = {}
    for name, value in tensors.items():
        if not quantized(name):
            out[name] = value
        elif channels_first(name):
            out[name], out[name + SCALE_SUFFIX] = quantize_rows(value, name)
        else:
            q, scale = quantize_rows(np.asarray(value).T, name)  # [out, in]
            out[name], out[name + SCALE_SUFFIX] = np.ascontiguousarray(q.T), scale
    return out


def dequantize_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An int8 file's tensors back to float32 in the file layout (scales consumed); a float file's
    tensors as float32. The inverse of quantize_tensors up to its rounding."""
    out = {}
    for name, value in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = tensors.get(name + SCALE_SUFFIX)
        if scale is None:
            out[name] = np.asarray(value, np.float32)
        elif channels_first(name):
            out[name] = dequantize_rows(value, scale)
        else:
            out[name] = np.ascontiguousarray(dequantize_rows(np.asarray(value).T, scale).T)
    return out
