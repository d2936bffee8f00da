"""Speculative decoding (prompt lookup, draft model): greedy output is the reference's greedy output,
min_new_tokens and scores as without speculation, clear errors. (Sampling's distribution and the
one-compile-per-bucket rule: test_speculative_sampling.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import grid, left_padded_batch
from helpers import PAD, early_eos, hf_generate, same_weights


SPECULATIVE_GRID = [(n, b, m) for m in ("lookup", "draft", "self-draft") for b in (1, 4) for n in ("tiny", "four")]


# a drafted and a looked-up case in the default run; the full product under `make soak`
@pytest.mark.parametrize("name, batch, method", grid(
    SPECULATIVE_GRID, default=[("tiny", 4, "lookup"), ("four", 4, "draft")]))
def test_greedy_speculative_equals_reference_greedy(hf_and_minigen, name, batch, method):
    hf, hf_dir, model = hf_and_minigen(name)
    vocab = hf.config.vocab_size
    rng = np.random.default_rng(30 + batch)
    lengths = [9, 3, 14, 6][:batch]
    ids, mask = left_padded_batch(rng, vocab, lengths)
    ids[:, -6:] = ids[:, -12:-6] if ids.shape[1] >= 12 else ids[:, -6:]  # some repetition for the lookup
    max_new = 24
    eos = early_eos(hf, ids, mask, max_new) if batch > 1 else None
    ref = hf_generate(hf, ids, mask, ids.shape[1] + max_new, max_new_tokens=max_new, do_sample=False, eos_token_id=eos)
    k = 3
    if method == "lookup":
        options = dict(prompt_lookup_num_tokens=k, max_matching_ngram_size=3)
    elif method == "draft":
        _, _, draft = hf_and_minigen(name, n_layer=1)  # other weights, same vocabulary
        options = dict(assistant_model=draft, num_assistant_tokens=k)
    else:
        options = dict(assistant_model=same_weights(hf_dir), num_assistant_tokens=k)
    out = model.generate(ids, mask, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=PAD, return_dict=True,
                         **options)
    np.testing.assert_array_equal(out.sequences, ref)
    if batch > 1:
        stopped = [(row[ids.shape[1]:] == eos).any() for row in ref]
        assert any(stopped) and not all(stopped)  # rows finish at different steps
    stats = out.speculation
    assert stats["verify_steps"] >= 1
    if method == "self-draft":  # every candidate agrees: k accepted per step but at the rows' ends
        assert stats["mean_accepted_tokens"] > k - 1, stats
        assert stats["verify_steps"] <= -(-(max_new - 1) // (k + 1)) + 1


@pytest.mark.slow
def test_speculative_min_new_tokens_and_scores_equal_plain(hf_and_minigen):
    hf, hf_dir, model = hf_and_minigen("odd")
    ids, mask = left_padded_batch(np.random.default_rng(33), hf.config.vocab_size, [7, 2, 12])
    eos = early_eos(hf, ids, mask, 20)
    common = dict(max_new_tokens=20, eos_token_id=eos, pad_token_id=PAD, min_new_tokens=6, output_logprobs=True)
    plain = model.generate(ids, mask, **common)
    for options in (dict(prompt_lookup_num_tokens=4), dict(assistant_model=same_weights(hf_dir))):
        spec = model.generate(ids, mask, **common, **options)
        np.testing.assert_array_equal(spec.sequences, plain.sequences)
        np.testing.assert_allclose(spec.logprobs, plain.logprobs, atol=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lookup", "draft"])
def test_processors_that_read_the_row_keep_speculation_equal_to_plain_greedy(hf_and_minigen, method):
    """repetition_penalty, no_repeat_ngram_size, presence/frequency_penalty, sequence_bias and bad_words_ids
    with speculative decoding give plain greedy's tokens with them (each verify position is scored over
    the row as it would be with the candidates before it accepted), on a left-padded batch whose rows
    end at different steps; each option really changes the output."""
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(41), 512, [9, 3, 14, 6])
    ids[:, -6:] = ids[:, -12:-6]  # repetition for the lookup to find
    max_new = 20
    eos = early_eos(hf, ids, mask, max_new)
    base = dict(max_new_tokens=max_new, eos_token_id=eos, pad_token_id=PAD)
    plain = model.generate(ids, mask, **base)
    new = plain[:, ids.shape[1]:]
    common = int(np.bincount(new[new != PAD]).argmax())  # a token plain greedy uses a lot
    pair = [int(t) for t in new[0, 1:3]]  # a bigram it produced
    speculation = dict(prompt_lookup_num_tokens=3, max_matching_ngram_size=2) if method == "lookup" else \
        dict(assistant_model=hf_and_minigen("tiny", initializer_range=0.25)[2], num_assistant_tokens=3)
    for options in (dict(repetition_penalty=1.6), dict(no_repeat_ngram_size=2),
                    dict(presence_penalty=1.5, frequency_penalty=0.8),
                    dict(sequence_bias={(common,): -4.0, (pair[0], 7): 3.0}, bad_words_ids=[pair])):
        expected = model.generate(ids, mask, **base, **options)
        assert (expected != plain).any(), options  # the option acts here
        got = model.generate(ids, mask, **base, **options, **speculation, return_dict=True)
        np.testing.assert_array_equal(got.sequences, expected, err_msg=str(options))
    assert got.speculation["mean_accepted_tokens"] > 0  # candidates were accepted, not only rejected


@pytest.mark.slow
def test_adaptive_draft_equals_plain_greedy(hf_and_minigen):
    """num_assistant_tokens_schedule="heuristic" and assistant_confidence_threshold change only what the
    draft proposes: greedy output equals plain greedy (left-padded batch, rows ending at different
    steps), and fewer tokens are proposed than the block's width."""
    hf, _, model = hf_and_minigen("tiny")
    _, _, draft = hf_and_minigen("tiny", initializer_range=0.25)
    ids, mask = left_padded_batch(np.random.default_rng(43), 512, [9, 3, 14, 6])
    max_new = 20
    eos = early_eos(hf, ids, mask, max_new)
    base = dict(max_new_tokens=max_new, eos_token_id=eos, pad_token_id=PAD)
    plain = model.generate(ids, mask, **base)
    proposed = {}
    for adapt in (dict(num_assistant_tokens_schedule="heuristic"), dict(assistant_confidence_threshold=0.6),
                  dict(num_assistant_tokens_schedule="heuristic_transient", assistant_confidence_threshold=0.3)):
        out = model.generate(ids, mask, **base, assistant_model=draft, num_assistant_tokens=4, return_dict=True,
                             **adapt)
        np.testing.assert_array_equal(out.sequences, plain, err_msg=str(adapt))
        proposed[tuple(adapt)] = out.speculation["mean_proposed_tokens"]
    constant = model.generate(ids, mask, **base, assistant_model=draft, num_assistant_tokens=4, return_dict=True)
    assert constant.speculation["mean_proposed_tokens"] == 4
    assert all(0 < p < 4 for p in proposed.values()), proposed  # each adapted what the draft proposed
    with pytest.raises(ValueError, match="num_assistant_tokens_schedule is for speculative decoding with "
                                         "assistant_model"):
        model.generate(ids, mask, **base, prompt_lookup_num_tokens=2, num_assistant_tokens_schedule="heuristic")
    with pytest.raises(ValueError, match="assistant_confidence_threshold is for speculative decoding with "
                                         "assistant_model"):
        model.generate(ids, mask, **base, assistant_confidence_threshold=0.5)


def test_prompt_lookup_copies_from_the_row(hf_and_minigen):
    """On a text that repeats, candidates come from the row's own earlier tokens and get accepted."""
    from minigen.generation.speculative import lookup_candidates
    import tensorflow as tf

    seq = np.array([[0, 0, 5, 6, 7, 8, 9, 5, 6, 0, 0, 0], [0, 1, 2, 3, 1, 2, 4, 1, 2, 0, 0, 0]], np.int32)
    lengths = np.array([9, 9], np.int32)
    valid = (np.arange(12)[None, :] < lengths[:, None]) & (np.arange(12)[None, :] >= [[2], [0]])
    got = lookup_candidates(tf.constant(seq), tf.constant(valid), tf.constant(lengths), 4, 2, 99).numpy()
    # row 0: "5 6" seen before only at slots 2-3 -> 7 8 9 5. row 1: "1 2" at 1-2 and 4-5; only the
    # earlier one is followed by 4 written tokens -> 3 1 2 4
    np.testing.assert_array_equal(got, [[7, 8, 9, 5], [3, 1, 2, 4]])
    # with k = 3 both are, and the latest wins
    got = lookup_candidates(tf.constant(seq), tf.constant(valid), tf.constant(lengths), 3, 2, 99).numpy()
    np.testing.assert_array_equal(got, [[7, 8, 9], [4, 1, 2]])


def test_speculative_option_errors(hf_and_minigen):
    hf, hf_dir, model = hf_and_minigen("tiny")
    _, _, other_vocab = hf_and_minigen("odd")
    ids = [[1, 2, 3]]
    cases = [
        (dict(prompt_lookup_num_tokens=0), "prompt_lookup_num_tokens must be an integer >= 1"),
        (dict(prompt_lookup_num_tokens=3, num_beams=2), "needs num_beams=1"),
        (dict(prompt_lookup_num_tokens=3, logits_processor=[lambda s, v, g, x: x]), "does not support logits_processor"),
        (dict(assistant_model=other_vocab), "vocab_size 1003"),
        (dict(assistant_model=model), "the model itself"),
        (dict(assistant_model="gpt2"), "must be a minigen model"),
        (dict(assistant_model=same_weights(hf_dir), prompt_lookup_num_tokens=2), "not both"),
        (dict(prompt_lookup_num_tokens=2, return_state=True), "do not combine with speculative"),
        (dict(num_assistant_tokens=0), "num_assistant_tokens must be an integer >= 1"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            model.generate(ids, max_new_tokens=5, **options)
    with pytest.raises(ValueError, match="streaming does not support prompt_lookup"):
        next(model.stream_tokens(ids, prompt_lookup_num_tokens=2))
