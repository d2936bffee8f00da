"""The reverse of `convert`: a minigen model directory back to a Hugging Face GPT-2 directory.

Used to check a shipped minigen model against `transformers` (which reads only HF's format), and
handy for anyone who wants to take a minigen model elsewhere. Tensors are written in float32 with
HF's names; no tensor is transposed (both formats keep GPT-2's Conv1D `[in, out]` layout). An
int8 directory is written dequantized (each int8 matrix times its scales): the float32 model that
int8 file stands for.
"""

from __future__ import annotations

import os
import shutil


from minigen.config import GPT2Config
from minigen.quantize import dequantize_tensors
from minigen.weights import CONFIG_FILE, WEIGHTS_FILE, read_safetensors

from minigen.layout import hf_names as model_hf_names

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def hf_names(config: GPT2Config) -> dict[str, str]:
    """minigen tensor name -> Hugging Face name (with the `transformer.` prefix GPT2LMHeadModel uses)."""
    return {ours: hf if ours == "lm_head" else "transformer." + hf for ours, hf in model_hf_names(config).items()}


def export_hf(src: str, dst: str) -> str:
    """Write the minigen model at `src` as a Hugging Face GPT-2 directory at `dst` (must not exist)."""
    from safetensors.numpy import save_file

    if os.path.exists(dst):
        raise FileExistsError(f"{dst} exists; choose a new directory")
    config = GPT2Config.from_json_file(os.path.join(src, CONFIG_FILE))
    tensors, _ = read_safetensors(os.path.join(src, WEIGHTS_FILE))
    names = hf_names(config)
    out = {names[n]: t for n, t in dequantize_tensors(tensors).items()}
    os.makedirs(dst)
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy2(os.path.join(src, CONFIG_FILE), os.path.join(dst, "config.json"))
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
    return dst
