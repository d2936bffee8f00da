"""Greedy search and sampling: one loop, differing only in how the next token is chosen
(`core.choose_token`).

Phases, all inside one XLA-compiled function (`search`):
    start_state    prefill: the left-padded prompt fills a static cache and gives the first logits
    decode_until   while_loop: choose a token from the logits, write it, run decode_one_token for
                   the next logits; the last token is chosen without a forward pass after it
    grow           wide, long generations decode in segments (`core.windows`): between two, the cache grows
Streaming compiles `start_state` and `decode_until` apart, calls decode_until once per chunk and
grows the cache at the same segment ends, so its tokens are exactly the one-shot call's.

The loop exits early once every row has produced an EOS.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from .. import cache as kv
from ..positions import generated_position
from . import core, dola
from . import layers as kept_layers
from .core import CompileKey, Knobs
from .processors import Step


class DecodeState(NamedTuple):
    step: tf.Tensor  # int32 scalar: tokens chosen so far
    cache: kv.KVCache
    logits: tf.Tensor  # [rows, vocab] float32: scores for the next token
    sequences: tf.Tensor  # [rows, bucket + max_new] int32: prompt, then generated tokens, pad after EOS
    prompt_len: tf.Tensor  # [rows] int32: real prompt tokens (the position rule's origin)
    finished: tf.Tensor  # [rows] bool
    automaton: tf.Tensor  # [rows] int32: structured output's state (core.follow; unused without a constraint)
    record: core.Record  # what is kept of each step when asked (chosen-token log-probs, scores, logits)
    layers: kept_layers.Layers | tuple  # output_hidden_states / output_attentions (() when not asked)
    guide: "Guide | tuple"  # classifier-free guidance's unconditional stream (() when off)
    premature: tf.Tensor | tuple  # DoLa: [candidate layers, rows, vocab] their next-token logits (() when off)


class Guide(NamedTuple):
    """Classifier-free guidance's unconditional stream: its own prompt, cache and next-token logits,
    decoded beside the conditional one with the same chosen tokens."""

    cache: kv.KVCache  # key.guidance + max_new slots
    logits: tf.Tensor  # [rows, vocab] float32: the unconditional next-token logits
    prompt_len: tf.Tensor  # [rows] int32: real tokens of the unconditional prompt
    key_mask: tf.Tensor  # [rows, key.guidance + max_new] bool


def start_guide(net, unconditional, key: CompileKey) -> Guide | tuple:
    """Prefill the unconditional prompt (ids, mask) [rows, key.guidance]; () without guidance."""
    if not key.guidance:
        return ()
    ids, mask = unconditional
    hidden, cache, key_mask = net.prefill(ids, mask, cache_len=key.guidance + key.max_new_tokens)
    return Guide(cache, net.lm_head(hidden[:, -1]), tf.reduce_sum(mask, axis=1), key_mask)


def advance_guide(net, guide: Guide, token, step, key: CompileKey) -> Guide:
    """The unconditional stream after the chosen token [rows] (the step-th generated)."""
    position = generated_position(guide.prompt_len, step)
    logits, cache = net.decode_one_token(token, position, guide.cache, kv.View(guide.key_mask, key.guidance + step))
    return guide._replace(cache=cache, logits=logits)


def start_state(net, ids, mask, key: CompileKey, prefix_cache=None, cache_len=None,
                unconditional=()) -> tuple[DecodeState, tf.Tensor]:
    """Prefill: the prompt fills a fresh cache of cache_len slots (default: the first decode segment's,
    core.windows; its first key.prefix slots copied from prefix_cache when continuing), and with
    guidance the unconditional prompt (knobs.unconditional) its own. Returns (state before the first
    choice, key_mask [rows, cache_len])."""
    prefix = None if prefix_cache is None else (prefix_cache, key.prefix)
    cache_len = cache_len or core.windows(key)[0]
    guide = start_guide(net, unconditional, key)
    if not keeps_layers(key):
        hidden, cache, key_mask = net.prefill(ids, mask, cache_len=cache_len, prefix=prefix)
        return first_state(ids, mask, key, cache, net.lm_head(hidden[:, -1]), guide=guide), key_mask
    hidden, cache, key_mask, kept = net.prefill(ids, mask, cache_len=cache_len, prefix=prefix, keep_layers=True)
    layers = None
    if kept_layers.wanted(key):
        layers = kept_layers.keep_prompt(kept_layers.new_layers(key, net.config, ids.shape[0], cache_len), key, kept)
    premature = dola.premature_logits(net, kept[0], key.dola) if key.dola else ()
    return first_state(ids, mask, key, cache, net.lm_head(hidden[:, -1]), layers, guide, premature), key_mask


def keeps_layers(key: CompileKey) -> bool:
    """Whether the passes keep every layer's output: output_hidden_states / output_attentions, DoLa."""
    return kept_layers.wanted(key) or bool(key.dola)


def first_state(ids, mask, key: CompileKey, cache, logits, layers: kept_layers.Layers | None = None,
                guide: Guide | tuple = (), premature=()) -> DecodeState:
    """The state before the first choice, once the prompt is in `cache` and gave `logits` [rows, vocab]
    (and `layers`, the prompt's pass kept when asked; `guide`, guidance's unconditional stream)."""
    rows = tf.shape(ids)[0]
    return DecodeState(
        step=tf.constant(0),
        cache=cache,
        logits=logits,
        sequences=core.new_sequences(ids, key.max_new_tokens, key.pad_id),
        prompt_len=tf.reduce_sum(mask, axis=1),
        finished=tf.zeros([rows], tf.bool),
        automaton=core.start_automaton(rows),
        record=core.new_record(key, rows, logits.shape[-1]),
        layers=kept_layers.nothing() if layers is None else layers,
        guide=guide,
        premature=premature,
    )


def decode_until(net, state: DecodeState, mask, key_mask, knobs: Knobs, key: CompileKey, limit) -> DecodeState:
    """Choose tokens until `limit` have been chosen in all (or max_new_tokens, or every row finished).

    state.step counts the tokens chosen so far. One-shot generation calls this once with
    limit = max_new_tokens; streaming calls it per chunk with a growing limit, carrying the state
    (the cache included) from chunk to chunk, so both produce the same tokens.
    """
    bucket, max_new = key.bucket, key.max_new_tokens

    def choose(state: DecodeState) -> DecodeState:
        """Pick the next token from state.logits and write it (pad for rows already finished)."""
        slot = bucket + state.step
        allowed = core.allowed_next(state.automaton, knobs, key, state.logits.shape[-1])
        step = Step(state.sequences, core.written_slots(mask, state.step, max_new), slot, state.step, key.eos_ids,
                    allowed, state.guide.logits if key.guidance else None)
        logits = dola.contrast(state.logits, state.premature) if key.dola else state.logits
        scores = core.scores(logits, step, knobs, key)
        token = core.choose_token(scores, key, core.rng_key(knobs.seed, state.step))
        token = tf.where(state.finished, key.pad_id, token)
        record = core.record(state.record, key, state.step, state.logits, scores, token, state.finished)
        sequences = core.write_column(state.sequences, slot, token)
        automaton, stranded = core.follow(state.automaton, token, state.finished, knobs, key)
        ended = core.is_eos(token, key.eos_ids) | core.stops(sequences, mask, state.step, slot, knobs, key) | stranded
        return state._replace(step=state.step + 1, sequences=sequences, finished=state.finished | ended,
                              automaton=automaton, record=record)

    def step(state: DecodeState) -> DecodeState:
        """Choose a token, then run it through the model for the next token's logits."""
        slot, position, chosen = bucket + state.step, generated_position(state.prompt_len, state.step), state.step
        state = choose(state)
        token = state.sequences[:, slot]
        if key.guidance:
            state = state._replace(guide=advance_guide(net, state.guide, token, chosen, key))
        if not keeps_layers(key):
            logits, cache = net.decode_one_token(token, position, state.cache, kv.View(key_mask, slot))
            return state._replace(cache=cache, logits=logits)
        hidden, cache, *kept = net.forward(token[:, None], position[:, None], state.cache, kv.View(key_mask, slot),
                                           keep_layers=True)
        if kept_layers.wanted(key):
            state = state._replace(layers=kept_layers.keep_step(state.layers, key, state.step, kept))
        if key.dola:
            state = state._replace(premature=dola.premature_logits(net, kept[0], key.dola))
        return state._replace(cache=cache, logits=net.lm_head(hidden[:, 0]))

    stop = tf.minimum(tf.cast(limit, tf.int32), max_new - 1)

    def running(state: DecodeState):
        return (state.step < stop) & ~tf.reduce_all(state.finished)

    state = tf.while_loop(running, lambda s: (step(s),), (state,), maximum_iterations=max_new - 1)[0]
    if isinstance(limit, int) and limit < max_new:  # a segment before the last (see `search`)
        return state
    # the last token needs no forward pass after it
    last = (state.step == max_new - 1) & (limit >= max_new) & ~tf.reduce_all(state.finished)
    return tf.cond(last, lambda: choose(state), lambda: state)


def grow(state: DecodeState, key_mask, cache_len: int) -> tuple[DecodeState, tf.Tensor]:
    """The state and key mask for the next segment: cache and key_mask grown to cache_len slots
    (the new slots are for tokens still to come: key_mask True, the causal mask hides them)."""
    return state._replace(cache=kv.grow(state.cache, cache_len)), kv.grow_key_mask(key_mask, cache_len)


def search(net, ids, mask, knobs: Knobs, key: CompileKey, prefix_cache=None):
    """Greedy or sampled generation. ids, mask: [rows, bucket].

    Decodes in segments (`core.windows`): each runs `decode_until` over a cache grown to its window, so a
    step never attends over the slots of later segments. Returns core.Outputs (with the final cache
    when key.return_cache).
    """
    sizes = core.windows(key)
    state, key_mask = start_state(net, ids, mask, key, prefix_cache, cache_len=sizes[0],
                                  unconditional=knobs.unconditional)
    for i, size in enumerate(sizes):
        if i:  # a segment after the first
            state, key_mask = grow(state, key_mask, size)
            state = core.hide_placeholders(state)
        state = decode_until(net, state, mask, key_mask, knobs, key, size - key.bucket)
    return core.Outputs(state.sequences, state.record, state.step, cache=state.cache if key.return_cache else None,
                        layers=state.layers)
