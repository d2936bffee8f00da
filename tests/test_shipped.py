"""The models shipped in the package: present, small, and token-for-token equal to transformers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from minigen.weights import DEFAULT_MODEL, MODELS_DIR, shipped_models

PROMPTS = [
    "It was a dark and stormy night, and",
    "\"My dear Watson,\" said Holmes,",
    "Call me",
    "The old man looked at the sea and said",
]


def test_default_model_ships_and_is_small():
    assert DEFAULT_MODEL in shipped_models(), f"{DEFAULT_MODEL} missing from {MODELS_DIR}"
    total = sum(os.path.getsize(os.path.join(MODELS_DIR, name, f))
                for name in shipped_models() for f in os.listdir(os.path.join(MODELS_DIR, name)))
    assert total < 25e6, f"shipped models take {total / 1e6:.1f} MB"


@pytest.fixture(scope="module")
def target_pair(tmp_path_factory):
    import transformers

    import minigen
    from weights_tools.export_hf import export_hf

    hf_dir = export_hf(os.path.join(MODELS_DIR, DEFAULT_MODEL), str(tmp_path_factory.mktemp("hf") / "target"))
    return transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval(), minigen.load()


@pytest.mark.slow
def test_shipped_target_greedy_equals_transformers(target_pair):
    import torch

    hf, lm = target_pair
    eos = lm.config.eos_token_id
    for prompt in PROMPTS:  # each alone: no padding on either side
        ids = np.array([lm.tokenizer.encode(prompt)])
        ours = lm.generate(ids, max_new_tokens=40)
        with torch.no_grad():
            ref = hf.generate(torch.tensor(ids, dtype=torch.long), attention_mask=torch.ones(ids.shape, dtype=torch.long),
                              max_new_tokens=40, do_sample=False, pad_token_id=eos).numpy()
        ref = np.pad(ref, ((0, 0), (0, ours.shape[1] - ref.shape[1])), constant_values=eos)  # HF stops early at EOS
        np.testing.assert_array_equal(ours, ref, err_msg=prompt)
    # and as one left-padded batch, which must give each prompt's own continuation
    ids, mask = lm.tokenizer.encode_batch(PROMPTS)
    batch = lm.generate(ids, mask, max_new_tokens=40)[:, ids.shape[1]:]
    for row, prompt in enumerate(PROMPTS):
        alone = lm.generate(np.array([lm.tokenizer.encode(prompt)]), max_new_tokens=40)
        np.testing.assert_array_equal(batch[row], alone[0, -40:])


@pytest.mark.slow
def test_shipped_target_writes_text(target_pair):
    _, lm = target_pair
    text = lm.generate_text("The ship sailed", max_new_tokens=30)[0]
    words = text.split()
    assert len(words) >= 10 and sum(w.isalpha() for w in words) >= 5, text


def test_draft_shares_the_target_vocabulary():
    import minigen

    assert "gutenberg-2l" in shipped_models()
    with open(os.path.join(MODELS_DIR, DEFAULT_MODEL, "tokenizer.json"), "rb") as a, \
            open(os.path.join(MODELS_DIR, "gutenberg-2l", "tokenizer.json"), "rb") as b:
        assert a.read() == b.read()
    draft = minigen.load("gutenberg-2l")
    assert draft.config.n_layer == 2 and draft.config.vocab_size == minigen.load().config.vocab_size


@pytest.mark.slow
def test_cli_uses_the_shipped_model_by_default(target_pair):
    import subprocess
    import sys

    _, lm = target_pair
    exe = os.path.join(os.path.dirname(sys.executable), "minigen")
    result = subprocess.run([exe, "generate", "The ship sailed", "--max-new-tokens", "12"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The ship sailed" + lm.generate_text("The ship sailed", max_new_tokens=12)[0] + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["draft", "lookup"])
def test_shipped_pair_speculative_greedy_equals_transformers(target_pair, method):
    """Greedy with the shipped draft (or prompt lookup) gives the reference's greedy tokens,
    each prompt alone and as one left-padded batch of 4."""
    import torch

    import minigen

    hf, lm = target_pair
    eos = lm.config.eos_token_id
    if method == "draft":
        options = dict(assistant_model=minigen.load("gutenberg-2l"), num_assistant_tokens=3)
    else:
        options = dict(prompt_lookup_num_tokens=6)
    ids, mask = lm.tokenizer.encode_batch(PROMPTS)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                          max_new_tokens=40, do_sample=False, pad_token_id=eos).numpy()
    ref = np.pad(ref, ((0, 0), (0, ids.shape[1] + 40 - ref.shape[1])), constant_values=eos)
    batch = lm.generate(ids, mask, max_new_tokens=40, return_dict=True, **options)
    np.testing.assert_array_equal(batch.sequences, ref)
    assert batch.speculation["mean_accepted_tokens"] > 0.3, batch.speculation
    for row, prompt in enumerate(PROMPTS):
        alone = lm.generate([lm.tokenizer.encode(prompt)], max_new_tokens=40, **options)
        np.testing.assert_array_equal(alone[0, -40:], ref[row, -40:], err_msg=prompt)
