"""The static KV cache: allocated once per call, written in place, never grown.

Layout: one key and one value tensor per layer, each `[batch * heads, cache_len, head_dim]`.
Keeping layers separate (instead of one `[n_layer, ...]` tensor) lets each block update its own
buffer with a `dynamic_update_slice` that XLA performs in place inside the while loop, and the
`[cache_len, head_dim]` trailing order makes `q @ k^T` a plain batched matmul with no transpose.

Batch and heads share the leading dimension on purpose. With a separate `[batch, heads, ...]`
pair, a batch of 1 gives XLA a unit dimension that it bitcasts away before the attention matmul;
the bitcast then sits between the in-place write and its reader, and XLA answered by copying
every layer's cache twice per decode step (GPT-2 small: 24 x 2 x 0.5 MB per token at a 160-slot
cache). With one merged dimension the write stays in place for every batch size.

Greedy search, sampling and beam search give every row one shared write index: prompts are
left-padded to a common width, so slot `i` is the i-th token of the padded layout for all rows, and
which slots hold real tokens is a per-row boolean mask kept beside the cache (`key_mask`).
Speculative decoding is the exception: rows accept different numbers of drafted tokens, so each has
its own length and `write` takes one index per row (one in-place update per row). A row's rejected
tokens stay in the slots past its length, hidden by the causal mask until its next block overwrites them.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla


class KVCache(NamedTuple):
    keys: tuple  # n_layer x [batch * heads, cache_len, head_dim]
    values: tuple  # n_layer x [batch * heads, cache_len, head_dim]


class View(NamedTuple):
    """How one forward pass uses the cache: where its tokens are written and what their queries may
    read. Each strategy builds its own and hands it to the network (model.Transformer.forward); a
    new kind of cache use is a new field here, not a flag through forward, attention and write."""

    key_mask: tf.Tensor  # [rows, cache_len] bool: slots holding real tokens (or tokens still to come)
    index: object  # the slot of the first new token: a scalar (a Python int in prefill), or [rows]
    #                int32 when each row has its own length (speculative decoding)
    lineage: tf.Tensor | None = None  # beam search: [prompts, beams, cache_len] int32, which beam row holds
    #                                   each slot of each beam's history (model.Transformer.attention)
    alternatives: bool = False  # contrastive search: a row's s tokens are alternatives for slot `index`,
    #                             each attending to the history and itself (written at index + i)
    packed: tf.Tensor | None = None  # scoring: [rows, cache_len] int32, which text each slot holds when
    #                                  several share a row; a query reads only its own text's keys

    @property
    def group(self) -> int:
        """Rows sharing a leading cache index, side by side on the slot axis (beam search: the beams)."""
        return 1 if self.lineage is None else self.lineage.shape[1]

    def at(self, index) -> "View":
        """The same view writing at another slot."""
        return self._replace(index=index)


def allocate(n_layer: int, batch: int, n_head: int, cache_len: int, head_dim: int, dtype=tf.float32,
             group: int = 1) -> KVCache:
    """Zero-filled cache for `batch` rows and `cache_len` slots.

    group > 1 (beam search, group = beams): the rows of one prompt's beams share a leading index
    and lie side by side along the slot axis: [batch // group * heads, group * cache_len, head_dim].
    """
    shape = [batch // group * n_head, group * cache_len, head_dim]
    return KVCache(
        keys=tuple(tf.zeros(shape, dtype) for _ in range(n_layer)),
        values=tuple(tf.zeros(shape, dtype) for _ in range(n_layer)),
    )


def write(buffer: tf.Tensor, new: tf.Tensor, view: View) -> tf.Tensor:
    """Write `new` [batch * heads, s, head_dim] into `buffer` at the view's slots index .. index+s-1,
    in place.

    view.index: scalar, or [batch] (each row at its own slot; the batch size must be static).
    view.group > 1: `new`'s rows are ordered (prompt, head, beam) and beam q's slots start at
    q * cache_len in `buffer`: one in-place update per beam.
    """
    zero, group = tf.constant(0, tf.int32), view.group
    index = tf.cast(view.index, tf.int32)
    if index.shape.rank == 1:  # one slot per batch row: one in-place update per row
        per_row = buffer.shape[0] // index.shape[0]  # heads
        for r in range(index.shape[0]):
            buffer = xla.dynamic_update_slice(
                buffer, new[r * per_row:(r + 1) * per_row], tf.stack([tf.constant(r * per_row), index[r], zero])
            )
        return buffer
    if group == 1:
        return xla.dynamic_update_slice(buffer, new, tf.stack([zero, index, zero]))
    cache_len = buffer.shape[1] // group
    new = tf.reshape(new, [-1, group, new.shape[1], new.shape[2]])  # [prompts * heads, group, s, head_dim]
    for q in range(group):
        buffer = xla.dynamic_update_slice(buffer, new[:, q], tf.stack([zero, q * cache_len + index, zero]))
    return buffer


def grow(cache: KVCache, cache_len: int, group: int = 1) -> KVCache:
    """The cache with `cache_len` slots per row (>= its own): its slots copied to the front of fresh
    zeroed buffers, one copy per layer. With group > 1 (beam search) each beam's run of slots grows
    in place in the side-by-side layout. Decoding in segments (generation/core.py: `windows`) gives
    each segment its own buffer rather than slicing one big buffer: a slice between the in-place write
    and the attention matmul makes XLA copy the cache every step (benchmarks/probe_window.py)."""

    def grown(buffer):
        lead, slots, head_dim = buffer.shape
        runs = tf.reshape(buffer, [lead, group, slots // group, head_dim])
        more = tf.zeros([lead, group, cache_len - slots // group, head_dim], buffer.dtype)
        return tf.reshape(tf.concat([runs, more], axis=2), [lead, group * cache_len, head_dim])

    return KVCache(tuple(grown(k) for k in cache.keys), tuple(grown(v) for v in cache.values))


def repeat_for_beams(cache: KVCache, beams: int) -> KVCache:
    """A cache of one row per prompt ([prompts * heads, cache_len, head_dim]) as beam search's
    side-by-side layout ([prompts * heads, beams * cache_len, head_dim], see `allocate`), every beam's
    run a copy: the prompt is run through the network once, not once per beam."""
    return KVCache(tuple(tf.tile(k, [1, beams, 1]) for k in cache.keys),
                   tuple(tf.tile(v, [1, beams, 1]) for v in cache.values))


def grow_key_mask(key_mask: tf.Tensor, cache_len: int) -> tf.Tensor:
    """key_mask [rows, n] bool with True appended up to cache_len slots: slots for tokens still to
    come (the causal mask hides each until it is written)."""
    more = tf.ones([tf.shape(key_mask)[0], cache_len - key_mask.shape[1]], tf.bool)
    return tf.concat([key_mask, more], axis=1)


def keep_one(buffer: tf.Tensor, index, choice: tf.Tensor, s: int, heads: int) -> tf.Tensor:
    """Contrastive search: of the `s` alternatives written at slots index .. index+s-1, move each
    row's chosen one (choice [batch] int32) to slot `index`; the other slots are overwritten by the
    next step's candidates. Reads and writes only those s slots, never the whole cache."""
    zero, index = tf.constant(0, tf.int32), tf.cast(index, tf.int32)
    block = tf.slice(buffer, tf.stack([zero, index, zero]), [-1, s, -1])  # [batch * heads, s, head_dim]
    per_row = tf.repeat(choice, heads)  # leading rows are (batch, head), batch-major
    kept = tf.gather(block, per_row[:, None], batch_dims=1)  # [batch * heads, 1, head_dim]
    return xla.dynamic_update_slice(buffer, kept, tf.stack([zero, index, zero]))
