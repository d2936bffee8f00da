"""minigen's on-disk format, and `load()`.

A minigen model directory holds:
- `config.json`: the Hugging Face GPT-2 config, unchanged;
- `model.safetensors`: the tensors named and shaped as `layout.tensor_shapes` lists, with the
  safetensors metadata `{"format": "minigen", "minigen_format_version": "1"}`;
- `tokenizer.json` (optional), copied from the source checkpoint.

`weights_tools convert` makes one from a Hugging Face GPT-2 checkpoint.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from .config import ConfigError, GPT2Config
from .cpu import warn_slow_dtype
from .layout import SCALE_SUFFIX, quantized, tensor_shapes
from .quantize import channels_first
from .tokenizer import Tokenizer

FORMAT_METADATA = {"format": "minigen", "minigen_format_version": "1"}
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DTYPES = ("float32", "bfloat16", "float16", "int8")  # what `load` computes in (minigen/precision.py)
INT8_METADATA = {"minigen_dtype": "int8"}  # added to FORMAT_METADATA in files whose matrices are int8


class LoadError(ValueError):
    """A path that does not hold a usable minigen model; the message says what to do."""


class TensorInfo(NamedTuple):
    """A tensor as its file's header describes it (nothing read yet)."""

    shape: tuple
    dtype: str  # numpy's name: float32, bfloat16, int32, ...


SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                      "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _unreadable(path: str, e: Exception) -> LoadError:
    return LoadError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}")


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Each tensor's shape and dtype from a safetensors file's header, plus its metadata: cheap, so
    that a file that does not fit its config is refused before gigabytes are read."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            infos = {}
            for name in f.keys():
                part = f.get_slice(name)
                infos[name] = TensorInfo(tuple(part.get_shape()), SAFETENSORS_DTYPES.get(part.get_dtype(),
                                                                                          part.get_dtype().lower()))
        return infos, metadata
    except FileNotFoundError:
        raise LoadError(f"{path} does not exist") from None
    except Exception as e:  # safetensors raises its own error type for corrupt/truncated files
        raise _unreadable(path, e) from None


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a safetensors file as NumPy arrays, plus its metadata; clear errors if unreadable."""
    from safetensors import safe_open

    try:
        tensors = {}
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
        return tensors, metadata
    except FileNotFoundError:
        raise LoadError(f"{path} does not exist") from None
    except Exception as e:  # safetensors raises its own error type for corrupt/truncated files
        raise _unreadable(path, e) from None


def check_layer_count(names, n_layer: int, source: str) -> None:
    """LoadError unless the file's blocks h.0 .. h.{n-1} are config.json's n_layer: checked from the
    names alone, before the expected layout (n_layer x 12 tensors) is even listed."""
    layers = {int(name.split(".")[1]) for name in names if name.startswith("h.") and name.split(".")[1].isdigit()}
    held = len(layers)
    if held < n_layer:
        raise LoadError(f"{source} is missing tensor(s): those of blocks h.{held} .. h.{n_layer - 1} (config.json "
                        f"says n_layer {n_layer}; the file holds {held} block{'s' if held != 1 else ''})")
    if max(layers, default=-1) >= n_layer:
        raise LoadError(f"{source} has tensor(s) that config.json does not describe: h.{n_layer}.* .. "
                        f"h.{max(layers)}.* (more layers than config.json's n_layer {n_layer}?)")


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")  # what a weight tensor may be stored as


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def read_metadata(path: str) -> dict[str, str]:
    """The metadata of a safetensors file without reading its tensors ({} if it has none or is unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            return f.metadata() or {}
    except Exception:  # noqa: BLE001 - unreadable is reported by the caller as "not minigen's format"
        return {}


def check_shapes(tensors: dict[str, np.ndarray], expected: dict[str, tuple], source: str) -> None:
    """Raise LoadError naming every missing or unexpected tensor, or the first whose shape differs from the config.

    An unexpected tensor means the file and config.json disagree (more layers than n_layer, an
    `lm_head` while the config ties the head to `wte`): running either reading would be silently wrong.
    """
    missing = [name for name in expected if name not in tensors]
    if missing:
        raise LoadError(f"{source} is missing tensor(s): {_listed(missing)}")
    extra = sorted(name for name in tensors if name not in expected)
    if extra:
        hint = ""
        if "lm_head" in extra:
            hint = " (an lm_head needs tie_word_embeddings: false in config.json)"
        elif any(name.startswith("h.") for name in extra):
            hint = " (more layers than config.json's n_layer?)"
        raise LoadError(f"{source} has tensor(s) that config.json does not describe: {_listed(extra)}{hint}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise LoadError(
                f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                f"but config.json implies {tuple(shape)}"
            )


def check_dtypes(tensors: dict, source: str) -> None:
    """LoadError naming the first tensor that is not floating point (from the header: nothing read)."""
    for name, value in tensors.items():
        if str(value.dtype) not in FLOAT_DTYPES:
            raise LoadError(f"{source}: tensor {name!r} has dtype {value.dtype}; weights must be one of "
                            f"{', '.join(FLOAT_DTYPES)}")


def check_values(tensors: dict[str, np.ndarray], source: str) -> None:
    """Raise LoadError naming the first tensor that is not floating point or holds NaN/inf.

    Integer or bool weights would be cast silently, and a NaN weight makes every logit NaN, whose
    argmax is then an arbitrary id: both must stop at load time, not surface as odd text.
    """
    check_dtypes(tensors, source)
    for name, value in tensors.items():
        if not np.isfinite(value).all():
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise LoadError(f"{source}: tensor {name!r} holds {bad} NaN or infinite value(s)")


def split_scales(tensors: dict, source: str) -> dict:
    """Remove and return an int8 file's scale entries (name + SCALE_SUFFIX -> tensor) from `tensors`;
    LoadError for a scale whose matrix the file does not hold quantized."""
    scales = {name: tensors.pop(name) for name in [n for n in tensors if n.endswith(SCALE_SUFFIX)]}
    for name in scales:
        owner = name[: -len(SCALE_SUFFIX)]
        if owner not in tensors or not quantized(owner):
            raise LoadError(f"{source}: tensor {name!r} is a scale of no int8 matrix")
    return scales


def check_int8(tensors: dict, scales: dict, source: str) -> None:
    """LoadError naming the first matrix of an int8 file that is not int8 or lacks a float32
    scale of one value per output channel (columns of a [in, out] kernel, rows of wte/lm_head)."""
    for name, value in tensors.items():
        if not quantized(name):
            continue
        if str(value.dtype) != "int8":
            raise LoadError(f"{source}: tensor {name!r} has dtype {value.dtype}; an int8 file holds it as int8")
        out = value.shape[0] if channels_first(name) else value.shape[1]
        scale = scales.get(name + SCALE_SUFFIX)
        if scale is None:
            raise LoadError(f"{source}: int8 tensor {name!r} has no scales ({name + SCALE_SUFFIX!r} is missing)")
        if tuple(scale.shape) != (out,) or str(scale.dtype) != "float32":
            raise LoadError(f"{source}: tensor {name + SCALE_SUFFIX!r} has shape {tuple(scale.shape)} and dtype "
                            f"{scale.dtype}; the scales of {name!r} are float32 ({out},)")


def check_scale_values(scales: dict[str, np.ndarray], source: str) -> None:
    """LoadError naming the first scale that is not a finite positive number (a zero or NaN scale
    would silently zero or poison its channel)."""
    for name, value in scales.items():
        if not (np.isfinite(value).all() and (value > 0).all()):
            raise LoadError(f"{source}: tensor {name!r} holds scales that are not finite and > 0")


def is_int8_file(metadata: dict) -> bool:
    """Whether a minigen file's metadata says its matrices are int8 (quantize_tensors' output)."""
    return metadata.get("minigen_dtype") == INT8_METADATA["minigen_dtype"]


MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
DEFAULT_MODEL = "gutenberg-6l"  # the shipped target model (weights_tools/TRAINING.md)


def shipped_models() -> list[str]:
    """Names of the models shipped inside the package (minigen/models/<name>/)."""
    if not os.path.isdir(MODELS_DIR):
        return []
    return sorted(n for n in os.listdir(MODELS_DIR) if os.path.isfile(os.path.join(MODELS_DIR, n, WEIGHTS_FILE)))


def resolve(path: str | os.PathLike | None) -> str:
    """A model directory for `path`: None = the default shipped model, a shipped model's name, or a directory."""
    if path is None:
        path = DEFAULT_MODEL
    path = os.fspath(path)
    if not os.path.isdir(path) and path in shipped_models():
        return os.path.join(MODELS_DIR, path)
    if path == DEFAULT_MODEL and not os.path.isdir(path):
        raise LoadError(f"the default model {DEFAULT_MODEL!r} is not in this installation ({MODELS_DIR}); "
                        "pass a model directory made by `minigen convert`")
    return path


def check_model_dir(path: str | os.PathLike | None) -> str:
    """The model directory `path` names (see `resolve`), or LoadError saying why it is not one.

    Cheap (no tensor is read): the CLI calls it before starting long work such as a pipeline.
    """
    path = resolve(path)
    if os.path.isfile(path):
        raise LoadError(f"{path!r} is a file; pass the model directory that holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    if not os.path.isdir(path):
        shipped = ", ".join(shipped_models()) or "none in this installation"
        raise LoadError(f"model directory {path!r} does not exist (shipped models: {shipped}; a Hugging Face "
                        "GPT-2 must first be converted: `minigen convert SRC DST`)")
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)) or not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        if os.path.isfile(os.path.join(path, "model.safetensors.index.json")):
            raise LoadError(f"{path!r} is a sharded Hugging Face checkpoint; convert it first with "
                            "`python -m weights_tools convert SRC DST`")
        raise LoadError(
            f"{path!r} is not a minigen model directory (it needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "make one from a Hugging Face GPT-2 with `python -m weights_tools convert SRC DST`"
        )
    return path


def load(path: str | os.PathLike | None = None, dtype: str | None = None, compile_cache_size: int = 16):
    """Load a minigen model directory and return a `minigen.GPT2` ready for `logits()`/`generate()`.

    path: a directory made by `minigen convert`, the name of a shipped model (`shipped_models()`),
    or None for the default shipped model (DEFAULT_MODEL, a small GPT-2 trained by us on
    public-domain novels; see weights_tools/TRAINING.md).

    dtype: what the weight matrices are held and multiplied in (minigen/precision.py):
    "float32"; "bfloat16" (bfloat16 dots, float32 accumulation); "float16" (storage only, the
    dots read float32); "int8" (CTranslate2-style W8A8: per-channel int8 weights, activations
    quantized per token in the step, int32 accumulation; a float file is quantized at load).
    None (the default): the file's own, "int8" for an int8 file (`weights_tools convert --dtype
    int8`), else "float32". Layer norms, attention, the KV cache and sampling stay float32.

    compile_cache_size: how many compiled functions (one per strategy, batch rows, bucket,
    max_new_tokens, ...) the model keeps; the least recently used is dropped beyond it
    (`model.compile_cache`, see minigen/compile_cache.py).
    """
    # imported here, not at the top: `import minigen` (and the CLI's argument checks) must not load TensorFlow
    from .gpt2 import GPT2

    if dtype is not None and (not isinstance(dtype, str) or dtype not in DTYPES):
        raise LoadError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not isinstance(compile_cache_size, int) or isinstance(compile_cache_size, bool) or compile_cache_size < 1:
        raise LoadError(f"compile_cache_size must be an int >= 1, got {compile_cache_size!r}")
    path = check_model_dir(path)
    weights = os.path.join(path, WEIGHTS_FILE)
    try:
        config = GPT2Config.from_json_file(os.path.join(path, CONFIG_FILE))
    except ConfigError as e:
        raise LoadError(f"{path}: {e}") from None
    # everything the header and the small files can tell is checked before a tensor is read
    header, metadata = read_header(weights)
    if metadata.get("format") != FORMAT_METADATA["format"]:
        raise LoadError(
            f"{weights} is not in minigen's format (a Hugging Face checkpoint?); "
            "convert it with `python -m weights_tools convert SRC DST`"
        )
    int8_file = is_int8_file(metadata)
    dtype = dtype or ("int8" if int8_file else "float32")
    scale_info = split_scales(header, weights) if int8_file else {}
    check_layer_count(header, config.n_layer, weights)
    check_shapes(header, tensor_shapes(config), weights)
    if int8_file:
        check_int8(header, scale_info, weights)
    check_dtypes({n: t for n, t in header.items() if not (int8_file and quantized(n))}, weights)
    tokenizer = load_tokenizer(path, config)
    defaults = load_generation_config(path)
    tensors, _ = read_safetensors(weights)
    scales = split_scales(tensors, weights) if int8_file else {}
    check_values({n: t for n, t in tensors.items() if not (int8_file and quantized(n))}, weights)
    check_scale_values(scales, weights)
    warn_slow_dtype(dtype)
    model = GPT2(config, {**tensors, **scales}, dtype=dtype, compile_cache_size=compile_cache_size)
    model.tokenizer = tokenizer
    model.generation_config = defaults
    return model


def load_tokenizer(path: str, config: GPT2Config):
    """The directory's tokenizer (None without one); LoadError if it cannot be read or its vocabulary
    size is not the model's (ids would fail to decode, or name rows the model does not have)."""
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "vocab.json")):
        return None
    try:
        eos = config.eos_token_id if isinstance(config.eos_token_id, int) else None
        tokenizer = Tokenizer.from_dir(path, eos_id=eos)
    except Exception as e:  # noqa: BLE001 - any failure reading it is reported as a LoadError
        raise LoadError(f"{path}: could not load its tokenizer: {e}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise LoadError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                        f"{config.vocab_size}; they must be the same vocabulary")
    return tokenizer


GENERATION_CONFIG_FILE = "generation_config.json"


def load_generation_config(path: str):
    """The model's generation defaults from generation_config.json (as transformers reads it), or
    the plain defaults without one. Fields minigen does not use are named once on the `minigen` logger."""
    import logging

    from .generation.config import GenerationConfig  # no TensorFlow: config.py imports only numpy

    file = os.path.join(path, GENERATION_CONFIG_FILE)
    if not os.path.isfile(file):
        return GenerationConfig()
    try:
        config, unused = GenerationConfig.from_json_file(file)
    except ValueError as e:
        raise LoadError(str(e)) from None
    if unused:
        logging.getLogger("minigen").warning("%s: ignored field(s) minigen does not use: %s", file, ", ".join(unused))
    return config
