"""Reading a Hugging Face GPT-2 checkpoint directory: config.json + model.safetensors (or shards).

HF GPT-2 stores its projections as `Conv1D` modules whose weight is [in, out], the layout
`x @ kernel` wants, so no tensor needs a transpose (nanoGPT transposes them only because it
uses `nn.Linear`, which is [out, in]). Names lose the optional `transformer.` prefix; the causal
mask buffers `attn.bias` / `attn.masked_bias` that old checkpoints saved are ignored.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from minigen.config import ConfigError, GPT2Config
from minigen.layout import hf_names
from minigen.weights import LoadError, read_header, read_safetensors

INDEX_FILE = "model.safetensors.index.json"

IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


class CheckpointError(ValueError):
    """A source checkpoint that cannot be converted; the message names the problem."""


def read_config(src: str) -> tuple[GPT2Config, dict]:
    """The checkpoint's GPT2Config and its raw config.json dictionary."""
    path = os.path.join(src, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{src!r} has no config.json; expected a Hugging Face GPT-2 directory")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if not isinstance(raw, dict):
            raise ConfigError("it must hold a JSON object")
        return GPT2Config.from_dict(raw), raw
    except (ConfigError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to be a config.json") from None


def weight_files(src: str) -> list[str]:
    """The safetensors file(s) holding the checkpoint: one file, or the shards its index lists."""
    single = os.path.join(src, "model.safetensors")
    index = os.path.join(src, INDEX_FILE)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({e})") from None
        if not all(isinstance(shard, str) for shard in shards):
            raise CheckpointError(f"{index} names a shard that is not a file name: {shards!r}")
        paths = [os.path.join(src, shard) for shard in shards]
        outside = [p for p in paths if os.path.commonpath([os.path.realpath(p), os.path.realpath(src)])
                   != os.path.realpath(src)]
        if outside:
            raise CheckpointError(f"{index} names shard(s) outside {src!r}: {', '.join(outside)}; a checkpoint's "
                                  "shards lie in its own directory")
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            raise CheckpointError(f"{index} lists shard(s) that are missing: {', '.join(absent)}")
        return paths
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(os.path.join(src, "pytorch_model.bin")):
        raise CheckpointError(
            f"{src!r} holds only pytorch_model.bin; minigen reads safetensors. Re-save it with "
            "`GPT2LMHeadModel.from_pretrained(src).save_pretrained(dst)` (writes model.safetensors)"
        )
    raise CheckpointError(f"{src!r} has no model.safetensors or {INDEX_FILE}")


def hf_header_names(src: str) -> list[str]:
    """The checkpoint's tensor names (without `transformer.`), from the file headers only."""
    names = []
    for path in weight_files(src):
        try:
            header, _ = read_header(path)
        except LoadError as e:
            raise CheckpointError(str(e)) from None
        names += [name.removeprefix("transformer.") for name in header]
    return names


def read_hf_tensors(src: str) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint under their HF names without the `transformer.` prefix."""
    tensors = {}
    for path in weight_files(src):
        try:
            part, _ = read_safetensors(path)
        except LoadError as e:
            raise CheckpointError(str(e)) from None
        for name, value in part.items():
            tensors[name.removeprefix("transformer.")] = value
    return tensors


def has_own_head(hf: dict[str, np.ndarray], config: GPT2Config) -> bool:
    """Whether the reference computes logits with `lm_head.weight` rather than `wte.weight`.

    transformers (5.x) ties the head to wte when the config says so, unless the checkpoint holds
    an `lm_head.weight` whose values differ from wte's: then it keeps that head (and warns).
    An untied config always uses lm_head.weight.
    """
    head = hf.get("lm_head.weight")
    if not config.tie_word_embeddings:
        return True
    wte = hf.get("wte.weight")
    return head is not None and wte is not None and not np.array_equal(head, wte)


def to_minigen_names(hf: dict[str, np.ndarray], config: GPT2Config, source: str) -> dict[str, np.ndarray]:
    """Rename HF tensors to minigen's names; raise on any tensor we would not know what to do with.

    A distinct `lm_head.weight` under a tied config is kept as minigen's `lm_head` (see
    `has_own_head`); the caller then writes the config with tie_word_embeddings false.
    """
    lookup = {hf: ours for ours, hf in hf_names(config).items()}
    out, unknown = {}, []
    for name, value in hf.items():
        if IGNORED.match(name):
            continue
        if name == "lm_head.weight" and not has_own_head(hf, config):
            continue  # tied to wte: the same tensor, saved twice by some exporters
        if name not in lookup:
            unknown.append(name)
            continue
        out[lookup[name]] = value
    if unknown:
        raise CheckpointError(f"{source} has tensor(s) that a GPT-2 of this config does not: {', '.join(unknown[:5])}")
    return out
