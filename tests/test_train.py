"""weights_tools train: a tiny run resumes exactly after an interruption, and its output is a
Hugging Face GPT-2 that transformers loads and minigen matches."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom.\n\n"
    "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea.\n\n"
    "It is a truth universally acknowledged, that a single man must be in want of a wife.\n\n"
)


def run_train(corpus, out, *extra):
    args = [sys.executable, "-m", "weights_tools", "train", str(corpus), str(out), "--layers", "2", "--width", "32",
            "--heads", "2", "--context", "16", "--vocab-size", "300", "--steps", "12", "--batch-size", "4",
            "--warmup", "3", "--eval-every", "6", "--eval-batches", "2", "--checkpoint-every", "4", *extra]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "a.txt").write_text(TEXT * 30, encoding="utf-8")
    (root / "b.txt").write_text(TEXT[::-1] * 10 + TEXT * 5, encoding="utf-8")  # held out
    return root


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_weights(corpus, tmp_path):
    from safetensors.numpy import load_file

    run_train(corpus, tmp_path / "straight")
    first = run_train(corpus, tmp_path / "resumed", "--stop-after", "5")
    assert "stopped after step 5" in first.stderr
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    second = run_train(corpus, tmp_path / "resumed")
    assert "resuming from" in second.stderr and "at step 5" in second.stderr
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert "val ppl" in second.stderr


@pytest.mark.slow
def test_trained_directory_loads_in_transformers_and_matches_minigen(corpus, tmp_path):
    import torch
    import transformers

    import minigen
    from weights_tools.convert import convert

    run_train(corpus, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    convert(str(tmp_path / "hf"), str(tmp_path / "mg"), quiet=True)
    lm = minigen.load(tmp_path / "mg")
    assert lm.tokenizer is not None
    ids = np.array([lm.tokenizer.encode("It was the best of times")])
    with torch.no_grad():
        ref = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(lm.logits(ids), ref, atol=1e-4)
    assert not np.allclose(ref[0, 0], ref[0, 1])  # trained weights, not a constant output
