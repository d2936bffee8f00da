"""Classifier-free guidance (guidance_scale, negative_prompt_ids) against the reference's
UnbatchedClassifierFreeGuidanceLogitsProcessor for decoder-only models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import left_padded_batch
from helpers import PAD, early_eos, hf_generate


@pytest.mark.parametrize("scale", [1.5, 3.0])
def test_guidance_matches_the_reference(hf_and_minigen, scale):
    """Greedy search with guidance on a left-padded batch where EOS ends rows at different steps: the
    tokens and each step's processed scores equal the reference's, with the default unconditional
    prompt (each prompt's last token) and with negative prompts; guidance changes the output."""
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(12), 512, [5, 11, 8])
    max_new = 10
    eos = early_eos(hf, ids, mask, max_new)
    negative = np.random.default_rng(13).integers(0, 511, size=(3, 4))
    plain = model.generate(ids, mask, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=PAD)
    for extra in (dict(), dict(negative_prompt_ids=negative, negative_prompt_attention_mask=np.ones_like(negative))):
        options = dict(max_new_tokens=max_new, eos_token_id=eos, guidance_scale=scale)
        ref_ids, ref = hf_generate(hf, ids, mask, ids.shape[1] + max_new, output_scores=True,
                                   return_dict_in_generate=True, **options,
                                   **{k: torch.tensor(v) for k, v in extra.items()})
        ours = model.generate(ids, mask, pad_token_id=PAD, output_scores=True, **options, **extra)
        np.testing.assert_array_equal(ours.sequences, ref_ids, err_msg=str(extra.keys()))
        assert (ours.sequences != plain).any()  # guidance changed the tokens
        for step, (a, b) in enumerate(zip(ours.scores, ref.scores)):
            live = ~(ours.sequences[:, ids.shape[1]:ids.shape[1] + step] == eos).any(axis=1)  # not ended before
            np.testing.assert_allclose(a[live], b.numpy()[live], atol=2e-4, err_msg=f"step {step}")


@pytest.mark.slow
def test_guidance_sampling_is_seeded_and_refusals(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids = np.random.default_rng(3).integers(0, 511, size=(2, 6))
    options = dict(max_new_tokens=6, do_sample=True, guidance_scale=2.0, seed=(5, 5), num_return_sequences=2)
    one = model.generate(ids, **options)
    np.testing.assert_array_equal(one, model.generate(ids, **options))
    assert (one != model.generate(ids, **{**options, "guidance_scale": None})).any()
    with pytest.raises(ValueError, match="guidance_scale \\(classifier-free guidance\\) runs with greedy search and "
                                         "sampling"):
        model.generate(ids, max_new_tokens=2, num_beams=2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="set guidance_scale"):
        model.generate(ids, max_new_tokens=2, negative_prompt_ids=ids)
    with pytest.raises(ValueError, match="negative_prompt_ids has 1 rows but input_ids has 2"):
        model.generate(ids, max_new_tokens=2, guidance_scale=2.0, negative_prompt_ids=ids[:1])
    with pytest.raises(ValueError, match="guidance_scale must be"):
        model.generate(ids, max_new_tokens=2, guidance_scale=-1.0)
    neg = np.array([[7, 8, 9], [9, 8, 7]])
    streamed = np.concatenate(list(model.stream_tokens(ids, max_new_tokens=6, guidance_scale=2.0, chunk_size=4,
                                                       negative_prompt_ids=neg)), axis=1)
    np.testing.assert_array_equal(streamed, model.generate(ids, max_new_tokens=6, guidance_scale=2.0,
                                                           negative_prompt_ids=neg)[:, ids.shape[1]:])
