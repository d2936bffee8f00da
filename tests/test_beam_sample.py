"""Beam sampling (num_beams > 1, do_sample=True): the reference's semantics (transformers 5.x beam search
with sampling: processors and warpers over each beam's log-probs, then 2 x num_beams continuations drawn
without replacement over beams x vocab, sorted, and the rest as beam search)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from conftest import left_padded_batch
from helpers import PAD, chi_square_upper, hf_generate


def reference_warpers(temperature, top_k, top_p, keep=2):
    """The reference's warpers for beam sampling with one EOS id: each keeps at least 2 tokens."""
    return LogitsProcessorList([TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k, min_tokens_to_keep=keep),
                                TopPLogitsWarper(top_p, min_tokens_to_keep=keep)])


def test_beam_sample_scores_and_hypotheses_follow_the_reference(hf_and_minigen):
    """Step 0's processed scores equal the reference's beam sampling scores on a left-padded batch (all
    beams of a prompt start alike, so no draw is involved); every returned hypothesis' sequences_score
    is its tokens' warped log-probs under the reference model, summed and length-penalised as the
    reference scores a finished beam; the hypotheses are sorted best first and EOS ends rows."""
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(3), 512, [4, 9, 6])
    temperature, top_k, top_p, length_penalty, max_new = 0.7, 20, 0.3, 0.5, 8
    # an EOS the beams hit sometimes: the token the reference's greedy continuations use most
    probe = hf_generate(hf, ids, mask, max_new_tokens=max_new, eos_token_id=None)[:, ids.shape[1]:]
    eos = int(np.bincount(probe.ravel()).argmax())
    options = dict(max_new_tokens=max_new, num_beams=3, num_return_sequences=2, do_sample=True,
                   temperature=temperature, top_k=top_k, top_p=top_p, length_penalty=length_penalty,
                   eos_token_id=eos)
    torch.manual_seed(0)
    _, ref = hf_generate(hf, ids, mask, output_scores=True, return_dict_in_generate=True, **options)
    ours = model.generate(ids, mask, pad_token_id=PAD, output_scores=True, seed=(4, 2), **options)
    np.testing.assert_allclose(ours.scores[0], ref.scores[0].numpy(), atol=1e-4)
    assert np.isinf(ours.scores[0]).any(axis=-1).all()  # the warpers did act
    assert (np.isfinite(ours.scores[0]).sum(-1) == 2).any()  # top_p alone would keep 1 there: min_tokens_to_keep

    warp = reference_warpers(temperature, top_k, top_p)
    sequences = ours.sequences.reshape(3, 2, -1)
    scores = ours.sequences_scores.reshape(3, 2)
    ended = 0
    for row in range(3):
        prompt = ids[row, mask[row].argmax():]
        for k in range(2):
            new = sequences[row, k, ids.shape[1]:]
            length = int(np.argmax(new == eos)) + 1 if (new == eos).any() else max_new
            ended += length < max_new
            tokens = np.concatenate([prompt, new[:length]])
            with torch.no_grad():
                logits = hf(torch.tensor(tokens[None])).logits[0, len(prompt) - 1:-1]
                logprobs = torch.log_softmax(logits, -1)
                total = sum(float(warp(torch.tensor(tokens[None, :len(prompt) + t]), logprobs[t:t + 1])[0, new[t]])
                            for t in range(length))
            assert np.isfinite(total), (row, k)  # never a token the warpers ruled out
            np.testing.assert_allclose(scores[row, k], total / length ** length_penalty, rtol=1e-4, atol=1e-4)
            assert (new[length:] == PAD).all()
        assert scores[row, 0] >= scores[row, 1]
    assert ended  # some hypothesis ended with EOS before max_new_tokens


def set_probability(probs: np.ndarray, chosen: tuple) -> float:
    """P(sequential draws without replacement from `probs` give exactly the set `chosen`)."""
    total = 0.0
    for order in itertools.permutations(chosen):
        p, left = 1.0, 1.0
        for item in order:
            p *= probs[item] / left
            left -= probs[item]
        total += p
    return total


def beam_sample_outcomes(first: np.ndarray, second: np.ndarray, keep: int = 4) -> dict:
    """The exact distribution of the best hypothesis of 2-beam sampling over 2 new tokens, no EOS.
    first [vocab]: log-probs of the first token; second [vocab, vocab]: of the second after each first.
    Step 0: `keep` first tokens drawn without replacement (only beam 0 counts: the others start at
    -1e9); the best 2 by log-prob run on. Step 1: `keep` of their 2 x vocab continuations drawn; all
    end at the length limit, and the one with the best total is the best hypothesis."""
    vocab = len(first)
    outcome: dict = {}
    p0 = np.exp(first - np.logaddexp.reduce(first))
    for drawn in itertools.combinations(range(vocab), keep):
        p_set = set_probability(p0, drawn)
        running = sorted(drawn, key=lambda t: -first[t])[:2]
        cands = [(a, b) for a in running for b in range(vocab)]
        totals = np.array([first[a] + second[a, b] for a, b in cands])
        p1 = np.exp(totals - np.logaddexp.reduce(totals))
        for chosen in itertools.combinations(range(len(cands)), keep):
            best = cands[max(chosen, key=lambda i: totals[i])]
            outcome[best] = outcome.get(best, 0.0) + p_set * set_probability(p1, chosen)
    return outcome


def test_beam_sample_draws_follow_the_enumerated_distribution(hf_and_minigen):
    """Chi-square: the best hypothesis of 2-beam sampling on a 6-token vocabulary, 2 new tokens, against
    its distribution enumerated exactly from the reference model's log-probs (every draw of 4 of the
    6 first tokens, then of 4 of the 12 continuations of the 2 running beams)."""
    hf, _, model = hf_and_minigen("tiny", vocab_size=6, initializer_range=0.02)
    prompt = np.array([2, 0, 3])
    with torch.no_grad():
        first = torch.log_softmax(hf(torch.tensor(prompt[None])).logits[0, -1], -1).numpy().astype(np.float64)
        grown = np.concatenate([np.tile(prompt, (6, 1)), np.arange(6)[:, None]], axis=1)
        second = torch.log_softmax(hf(torch.tensor(grown)).logits[:, -1], -1).numpy().astype(np.float64)
    exact = beam_sample_outcomes(first, second)
    assert abs(sum(exact.values()) - 1) < 1e-9
    draws = 3000
    out = model.generate(np.tile(prompt, (draws, 1)), max_new_tokens=2, num_beams=2, do_sample=True, top_k=0,
                         eos_token_id=[], seed=(11, 5))
    counts: dict = {}
    for a, b in out[:, -2:].tolist():
        counts[(a, b)] = counts.get((a, b), 0) + 1
    assert set(counts) <= set(exact)  # nothing the enumeration calls impossible
    cells = sorted(exact, key=exact.get, reverse=True)
    big = [c for c in cells if exact[c] * draws >= 5]  # the rest pooled into one cell
    observed = [counts.get(c, 0) for c in big] + [draws - sum(counts.get(c, 0) for c in big)]
    expected = [exact[c] * draws for c in big] + [draws * (1 - sum(exact[c] for c in big))]
    observed, expected = np.array(observed, float), np.array(expected)
    if expected[-1] < 5:  # too little left to pool: fold it into the last cell
        observed[-2] += observed[-1]
        expected[-2] += expected[-1]
        observed, expected = observed[:-1], expected[:-1]
    assert len(big) >= 8  # a distribution spread enough to test
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < chi_square_upper(len(observed) - 1), (chi2, len(observed))


@pytest.mark.slow
def test_beam_sample_is_seeded_and_refused_where_it_does_not_run(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids = np.random.default_rng(5).integers(0, 512, size=(2, 5))
    options = dict(max_new_tokens=6, num_beams=3, do_sample=True, top_k=40)
    one = model.generate(ids, seed=(1, 2), **options)
    np.testing.assert_array_equal(one, model.generate(ids, seed=(1, 2), **options))
    assert any((model.generate(ids, seed=(s, 2), **options) != one).any() for s in range(2, 6))
    with pytest.raises(ValueError, match="streaming supports greedy search, sampling and contrastive search"):
        next(iter(model.stream_tokens(ids, **options)))
    with pytest.raises(ValueError, match="output_logprobs is for greedy search"):
        model.generate(ids, output_logprobs=True, **options)
    with pytest.raises(ValueError, match="stop_strings work with greedy search"):
        model.generate(ids, stop_strings="x", **options)
