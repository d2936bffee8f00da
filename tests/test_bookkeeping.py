"""Beam search's bookkeeping and speculative decoding's acceptance as the named functions the loops
call, on tiny tensors, without a model: beam search's against the reference's own helpers run in
the same test, speculative sampling's against the distribution it must reproduce."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch
from transformers.generation.utils import GenerationMixin

from helpers import chi_square_upper
from minigen.generation import beam_search as B
from minigen.generation import speculative as S

BATCH, BEAMS, VOCAB, PROMPT, MAX_NEW = 2, 3, 7, 4, 6
KEEP = 2 * BEAMS  # continuations considered per prompt with one EOS id
WIDTH = PROMPT + MAX_NEW


def beam_state(seed: int, step: int):
    """A plausible mid-search state: running and finished hypotheses, scores, beam rows."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((BATCH, BEAMS, VOCAB)).astype(np.float32) * 2
    logprobs = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)
    running_scores = np.sort(rng.uniform(-6, -1, (BATCH, BEAMS)).astype(np.float32), axis=1)[:, ::-1].copy()
    running = rng.integers(0, VOCAB, (BATCH, BEAMS, WIDTH)).astype(np.int32)
    beams = rng.integers(0, BATCH * BEAMS, (BATCH, BEAMS, MAX_NEW)).astype(np.int32)
    beams[:, :, step:] = -1
    finished = rng.integers(0, VOCAB, (BATCH, BEAMS, WIDTH)).astype(np.int32)
    is_finished = np.array([[True, True, True], [True, False, False]])
    finished_scores = np.where(is_finished, rng.uniform(-4, -0.5, (BATCH, BEAMS)), -1e9).astype(np.float32)
    hits = rng.random((BATCH, KEEP)) < 0.4
    can_improve = np.array([[True], [True]])
    return dict(logprobs=logprobs, running_scores=running_scores, running=running, beams=beams, finished=finished,
                is_finished=is_finished, finished_scores=finished_scores, hits=hits, can_improve=can_improve)


def t(array):
    return torch.tensor(array)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_continuations_and_the_next_running_beams_are_the_reference_s(seed):
    step = 2
    s = beam_state(seed, step)
    slot = PROMPT + step  # the reference's cur_len
    top = B.top_continuations(tf.constant(s["logprobs"]), tf.constant(s["running_scores"]), tf.constant(s["running"]),
                              tf.constant(s["beams"]), slot, step, KEEP)
    accumulated = (s["logprobs"] + s["running_scores"][:, :, None]).reshape(BATCH, BEAMS * VOCAB)
    ref_scores, ref_sequences, ref_beams = GenerationMixin._get_top_k_continuations(
        GenerationMixin, t(accumulated), t(s["running"]).long(), t(s["beams"]).long(), slot, PROMPT, False, KEEP, BEAMS,
        BATCH)
    np.testing.assert_array_equal(top.scores.numpy(), ref_scores.numpy())
    np.testing.assert_array_equal(top.sequences.numpy(), ref_sequences.numpy())
    np.testing.assert_array_equal(top.beams.numpy(), ref_beams.numpy())

    running, scores, beams, parents = B.next_running(top, tf.constant(s["hits"]), BEAMS)
    ref = GenerationMixin._get_running_beams_for_next_iteration(
        GenerationMixin, ref_scores, ref_sequences, ref_beams, t(s["hits"]), BEAMS)
    for ours, theirs in zip((running, scores, beams), ref):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # the parent of each running beam is the beam its sequence came from
    np.testing.assert_array_equal(parents.numpy(), np.take_along_axis(top.parent.numpy(), np.argsort(
        -(top.scores.numpy() - s["hits"] * 1e9), axis=1, kind="stable")[:, :BEAMS], axis=1))


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, -0.5, 2.0])
def test_the_finished_buffer_and_the_stopping_heuristic_are_the_reference_s(early_stopping, length_penalty):
    step = 3
    s = beam_state(7, step)
    s["hits"][1, :2] = True  # the second prompt's two best end: they enter its half-empty buffer
    slot = PROMPT + step
    top = B.top_continuations(tf.constant(s["logprobs"]), tf.constant(s["running_scores"]), tf.constant(s["running"]),
                              tf.constant(s["beams"]), slot, step, KEEP)
    hits = tf.constant(s["hits"])
    ours = B.offer_finished(tf.constant(s["finished"]), tf.constant(s["finished_scores"]), tf.constant(s["is_finished"]),
                            tf.constant(s["beams"]), top, hits, tf.constant(s["can_improve"]), step + 1,
                            tf.constant(length_penalty), early_stopping)
    theirs = GenerationMixin._update_finished_beams(
        GenerationMixin, t(s["finished"]), t(top.sequences.numpy()), t(s["finished_scores"]), t(top.scores.numpy()),
        t(s["beams"]), t(top.beams.numpy()), t(s["can_improve"]), t(s["is_finished"]), t(s["hits"]),
        torch.arange(KEEP) < BEAMS, BEAMS, slot, PROMPT, length_penalty, early_stopping)
    # the reference returns (sequences, scores, beam indices, finished flags); a slot that holds no
    # finished hypothesis ties at -1e9 with the others, so its contents are whatever top-k's tie order
    # put there, in either implementation
    np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
    np.testing.assert_array_equal(ours[2].numpy(), theirs[3].numpy())
    real = theirs[3].numpy()
    assert real.sum() > s["is_finished"].sum()  # some of this step's ended continuations got in
    for mine, ref in ((ours[0], theirs[0]), (ours[3], theirs[2])):
        np.testing.assert_array_equal(mine.numpy()[real], ref.numpy()[real])

    running_scores = tf.constant(s["running_scores"])
    improvable = B.still_improvable(tf.constant(s["can_improve"]), running_scores, ours[1], ours[2], step + 1, MAX_NEW,
                                    tf.constant(length_penalty), early_stopping)
    ref = GenerationMixin._check_early_stop_heuristic(
        t(s["can_improve"]), t(s["running_scores"]), theirs[1], theirs[3], slot + 1, PROMPT + MAX_NEW, PROMPT,
        early_stopping, length_penalty)
    np.testing.assert_array_equal(improvable.numpy(), ref.numpy())


def test_greedy_acceptance_keeps_the_candidates_the_target_agrees_with():
    # the target's argmax at the pending token and after each of 3 candidates
    choice = np.array([[4, 2, 6, 1], [4, 2, 6, 1], [0, 0, 0, 0]])
    scores = np.full((3, 4, 8), -5.0, np.float32)
    np.put_along_axis(scores, choice[:, :, None], 3.0, axis=2)
    candidates = np.array([[4, 2, 6], [4, 5, 6], [3, 0, 0]], np.int32)
    tokens, accepted = S.accept_greedy(tf.constant(scores), tf.constant(candidates))
    np.testing.assert_array_equal(tokens.numpy(), choice)
    np.testing.assert_array_equal(accepted.numpy(), [3, 1, 0])  # all; the first; none (then the target's own)

    count, hit = S.kept_count(tokens, accepted, tf.constant([0, 0, 5]), tf.constant([False, False, False]),
                              MAX_NEW, (6,))
    # row 0 keeps 4 but EOS (6) is its third token; row 1 keeps 2; row 2 has one token left before max_new
    np.testing.assert_array_equal(count.numpy(), [3, 2, 1])
    np.testing.assert_array_equal(hit.numpy(), [True, False, False])
    count, _ = S.kept_count(tokens, accepted, tf.constant([0, 0, 0]), tf.constant([False, True, False]), MAX_NEW, ())
    np.testing.assert_array_equal(count.numpy(), [4, 0, 1])  # a finished row keeps nothing


def test_sampled_acceptance_draws_each_token_from_the_target_distribution():
    """Candidates drawn from a draft q unlike the target p: the first kept token (accepted candidate
    or redraw) is distributed as p at that position, the second (given the first was accepted) as
    p after it, and a candidate the target gives probability 0 is never kept."""
    rows, vocab, k = 40_000, 5, 2
    rng = np.random.default_rng(3)
    p = np.array([[0.5, 0.2, 0.2, 0.1, 0.0], [0.1, 0.1, 0.6, 0.2, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2]])  # [k+1, vocab]
    q = np.array([[0.1, 0.3, 0.2, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1, 0.2]])  # the draft's, [k, vocab]
    candidates = np.stack([rng.choice(vocab, rows, p=q[j]) for j in range(k)], axis=1).astype(np.int32)
    with np.errstate(divide="ignore"):
        scores = np.log(np.broadcast_to(p, (rows, k + 1, vocab))).astype(np.float32)
    tokens, accepted = S.accept_sampled(tf.constant(scores), tf.constant(candidates),
                                        tf.constant(np.broadcast_to(q, (rows, k, vocab)).astype(np.float32)),
                                        tf.constant([5, 9]), tf.constant(1))
    tokens, accepted = tokens.numpy(), accepted.numpy()
    assert not np.isin(4, tokens[:, 0]) and not ((tokens[:, 1] == 4) & (accepted >= 1)).any()
    for position, rows_here in ((0, np.ones(rows, bool)), (1, accepted >= 1)):
        counts = np.bincount(tokens[rows_here, position], minlength=vocab)[:4]
        expected = p[position, :4] * rows_here.sum()
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < chi_square_upper(3), (position, counts, expected)
    # the acceptance rate is sum_x min(p, q) at the first position, as the method's analysis says
    assert abs((accepted >= 1).mean() - np.minimum(p[0], q[0]).sum()) < 0.01
