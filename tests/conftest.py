"""Shared fixtures: small random-weight GPT-2s built with `transformers`, saved and converted."""

from __future__ import annotations

import io
import os
import pathlib
import sys
import types

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


UNCACHED = {"small"}  # ~1.5 GB with its reference twin: built for the test that asks, then released


@pytest.fixture(scope="session")
def hf_and_minigen(tmp_path_factory):
    """A cached factory: name -> (HF model, HF directory, minigen model)."""
    import minigen
    from weights_tools.convert import convert

    made = {}

    def get(name: str, **overrides):
        key = (name, tuple(sorted(overrides.items())))
        if key in made:
            return made[key]
        root = tmp_path_factory.mktemp(f"model-{name}")
        hf = build_hf_model(name, **overrides)
        hf.save_pretrained(root / "hf")
        convert(str(root / "hf"), str(root / "minigen"), quiet=True)
        # many option sets share these models across the session: keep all their compiles
        built = (hf, root / "hf", minigen.load(root / "minigen", compile_cache_size=256))
        if name not in UNCACHED:
            made[key] = built
        return built

    return get


def grid(cases, default):
    """pytest params for every case of a grid; those not in `default` run only under `make soak`
    (marked slow), so the default run keeps a representative slice of each large grid."""
    return [pytest.param(*case, id="-".join(map(str, case)),
                         marks=() if case in default else pytest.mark.slow) for case in cases]


def left_padded_batch(rng: np.random.Generator, vocab: int, lengths: list[int], pad_id: int = 0):
    """Random prompts of the given lengths, left-padded to the longest: (ids, mask) int arrays."""
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, np.int64)
    mask = np.zeros((len(lengths), width), np.int64)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = rng.integers(0, vocab, size=n)
        mask[row, width - n :] = 1
    return ids, mask


# ---- a random GPT-2 with a small BPE tokenizer trained here (text API and command line tests) ----

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold; naïve café owners know it.",
] * 20
PROMPTS = ["The quick brown", "To be", "A journey of a thousand miles begins", "All that"]


def train_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@pytest.fixture(scope="session")
def text_model_dir(tmp_path_factory):
    """(minigen directory with tokenizer.json, the loaded model)."""
    import minigen
    from weights_tools.convert import convert

    root = tmp_path_factory.mktemp("text-model")
    tok = train_tokenizer()
    eos = tok.token_to_id("<|endoftext|>")
    hf = build_hf_model("tiny", vocab_size=tok.get_vocab_size(), bos_token_id=eos, eos_token_id=eos)
    hf.save_pretrained(root / "hf")
    tok.save(str(root / "hf" / "tokenizer.json"))
    convert(str(root / "hf"), str(root / "minigen"), quiet=True)
    return root / "minigen", minigen.load(root / "minigen")


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the `minigen` command in this process (no TensorFlow start-up per call):
    cli(*args, stdin=None) -> namespace(returncode, stdout, stderr), like subprocess.run's result."""
    from minigen.cli import main

    def run(*args, stdin: str | None = None):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8"))
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run
