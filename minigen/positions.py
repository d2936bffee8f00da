"""The position rule: padding never counts as text, so a row's positions count only its real tokens.

A left-padded prompt's first real token has position 0 whatever the padding before it, and the
n-th generated token (0-based) of a row whose prompt holds `prompt_len` real tokens has position
`prompt_len + n`. That is why a padded batch gives each row exactly what the prompt alone gives;
every phase (prefill, a decode step, a beam step, a speculative verify block, a draft step) takes
its position ids from these two functions.
"""

from __future__ import annotations

import tensorflow as tf


def positions_from_mask(mask: tf.Tensor) -> tf.Tensor:
    """Position ids of a (left-)padded prompt batch: cumsum(mask) - 1, padding clamped to 0. [batch, width]"""
    mask = tf.cast(mask, tf.int32)
    return tf.maximum(tf.cumsum(mask, axis=-1) - 1, 0)


def generated_position(prompt_len, generated):
    """Position id of generated token number `generated` (0-based) of rows whose prompts have
    `prompt_len` real tokens; broadcasts ([rows], [rows, s], ...)."""
    return prompt_len + generated
