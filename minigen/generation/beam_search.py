"""Beam search as one XLA while loop, with the reference's (transformers 5.x) semantics; with
do_sample=True, beam sampling (its continuations drawn instead of taken, step 2).

Beams are folded into the batch: the model sees `batch * num_beams` rows. Each step:
  1. log_softmax + processors on every beam's next-token scores, plus the beam's running score;
  2. the best `2 * num_beams` (or more with several EOS ids) continuations of each prompt over
     `num_beams * vocab` candidates (beam sampling: as many drawn without replacement from the softmax
     of their scores, after the warpers, then sorted);
  3. continuations that hit EOS (or the length limit), if among the best `num_beams`, are offered
     to the finished buffer with score `sum_logprobs / generated_len ** length_penalty`;
  4. the best `num_beams` continuations that did not finish become the running beams; each
     inherits its parent's lineage (which beam row holds each cache slot), so the KV cache itself
     is never gathered or copied (see `GPT2.attention`);
  5. the early-stopping rule decides whether any prompt can still improve.

Steps 1-5 are this module's `RULES` (choose_beams); diverse beam search (group_beams.py) brings its
own and shares the loop: prefill, lineage, decode step.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from .. import cache as kv
from ..positions import generated_position
from . import core
from .core import CompileKey, Knobs
from .processors import Step

BIG = 1.0e9  # the reference's "very large negative" offset


class BeamState(NamedTuple):
    step: tf.Tensor  # int32 scalar: tokens generated so far
    cache: kv.KVCache  # rows = batch * num_beams, never reordered
    lineage: tf.Tensor  # [batch, num_beams, cache_len] int32: beam row holding each cache slot of each beam
    logits: tf.Tensor  # [batch * num_beams, vocab]: next-token scores of each running beam
    running: tf.Tensor  # [batch, num_beams, width] int32: running sequences
    running_scores: tf.Tensor  # [batch, num_beams] float32: sum of log-probs
    finished: tf.Tensor  # [batch, num_beams, width] int32: best finished hypotheses
    finished_scores: tf.Tensor  # [batch, num_beams] float32: length-penalised scores
    is_finished: tf.Tensor  # [batch, num_beams] bool: slot holds a real finished hypothesis
    automaton: tf.Tensor  # [rows] int32: each running beam's structured-output state (core.follow)
    running_beams: tf.Tensor  # [batch, num_beams, max_new] int32: the flat beam row of each token, -1 after
    finished_beams: tf.Tensor  # [batch, num_beams, max_new] int32: the same for finished hypotheses
    record: core.Record  # each step's processed log-probs / raw logits when asked ([0, ...] otherwise)
    can_improve: tf.Tensor  # [batch, 1] bool: the early-stopping heuristic is not yet satisfied
    done: tf.Tensor  # bool scalar


def gather_beams(tensor, index):
    """tensor [batch, n, ...], index [batch, k] -> [batch, k, ...]"""
    return tf.gather(tensor, index, batch_dims=1)


def length_scale(length, length_penalty):
    """length ** length_penalty, computed in float64 like the reference's Python scalar, then float32."""
    return tf.cast(tf.pow(tf.cast(length, tf.float64), tf.cast(length_penalty, tf.float64)), tf.float32)


class Continuations(NamedTuple):
    """A step's best continuations of each prompt, `keep` of them, best first."""

    scores: tf.Tensor  # [batch, keep] float32: the running score plus the token's log-prob
    parent: tf.Tensor  # [batch, keep] int32: the running beam each continues
    token: tf.Tensor  # [batch, keep] int32
    sequences: tf.Tensor  # [batch, keep, width] int32: the parent's sequence with the token at `slot`
    beams: tf.Tensor  # [batch, keep, max_new] int32: the parent's beam rows with this step's (when kept)


def draw_without_replacement(totals, keep: int, rng):
    """(scores, index) [batch, keep]: `keep` of each row's totals [batch, n] drawn without replacement
    with probabilities softmax(totals), as the reference's torch.multinomial(..., replacement=False),
    then sorted best score first as it sorts them. The Gumbel-top-k trick: the `keep` largest of
    totals + Gumbel(0, 1) noise are distributed as `keep` draws without replacement. Where fewer than
    `keep` continuations have a nonzero probability (the reference raises there), the rest are the
    ones ruled out (score -inf), which never run on."""
    # threefry: XLA's default generator on this CPU took 48 ms for these 4 x 50257 uniforms, threefry
    # 0.55 ms (2-core EPYC, /tmp probe); the draw costs ~2.4 ms per step in all
    uniform = tf.random.stateless_uniform(tf.shape(totals), rng, minval=np.finfo(np.float32).tiny, maxval=1.0,
                                          alg="threefry")
    _, index = tf.math.top_k(totals - tf.math.log(-tf.math.log(uniform)), keep)
    scores, order = tf.math.top_k(tf.gather(totals, index, batch_dims=1), keep)
    return scores, tf.gather(index, order, batch_dims=1)


def top_continuations(logprobs, running_scores, running, running_beams, slot, step, keep: int,
                      rng=None, first_row=None) -> Continuations:
    """The best `keep` of each prompt's num_beams x vocab continuations (the reference's
    _get_top_k_continuations), or with `rng` (beam sampling) `keep` of them drawn. logprobs
    [batch, num_beams, vocab] processed; running_scores [batch, num_beams]; running [batch, num_beams,
    width]; running_beams [batch, num_beams, max_new] ([.., 0] when beam indices are not kept);
    first_row [batch, 1]: the flat batch row of each prompt's first beam here (default: batch x num_beams)."""
    batch, nb, vocab = logprobs.shape[0], logprobs.shape[1], logprobs.shape[2]
    totals = tf.reshape(logprobs + running_scores[:, :, None], [batch, nb * vocab])
    if rng is None:
        scores, index = tf.math.top_k(totals, keep)  # [batch, keep]
    else:
        scores, index = draw_without_replacement(totals, keep, rng)
    parent, token = index // vocab, index % vocab
    sequences = core.write_column(gather_beams(running, parent), slot, token)
    beams = running_beams
    if running_beams.shape[-1]:
        if first_row is None:
            first_row = tf.range(batch)[:, None] * nb  # a prompt's first beam row in the flat batch
        beams = core.write_column(gather_beams(running_beams, parent), step, first_row + parent)
    return Continuations(scores, parent, token, sequences, beams)


def next_running(top: Continuations, hits, num_beams: int):
    """The best num_beams continuations that did not finish, to run on (the reference's
    _get_running_beams_for_next_iteration). hits [batch, keep] bool: the continuation ended (EOS or
    the length limit). Returns (sequences, scores, beams, parents), each with num_beams per prompt."""
    alive = top.scores - tf.cast(hits, tf.float32) * BIG
    _, best = tf.math.top_k(alive, num_beams)
    return (gather_beams(top.sequences, best), gather_beams(alive, best), gather_beams(top.beams, best),
            gather_beams(top.parent, best))


def offer_finished(finished, finished_scores, is_finished, finished_beams, top: Continuations, hits, can_improve,
                   generated, length_penalty, early_stopping):
    """The finished buffer after this step's ended continuations are offered to it (the reference's
    _update_finished_beams): among the best num_beams continuations, those that ended compete with
    the buffer on sum_logprobs / generated ** length_penalty; none once early_stopping=True found
    num_beams, or once the prompt cannot improve. finished [batch, num_beams, width], its scores and
    flags [batch, num_beams], its beams [batch, num_beams, max_new]; generated: tokens so far, this one
    included. Returns the four, updated."""
    nb = finished_scores.shape[1]
    ended = hits & (tf.range(top.scores.shape[1]) < nb)[None, :]  # only the best num_beams may finish
    offered = top.scores / length_scale(generated, length_penalty)
    if early_stopping is True:
        offered -= tf.cast(tf.reduce_all(is_finished, axis=1, keepdims=True), tf.float32) * BIG
    offered -= tf.cast(~can_improve, tf.float32) * BIG
    offered -= tf.cast(~ended, tf.float32) * BIG
    scores, best = tf.math.top_k(tf.concat([finished_scores, offered], axis=1), nb)
    return (gather_beams(tf.concat([finished, top.sequences], axis=1), best), scores,
            gather_beams(tf.concat([is_finished, ended], axis=1), best),
            gather_beams(tf.concat([finished_beams, top.beams], axis=1), best))


def still_improvable(can_improve, running_scores, finished_scores, is_finished, generated, max_new: int,
                     length_penalty, early_stopping):
    """[batch, 1] bool: each prompt's best running beam could still beat its worst finished one (the
    reference's _check_early_stop_heuristic; with early_stopping="never" and a positive length
    penalty the best case is a hypothesis of max_new tokens)."""
    best_len = generated
    if early_stopping == "never":
        best_len = tf.where(length_penalty > 0.0, max_new, generated)
    best_possible = running_scores[:, :1] / length_scale(best_len, length_penalty)
    worst_done = tf.where(is_finished, tf.reduce_min(finished_scores, axis=1, keepdims=True), -BIG)
    return can_improve & tf.reduce_any(best_possible > worst_done, axis=-1, keepdims=True)


class Rules(NamedTuple):
    """What a beam search variant decides; the loop around it (prefill, lineage, decode) is shared.
    Plain beam search and beam sampling: RULES below; diverse beam search: group_beams.RULES."""

    start_scores: Callable  # (batch, key) -> [batch, num_beams] the running scores before step 0
    start_open: Callable  # (batch, key) -> bool: the prompts (or groups) that can still improve
    choose: Callable  # (state, mask, knobs, key, vocab) -> (state with its bookkeeping, parents [batch, num_beams])
    finish: Callable  # (state, knobs, key) -> (sequences, scores, beam indices) of the returned hypotheses


def choose_beams(s: BeamState, mask, knobs: Knobs, key: CompileKey, vocab: int):
    """One step of beam search's bookkeeping (module docstring, steps 1-5): the new running beams,
    finished buffer and stopping state, and each new running beam's parent [batch, num_beams]."""
    nb, bucket, max_new = key.beam.num_beams, key.bucket, key.max_new_tokens
    batch, width = s.running.shape[0], s.running.shape[2]
    keep = max(2, 1 + len(key.eos_ids)) * nb  # continuations considered per prompt
    slot = bucket + s.step
    flat = tf.reshape(s.running, [batch * nb, width])
    allowed = core.allowed_next(s.automaton, knobs, key, vocab)
    step = Step(flat, core.written_slots(mask, s.step, max_new), slot, s.step, key.eos_ids, allowed)
    logprobs = core.scores(tf.nn.log_softmax(s.logits), step, knobs, key)
    record = core.record(s.record, key, s.step, s.logits, logprobs, None, None)
    rng = core.rng_key(knobs.seed, s.step) if key.strategy == "beam_sample" else None
    top = top_continuations(tf.reshape(logprobs, [batch, nb, vocab]), s.running_scores, s.running,
                            s.running_beams, slot, s.step, keep, rng)
    hits = core.is_eos(top.token, key.eos_ids) | (s.step + 1 >= max_new)
    running, running_scores, running_beams, parents = next_running(top, hits, nb)
    generated = s.step + 1
    finished, finished_scores, is_finished, finished_beams = offer_finished(
        s.finished, s.finished_scores, s.is_finished, s.finished_beams, top, hits, s.can_improve, generated,
        knobs.length_penalty, key.beam.early_stopping)
    can_improve = still_improvable(s.can_improve, running_scores, finished_scores, is_finished, generated,
                                   max_new, knobs.length_penalty, key.beam.early_stopping)
    all_done = tf.reduce_all(is_finished) if key.beam.early_stopping is True else tf.constant(False)
    done = ~tf.reduce_any(can_improve) | all_done | tf.reduce_all(hits)
    return s._replace(running=running, running_scores=running_scores, running_beams=running_beams, finished=finished,
                      finished_scores=finished_scores, is_finished=is_finished, finished_beams=finished_beams,
                      record=record, can_improve=can_improve, done=done), parents


def first_beam_of_each_group(batch, key: CompileKey):
    """[batch, num_beams]: 0 for the first beam of each group (one group unless diverse beam search),
    -BIG for the rest: they start as its copies."""
    size = key.beam.num_beams // key.beam.groups
    return tf.tile(tf.where(tf.range(key.beam.num_beams) % size == 0, 0.0, -BIG)[None, :], [batch, 1])


def all_open(batch, key: CompileKey):
    """[batch, groups] True: every prompt (each group of it) can still improve."""
    return tf.ones([batch, key.beam.groups], tf.bool)


RULES = Rules(
    start_scores=first_beam_of_each_group,
    start_open=all_open,
    choose=choose_beams,
    # the finished buffer is kept best first
    finish=lambda s, knobs, key: (s.finished[:, :key.beam.num_return_sequences],
                                  s.finished_scores[:, :key.beam.num_return_sequences],
                                  s.finished_beams[:, :key.beam.num_return_sequences]),
)


def beam_search(net, ids, mask, knobs: Knobs, key: CompileKey, rules: Rules = RULES):
    """ids, mask: [batch * num_beams, bucket] (each prompt repeated num_beams times).

    Returns core.Outputs: sequences [batch, num_return_sequences, width], sequences_scores
    [batch, num_return_sequences], and with key.scores each hypothesis' beam_indices [batch, r, max_new].
    """
    nb, bucket, max_new = key.beam.num_beams, key.bucket, key.max_new_tokens
    width = bucket + max_new
    rows = key.rows  # static, so the cache keeps its shape through the gathers
    batch = rows // nb
    vocab = net.config.vocab_size

    own_row = tf.tile(tf.range(nb)[None, :], [batch, 1])  # [batch, num_beams]
    sizes = core.windows(key)  # the cache length of each decode segment (one unless the batch is wide and long)

    def own_lineage(slots):  # [batch, num_beams, slots]: every beam row holds its own slots
        return tf.tile(own_row[:, :, None], [1, 1, slots])

    lineage = own_lineage(sizes[0])  # at first every beam row holds its own (identical) prompt
    # each prompt runs through the network once; its keys and values are then copied to every beam
    # row (a prompt's numbers do not depend on its batch: model.linear)
    hidden, cache, key_mask = net.prefill(ids[::nb], mask[::nb], cache_len=sizes[0])
    cache, key_mask = kv.repeat_for_beams(cache, nb), tf.repeat(key_mask, nb, axis=0)
    prompt_len = tf.reduce_sum(mask, axis=1)  # [rows]; equal across a prompt's beams
    sequences = tf.reshape(core.new_sequences(ids, max_new, key.pad_id), [batch, nb, width])
    # which beam row each generated token came from (the reference's beam_indices), kept with scores only
    no_beams = tf.fill([batch, nb, max_new if key.scores else 0], -1)
    state = BeamState(
        step=tf.constant(0),
        cache=cache,
        lineage=lineage,
        logits=tf.repeat(net.lm_head(hidden[:, -1]), nb, axis=0),
        running=sequences,
        running_scores=rules.start_scores(batch, key),
        finished=sequences,
        finished_scores=tf.fill([batch, nb], -BIG),
        is_finished=tf.zeros([batch, nb], tf.bool),
        automaton=core.start_automaton(rows),
        running_beams=no_beams,
        finished_beams=no_beams,
        record=core.new_record(key, rows, vocab),
        can_improve=rules.start_open(batch, key),
        done=tf.constant(False),
    )

    def body(s: BeamState, key_mask) -> BeamState:
        slot = bucket + s.step
        chosen, parents = rules.choose(s, mask, knobs, key, vocab)
        # advance the running beams by one token: inherit the parents' lineage, then one decode step
        # that writes each beam's new key/value into its own row at `slot`
        lineage = core.write_column(gather_beams(s.lineage, parents), slot, own_row)
        next_tokens = tf.reshape(chosen.running[:, :, slot], [rows])
        # each new beam's automaton: its parent's, moved by its token (a beam never finishes here)
        inherited = tf.reshape(gather_beams(tf.reshape(s.automaton, [batch, nb]), parents), [rows])
        automaton, _ = core.follow(inherited, next_tokens, tf.zeros([rows], tf.bool), knobs, key)

        # (also on the last step, whose logits go unused: a tf.cond here made XLA copy the cache twice per step)
        position = generated_position(prompt_len, s.step)
        logits, cache = net.decode_one_token(next_tokens, position, s.cache, kv.View(key_mask, slot, lineage))
        return chosen._replace(step=s.step + 1, cache=cache, lineage=lineage, logits=logits, automaton=automaton)

    for i, size in enumerate(sizes):
        if i:  # a segment after the first: grow each beam's run of cache slots, its lineage and the key mask
            more = own_lineage(size - key_mask.shape[1])
            state = state._replace(cache=kv.grow(state.cache, size, nb), lineage=tf.concat([state.lineage, more], 2))
            state, key_mask = core.hide_placeholders(state), kv.grow_key_mask(key_mask, size)
        state = tf.while_loop(lambda s, end=size - bucket: ~s.done & (s.step < end),
                              lambda s, m=key_mask: (body(s, m),), (state,), maximum_iterations=max_new)[0]
    sequences, scores, beams = rules.finish(state, knobs, key)
    return core.Outputs(sequences, state.record, state.step, sequences_scores=scores,
                        beam_indices=beams if key.scores else None)
