"""Wide, long generations decode in segments over a growing cache (generation/core.py: `windows`):
parity with the reference's `generate` (transformers 5.x, PyTorch, run in the same test) across a
segment end, at the default threshold, for greedy search, streaming and beam search."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import left_padded_batch
from helpers import PAD, early_eos, hf_generate
from minigen.generation.config import GenerationConfig
from minigen.generation.core import compile_key, windows


@pytest.mark.slow
def test_long_wide_generation_decodes_in_segments_and_matches_reference(hf_and_minigen):
    """32 rows x 240 new tokens: enough cache for core.windows to split the decode in two segments
    (the cache grows after 128 new tokens); tokens equal the reference's, and streaming across the
    segment end gives the same tokens as one call."""
    hf, _, model = hf_and_minigen("four")
    rows, max_new = 32, 240
    ids, mask = left_padded_batch(np.random.default_rng(13), 777, list(range(1, 17)) * 2, pad_id=PAD)
    key = compile_key(GenerationConfig(max_new_tokens=max_new).check(model.config), model.config, rows, 16)
    assert windows(key) == [16 + 128, 16 + max_new]  # the case under test: two segments
    eos = early_eos(hf, ids, mask, max_new)
    ref = hf_generate(hf, ids, mask, ids.shape[1] + max_new, max_new_tokens=max_new, do_sample=False, eos_token_id=eos)
    ours = model.generate(ids, mask, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=PAD)
    assert (ref[:, ids.shape[1] + 128:] != PAD).any()  # some rows run into the second segment
    np.testing.assert_array_equal(ours, ref)
    chunks = list(model.stream_tokens(ids, mask, chunk_size=50, max_new_tokens=max_new, eos_token_id=eos,
                                      pad_token_id=PAD))
    assert [c.shape[1] for c in chunks][:3] == [50, 50, 28]  # a chunk ends where the segment does
    streamed = np.concatenate(chunks, axis=1)
    np.testing.assert_array_equal(streamed, ours[:, ids.shape[1]:ids.shape[1] + streamed.shape[1]])
    assert (ours[:, ids.shape[1] + streamed.shape[1]:] == PAD).all()


@pytest.mark.slow
def test_wide_long_beam_search_decodes_in_segments_and_matches_reference(hf_and_minigen):
    """8 prompts x 4 beams x 240 new tokens: 32 cache rows, two segments; each beam's run of cache
    slots grows where the first segment ends. Hypotheses and scores equal the reference's."""
    hf, _, model = hf_and_minigen("four")
    max_new = 240
    ids, mask = left_padded_batch(np.random.default_rng(14), 777, [1, 16, 5, 9, 12, 3, 14, 7], pad_id=PAD)
    options = dict(max_new_tokens=max_new, num_beams=4, num_return_sequences=2)
    key = compile_key(GenerationConfig(**options).check(model.config), model.config, 8, 16)
    assert windows(key) == [16 + 128, 16 + max_new]  # the case under test: two segments
    ref, out = hf_generate(hf, ids, mask, ids.shape[1] + max_new, output_scores=True, return_dict_in_generate=True,
                           eos_token_id=None, **options)
    ours = model.generate(ids, mask, pad_token_id=PAD, output_scores=True, eos_token_id=[], **options)
    np.testing.assert_array_equal(ours.sequences, ref)
    np.testing.assert_allclose(ours.sequences_scores, out.sequences_scores.numpy(), atol=1e-4)


@pytest.mark.slow
def test_logprobs_and_transition_scores_across_a_segment_end_match_reference(hf_and_minigen):
    """output_logprobs equals compute_transition_scores(..., normalize_logits=True) up to and including
    each row's EOS; after it logprobs is 0 by definition, while the transition scores score the pad
    token as the reference's do. Across the segment end, both against the reference."""
    hf, _, model = hf_and_minigen("four")
    rows, max_new = 32, 240
    ids, mask = left_padded_batch(np.random.default_rng(15), 777, list(range(1, 17)) * 2, pad_id=PAD)
    eos = early_eos(hf, ids, mask, max_new)
    ref, out = hf_generate(hf, ids, mask, None, max_new_tokens=max_new, do_sample=False, eos_token_id=eos,
                           output_scores=True, return_dict_in_generate=True)
    ours = model.generate(ids, mask, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=PAD,
                          output_scores=True, output_logprobs=True)
    steps = len(out.scores)
    assert steps > 128  # the reference ran into the second segment
    transition = model.compute_transition_scores(ours.sequences, ours.scores, normalize_logits=True)
    reference = hf.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).numpy()
    # float32 log-softmax of 240 steps' logits, summed in another order than PyTorch's: ~1e-5 relative
    np.testing.assert_allclose(transition[:, :steps], reference, atol=3e-4)
    new = ours.sequences[:, -max_new:]
    hit = new == eos
    through_eos = (np.cumsum(hit, axis=1) - hit) == 0
    assert hit.any(axis=1).sum() > 1 and (~through_eos).any()  # rows end at different steps
    np.testing.assert_allclose(ours.logprobs[through_eos], transition[through_eos], atol=1e-5)
    assert (ours.logprobs[~through_eos] == 0).all() and (transition[~through_eos] != 0).any()
