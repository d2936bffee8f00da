"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation"):
at each step take the top_k most likely tokens and choose the one maximising

    (1 - penalty_alpha) * p(token) - penalty_alpha * max cosine(h(token), h(earlier tokens of the row))

where h is the last layer's (final layer-normed) hidden state: a likely token that does not repeat
what the row already said. As in the reference, "earlier tokens" are the prompt's real tokens
(padding never counts) and the tokens chosen so far; processors act on the logits first.

Phases, inside one XLA-compiled function (`contrastive_search`), shaped like search.py's so that
streaming drives it the same way:
    start_state    prefill: the prompt fills the cache; its hidden states start the context buffer
    decode_until   while_loop of `step`: the k candidates of every row run through the model as
                   one k-token block of alternatives (each at the same position, attending to the
                   history and itself only), so one forward pass scores them all; the chosen
                   candidate's keys/values are moved to the row's slot (cache.keep_one: k slots
                   read, one written, the cache is never copied or replicated per candidate), and
                   only its hidden state goes through the LM head for the next step's logits.

The cache holds k - 1 slots more than greedy's, for the candidates of the last step.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

from .. import cache as kv
from ..positions import generated_position
from . import core
from .core import CompileKey, Knobs
from .processors import Step
from .search import first_state


class ContrastiveState(NamedTuple):
    """search.DecodeState's fields, in its order, then the context buffer."""

    step: tf.Tensor  # int32 scalar: tokens chosen so far
    cache: kv.KVCache
    logits: tf.Tensor  # [rows, vocab] float32: scores for the next token
    sequences: tf.Tensor  # [rows, bucket + max_new] int32: prompt, then generated tokens, pad after EOS
    prompt_len: tf.Tensor  # [rows] int32: real prompt tokens (the position rule's origin)
    finished: tf.Tensor  # [rows] bool
    automaton: tf.Tensor  # [rows] int32: structured output's state (core.follow)
    record: core.Record  # what is kept of each step when asked
    layers: tuple  # search.DecodeState's layers (contrastive search keeps none: ())
    guide: tuple  # search.DecodeState's guide (no guidance here: ())
    premature: tuple  # search.DecodeState's premature (no DoLa here: ())
    context: tf.Tensor  # [rows, bucket + max_new, d] float32: unit-length hidden state of every slot


def unit(hidden):
    """hidden [..., d] scaled to length 1 (the reference divides by the norm, no epsilon)."""
    return hidden / tf.norm(hidden, axis=-1, keepdims=True)


def degeneration_penalty(context, valid, candidates):
    """Each candidate's largest cosine similarity with the row's earlier tokens.

    context: [rows, width, d] unit vectors; valid: [rows, width] bool (real, already written slots);
    candidates: [rows, k, d] unit vectors. Returns [rows, k]."""
    cosine = tf.einsum("rkd,rwd->rkw", candidates, context)  # [rows, k, width]
    return tf.reduce_max(tf.where(valid[:, None, :], cosine, float("-inf")), axis=-1)


def rank(probs, penalty, alpha):
    """The chosen candidate per row: argmax of (1 - alpha) * p - alpha * penalty. [rows, k] -> [rows]"""
    return tf.argmax((1.0 - alpha) * probs - alpha * penalty, axis=-1, output_type=tf.int32)


def start_state(net, ids, mask, key: CompileKey) -> tuple[ContrastiveState, tf.Tensor]:
    """Prefill; returns (state before the first choice, key_mask)."""
    bucket, max_new, k = key.bucket, key.max_new_tokens, key.candidates
    rows = tf.shape(ids)[0]
    hidden, cache, key_mask = net.prefill(ids, mask, cache_len=bucket + max_new + k - 1)
    # hidden: [rows, bucket, d]
    context = tf.concat([unit(hidden), tf.zeros([rows, max_new, hidden.shape[-1]])], axis=1)
    # greedy's state (search.first_state), plus the context buffer
    state = ContrastiveState(*first_state(ids, mask, key, cache, net.lm_head(hidden[:, -1])), context=context)
    return state, key_mask


def decode_until(net, state: ContrastiveState, mask, key_mask, knobs: Knobs, key: CompileKey,
                 limit) -> ContrastiveState:
    """Choose tokens until `limit` have been chosen in all (or max_new_tokens, or every row finished)."""
    bucket, max_new, k = key.bucket, key.max_new_tokens, key.candidates
    heads = net.config.n_head

    def step(state: ContrastiveState) -> ContrastiveState:
        slot = bucket + state.step
        valid = core.written_slots(mask, state.step, max_new)  # [rows, bucket + max_new]
        allowed = core.allowed_next(state.automaton, knobs, key, state.logits.shape[-1])
        scores = core.scores(state.logits, Step(state.sequences, valid, slot, state.step, key.eos_ids, allowed), knobs,
                             key)
        probs, candidates = tf.math.top_k(tf.nn.softmax(scores), k)  # [rows, k]
        position = generated_position(state.prompt_len, state.step)[:, None] + tf.zeros_like(candidates)
        hidden, cache = net.forward(candidates, position, state.cache, kv.View(key_mask, slot, alternatives=True))
        directions = unit(hidden)  # [rows, k, d]
        penalty = degeneration_penalty(state.context, valid, directions)
        if key.constraint:  # fewer allowed tokens than candidates: a forbidden one (probability 0) never wins
            penalty = tf.where(probs > 0, penalty, float("inf"))
        choice = rank(probs, penalty, knobs.penalty_alpha)  # [rows]
        token = tf.where(state.finished, key.pad_id, tf.gather(candidates, choice, batch_dims=1))
        cache = kv.KVCache(keys=tuple(kv.keep_one(c, slot, choice, k, heads) for c in cache.keys),
                           values=tuple(kv.keep_one(c, slot, choice, k, heads) for c in cache.values))
        chosen = tf.gather(directions, choice, batch_dims=1)[:, None, :]  # [rows, 1, d]
        # only the chosen candidate goes through the LM head (the reference computes all k)
        next_logits = net.lm_head(tf.gather(hidden, choice, batch_dims=1))
        record = core.record(state.record, key, state.step, state.logits, scores, token, state.finished)
        sequences = core.write_column(state.sequences, slot, token)
        automaton, stranded = core.follow(state.automaton, token, state.finished, knobs, key)
        ended = core.is_eos(token, key.eos_ids) | core.stops(sequences, mask, state.step, slot, knobs, key) | stranded
        return state._replace(
            step=state.step + 1, cache=cache, logits=next_logits, sequences=sequences,
            finished=state.finished | ended, automaton=automaton, record=record,
            context=xla.dynamic_update_slice(state.context, chosen, tf.stack([0, slot, 0])))

    stop = tf.minimum(tf.cast(limit, tf.int32), max_new)

    def running(state: ContrastiveState):
        return (state.step < stop) & ~tf.reduce_all(state.finished)

    return tf.while_loop(running, lambda s: (step(s),), (state,), maximum_iterations=max_new)[0]


def contrastive_search(net, ids, mask, knobs: Knobs, key: CompileKey):
    """Contrastive search over ids, mask [rows, bucket]. Returns core.Outputs."""
    state, key_mask = start_state(net, ids, mask, key)
    state = decode_until(net, state, mask, key_mask, knobs, key, key.max_new_tokens)
    return core.Outputs(state.sequences, state.record, state.step)
