"""Speculative decoding (prompt lookup, draft model): greedy output is the reference's greedy output,
sampling keeps the target's distribution, one compile per bucket, clear errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import minigen
from conftest import grid, left_padded_batch
from minigen.config import GPT2Config
from minigen import GPT2
from minigen.model import random_params
from test_generate import PAD, early_eos, hf_generate
from test_sampling import chi_square_upper


def same_weights(model_dir):
    """A second, independent model object with the target's own weights: a draft that always agrees."""
    return minigen.load(model_dir.parent / "minigen")


SPECULATIVE_GRID = [(n, b, m) for m in ("lookup", "draft", "self-draft") for b in (1, 4) for n in ("tiny", "four")]


# each method, both batch sizes and both models in the default run; the full product under `make soak`
@pytest.mark.parametrize("name, batch, method", grid(
    SPECULATIVE_GRID, default=[("tiny", 4, "lookup"), ("four", 4, "draft"), ("four", 1, "self-draft")]))
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


def test_speculative_min_new_tokens_and_scores_equal_plain(hf_and_minigen):
    hf, hf_dir, model = hf_and_minigen("odd")
    ids, mask = left_padded_batch(np.random.default_rng(33), hf.config.vocab_size, [7, 2, 12])
    eos = early_eos(hf, ids, mask, 20)
    common = dict(max_new_tokens=20, eos_token_id=eos, pad_token_id=PAD, min_new_tokens=6, output_scores=True)
    plain = model.generate(ids, mask, **common)
    for options in (dict(prompt_lookup_num_tokens=4), dict(assistant_model=same_weights(hf_dir))):
        spec = model.generate(ids, mask, **common, **options)
        np.testing.assert_array_equal(spec.sequences, plain.sequences)
        np.testing.assert_allclose(spec.scores, plain.scores, atol=2e-4)


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


def tiny_pair():
    """A 4-token target and a different draft: distributions small enough to enumerate."""
    config = GPT2Config(vocab_size=4, n_positions=32, n_embd=16, n_layer=2, n_head=2, eos_token_id=None,
                        bos_token_id=None)
    target = GPT2(config, random_params(config, seed=1, std=0.6))
    draft = GPT2(dataclass_replace(config, n_layer=1), random_params(dataclass_replace(config, n_layer=1), seed=2,
                                                                        std=0.6))
    return target, draft


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def exact_distribution(model, prompt, new: int, temperature: float, top_k: int):
    """P(every sequence of `new` tokens) under the model's warped softmax, by enumeration."""
    vocab = model.config.vocab_size
    table = {}
    for seq in itertools.product(range(vocab), repeat=new):
        logits = model.logits([list(prompt) + list(seq[:-1])])[0, len(prompt) - 1:] / temperature
        p = 1.0
        for step, token in enumerate(seq):
            row = logits[step].astype(np.float64)
            cut = np.sort(row)[-top_k]
            row = np.where(row >= cut, row, -np.inf)
            probs = np.exp(row - row.max())
            p *= probs[token] / probs.sum()
        table[seq] = p
    return table


@pytest.mark.parametrize("method", ["draft", "lookup"])
def test_speculative_sampling_keeps_the_target_distribution(method):
    target, draft = tiny_pair()
    prompt = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]  # repeats, so the lookup proposes candidates
    new, temperature, top_k = 3, 0.9, 3
    expected = exact_distribution(target, prompt, new, temperature, top_k)
    options = dict(assistant_model=draft, num_assistant_tokens=3) if method == "draft" else dict(
        prompt_lookup_num_tokens=3)
    counts = dict.fromkeys(expected, 0)
    rows, calls = 50, 80
    accepted = 0.0
    for seed in range(calls):
        out = target.generate([prompt], max_new_tokens=new, do_sample=True, temperature=temperature, top_k=top_k,
                              num_return_sequences=rows, seed=(seed, 5), return_dict=True, **options)
        accepted += out.speculation["mean_accepted_tokens"] / calls
        for row in out.sequences[:, len(prompt):]:
            counts[tuple(int(t) for t in row)] += 1
    n = rows * calls
    assert sum(c for s, c in counts.items() if expected[s] == 0) == 0  # never outside the top-k
    support = [s for s in expected if expected[s] > 0]
    observed = np.array([counts[s] for s in support], float)
    want = np.array([expected[s] for s in support]) * n
    chi2 = ((observed - want) ** 2 / want).sum()
    limit = chi_square_upper(len(support) - 1)
    assert chi2 < limit, (chi2, limit)
    assert accepted > 0.1  # candidates were really accepted (the scheme under test ran)
    # the test can tell distributions apart: the draft's own distribution fails it
    if method == "draft":
        other = exact_distribution(draft, prompt, new, temperature, top_k)
        want_draft = np.array([other[s] for s in support]) * n
        assert ((observed - want_draft) ** 2 / np.maximum(want_draft, 1e-9)).sum() > limit


def test_speculative_compiles_once_per_bucket(hf_and_minigen):
    hf, hf_dir, model = hf_and_minigen("tiny")
    draft = same_weights(hf_dir)
    rng = np.random.default_rng(34)
    for options in (dict(prompt_lookup_num_tokens=3), dict(assistant_model=draft, num_assistant_tokens=2)):
        for sampling in (False, True):
            before = model.trace_count
            for length, seed in ((3, 1), (9, 2), (14, 3)):  # one bucket (16)
                extra = dict(do_sample=True, seed=(seed, 0), temperature=0.5 + seed / 10) if sampling else {}
                model.generate(rng.integers(0, 512, size=(2, length)), max_new_tokens=10, **extra, **options)
            assert model.trace_count == before + 1, options


def test_speculative_option_errors(hf_and_minigen):
    hf, hf_dir, model = hf_and_minigen("tiny")
    _, _, other_vocab = hf_and_minigen("odd")
    ids = [[1, 2, 3]]
    cases = [
        (dict(prompt_lookup_num_tokens=0), "prompt_lookup_num_tokens must be an integer >= 1"),
        (dict(prompt_lookup_num_tokens=3, num_beams=2), "needs num_beams=1"),
        (dict(prompt_lookup_num_tokens=3, repetition_penalty=1.2), "does not support repetition_penalty"),
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
