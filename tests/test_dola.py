"""DoLa decoding (dola_layers) against transformers 4.55.4's `_dola_decoding` (5.x moved it out of
its core), run in the reference venv (tests/hf455_contrastive.py; skipped with the reason without it)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import left_padded_batch
from helpers import PAD, needs_reference, reference
from minigen.generation.options import dola_candidates


def test_candidate_layers_follow_the_reference_rule():
    assert dola_candidates("low", 8) == (2,) and dola_candidates("high", 8) == (4, 6)
    assert dola_candidates("low", 12) == (2, 4) and dola_candidates("high", 12) == (6, 8, 10)
    assert dola_candidates("low", 2) == (1,) and dola_candidates([0, 3, 9], 8) == (0, 3)
    assert dola_candidates("high", 48) == tuple(range(28, 48, 2))


# "high" (several candidate layers: the Jensen-Shannon choice) in the default run; each under `make soak`
@needs_reference
@pytest.mark.parametrize("layers", [pytest.param("low", marks=pytest.mark.slow), "high",
                                    pytest.param([6, 2, 4], marks=pytest.mark.slow)], ids=["low", "high", "list"])
def test_dola_matches_the_reference(hf_and_minigen, layers):
    """Greedy DoLa with a preset or a list (several candidates, the furthest not listed first: the
    Jensen-Shannon choice, one layer for the batch) and repetition_penalty 1.2, on a left-padded batch where EOS ends rows at
    different steps: tokens equal, and each chosen token's log-prob under the processed scores within
    2e-4 on the unpadded row."""
    _, hf_dir, model = hf_and_minigen("tiny", n_layer=8, initializer_range=0.1)
    ids, mask = left_padded_batch(np.random.default_rng(9), 512, [4, 10, 7], pad_id=PAD)
    max_new = 12
    free = model.generate(ids, mask, max_new_tokens=max_new, dola_layers=layers, repetition_penalty=1.2,
                          eos_token_id=[], pad_token_id=PAD)[:, ids.shape[1]:]
    # an EOS row 0 produces early and row 1 never (the reference's rows are then checked to stop)
    eos = next(int(t) for t in free[0, 1:max_new // 2] if t not in free[1] and t != PAD)
    case = dict(dola_layers=layers, repetition_penalty=1.2, max_new_tokens=max_new, eos_token_id=eos,
                pad_token_id=PAD, do_sample=False, output_scores=True)
    ref = reference([(hf_dir, [(ids, mask, case)])])[0][0]
    ours = model.generate(ids, mask, output_logprobs=True, **{k: v for k, v in case.items() if k != "output_scores"})
    expected = np.array(ref["sequences"])
    np.testing.assert_array_equal(ours.sequences, expected)
    new = expected[:, ids.shape[1]:]
    assert (new == eos).any(axis=1).sum() in (1, 2)  # EOS stops some rows, not all
    got = np.array(ref["scores"])
    live = np.cumsum(np.cumsum(new == eos, axis=1), axis=1) <= 1  # up to and including each row's EOS
    # the reference's repetition_penalty counts left padding as text (docs/parity.md): it moves the pad
    # id's score, and so the log-probs, of padded rows; the unpadded row's log-probs must agree
    live = live[:, :got.shape[1]] & (mask.min(axis=1) == 1)[:, None]
    np.testing.assert_allclose(ours.logprobs[:, :got.shape[1]][live], got[live], atol=2e-4)
    plain = model.generate(ids, mask, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=PAD,
                           repetition_penalty=1.2)
    assert (plain != ours.sequences).any()  # DoLa changed the output


@pytest.mark.slow
def test_dola_refusals_and_streaming(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny", n_layer=8, initializer_range=0.1)
    ids = np.array([[3, 4, 5, 6]])
    streamed = np.concatenate(list(model.stream_tokens(ids, max_new_tokens=6, dola_layers="high", chunk_size=4)),
                              axis=1)
    np.testing.assert_array_equal(streamed, model.generate(ids, max_new_tokens=6, dola_layers="high")[:, 4:])
    with pytest.raises(ValueError, match="dola_layers \\(DoLa decoding\\) runs with greedy search and sampling"):
        model.generate(ids, max_new_tokens=2, num_beams=2, dola_layers="low")
    with pytest.raises(ValueError, match="dola_layers must be 'low', 'high' or a non-empty list"):
        model.generate(ids, max_new_tokens=2, dola_layers="middle")
    with pytest.raises(ValueError, match="selects no premature layer of this 8-layer model"):
        model.generate(ids, max_new_tokens=2, dola_layers=[8, 9])
