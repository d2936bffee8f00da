"""What generate keeps of the network's layers when asked: output_hidden_states / output_attentions
(greedy search and sampling), in the reference's layout once on the host.

The reference returns, per generated token, the forward pass that gave its logits: for the first
token the prompt's pass (each of n_layer + 1 hidden states [rows, prompt width, d], each layer's
attention probabilities [rows, heads, prompt width, prompt width]), for token i > 0 the pass over
token i - 1 ([rows, 1, d]; [rows, heads, 1, prompt width + i]). Inside the loop they are buffers of
static shape written in place (the prompt's apart from the decode steps'), size 0 when not asked.

Memory when on (float32): hidden states rows x (n_layer + 1) x d x (bucket + max_new) x 4 bytes,
attentions rows x n_layer x heads x (bucket + max_new) x (bucket + max_new) x 4 bytes - GPT-2 small,
8 rows, 64 + 256 new tokens: 0.1 GB and 1.2 GB.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla


class Layers(NamedTuple):
    prompt_hidden: tf.Tensor  # [n_layer + 1, rows, bucket, d] float32 ([0] when not asked)
    prompt_attentions: tf.Tensor  # [n_layer, rows, heads, bucket, cache_len] ([0] when not asked)
    hidden: tf.Tensor  # [max_new, n_layer + 1, rows, d]: the pass over token i - 1 at i (0 unused)
    attentions: tf.Tensor  # [max_new, n_layer, rows, heads, cache_len]


def wanted(key) -> bool:
    """Whether the loop runs its passes keeping every layer's output (net.forward(keep_layers=True))."""
    return key.hidden_states or key.attentions


def nothing() -> tuple:
    """The loop state's entry when no layer is kept: no tensor at all (even size-0 placeholders would
    be four more loop variables, 24 more ops in greedy's graph)."""
    return ()


def new_layers(key, config, rows, cache_len: int) -> Layers:
    """Zeros for what `key` asks to keep, size-0 placeholders for the rest."""
    n, d, heads, steps = config.n_layer, config.n_embd, config.n_head, key.max_new_tokens
    return Layers(
        prompt_hidden=tf.zeros([n + 1, rows, key.bucket, d] if key.hidden_states else [0]),
        prompt_attentions=tf.zeros([n, rows, heads, key.bucket, cache_len] if key.attentions else [0]),
        hidden=tf.zeros([steps, n + 1, rows, d] if key.hidden_states else [0]),
        attentions=tf.zeros([steps, n, rows, heads, cache_len] if key.attentions else [0]),
    )


def keep_prompt(layers: Layers, key, kept) -> Layers:
    """layers with the prompt's pass: kept = (n_layer + 1 x [rows, bucket, d], n_layer x [rows, heads,
    bucket, cache_len]) from net.prefill(..., keep_layers=True)."""
    hidden, attentions = kept
    return layers._replace(prompt_hidden=tf.stack(hidden) if key.hidden_states else layers.prompt_hidden,
                           prompt_attentions=tf.stack(attentions) if key.attentions else layers.prompt_attentions)


def keep_step(layers: Layers, key, step, kept) -> Layers:
    """layers with the pass that gives token `step`'s logits: kept as from net.forward(keep_layers=True)
    over one token (n_layer + 1 x [rows, 1, d], n_layer x [rows, heads, 1, cache_len])."""
    hidden, attentions = kept
    if key.hidden_states:
        now = tf.stack([h[:, 0] for h in hidden])[None]  # [1, n_layer + 1, rows, d]
        layers = layers._replace(hidden=xla.dynamic_update_slice(layers.hidden, now, tf.stack([step, 0, 0, 0])))
    if key.attentions:
        now = tf.stack([a[:, :, 0] for a in attentions])[None]  # [1, n_layer, rows, heads, cache_len]
        layers = layers._replace(
            attentions=xla.dynamic_update_slice(layers.attentions, now, tf.stack([step, 0, 0, 0, 0])))
    return layers


def as_outputs(layers, key, steps: int, width: int):
    """(hidden_states, attentions) in the reference's layout from the loop's buffers (NumPy), for
    prompts of `width` columns left-padded to key.bucket; None for what was not asked."""
    cut, bucket = key.bucket - width, key.bucket
    hidden = attentions = None
    if key.hidden_states:
        first = tuple(h[:, cut:] for h in layers.prompt_hidden)
        hidden = (first,) + tuple(tuple(h[:, None] for h in layers.hidden[i]) for i in range(1, steps))
    if key.attentions:
        first = tuple(a[:, :, cut:, cut:bucket] for a in layers.prompt_attentions)
        attentions = (first,) + tuple(tuple(a[:, :, None, cut:bucket + i] for a in layers.attentions[i])
                                      for i in range(1, steps))
    return hidden, attentions


def memory(key, config) -> int:
    """Bytes the buffers take when asked (the host copy and the tuples come on top)."""
    rows, full = key.rows or 1, key.bucket + key.max_new_tokens
    total = 0
    if key.hidden_states:
        total += rows * (config.n_layer + 1) * config.n_embd * full * 4
    if key.attentions:
        total += rows * config.n_layer * config.n_head * full * full * 4
    return int(np.int64(total))
