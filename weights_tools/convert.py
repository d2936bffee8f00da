"""`convert`: a Hugging Face GPT-2 checkpoint into a minigen model directory, and `verify`.

Conversion never leaves a half-written destination: everything is written (and, when asked,
verified) in a temporary directory beside DST and renamed into place at the end. An existing DST
is replaced only with `force=True`, only when it is itself a minigen model directory holding
nothing else, and only after the new one is complete. SRC is only read, and DST may never be SRC
or a directory containing it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile

import numpy as np

from minigen.layout import hf_names, tensor_shapes
from minigen.quantize import dequantize_tensors, quantize_tensors
from minigen.weights import (CONFIG_FILE, FORMAT_METADATA, INT8_METADATA, WEIGHTS_FILE, LoadError, check_layer_count,
                             check_shapes, check_values, is_int8_file, read_metadata)

from .hf_checkpoint import (CheckpointError, has_own_head, hf_header_names, read_config, read_hf_tensors,
                            to_minigen_names)

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
STORAGE_DTYPES = ("float32", "float16", "bfloat16", "int8")  # int8: minigen.weights.quantize_tensors


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def stored_tensors(tensors: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """The float32 tensors as DST holds them at `dtype`: cast (float16/bfloat16), or int8 matrices
    with their per-channel scales (int8; the vectors and wpe stay float32)."""
    if dtype == "int8":
        return {name: np.ascontiguousarray(value) for name, value in sorted(quantize_tensors(tensors).items())}
    return {name: _storage_array(value, dtype) for name, value in sorted(tensors.items())}


def _storage_array(value: np.ndarray, dtype: str) -> np.ndarray:
    """`value` cast to the storage dtype; values too large for it become inf (the caller checks)."""
    with np.errstate(over="ignore"):
        if dtype == "bfloat16":
            import ml_dtypes

            return np.ascontiguousarray(value.astype(np.float32).astype(ml_dtypes.bfloat16))
        return np.ascontiguousarray(value.astype(dtype))


def convert(src: str, dst: str, force: bool = False, dtype: str = "float32", quiet: bool = False,
            verify_with_source: bool = False, tolerance: float = 1e-3) -> str:
    """Convert the HF GPT-2 checkpoint at `src` into a minigen directory at `dst`; returns dst.

    dtype: storage type of the tensors in dst ("float32", "float16", "bfloat16", or "int8": each
        matrix a dot reads as int8 per output channel with its float32 scales; such a directory
        loads as dtype="int8" by default and computes in int8, see minigen/precision.py).
    force: replace an existing dst, which must itself be a minigen model directory (see
        `check_replaceable`); anything else is refused, whatever `force` says.
    verify_with_source: run `verify` on the new directory before it is moved into place, so a
        failed check leaves dst exactly as it was.
    """
    src, dst = os.path.abspath(src), os.path.abspath(dst)
    if dtype not in STORAGE_DTYPES:
        raise CheckpointError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    if not os.path.isdir(src):
        raise CheckpointError(f"source {src!r} is not a directory")
    if _inside(src, dst):
        raise CheckpointError(f"destination {dst!r} is or contains the source {src!r}; choose a new directory")
    if os.path.lexists(dst):
        if not force:
            raise CheckpointError(f"destination {dst!r} already exists; pass --force to replace it")
        check_replaceable(dst)

    if read_metadata(os.path.join(src, WEIGHTS_FILE)).get("format") == FORMAT_METADATA["format"]:
        raise CheckpointError(f"{src!r} is already a minigen model (converted earlier): load it with "
                              f"minigen.load({src!r}) or `minigen generate --model {src}`; convert takes a Hugging "
                              "Face GPT-2 directory")
    config, raw_config = read_config(src)
    copies = tokenizer_files(src)  # refused links are refused before anything is written
    tmp = _temporary_dir_beside(dst)  # before reading: an unwritable destination fails at once
    try:
        return _convert_into(tmp, src, dst, config, raw_config, copies, dtype, quiet, verify_with_source, tolerance)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temporary_dir_beside(dst: str) -> str:
    parent = os.path.dirname(dst)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise CheckpointError(f"cannot write into {parent!r}: it is a file, not a directory")
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.tmp-", dir=parent)
    except OSError as e:
        raise CheckpointError(f"cannot write into {parent!r}: {e.strerror}") from None


def _convert_into(tmp, src, dst, config, raw_config, copies, dtype, quiet, verify_with_source, tolerance) -> str:
    from safetensors.numpy import save_file

    _say(f"reading {src}", quiet)
    try:  # from the headers, before any tensor is read (a config with a huge n_layer lists millions)
        check_layer_count(hf_header_names(src), config.n_layer, src)
    except LoadError as e:
        raise CheckpointError(str(e)) from None
    hf = read_hf_tensors(src)
    if config.tie_word_embeddings and has_own_head(hf, config):
        # the reference keeps such a head (see has_own_head); so do we, and say so in the config
        _say("the checkpoint's lm_head.weight differs from wte: kept as an untied head "
             "(config.json gets tie_word_embeddings: false)", quiet)
        config = dataclasses.replace(config, tie_word_embeddings=False)
        raw_config = {**raw_config, "tie_word_embeddings": False}
    tensors = to_minigen_names(hf, config, src)
    try:
        check_shapes(tensors, tensor_shapes(config), src)
        check_values(tensors, src)
    except LoadError as e:
        raise CheckpointError(str(e)) from None
    stored = stored_tensors(tensors, dtype)
    overflow = [name for name, value in stored.items() if not np.isfinite(value).all()]
    if overflow:
        raise CheckpointError(f"tensor {overflow[0]!r} has values too large for {dtype} (they would become inf); "
                              "convert with --dtype float32 or bfloat16")

    _say(f"writing {len(tensors)} tensors ({dtype})", quiet)
    metadata = {**FORMAT_METADATA, **(INT8_METADATA if dtype == "int8" else {})}
    save_file(stored, os.path.join(tmp, WEIGHTS_FILE), metadata=metadata)
    with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(raw_config, f, indent=2, sort_keys=True)
    _usual_permissions(tmp, _mode(os.path.join(src, WEIGHTS_FILE)) if os.path.isfile(os.path.join(src, WEIGHTS_FILE))
                       else 0o666)
    for name in copies:  # each keeps its own permissions, never wider
        shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
        os.chmod(os.path.join(tmp, name), _mode(os.path.join(src, name)) & 0o666 & ~_umask())
    if verify_with_source:
        verify(tmp, src, tolerance=tolerance, quiet=quiet)
    _replace(tmp, dst)
    _say(f"wrote {dst}", quiet)
    return dst


def _inside(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or lies below it (symbolic links resolved)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def check_replaceable(dst: str) -> None:
    """CheckpointError unless `dst` is a minigen model directory holding only what `convert` writes.

    `--force` exists to refresh a conversion; it must never delete a user's directory that happens
    to have the name given, nor files a user added beside a model.
    """
    if os.path.islink(dst) or not os.path.isdir(dst):
        raise CheckpointError(f"--force replaces only a minigen model directory, and {dst!r} is not a directory; "
                              "remove it yourself or choose another destination")
    written = {WEIGHTS_FILE, CONFIG_FILE, *TOKENIZER_FILES}
    others = sorted(set(os.listdir(dst)) - written)
    if not os.path.isfile(os.path.join(dst, WEIGHTS_FILE)) or not os.path.isfile(os.path.join(dst, CONFIG_FILE)):
        raise CheckpointError(f"--force replaces only a minigen model directory, and {dst!r} is not one (no "
                              f"{CONFIG_FILE} + {WEIGHTS_FILE}); remove it yourself or choose another destination")
    if read_metadata(os.path.join(dst, WEIGHTS_FILE)).get("format") != FORMAT_METADATA["format"]:
        raise CheckpointError(f"--force replaces only a minigen model directory, and {dst!r} holds a "
                              f"{WEIGHTS_FILE} that is not in minigen's format; choose another destination")
    if others:
        raise CheckpointError(f"--force would delete {', '.join(others[:5])} in {dst!r}, which a conversion does "
                              "not write; move them out or choose another destination")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


def _usual_permissions(path: str, source_mode: int = 0o666) -> None:
    """mkdtemp makes a private (0700) directory; give DST the permissions a plain mkdir would, and the
    files written so far those of a new file, but never wider than the source weights' own."""
    umask = _umask()
    os.chmod(path, 0o777 & ~umask)
    for name in os.listdir(path):
        os.chmod(os.path.join(path, name), 0o666 & ~umask & source_mode)


def tokenizer_files(src: str) -> list[str]:
    """The tokenizer (and generation config) files to copy from SRC: regular files, or links that
    stay inside SRC; CheckpointError for a link that leads out of it (its target could be any file of
    the user's, which DST would then publish)."""
    found = []
    for name in TOKENIZER_FILES:
        path = os.path.join(src, name)
        if not os.path.lexists(path):
            continue
        if os.path.islink(path) and not _inside(path, src):
            raise CheckpointError(f"{path} is a link to {os.path.realpath(path)}, outside {src!r}; copy the file "
                                  "into the checkpoint directory if it belongs there")
        if not os.path.isfile(path):
            raise CheckpointError(f"{path} is not a regular file")
        found.append(name)
    return found


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
    conversion and the forward pass from the precision chosen for storage; an int8 DST is read
    back at float32 (its matrices times their scales) against the source quantized and
    dequantized the same way, so the file's contents are what is checked, not int8 compute's own
    rounding of activations. Returns the max abs
    difference over non-pad positions; raises CheckpointError if it exceeds `tolerance`.
    """
    import minigen
    from safetensors import safe_open

    from .reference import reference_logits

    int8 = is_int8_file(read_metadata(os.path.join(dst, WEIGHTS_FILE)))
    model = minigen.load(dst, dtype="float32")
    config, _ = read_config(src)
    hf = read_hf_tensors(src)
    if config.tie_word_embeddings and has_own_head(hf, config):
        config = dataclasses.replace(config, tie_word_embeddings=False)  # as the reference (and convert) do
    with safe_open(os.path.join(dst, WEIGHTS_FILE), framework="numpy") as f:
        stored = str(f.get_tensor("wte").dtype)
    if int8:
        names = hf_names(config)  # ours -> HF's
        rounded = dequantize_tensors(quantize_tensors(to_minigen_names(hf, config, src)))
        hf = {names[name]: value for name, value in rounded.items()}
    elif stored != "float32":
        hf = {k: _storage_array(v, stored).astype(np.float32) for k, v in hf.items()}
    ids, mask = probe_batch(config)
    ours = model.logits(ids, mask)
    ref = reference_logits(hf, config, ids, mask)
    diff = float(np.max(np.abs(ours - ref)[mask.astype(bool)]))
    _say(f"verify: max abs logit difference {diff:.3g} over {int(mask.sum())} positions (tolerance {tolerance})", quiet)
    if not diff <= tolerance:
        raise CheckpointError(f"verification failed: max abs logit difference {diff:.3g} > {tolerance}")
    return diff
