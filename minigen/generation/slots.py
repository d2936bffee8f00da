"""The request engine's compiled pieces: a fixed number of slots, each holding one request in its
row of one static KV cache, with its own length, options and finish state.

    SlotState       the engine's tensors, in tf.Variables: each compiled call updates them in place
    RowOptions      each slot's options as [slots] tensors, so a new request's values never retrace
    prefill_into    a piece of the prompts of a few new requests into their slots (one compile per width)
    decode_chunk    every slot advanced up to `steps` tokens (one compile); inactive slots are masked

Unlike generate's left-padded batch, every slot's tokens start at cache slot 0: a request's i-th
token sits at cache slot i with position id i (minigen/positions.py with no padding), and each row
writes at its own length (a cache.View with one index per row, as speculative decoding's).

Why variables: a compiled function does not update its tensor arguments in place, so a cache
passed in and returned is copied once per call; held in tf.Variables, XLA aliases the update
(measured, 16 slots x 512 slots x GPT-2 small's 24 buffers = 604 MB: 63 ms per call as tensors,
1.0 ms as variables, 2-core AMD EPYC). The functions take the variables as arguments, so engines
of the same shapes share one compiled function.

A row's token is chosen exactly as `generate` chooses it for that request alone: the same
processors in the same order (repetition_penalty, min_new_tokens), the same warpers when it
samples (temperature, top-k, top-p, min-p), and a draw from its own seed and step (core.rng_key),
as a batch of one draws.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

from .. import cache as kv
from . import constraints
from . import core
from . import processors as P
from .stop_strings import stops_reached

# finish reasons, as the slots record them ([slots] int32); CONSTRAINT: the request's structured-output
# match is complete and cannot go on, and it has no EOS id to end with
RUNNING, EOS, STOP_STRING, LENGTH, CONSTRAINT = 0, 1, 2, 3, 4
REASONS = {EOS: "eos", STOP_STRING: "stop_string", LENGTH: "length", CONSTRAINT: "constraint"}


class SlotState(NamedTuple):
    """The engine's tensors (tf.Variables; shapes for S slots of W cache slots each)."""

    keys: tuple  # n_layer x [S * heads, W, head_dim]
    values: tuple  # n_layer x [S * heads, W, head_dim]
    logits: tf.Variable  # [S, vocab] float32: each slot's scores for its next token
    tokens: tf.Variable  # [S, W] int32: the request's prompt, then its generated tokens (garbage after)
    length: tf.Variable  # [S] int32: tokens in the slot so far = the cache slot of the next one
    generated: tf.Variable  # [S] int32: tokens generated so far
    finished: tf.Variable  # [S] bool: done, or free
    reason: tf.Variable  # [S] int32: why it finished (REASONS), RUNNING while it runs
    logprobs: tf.Variable  # [S, W] float32: each generated token's log-prob, at its slot
    top_tokens: tf.Variable  # [S, W, K] int32: each step's K most likely tokens, at the chosen token's slot
    top_logprobs: tf.Variable  # [S, W, K] float32: their log-probs (K = the engine's top_logprobs, 0 = off)
    automaton: tf.Variable  # [S] int32: structured output's state in the slot's constraint (Automata)


def new_state(net, slots: int, width: int, top: int = 0) -> SlotState:
    """Zeroed variables for `slots` slots of `width` cache slots each, every slot free; `top`: the
    most likely tokens kept per step (top_logprobs)."""
    cfg = net.config
    cache = net.new_cache(slots, width)
    var = lambda value: tf.Variable(value, trainable=False)  # noqa: E731
    return SlotState(
        keys=tuple(var(k) for k in cache.keys), values=tuple(var(v) for v in cache.values),
        logits=var(tf.zeros([slots, cfg.vocab_size], tf.float32)),
        tokens=var(tf.zeros([slots, width], tf.int32)),
        length=var(tf.zeros([slots], tf.int32)),
        generated=var(tf.zeros([slots], tf.int32)),
        finished=var(tf.ones([slots], tf.bool)),
        reason=var(tf.zeros([slots], tf.int32)),
        logprobs=var(tf.zeros([slots, width], tf.float32)),
        top_tokens=var(tf.zeros([slots, width, top], tf.int32)),
        top_logprobs=var(tf.zeros([slots, width, top], tf.float32)),
        automaton=var(tf.zeros([slots], tf.int32)),
    )


class Automata(NamedTuple):
    """The structured-output constraints of the running requests, one block each (constraints.Automaton
    padded to common buckets; EOS is not in `allowed`: each row's own EOS ids are allowed where
    `accepting`). A row's constraint is RowOptions.constraint; its state is local to that block."""

    allowed: tf.Tensor  # int32 [K, states, vocab / 32]: packed bits
    accepting: tf.Tensor  # bool [K, states]
    next_state: tf.Tensor  # int32 [K, states, classes]
    token_class: tf.Tensor  # int32 [K, vocab]

    @property
    def shape_key(self) -> tuple:
        return tuple(self.next_state.shape)


def allowed_rows(fsm: Automata, which, state, is_eos):
    """[S, vocab] bool: what each row's constraint allows next (its EOS ids where its text is a complete
    match); which [S] int32 the row's constraint, -1 for none (everything allowed)."""
    at = tf.stack([tf.maximum(which, 0), state], axis=1)
    allowed = constraints.unpack(tf.gather_nd(fsm.allowed, at), is_eos.shape[1]) | \
        (is_eos & tf.gather_nd(fsm.accepting, at)[:, None])
    return allowed | (which < 0)[:, None]


def stuck(fsm: Automata, which, state, has_eos):
    """[S] bool: the row's constraint allows nothing from `state`, not even an EOS id (has_eos [S]):
    a word-level test, without unpacking the vocabulary."""
    at = tf.stack([tf.maximum(which, 0), state], axis=1)
    some = tf.reduce_any(tf.not_equal(tf.gather_nd(fsm.allowed, at), 0), axis=1)
    return (which >= 0) & ~some & ~(has_eos & tf.gather_nd(fsm.accepting, at))


def moved(fsm: Automata, which, state, token):
    """[S] int32: each row's state after its token (rows without a constraint stay at 0)."""
    k = tf.maximum(which, 0)
    cls = tf.gather_nd(fsm.token_class, tf.stack([k, token], axis=1))
    return tf.where(which < 0, 0, tf.gather_nd(fsm.next_state, tf.stack([k, state, cls], axis=1)))


class RowOptions(NamedTuple):
    """Each slot's options, [S] tensors unless said (a free slot's values do not matter)."""

    do_sample: tf.Tensor  # bool
    temperature: tf.Tensor  # float32
    top_k: tf.Tensor  # int32, 0 = off
    top_p: tf.Tensor  # float32, 1.0 = off
    min_p: tf.Tensor  # float32, 0 = off
    repetition_penalty: tf.Tensor  # float32, 1.0 = off
    min_new_tokens: tf.Tensor  # int32
    max_new_tokens: tf.Tensor  # int32
    seed: tf.Tensor  # [S, 2] int32
    eos: tf.Tensor  # [S, E] int32: the row's EOS ids, -1 for none
    stops: tf.Tensor  # [S, strings] bool: which of the engine's stop strings the row stops at
    logprobs: tf.Tensor  # bool: keep each chosen token's log-prob
    constraint: tf.Tensor  # int32: the row's structured-output constraint in the engine's Automata, -1 for none


# -- prefill: new requests into free slots -----------------------------------------------------------


def prefill_into(net, state: SlotState, ids, start, lengths, slots):
    """Run a piece of each of k new prompts and write it into its slot: ids [k, w] int32 are the
    tokens for cache slots start .. start + w - 1 (start [k]; the first `lengths` [k] of them real,
    the rest padding), slots [k] int32 (distinct). A prompt may come in several pieces, in order,
    each attending to those before it: a long prompt is not padded to the next power of two
    (engine.pieces). Leaves the slot running, its next token's logits from the piece's last real
    token. start + w <= the engine's width. Returns nothing (the variables are updated in place)."""
    k, w = ids.shape
    heads, width = net.config.n_head, state.tokens.shape[1]
    rows = tf.reshape(slots[:, None] * heads + tf.range(heads)[None, :], [-1])  # [k * heads]: the slots' cache rows
    cache = kv.KVCache(tuple(tf.gather(v, rows) for v in state.keys), tuple(tf.gather(v, rows) for v in state.values))
    end = start + lengths  # [k]: the prompt's tokens so far
    key_mask = tf.range(width)[None, :] < end[:, None]  # [k, width]
    positions = start[:, None] + tf.range(w)[None, :]  # [k, w]
    hidden, cache = net.forward(ids, positions, cache, kv.View(key_mask, start))
    logits = net.lm_head(tf.gather(hidden, lengths - 1, batch_dims=1))  # [k, vocab]
    zero = tf.constant(0, tf.int32)

    def into(var, block, starts):  # block [k * each, ...]: row i's part at starts(i)
        value, each = var.read_value(), block.shape[0] // k
        for i in range(k):
            value = xla.dynamic_update_slice(value, block[i * each:(i + 1) * each], tf.stack(starts(i)))
        var.assign(value)

    for var, block in zip(state.keys + state.values, cache.keys + cache.values):
        into(var, block, lambda i: [slots[i] * heads, zero, zero])
    into(state.logits, logits, lambda i: [slots[i], zero])
    into(state.tokens, ids, lambda i: [slots[i], start[i]])
    at = slots[:, None]
    state.length.scatter_nd_update(at, end)
    state.generated.scatter_nd_update(at, tf.zeros([k], tf.int32))
    state.finished.scatter_nd_update(at, tf.zeros([k], tf.bool))
    state.reason.scatter_nd_update(at, tf.fill([k], RUNNING))
    state.automaton.scatter_nd_update(at, tf.fill([k], constraints.START))
    return tf.constant(0)


# -- shared prompt prefixes: keys and values kept for later requests -----------------------------------


class PrefixStore(NamedTuple):
    """Cache rows of earlier prompts, for requests that begin with the same tokens (engine.Prefixes)."""

    keys: tuple  # n_layer x [P * heads, W, head_dim]
    values: tuple  # n_layer x [P * heads, W, head_dim]


def new_store(net, entries: int, width: int) -> PrefixStore:
    cache = net.new_cache(entries, width)
    return PrefixStore(tuple(tf.Variable(k, trainable=False) for k in cache.keys),
                       tuple(tf.Variable(v, trainable=False) for v in cache.values))


def copy_rows(sources, targets, source_row, target_row, heads: int) -> None:
    """Each target variable's rows of `target_row` (heads of them) set to the source's `source_row`."""
    zero = tf.constant(0, tf.int32)
    for source, target in zip(sources, targets):
        _, width, head_dim = source.shape
        block = tf.slice(source, tf.stack([source_row * heads, zero, zero]), [heads, width, head_dim])
        target.assign(xla.dynamic_update_slice(target.read_value(), block, tf.stack([target_row * heads, zero, zero])))


def save_prefix(net, state: SlotState, store: PrefixStore, slot, entry):
    """Keep a slot's cache row (its prompt's keys and values) as store entry `entry`."""
    copy_rows(state.keys + state.values, store.keys + store.values, slot, entry, net.config.n_head)
    return tf.constant(0)


def load_prefix(net, state: SlotState, store: PrefixStore, entry, slot, tokens, filled):
    """Start a slot from store entry `entry`: its first `filled` tokens' keys and values are the
    entry's (the rest of the prompt is prefilled after them). tokens [W] int32: the slot's prompt."""
    copy_rows(store.keys + store.values, state.keys + state.values, entry, slot, net.config.n_head)
    state.tokens.scatter_nd_update(slot[None, None], tokens[None])
    state.length.scatter_nd_update(slot[None, None], filled[None])
    return tf.constant(0)


def release(state: SlotState, slots):
    """Mark slots [n] free (a cancelled request's)."""
    state.finished.scatter_nd_update(slots[:, None], tf.ones_like(slots, tf.bool))
    return tf.constant(0)


# -- one token per slot ------------------------------------------------------------------------------


def eos_table(eos, vocab: int):
    """[S, vocab] bool: each row's EOS ids (eos [S, E], -1 for none)."""
    return tf.reduce_any(tf.range(vocab)[None, :, None] == eos[:, None, :], axis=2)


def row_scores(logits, tokens, valid, generated, rows: RowOptions, is_eos):
    """The processors `generate` applies, per row: repetition_penalty, then min_new_tokens (EOS
    forbidden until then). logits [S, vocab]; tokens, valid [S, W]; is_eos [S, vocab]."""
    penalised = tf.reduce_any(tf.not_equal(rows.repetition_penalty, 1.0))
    logits = tf.cond(penalised,
                     lambda: P.repetition_penalty(logits, tokens, valid, rows.repetition_penalty[:, None]),
                     lambda: logits)
    return tf.where(is_eos & (generated < rows.min_new_tokens)[:, None], P.NEG_INF, logits)


def warped(scores, rows: RowOptions):
    """The sampling warpers `generate` applies, per row: temperature, top-k and top-p, min-p."""
    scores = P.top_k_top_p(scores / rows.temperature[:, None], rows.top_k, rows.top_p)
    return tf.cond(tf.reduce_any(rows.min_p > 0), lambda: P.min_p(scores, rows.min_p[:, None], 1), lambda: scores)


def draws(scores, seed, generated):
    """Each row's sampled token [S]: a draw over its own [1, vocab] row with its own seed and step,
    exactly what generate draws for that request alone (core.rng_key, processors.sample_token): each
    row's uniform from its own key, one lookup for all rows (the lookup is exact in any batch)."""
    uniform = tf.concat([P.uniforms(1, core.rng_key(seed[r], generated[r])) for r in range(scores.shape[0])], axis=0)
    return P.inverse_cdf(scores, uniform)


def choose(logits, tokens, valid, generated, rows: RowOptions, is_eos, sampling: bool, allowed=None):
    """(token [S], the scores it was chosen from [S, vocab]): argmax of the processed scores, or
    for sampling rows a seeded draw from the warped ones. sampling: whether any row may sample (the
    warpers and draws are in the graph only then: they tripled the decode step's compile memory,
    +430 MB against +134 MB for the shipped 2-layer model); allowed: [S, vocab] structured output's
    mask (after the processors, before the warpers, as generate's), or None."""
    scores = row_scores(logits, tokens, valid, generated, rows, is_eos)
    if allowed is not None:
        scores = tf.where(allowed, scores, P.NEG_INF)
    greedy = tf.argmax(scores, axis=-1, output_type=tf.int32)
    if not sampling:
        return greedy, scores

    def sample():
        kept = warped(scores, rows)
        token = tf.where(rows.do_sample, draws(kept, rows.seed, generated), greedy)
        return token, tf.where(rows.do_sample[:, None], kept, scores)

    return tf.cond(tf.reduce_any(rows.do_sample), sample, lambda: (greedy, scores))


class Chunk(NamedTuple):
    """A decode chunk's loop state (the variables are read before and assigned after)."""

    step: tf.Tensor  # int32: steps taken in this chunk
    freed: tf.Tensor  # bool: a row finished in this chunk
    cache: kv.KVCache
    logits: tf.Tensor
    tokens: tf.Tensor
    length: tf.Tensor
    generated: tf.Tensor
    finished: tf.Tensor
    reason: tf.Tensor
    logprobs: tf.Tensor
    top_tokens: tf.Tensor
    top_logprobs: tf.Tensor
    automaton: tf.Tensor


KEPT = Chunk._fields[3:]  # the SlotState variables a chunk reads and assigns back (after step, freed, cache)


def decode_chunk(net, state: SlotState, rows: RowOptions, stop_table, stop_lengths, fsm: Automata, steps, refill,
                 stop_key: tuple, fsm_key: tuple, sampling: bool):
    """Advance every running slot by up to `steps` tokens (an int32 tensor); with `refill` (bool
    tensor) return as soon as a row finishes, so the host can give its slot to a waiting request.
    stop_table, stop_lengths: the engine's stop strings (stop_strings.StopTable; stop_key its
    shape_key, () for none); fsm: the running requests' constraints (fsm_key its shape_key, () for
    none); sampling: whether a running row samples (see `choose`). Returns the steps taken; the
    variables hold the new state."""
    width, vocab, top = state.tokens.shape[1], state.logits.shape[1], state.top_tokens.shape[2]
    is_eos = eos_table(rows.eos, vocab)  # [S, vocab]
    columns = tf.range(width)[None, :]
    key_mask = tf.ones_like(state.tokens, tf.bool)  # the causal part hides what is not yet written

    def step(c: Chunk) -> Chunk:
        active = ~c.finished
        allowed = allowed_rows(fsm, rows.constraint, c.automaton, is_eos) if fsm_key else None
        token, scores = choose(c.logits, c.tokens, columns < c.length[:, None], c.generated, rows, is_eos, sampling,
                               allowed)
        here = (columns == c.length[:, None]) & active[:, None]  # [S, W]: the new token's slot
        tokens = tf.where(here, token[:, None], c.tokens)
        logprobs = tf.cond(rows.logprobs, lambda: tf.where(here, core.token_logprob(scores, token)[:, None],
                                                           c.logprobs), lambda: c.logprobs)
        top_tokens, top_logprobs = c.top_tokens, c.top_logprobs
        if top:
            best, ids = core.most_likely(scores, top)  # [S, K] each
            top_tokens = tf.where(here[:, :, None], ids[:, None, :], top_tokens)
            top_logprobs = tf.where(here[:, :, None], best[:, None, :], top_logprobs)
        eos = tf.reduce_any(token[:, None] == rows.eos, axis=1)
        stop = tf.zeros_like(eos)
        if stop_key:
            reached = stops_reached(stop_table, stop_lengths, stop_key, tokens, columns <= c.length[:, None], c.length)
            stop = tf.reduce_any(reached & rows.stops, axis=1)
        generated = c.generated + tf.cast(active, tf.int32)
        automaton, complete = c.automaton, tf.zeros_like(eos)
        if fsm_key:  # the new state; a row whose state allows nothing (no EOS id to end with) ends there
            automaton = tf.where(active, moved(fsm, rows.constraint, c.automaton, token), c.automaton)
            complete = ~eos & stuck(fsm, rows.constraint, automaton, tf.reduce_any(rows.eos >= 0, axis=1))
        done = active & (eos | stop | complete | (generated >= rows.max_new_tokens))
        reason = tf.where(done, tf.where(eos, EOS, tf.where(stop, STOP_STRING, tf.where(complete, CONSTRAINT, LENGTH))),
                          c.reason)
        logits, cache = net.decode_one_token(token, c.length, c.cache, kv.View(key_mask, c.length))
        return Chunk(c.step + 1, c.freed | tf.reduce_any(done), cache, logits, tokens,
                     c.length + tf.cast(active, tf.int32), generated, c.finished | done, reason, logprobs,
                     top_tokens, top_logprobs, automaton)

    def going(c: Chunk):
        return (c.step < steps) & ~tf.reduce_all(c.finished) & ~(refill & c.freed)

    start = Chunk(tf.constant(0), tf.constant(False),
                  kv.KVCache(tuple(v.read_value() for v in state.keys), tuple(v.read_value() for v in state.values)),
                  *(getattr(state, name).read_value() for name in KEPT))
    end = tf.while_loop(going, lambda c: (step(c),), (start,))[0]
    for var, value in zip(state.keys + state.values, end.cache.keys + end.cache.values):
        var.assign(value)
    for name in KEPT:
        getattr(state, name).assign(getattr(end, name))
    return end.step
