"""`convert`: a Hugging Face GPT-2 checkpoint into a minigen model directory, and `verify`.

Conversion never leaves a half-written destination: everything is written into a temporary
directory beside DST and renamed into place at the end. An existing DST is replaced only with
`force=True`, and then only after the new one is complete. SRC is only read.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import numpy as np

from minigen.model import tensor_shapes
from minigen.weights import CONFIG_FILE, FORMAT_METADATA, WEIGHTS_FILE, LoadError, check_shapes

from .hf_checkpoint import CheckpointError, read_config, read_hf_tensors, to_minigen_names

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
STORAGE_DTYPES = ("float32", "float16", "bfloat16")


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _storage_array(value: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        import ml_dtypes

        return np.ascontiguousarray(value.astype(np.float32).astype(ml_dtypes.bfloat16))
    return np.ascontiguousarray(value.astype(dtype))


def convert(src: str, dst: str, force: bool = False, dtype: str = "float32", quiet: bool = False) -> str:
    """Convert the HF GPT-2 checkpoint at `src` into a minigen directory at `dst`; returns dst.

    dtype: storage type of the tensors in dst ("float32", "float16" or "bfloat16").
    """
    from safetensors.numpy import save_file

    src, dst = os.path.abspath(src), os.path.abspath(dst)
    if dtype not in STORAGE_DTYPES:
        raise CheckpointError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    if not os.path.isdir(src):
        raise CheckpointError(f"source {src!r} is not a directory")
    if os.path.exists(dst) and not force:
        raise CheckpointError(f"destination {dst!r} already exists; pass --force to replace it")
    if dst == src:
        raise CheckpointError("destination must differ from the source")

    config, raw_config = read_config(src)
    _say(f"reading {src}", quiet)
    tensors = to_minigen_names(read_hf_tensors(src), config, src)
    try:
        check_shapes(tensors, tensor_shapes(config), src)
    except LoadError as e:
        raise CheckpointError(str(e)) from None

    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.tmp-", dir=parent)
    try:
        _say(f"writing {len(tensors)} tensors ({dtype})", quiet)
        save_file(
            {name: _storage_array(value, dtype) for name, value in sorted(tensors.items())},
            os.path.join(tmp, WEIGHTS_FILE),
            metadata=dict(FORMAT_METADATA),
        )
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(raw_config, f, indent=2, sort_keys=True)
        for name in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(src, name)):
                shutil.copy2(os.path.join(src, name), os.path.join(tmp, name))
        _usual_permissions(tmp)
        _replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(f"wrote {dst}", quiet)
    return dst


def _usual_permissions(path: str) -> None:
    """mkdtemp makes a private (0700) directory; give DST the permissions a plain mkdir would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    for name in os.listdir(path):
        os.chmod(os.path.join(path, name), 0o666 & ~umask)


def _replace(tmp: str, dst: str) -> None:
    """Move the finished `tmp` to `dst`; an old dst is kept aside until the new one is in place."""
    if not os.path.exists(dst):
        os.rename(tmp, dst)
        return
    aside = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.old-", dir=os.path.dirname(dst))
    os.rmdir(aside)
    os.rename(dst, aside)
    try:
        os.rename(tmp, dst)
    except BaseException:
        os.rename(aside, dst)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def probe_batch(config, rows: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small left-padded batch of random ids with rows of different lengths."""
    rng = np.random.default_rng(seed)
    width = min(12, config.n_positions)
    ids = rng.integers(0, config.vocab_size, size=(rows, width)).astype(np.int32)
    mask = np.ones((rows, width), np.int32)
    for r in range(rows):
        mask[r, : min(r * 3, width - 1)] = 0
    return ids, mask


def verify(dst: str, src: str, tolerance: float = 1e-3, quiet: bool = False) -> float:
    """Compare minigen's logits for DST with an independent NumPy forward over SRC's tensors.

    The source tensors are rounded to DST's storage dtype first, so the check isolates the
    conversion and the forward pass from the precision chosen for storage. Returns the max abs
    difference over non-pad positions; raises CheckpointError if it exceeds `tolerance`.
    """
    import minigen
    from safetensors import safe_open

    from .reference import reference_logits

    model = minigen.load(dst)
    config, _ = read_config(src)
    hf = read_hf_tensors(src)
    with safe_open(os.path.join(dst, WEIGHTS_FILE), framework="numpy") as f:
        stored = str(f.get_tensor("wte").dtype)
    if stored != "float32":
        hf = {k: _storage_array(v, stored).astype(np.float32) for k, v in hf.items()}
    ids, mask = probe_batch(config)
    ours = model.logits(ids, mask)
    ref = reference_logits(hf, config, ids, mask)
    diff = float(np.max(np.abs(ours - ref)[mask.astype(bool)]))
    _say(f"verify: max abs logit difference {diff:.3g} over {int(mask.sum())} positions (tolerance {tolerance})", quiet)
    if not diff <= tolerance:
        raise CheckpointError(f"verification failed: max abs logit difference {diff:.3g} > {tolerance}")
    return diff
