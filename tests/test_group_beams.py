"""Diverse (group) beam search (num_beam_groups, diversity_penalty) against transformers 4.55.4's
`_group_beam_search` with its BeamSearchScorer (5.x moved it out of its core), run in the reference
venv (tests/hf455_contrastive.py; skipped with the reason without it)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import left_padded_batch
from helpers import PAD, needs_reference, reference

MAX_NEW = 10


def group_cases(eos: int) -> list[dict]:
    """Group counts and sizes, penalties, every stopping rule and length penalties, one and two EOS ids,
    a pad id that is the EOS id."""
    cases = [dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2, length_penalty=1.0,
                  early_stopping=False),
             dict(num_beams=6, num_beam_groups=3, diversity_penalty=0.5, num_return_sequences=3, length_penalty=0.5,
                  early_stopping=True),
             dict(num_beams=4, num_beam_groups=4, diversity_penalty=2.0, length_penalty=2.0, early_stopping="never"),
             dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.5, num_return_sequences=4,
                  eos_token_id=[eos + 1, eos]),
             # pad = EOS, as GPT-2's default: a finished group's beams choose pad, so later groups' EOS is penalised
             dict(num_beams=6, num_beam_groups=3, diversity_penalty=2.0, num_return_sequences=6, early_stopping=True,
                  pad_token_id=eos)]
    return [{"max_new_tokens": MAX_NEW, "eos_token_id": eos, "pad_token_id": PAD, "output_scores": True, **c}
            for c in cases]


@needs_reference
def test_group_beam_search_matches_the_reference(hf_and_minigen):
    """On a left-padded batch where EOS ends hypotheses at different steps: sequences equal (a
    hypothesis ended by either of two EOS ids ends in the first, as the reference writes it),
    sequences_scores and step 0's processed scores (the diversity penalty at work) within 1e-4; and on
    an unpadded batch with repetition_penalty and no_repeat_ngram_size, which the reference applies
    after the diversity penalty (and counts padding for)."""
    _, hf_dir, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(5), 512, [4, 9, 6], pad_id=PAD)
    free = model.generate(ids, mask, max_new_tokens=MAX_NEW, num_beams=4, num_beam_groups=2, diversity_penalty=1.0,
                          eos_token_id=[], pad_token_id=PAD)[:, ids.shape[1]:]
    eos = int(np.bincount(free.ravel()).argmax())  # a token the beams choose often: EOS ends some hypotheses
    cases = group_cases(eos)
    flat = np.random.default_rng(6).integers(0, 512, (2, 7))
    processed = dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.7, num_return_sequences=2,
                     repetition_penalty=1.3, no_repeat_ngram_size=2, max_new_tokens=MAX_NEW, eos_token_id=eos,
                     pad_token_id=PAD, output_scores=True)
    refs = reference([(hf_dir, [(ids, mask, c) for c in cases] + [(flat, np.ones_like(flat), processed)])])[0]
    for (prompts, prompt_mask), case, ref in zip([(ids, mask)] * len(cases) + [(flat, np.ones_like(flat))],
                                                 cases + [processed], refs):
        name = str({k: v for k, v in case.items() if k not in ("max_new_tokens", "pad_token_id", "output_scores")})
        ours = model.generate(prompts, prompt_mask, **case)
        expected = np.array(ref["sequences"])
        np.testing.assert_array_equal(ours.sequences, expected, err_msg=name)
        np.testing.assert_allclose(ours.sequences_scores, ref["sequences_scores"], atol=1e-4, err_msg=name)
        first = np.array(ref["first_scores"])
        np.testing.assert_array_equal(np.isfinite(ours.scores[0]), np.isfinite(first), err_msg=name)
        finite = np.isfinite(first)
        np.testing.assert_allclose(ours.scores[0][finite], first[finite], atol=1e-4, err_msg=name)
    # the cases under test really occur: EOS ends some hypotheses, the second EOS id among them
    new = np.array(refs[0]["sequences"])[:, ids.shape[1]:]
    assert 0 < (new == eos).any(axis=1).sum() < len(new)
    two_eos = np.array(refs[3]["sequences"])[:, ids.shape[1]:]  # eos_token_id=[eos + 1, eos]
    assert (two_eos == eos + 1).any() and not (two_eos == eos).any()  # hypotheses `eos` ended are written eos + 1
    # the groups differ: each group's best hypothesis is not the others'
    sequences = np.array(refs[1]["sequences"]).reshape(3, 3, -1)
    assert all(len({tuple(s) for s in prompt}) == 3 for prompt in sequences)


def test_group_beam_search_refusals(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids = np.array([[3, 4, 5, 6]])
    for options, message in [
        (dict(num_beams=4, num_beam_groups=3, diversity_penalty=1.0), "num_beams \\(4\\) must be a multiple of "
                                                                       "num_beam_groups \\(3\\)"),
        (dict(num_beams=4, num_beam_groups=2), "diversity_penalty must be > 0 with num_beam_groups > 1"),
        (dict(num_beams=4, diversity_penalty=1.0), "diversity_penalty needs num_beam_groups > 1"),
        (dict(num_beam_groups=2, diversity_penalty=1.0), "num_beam_groups > 1 \\(diverse beam search\\) needs "
                                                          "num_beams > 1"),
        (dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, do_sample=True), "needs do_sample=False"),
        (dict(num_beams=4, num_beam_groups=2, diversity_penalty=-1.0), "diversity_penalty must be a number >= 0"),
        (dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, output_logprobs=True),
         "output_logprobs is for greedy search"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.generate(ids, max_new_tokens=2, **options)
    with pytest.raises(ValueError, match="streaming supports greedy search, sampling and contrastive search"):
        next(model.stream_tokens(ids, max_new_tokens=2, num_beams=4, num_beam_groups=2, diversity_penalty=1.0))
