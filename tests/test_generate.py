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


def test_greedy_bucket_width_does_not_change_tokens(hf_and_minigen):
    _, _, model = hf_and_minigen("odd")
    ids, mask = left_padded_batch(np.random.default_rng(11), 1003, [3, 7])
    a = model.generate(ids, mask, max_new_tokens=10, pad_to_multiple_of=1)
    b = model.generate(ids, mask, max_new_tokens=10, pad_to_multiple_of=32)
    np.testing.assert_array_equal(a, b)


def test_batch_rows_equal_prompts_alone(hf_and_minigen):
    _, _, model = hf_and_minigen("four")
    ids, mask = left_padded_batch(np.random.default_rng(12), 777, [2, 9, 5])
    batch = model.generate(ids, mask, max_new_tokens=12)
    for row in range(3):
        alone = model.generate(ids[row : row + 1, mask[row].argmax():], max_new_tokens=12)
        np.testing.assert_array_equal(batch[row, mask[row].argmax():], alone[0])


BEAM_GRID = [(b, r, e) for e in (True, False, "never") for b, r in ((2, 1), (2, 2), (4, 1), (4, 2))]


# every beam width, return count and stopping rule in the default run; the full product under `make soak`
@pytest.mark.parametrize("num_beams, num_return, early_stopping",
                         grid(BEAM_GRID, default=[(2, 1, False), (4, 2, True), (4, 1, "never")]))
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


@pytest.mark.parametrize(
    "options",
    [dict(repetition_penalty=1.8), dict(repetition_penalty=0.7), dict(no_repeat_ngram_size=2),
     dict(no_repeat_ngram_size=3), dict(repetition_penalty=1.3, no_repeat_ngram_size=2)],
    ids=["rep1.8", "rep0.7", "ngram2", "ngram3", "both"],
)
def test_penalties_match_reference_on_unpadded_batch(hf_and_minigen, options):
    # the reference counts left padding as prompt tokens for these two; minigen ignores padding,
    # so the comparison uses rows of equal length
    hf, _, model = hf_and_minigen("tiny")
    ids = np.random.default_rng(14).integers(0, 512, size=(3, 6))
    mask = np.ones_like(ids)
    ref = hf_generate(hf, ids, mask, 6 + 30, max_new_tokens=30, do_sample=False, eos_token_id=None, **options)
    ours = model.generate(ids, mask, max_new_tokens=30, eos_token_id=[], pad_token_id=PAD, **options)
    np.testing.assert_array_equal(ours, ref)
    plain = model.generate(ids, mask, max_new_tokens=30, eos_token_id=[])
    assert not np.array_equal(plain, ours)  # the option changed something


def test_repetition_penalty_ignores_left_padding(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(15), 512, [4, 9], pad_id=3)
    batch = model.generate(ids, mask, max_new_tokens=15, repetition_penalty=2.0, no_repeat_ngram_size=2)
    alone = model.generate(ids[:1, -4:], max_new_tokens=15, repetition_penalty=2.0, no_repeat_ngram_size=2)
    np.testing.assert_array_equal(batch[0, -19:], alone[0])


def test_min_new_tokens_matches_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("odd")
    ids, mask = left_padded_batch(np.random.default_rng(16), 1003, [4, 11, 7])
    eos = early_eos(hf, ids, mask, 20)
    options = dict(max_new_tokens=20, min_new_tokens=8, eos_token_id=eos)
    ref = hf_generate(hf, ids, mask, ids.shape[1] + 20, do_sample=False, **options)
    ours = model.generate(ids, mask, pad_token_id=PAD, **options)
    np.testing.assert_array_equal(ours, ref)
    assert not (ours[:, ids.shape[1]: ids.shape[1] + 8] == eos).any()


def greedy_without_eos(model, ids, mask, max_new: int, **options):
    """minigen's greedy output with no EOS stop, pads = PAD (what the processor tests compare)."""
    return model.generate(ids, mask, max_new_tokens=max_new, eos_token_id=[], pad_token_id=PAD, **options)


def assert_greedy_parity(hf, model, ids, mask, max_new: int, **options):
    """minigen's greedy output with `options` equals the reference's in the same call shape; returns it."""
    ref = hf_generate(hf, ids, mask, ids.shape[1] + max_new, max_new_tokens=max_new, do_sample=False,
                      eos_token_id=None, **options)
    ours = greedy_without_eos(model, ids, mask, max_new, **options)
    np.testing.assert_array_equal(ours, ref)
    return ours


def test_suppress_tokens_matches_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(19), 512, [5, 9, 2])
    plain = greedy_without_eos(model, ids, mask, 16)
    counts = np.bincount(plain[:, ids.shape[1]:].ravel(), minlength=512)
    suppressed = [int(t) for t in np.argsort(counts)[-3:]]  # the tokens greedy picks most: the option must bite
    ours = assert_greedy_parity(hf, model, ids, mask, 16, suppress_tokens=suppressed)
    assert not np.isin(ours[:, ids.shape[1]:], suppressed).any() and not np.array_equal(ours, plain)
    for bad in ([512], [-1], 5, ["a"]):
        with pytest.raises(ValueError, match="suppress_tokens must be"):
            model.generate(ids, mask, suppress_tokens=bad)


def test_sequence_bias_matches_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(22), 512, [7, 3, 10], pad_id=PAD)
    plain = greedy_without_eos(model, ids, mask, 14)
    new = plain[:, ids.shape[1]:]
    unseen = int(np.setdiff1d(np.arange(2, 512), new)[0])  # a token greedy never picks: pushed up everywhere
    # a bigram pushed down whose last token greedy also writes after another token: only the bigram may go
    pairs = [(int(r[i - 1]), int(r[i])) for r in new for i in range(1, len(r))]
    bigram = next(p for p in pairs if any(q[1] == p[1] and q[0] != p[0] for q in pairs))
    bias = [[[unseen], 2.0], [list(bigram), -8.0]]
    ours = assert_greedy_parity(hf, model, ids, mask, 14, sequence_bias=bias)
    out = ours[:, ids.shape[1]:]
    assert not np.array_equal(ours, plain) and (out == bigram[1]).any()  # its last token still comes elsewhere
    for bad in ({(): 1.0}, {(1,): float("inf")}, [1, 2], {(600,): 1.0}):
        with pytest.raises(ValueError, match="sequence_bias must"):
            model.generate(ids, mask, sequence_bias=bad)


def test_bad_words_ids_match_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("four")
    ids, mask = left_padded_batch(np.random.default_rng(20), 777, [6, 9, 4], pad_id=PAD)
    plain = greedy_without_eos(model, ids, mask, 16)
    new = plain[:, ids.shape[1]:]
    single = int(np.bincount(new.ravel()).argmax())  # greedy's favourite token: banned everywhere
    pair = [int(new[1, 3]), int(new[1, 4])]  # a bigram row 1 produces: its second token banned after its first
    words = [[single], pair]
    ours = assert_greedy_parity(hf, model, ids, mask, 16, bad_words_ids=words)
    out = ours[:, ids.shape[1]:]
    assert not (out == single).any() and not np.array_equal(ours, plain)
    assert not ((out[:, :-1] == pair[0]) & (out[:, 1:] == pair[1])).any()
    for bad in ([[]], [5], [[1, 777]], "x"):
        with pytest.raises(ValueError, match="bad_words_ids must"):
            model.generate(ids, mask, bad_words_ids=bad)


def test_begin_suppress_tokens_matches_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(21), 512, [5, 9, 2], pad_id=PAD)
    plain = greedy_without_eos(model, ids, mask, 8)
    first = sorted({int(t) for t in plain[:, ids.shape[1]]})  # each row's first choice, banned at the start only
    ours = assert_greedy_parity(hf, model, ids, mask, 8, begin_suppress_tokens=first)
    assert not np.isin(ours[:, ids.shape[1]], first).any()
    with pytest.raises(ValueError, match="begin_suppress_tokens must be"):
        model.generate(ids, mask, begin_suppress_tokens=[512])


def test_output_scores_are_chosen_token_logprobs(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(17), 512, [5, 2])
    seq, out = hf_generate(hf, ids, mask, None, max_new_tokens=8, do_sample=False, eos_token_id=None,
                           output_scores=True, return_dict_in_generate=True)
    ref = hf.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).numpy()
    ours = model.generate(ids, mask, max_new_tokens=8, eos_token_id=[], output_scores=True)
    np.testing.assert_array_equal(ours.sequences, seq)
    np.testing.assert_allclose(ours.scores, ref, atol=1e-4)


def test_multiple_eos_ids(hf_and_minigen):
    hf, _, model = hf_and_minigen("four")
    ids, mask = left_padded_batch(np.random.default_rng(18), 777, [6, 3, 9, 4])
    a = early_eos(hf, ids, mask, 16)
    eos = [a, (a + 1) % 777]
    ref = hf_generate(hf, ids, mask, ids.shape[1] + 16, max_new_tokens=16, do_sample=False, eos_token_id=eos)
    np.testing.assert_array_equal(model.generate(ids, mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=PAD), ref)
