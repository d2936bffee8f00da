"""Shared fixtures: small random-weight GPT-2s built with `transformers`, saved and converted."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"

# name -> transformers.GPT2Config kwargs. A larger initializer_range makes random logits peaked,
# so argmax comparisons are not decided by float rounding.
CONFIGS = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=128, initializer_range=0.3),
    "odd": dict(n_layer=3, n_embd=96, n_head=6, vocab_size=1003, n_positions=64, initializer_range=0.3),
    "four": dict(n_layer=4, n_embd=128, n_head=4, vocab_size=777, n_positions=256, initializer_range=0.3),
    "small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024),
}


def build_hf_model(name: str, seed: int = 0, **overrides):
    import torch
    import transformers

    kwargs = dict(CONFIGS[name])
    kwargs.update(overrides)
    kwargs.setdefault("bos_token_id", kwargs["vocab_size"] - 1)
    kwargs.setdefault("eos_token_id", kwargs["vocab_size"] - 1)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs)).eval()
    return model


@pytest.fixture(scope="session")
def hf_and_minigen(tmp_path_factory):
    """A cached factory: name -> (HF model, HF directory, minigen model)."""
    import minigen
    from weights_tools.convert import convert

    made = {}

    def get(name: str, **overrides):
        key = (name, tuple(sorted(overrides.items())))
        if key not in made:
            root = tmp_path_factory.mktemp(f"model-{name}")
            hf = build_hf_model(name, **overrides)
            hf.save_pretrained(root / "hf")
            convert(str(root / "hf"), str(root / "minigen"), quiet=True)
            # many option sets share these models across the session: keep all their compiles
            made[key] = (hf, root / "hf", minigen.load(root / "minigen", compile_cache_size=256))
        return made[key]

    return get


def left_padded_batch(rng: np.random.Generator, vocab: int, lengths: list[int], pad_id: int = 0):
    """Random prompts of the given lengths, left-padded to the longest: (ids, mask) int arrays."""
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, np.int64)
    mask = np.zeros((len(lengths), width), np.int64)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = rng.integers(0, vocab, size=n)
        mask[row, width - n :] = 1
    return ids, mask
