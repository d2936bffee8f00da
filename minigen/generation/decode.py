"""Greedy search and sampling: one loop, differing only in how the next token is chosen.

Phases, all inside one XLA-compiled function (`generate_loop`):
    start (prefill)    the left-padded prompt fills the static cache and gives the first logits
    run_steps          while_loop: choose a token from the logits, write it, run decode_one_token for
                       the next logits; the last token is chosen without a forward pass after it
Streaming compiles `start` and `run_steps` apart and calls run_steps once per chunk of tokens.

The loop exits early once every row has produced an EOS.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from .. import cache as kv
from . import processors as P


class Knobs(NamedTuple):
    """Numeric options passed as tensors, so changing them never retraces."""

    temperature: tf.Tensor  # float32 scalar
    top_k: tf.Tensor  # int32 scalar, 0 = off
    top_p: tf.Tensor  # float32 scalar, 1.0 = off
    repetition_penalty: tf.Tensor  # float32 scalar
    length_penalty: tf.Tensor  # float32 scalar (beam search)
    min_new_tokens: tf.Tensor  # int32 scalar
    seed: tf.Tensor  # int32 [2]


class Static(NamedTuple):
    """Options that shape the graph: each distinct value is one compiled function."""

    strategy: str  # "greedy" | "sample" | "beam"
    rows: int  # batch rows after expanding num_return_sequences / num_beams
    bucket: int  # padded prompt width
    max_new_tokens: int
    eos_ids: tuple
    pad_id: int
    use_repetition_penalty: bool
    no_repeat_ngram_size: int
    output_scores: bool
    num_beams: int = 1
    num_return_sequences: int = 1
    early_stopping: object = False
    prefix: int = 0  # continuing: cache slots [0, prefix) come from the previous call's cache
    return_cache: bool = False  # also return the final cache (for a later continuation)
    speculation: str = ""  # "" | "lookup" (prompt lookup) | "draft" (assistant model), see speculative.py
    num_candidates: int = 0  # tokens proposed per verify step
    ngram: int = 0  # prompt lookup: longest n-gram matched


class DecodeState(NamedTuple):
    step: tf.Tensor  # int32 scalar: tokens chosen so far
    cache: kv.KVCache
    logits: tf.Tensor  # [rows, vocab] float32: scores for the next token
    sequences: tf.Tensor  # [rows, bucket + max_new] int32: prompt, then generated tokens, pad after EOS
    positions: tf.Tensor  # [rows] int32: position id of the next token
    finished: tf.Tensor  # [rows] bool
    scores: tf.Tensor  # [rows, max_new] float32: log-prob of each chosen token (0 after EOS)


def process_logits(logits, sequences, valid, step, next_slot, knobs: Knobs, static: Static):
    """The processors every strategy shares, in HF's order (before sampling warpers)."""
    if static.use_repetition_penalty:
        logits = P.repetition_penalty(logits, sequences, valid, knobs.repetition_penalty)
    if static.no_repeat_ngram_size > 0:
        logits = P.no_repeat_ngram(logits, sequences, valid, next_slot, static.no_repeat_ngram_size)
    return P.forbid_eos(logits, static.eos_ids, step < knobs.min_new_tokens)


def written_slots(prompt_mask, step, max_new: int):
    """[rows, bucket + max_new] bool: real prompt tokens and the `step` tokens generated so far."""
    rows = tf.shape(prompt_mask)[0]
    generated = tf.range(max_new)[None, :] < step
    return tf.concat([tf.cast(prompt_mask, tf.bool), tf.tile(generated, [rows, 1])], axis=1)


def is_eos(tokens, eos_ids):
    if not eos_ids:
        return tf.zeros_like(tokens, tf.bool)
    return tf.reduce_any(tf.equal(tokens[:, None], tf.constant(eos_ids)[None, :]), axis=1)


def start(model, ids, mask, static: Static, prefix_cache=None) -> tuple[DecodeState, tf.Tensor]:
    """Prefill: the prompt fills a fresh cache (its first static.prefix slots copied from
    prefix_cache when continuing). Returns (state before the first choice, key_mask)."""
    bucket, max_new = static.bucket, static.max_new_tokens
    rows = tf.shape(ids)[0]
    prefix = None if prefix_cache is None else (prefix_cache, static.prefix)
    hidden, cache, key_mask = model.prefill(ids, mask, cache_len=bucket + max_new, prefix=prefix)
    new_region = tf.fill([rows, max_new], tf.constant(static.pad_id, tf.int32))
    state = DecodeState(
        step=tf.constant(0),
        cache=cache,
        logits=model.lm_head(hidden[:, -1]),
        sequences=tf.concat([ids, new_region], axis=1),
        positions=tf.reduce_sum(mask, axis=1),
        finished=tf.zeros([rows], tf.bool),
        scores=tf.zeros([rows, max_new], tf.float32),
    )
    return state, key_mask


def run_steps(model, state: DecodeState, mask, key_mask, knobs: Knobs, static: Static, limit) -> DecodeState:
    """Choose tokens until `limit` have been chosen in all (or max_new_tokens, or every row finished).

    state.step counts the tokens chosen so far. One-shot generation calls this once with
    limit = max_new_tokens; streaming calls it per chunk with a growing limit, carrying the state
    (the cache included) from chunk to chunk, so both produce the same tokens.
    """
    bucket, max_new = static.bucket, static.max_new_tokens
    rows = tf.shape(mask)[0]

    def choose(state: DecodeState) -> DecodeState:
        """Pick the next token from state.logits and write it (pad for rows already finished)."""
        slot = bucket + state.step
        valid = written_slots(mask, state.step, max_new)
        logits = process_logits(state.logits, state.sequences, valid, state.step, slot, knobs, static)
        if static.strategy == "sample":
            logits = P.top_k_top_p(logits / knobs.temperature, knobs.top_k, knobs.top_p)
            token = P.sample_token(logits, knobs.seed, state.step)
        else:
            token = tf.argmax(logits, axis=-1, output_type=tf.int32)
        token = tf.where(state.finished, static.pad_id, token)
        scores = state.scores
        if static.output_scores:
            logprob = tf.gather(tf.nn.log_softmax(logits), token, batch_dims=1)
            logprob = tf.where(state.finished, 0.0, logprob)
            scores = tf.tensor_scatter_nd_update(scores, tf.stack([tf.range(rows), tf.fill([rows], state.step)], 1), logprob)
        column = tf.one_hot(slot, bucket + max_new, on_value=True, off_value=False, dtype=tf.bool)
        sequences = tf.where(column[None, :], token[:, None], state.sequences)
        return state._replace(
            step=state.step + 1, sequences=sequences, finished=state.finished | is_eos(token, static.eos_ids), scores=scores
        )

    def step(state: DecodeState) -> DecodeState:
        """Choose a token, then run it through the model for the next token's logits."""
        slot = bucket + state.step
        state = choose(state)
        token = state.sequences[:, slot]
        logits, cache = model.decode_one_token(token, state.positions, key_mask, state.cache, slot)
        return state._replace(cache=cache, logits=logits, positions=state.positions + 1)

    stop = tf.minimum(tf.cast(limit, tf.int32), max_new - 1)

    def running(state: DecodeState):
        return (state.step < stop) & ~tf.reduce_all(state.finished)

    state = tf.while_loop(running, lambda s: (step(s),), (state,), maximum_iterations=max_new - 1)[0]
    # the last token needs no forward pass after it
    last = (state.step == max_new - 1) & (limit >= max_new) & ~tf.reduce_all(state.finished)
    return tf.cond(last, lambda: choose(state), lambda: state)


def generate_loop(model, ids, mask, knobs: Knobs, static: Static, prefix_cache=None):
    """Greedy or sampled generation. ids, mask: [rows, bucket].

    Returns (sequences, scores), plus the final cache when static.return_cache.
    """
    state, key_mask = start(model, ids, mask, static, prefix_cache)
    state = run_steps(model, state, mask, key_mask, knobs, static, static.max_new_tokens)
    if static.return_cache:
        return state.sequences, state.scores, state.cache
    return state.sequences, state.scores
