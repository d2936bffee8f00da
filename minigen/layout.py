"""The weight layout of a GPT-2, written once: minigen's tensor names, Hugging Face's, and shapes.

`minigen.load` checks files against `tensor_shapes`, the converter and `export_hf` rename with
`hf_names`, and `GPT2` fills its `Block`s through `BLOCK_TENSORS`. Plain data, no TensorFlow.
"""

from __future__ import annotations

from .config import GPT2Config

# The weight layout, written once (load, convert, export_hf and train derive theirs from it).
# Each row: Block field, minigen tensor name and Hugging Face GPT2LMHeadModel name (both after
# "h.{i}."), shape in the file. Kernels are stored [in, out] - HF's Conv1D layout, so conversion
# only renames - and held [out, in] in memory (see `linear`).
BLOCK_LAYOUT = (
    ("ln_1_scale", "ln_1.scale", "ln_1.weight", ("d",)),
    ("ln_1_bias", "ln_1.bias", "ln_1.bias", ("d",)),
    ("qkv_kernel", "attn.qkv.kernel", "attn.c_attn.weight", ("d", "3d")),  # q | k | v, each head-major
    ("qkv_bias", "attn.qkv.bias", "attn.c_attn.bias", ("3d",)),
    ("out_kernel", "attn.out.kernel", "attn.c_proj.weight", ("d", "d")),
    ("out_bias", "attn.out.bias", "attn.c_proj.bias", ("d",)),
    ("ln_2_scale", "ln_2.scale", "ln_2.weight", ("d",)),
    ("ln_2_bias", "ln_2.bias", "ln_2.bias", ("d",)),
    ("up_kernel", "mlp.up.kernel", "mlp.c_fc.weight", ("d", "inner")),
    ("up_bias", "mlp.up.bias", "mlp.c_fc.bias", ("inner",)),
    ("down_kernel", "mlp.down.kernel", "mlp.c_proj.weight", ("inner", "d")),
    ("down_bias", "mlp.down.bias", "mlp.c_proj.bias", ("d",)),
)
# The tensors outside the blocks: minigen name, HF name (HF prefixes all but lm_head with
# "transformer."), shape. lm_head exists only when the config unties the head from wte.
TOP_LAYOUT = (
    ("wte", "wte.weight", ("vocab", "d")),
    ("wpe", "wpe.weight", ("positions", "d")),
    ("ln_f.scale", "ln_f.weight", ("d",)),
    ("ln_f.bias", "ln_f.bias", ("d",)),
)
HEAD_LAYOUT = ("lm_head", "lm_head.weight", ("vocab", "d"))

BLOCK_TENSORS = {field: name for field, name, _, _ in BLOCK_LAYOUT}  # Block field -> name after "h.{i}."


def _layout(config: GPT2Config, with_head: bool):
    """(minigen name, HF name, shape) for every tensor of this config."""
    dims = {"d": config.n_embd, "3d": 3 * config.n_embd, "inner": config.inner_dim,
            "vocab": config.vocab_size, "positions": config.n_positions}
    rows = list(TOP_LAYOUT)
    for i in range(config.n_layer):
        rows += [(f"h.{i}.{name}", f"h.{i}.{hf}", shape) for _, name, hf, shape in BLOCK_LAYOUT]
    if with_head:
        rows.append(HEAD_LAYOUT)
    return [(name, hf, tuple(dims[d] for d in shape)) for name, hf, shape in rows]


def tensor_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor of minigen's format with the shape the config implies."""
    return {name: shape for name, _, shape in _layout(config, not config.tie_word_embeddings)}


def hf_names(config: GPT2Config) -> dict[str, str]:
    """minigen tensor name -> Hugging Face name without the "transformer." prefix, for every tensor
    a GPT-2 of this config may have (lm_head included: a checkpoint may hold one even when tied)."""
    return {name: hf for name, hf, _ in _layout(config, with_head=True)}


# int8 files (`weights_tools convert --dtype int8`) hold each matrix a dot reads as int8 [in, out]
# (wte and lm_head [vocab, d]) plus its per-output-channel scales under the name + this suffix,
# float32 [out]. wpe is only gathered, never multiplied: it stays floating point.
SCALE_SUFFIX = ".quant_scale"


def quantized(name: str) -> bool:
    """Whether int8 holds tensor `name` quantized: the block kernels, wte and lm_head."""
    return name.endswith(".kernel") or name in ("wte", "lm_head")
