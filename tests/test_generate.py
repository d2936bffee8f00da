"""Decoding parity with the reference's `generate` (transformers 5.x, PyTorch), run in the same test."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import grid, left_padded_batch
from helpers import PAD, early_eos, hf_generate

@pytest.mark.parametrize("name", ["tiny", "odd", "four"])
def test_greedy_matches_reference_with_left_padding_and_early_eos(hf_and_minigen, name):
    hf, _, model = hf_and_minigen(name)
    vocab = hf.config.vocab_size
    ids, mask = left_padded_batch(np.random.default_rng(10), vocab, [4, 11, 1, 17, 8])
    max_new = 24
    eos = early_eos(hf, ids, mask, max_new)
    ref = hf_generate(hf, ids, mask, ids.shape[1] + max_new, max_new_tokens=max_new, do_sample=False, eos_token_id=eos)
    ours = model.generate(ids, mask, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=PAD)
    assert ours.shape == (5, ids.shape[1] + max_new)
    stopped = [(row[ids.shape[1]:] == eos).any() for row in ref]
    assert any(stopped) and not all(stopped)  # the case under test really occurs
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.slow
def test_greedy_bucket_width_does_not_change_tokens(hf_and_minigen):
    _, _, model = hf_and_minigen("odd")
    ids, mask = left_padded_batch(np.random.default_rng(11), 1003, [3, 7])
    a = model.generate(ids, mask, max_new_tokens=10, pad_to_multiple_of=1)
    b = model.generate(ids, mask, max_new_tokens=10, pad_to_multiple_of=32)
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_batch_rows_equal_prompts_alone(hf_and_minigen):
    _, _, model = hf_and_minigen("four")
    ids, mask = left_padded_batch(np.random.default_rng(12), 777, [2, 9, 5])
    batch = model.generate(ids, mask, max_new_tokens=12)
    for row in range(3):
        alone = model.generate(ids[row : row + 1, mask[row].argmax():], max_new_tokens=12)
        np.testing.assert_array_equal(batch[row, mask[row].argmax():], alone[0])


BEAM_GRID = [(b, r, e) for e in (True, False, "never") for b, r in ((2, 1), (2, 2), (4, 1), (4, 2))]


# four beams returning two with early stopping in the default run; the full product under `make soak`
@pytest.mark.parametrize("num_beams, num_return, early_stopping", grid(BEAM_GRID, default=[(4, 2, True)]))
def test_beam_search_matches_reference(hf_and_minigen, num_beams, num_return, early_stopping):
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(13), 512, [3, 8, 5])
    max_new = 10
    width = ids.shape[1] + max_new
    # an EOS that beams hit sometimes: a token frequent in the reference's own beam output
    probe = hf_generate(hf, ids, mask, width, max_new_tokens=max_new, num_beams=num_beams, eos_token_id=None)
    eos_hit = int(np.bincount(probe[:, ids.shape[1]:].ravel()).argmax())
    for eos in (None, eos_hit):
        for length_penalty in (0.5, 1.0, 2.0):
            options = dict(max_new_tokens=max_new, num_beams=num_beams, num_return_sequences=num_return,
                           length_penalty=length_penalty, early_stopping=early_stopping, eos_token_id=eos)
            ref, out = hf_generate(hf, ids, mask, width, output_scores=True, return_dict_in_generate=True, **options)
            ours = model.generate(ids, mask, pad_token_id=PAD, output_scores=True,
                                  **{**options, "eos_token_id": eos if eos is not None else []})
            if eos is not None and length_penalty == 1.0:
                assert (ref[:, ids.shape[1]:] == eos).any()  # EOS is really hit in this case
            np.testing.assert_array_equal(ours.sequences, ref, err_msg=f"eos={eos} lp={length_penalty}")
            np.testing.assert_allclose(ours.sequences_scores, out.sequences_scores.numpy(), atol=1e-4)


def test_output_logprobs_are_chosen_token_logprobs(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(17), 512, [5, 2])
    seq, out = hf_generate(hf, ids, mask, None, max_new_tokens=8, do_sample=False, eos_token_id=None,
                           output_scores=True, return_dict_in_generate=True)
    ref = hf.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).numpy()
    ours = model.generate(ids, mask, max_new_tokens=8, eos_token_id=[], output_logprobs=True)
    np.testing.assert_array_equal(ours.sequences, seq)
    np.testing.assert_allclose(ours.logprobs, ref, atol=1e-4)


def test_multiple_eos_ids(hf_and_minigen):
    hf, _, model = hf_and_minigen("four")
    ids, mask = left_padded_batch(np.random.default_rng(18), 777, [6, 3, 9, 4])
    a = early_eos(hf, ids, mask, 16)
    eos = [a, (a + 1) % 777]
    ref = hf_generate(hf, ids, mask, ids.shape[1] + 16, max_new_tokens=16, do_sample=False, eos_token_id=eos)
    np.testing.assert_array_equal(model.generate(ids, mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=PAD), ref)
