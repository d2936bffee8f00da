"""Each logits processor (and the user's own) against the reference's class, through `generate`
(transformers 5.x, PyTorch, run in the same test). The option ids are taken from greedy's own
output wherever possible, so each option must change it; every test also checks the option's errors."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import left_padded_batch
from helpers import PAD, early_eos, hf_generate


# the default run keeps the pair of penalties; each alone too under `make soak`
@pytest.mark.parametrize(
    "options",
    [pytest.param(dict(repetition_penalty=1.8), marks=pytest.mark.slow),
     pytest.param(dict(repetition_penalty=0.7), marks=pytest.mark.slow),
     pytest.param(dict(no_repeat_ngram_size=2), marks=pytest.mark.slow),
     pytest.param(dict(no_repeat_ngram_size=3), marks=pytest.mark.slow),
     dict(repetition_penalty=1.3, no_repeat_ngram_size=2)],
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


@pytest.mark.slow
def test_repetition_penalty_ignores_left_padding(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(15), 512, [4, 9], pad_id=3)
    batch = model.generate(ids, mask, max_new_tokens=15, repetition_penalty=2.0, no_repeat_ngram_size=2)
    alone = model.generate(ids[:1, -4:], max_new_tokens=15, repetition_penalty=2.0, no_repeat_ngram_size=2)
    np.testing.assert_array_equal(batch[0, -19:], alone[0])


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow  # make soak: bad_words_ids is sequence_bias with -inf, whose rule the default run checks
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


@pytest.mark.slow  # make soak: the default run checks begin_suppress_tokens in test_forced_tokens_match_reference
def test_begin_suppress_tokens_matches_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(21), 512, [5, 9, 2], pad_id=PAD)
    plain = greedy_without_eos(model, ids, mask, 8)
    first = sorted({int(t) for t in plain[:, ids.shape[1]]})  # each row's first choice, banned at the start only
    ours = assert_greedy_parity(hf, model, ids, mask, 8, begin_suppress_tokens=first)
    assert not np.isin(ours[:, ids.shape[1]], first).any()
    with pytest.raises(ValueError, match="begin_suppress_tokens must be"):
        model.generate(ids, mask, begin_suppress_tokens=[512])


def test_length_options_match_reference(hf_and_minigen):
    """max_length and min_length count the prompt's width, padding included, as HF does;
    max_new_tokens wins over max_length; min_length and min_new_tokens: the later holds."""
    hf, _, model = hf_and_minigen("four")
    ids, mask = left_padded_batch(np.random.default_rng(23), 777, [6, 3, 9, 4], pad_id=PAD)
    width = ids.shape[1]
    eos = early_eos(hf, ids, mask, 16)
    cases = [dict(max_length=width + 7), dict(max_length=width + 30, max_new_tokens=9),
             dict(max_new_tokens=16, min_length=width + 6), dict(max_new_tokens=16, min_length=width + 3, min_new_tokens=8)]
    for options in cases:
        ref = hf_generate(hf, ids, mask, None, do_sample=False, eos_token_id=eos, **options)
        ours = model.generate(ids, mask, eos_token_id=eos, pad_token_id=PAD, **options)
        ref = np.pad(ref, ((0, 0), (0, ours.shape[1] - ref.shape[1])), constant_values=PAD)
        np.testing.assert_array_equal(ours, ref, err_msg=str(options))
    free = model.generate(ids, mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=PAD)
    first = [int(np.argmax(row[width:] == eos)) if (row[width:] == eos).any() else 16 for row in free]
    assert min(first) < 6  # min_length 6 new tokens had an EOS to hold back
    with pytest.raises(ValueError, match=r"max_length \(5\) must exceed the prompt's width \(9"):
        model.generate(ids, mask, max_length=5)
    for name in ("max_length", "min_length"):
        with pytest.raises(ValueError, match=f"{name} must be an integer"):
            model.generate(ids, mask, **{name: -1})


def test_forced_tokens_match_reference(hf_and_minigen):
    """forced_eos_token_id at the last step; forced_bos_token_id on a 1-token prompt, where HF's
    begin_suppress_tokens then moves to the second new token."""
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(24), 512, [5, 9, 2], pad_id=PAD)
    ours = assert_greedy_parity(hf, model, ids, mask, 6, forced_eos_token_id=7)
    assert (ours[:, -1] == 7).all()
    one = np.array([[5], [9]])
    forced = assert_greedy_parity(hf, model, one, np.ones_like(one), 5, forced_bos_token_id=3)
    assert (forced[:, 1] == 3).all()
    second = [int(t) for t in forced[:, 2]]  # suppressed at the begin index, which the forced BOS moves to 1
    ours = assert_greedy_parity(hf, model, one, np.ones_like(one), 5, forced_bos_token_id=3, begin_suppress_tokens=second)
    assert (ours[:, 1] == 3).all() and not np.isin(ours[:, 2], second).any()
    for bad in ({"forced_eos_token_id": 512}, {"forced_eos_token_id": []}, {"forced_bos_token_id": "a"}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
            model.generate(ids, mask, **bad)


@pytest.mark.slow
def test_exponential_decay_length_penalty_matches_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("four")
    ids, mask = left_padded_batch(np.random.default_rng(25), 777, [6, 3, 9, 4], pad_id=PAD)
    eos = early_eos(hf, ids, mask, 16)
    plain = model.generate(ids, mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=PAD)
    options = dict(max_new_tokens=16, do_sample=False, eos_token_id=eos, exponential_decay_length_penalty=(2, 1.6))
    ref = hf_generate(hf, ids, mask, ids.shape[1] + 16, **options)
    ours = model.generate(ids, mask, pad_token_id=PAD, **{k: v for k, v in options.items() if k != "do_sample"})
    np.testing.assert_array_equal(ours, ref)
    assert (ours == eos).sum() > (plain == eos).sum()  # more rows end: the penalty pushes EOS up
    for bad in ((2,), (-1, 1.5), (2, 0.5), (2, float("nan"))):
        with pytest.raises(ValueError, match="exponential_decay_length_penalty must be"):
            model.generate(ids, mask, exponential_decay_length_penalty=bad)


def test_remove_invalid_values_and_renormalize_match_reference(hf_and_minigen):
    """remove_invalid_values against HF's processor on nan/inf scores; renormalize_logits changes
    beam scores (beam search adds processed scores up) and must match HF's sequences_scores."""
    import torch
    from transformers.generation.logits_process import InfNanRemoveLogitsProcessor

    from minigen.generation.processors import remove_invalid_values

    scores = np.array([[1.0, np.nan, np.inf, -np.inf, -2.0]], np.float32)
    expected = InfNanRemoveLogitsProcessor()(None, torch.tensor(scores)).numpy()
    np.testing.assert_array_equal(remove_invalid_values(scores).numpy(), expected)
    hf, _, model = hf_and_minigen("tiny")
    ids = np.random.default_rng(26).integers(0, 511, (2, 6))  # unpadded: HF counts pads for repetition_penalty
    mask = np.ones_like(ids)
    common = dict(max_new_tokens=8, num_beams=3, repetition_penalty=1.8, eos_token_id=None, output_scores=True,
                  remove_invalid_values=True)
    seqs = {}
    for renormalize in (False, True):
        seq, ref = hf_generate(hf, ids, mask, ids.shape[1] + 8, do_sample=False, return_dict_in_generate=True,
                               renormalize_logits=renormalize, **common)
        ours = model.generate(ids, mask, pad_token_id=PAD, renormalize_logits=renormalize,
                              **{**common, "eos_token_id": []})
        np.testing.assert_array_equal(ours.sequences, seq)
        np.testing.assert_allclose(ours.sequences_scores, ref.sequences_scores.numpy(), atol=1e-4)
        seqs[renormalize] = ours.sequences_scores
    assert not np.allclose(seqs[False], seqs[True])  # renormalizing does change beam scores


@pytest.mark.slow
def test_custom_logits_processor_matches_reference(hf_and_minigen):
    """A user function compiled into the loop equals the same rule as an HF LogitsProcessor: greedy
    and beam search, after the built-in processors. The rule reads the row (no token twice in a
    row: the last valid slot's token is banned) and the step (even ids banned for 3 steps)."""
    import tensorflow as tf
    import torch
    from transformers import LogitsProcessorList

    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(27), 512, [6, 6, 6], pad_id=PAD)  # unpadded rows

    def no_echo_even_start(sequences, valid, generated, logits):
        last_slot = tf.reduce_max(tf.where(valid, tf.range(tf.shape(valid)[1])[None, :], -1), axis=1)
        last = tf.gather(sequences, last_slot, batch_dims=1)  # [rows]
        vocab = tf.range(logits.shape[-1])[None, :]
        banned = tf.equal(vocab, last[:, None]) | ((vocab % 2 == 0) & (generated < 3))
        return tf.where(banned, float("-inf"), logits)

    def reference_rule(input_ids, scores):
        scores = scores.clone()
        scores[torch.arange(len(input_ids)), input_ids[:, -1]] = -float("inf")
        if input_ids.shape[1] - ids.shape[1] < 3:
            scores[:, ::2] = -float("inf")
        return scores

    for options in (dict(), dict(num_beams=3)):
        ref = hf_generate(hf, ids, mask, ids.shape[1] + 10, max_new_tokens=10, do_sample=False, eos_token_id=None,
                          logits_processor=LogitsProcessorList([reference_rule]), **options)
        ours = model.generate(ids, mask, max_new_tokens=10, eos_token_id=[], pad_token_id=PAD,
                              logits_processor=[no_echo_even_start], **options)
        np.testing.assert_array_equal(ours, ref, err_msg=str(options))
        new = ours[:, ids.shape[1]:]
        assert (new[:, :3] % 2 == 1).all() and not (new[:, 1:] == new[:, :-1]).any()


def test_custom_logits_processor_errors_name_the_function(hf_and_minigen):
    import tensorflow as tf

    _, _, model = hf_and_minigen("tiny")

    def host_side(sequences, valid, generated, logits):
        return tf.numpy_function(lambda x: x, [logits], tf.float32)

    def wrong_shape(sequences, valid, generated, logits):
        return logits[:, :10]

    with pytest.raises(ValueError, match="logits_processor .*host_side is not an XLA-compilable function"):
        model.generate([[1, 2, 3]], max_new_tokens=2, logits_processor=[host_side])
    with pytest.raises(ValueError, match=r"logits_processor .*wrong_shape must return float32 logits of shape \[1, 512\]"):
        model.generate([[1, 2, 3]], max_new_tokens=2, logits_processor=[wrong_shape])
    with pytest.raises(ValueError, match="logits_processor must be a list of functions"):
        model.generate([[1, 2, 3]], max_new_tokens=2, logits_processor=[3])
    with pytest.raises(ValueError, match="does not support logits_processor"):
        model.generate([[1, 2, 3]], max_new_tokens=2, logits_processor=[wrong_shape], prompt_lookup_num_tokens=2)


def test_presence_and_frequency_penalties_follow_their_definition(hf_and_minigen):
    """OpenAI's definition, written here in NumPy: each step's scores are the model's logits minus
    presence_penalty for every token generated so far and frequency_penalty per time it was (the prompt
    and its padding not counted); greedy takes their argmax."""
    _, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(41), 512, [5, 9, 3], pad_id=3)
    presence, frequency, new = 0.7, 0.4, 24
    out = model.generate(ids, mask, max_new_tokens=new, eos_token_id=[], pad_token_id=PAD, output_scores=True,
                         output_logits=True, presence_penalty=presence, frequency_penalty=frequency)
    width = ids.shape[1]
    for t in range(new):
        counts = np.stack([np.bincount(row, minlength=512) for row in out.sequences[:, width:width + t]]) \
            if t else np.zeros((3, 512), int)
        expected = out.logits[t] - presence * (counts > 0) - frequency * counts
        np.testing.assert_allclose(out.scores[t], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out.sequences[:, width + t], expected.argmax(-1))
    plain = greedy_without_eos(model, ids, mask, new)
    assert not np.array_equal(plain, out.sequences)  # the penalties changed something
    with pytest.raises(ValueError, match="presence_penalty.*in \\[-2, 2\\]"):
        model.generate(ids, mask, max_new_tokens=2, presence_penalty=2.5)
    with pytest.raises(ValueError, match="frequency_penalty.*in \\[-2, 2\\]"):
        model.generate(ids, mask, max_new_tokens=2, frequency_penalty=-3.0)

