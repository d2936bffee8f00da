"""Checking and shaping user input (ids and attention mask) before anything is compiled."""

from __future__ import annotations

import numpy as np


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def as_batch(config, input_ids, attention_mask) -> tuple[np.ndarray, np.ndarray]:
    """Validated int32 ids and mask [batch, width]; ValueError naming the problem otherwise."""
    try:
        ids = np.asarray(input_ids)
    except Exception:
        raise ValueError("input_ids must be a [batch, length] array of token ids") from None
    if ids.dtype == object:
        raise ValueError("input_ids rows must all have the same length; pad them (left) and pass an attention_mask")
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.shape[0] == 0:
        raise ValueError(f"input_ids must be a [batch, length] array with batch >= 1, got shape {ids.shape}")
    if ids.shape[1] == 0:
        raise ValueError("input_ids is empty: every prompt needs at least one token")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
    if attention_mask is None:
        mask = np.ones(ids.shape, np.int32)
    else:
        mask = np.asarray(attention_mask)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {mask.shape} but input_ids has shape {ids.shape}")
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        mask = mask.astype(np.int32)
    empty = np.nonzero(mask.sum(axis=1) == 0)[0]
    if len(empty):
        raise ValueError(f"row(s) {empty.tolist()} of attention_mask are all padding: every prompt needs a token")
    real = ids[mask.astype(bool)]
    bad = real[(real < 0) | (real >= config.vocab_size)]
    if len(bad):
        raise ValueError(f"input_ids holds token id {int(bad[0])} outside the vocabulary [0, {config.vocab_size})")
    ids = np.where(mask.astype(bool), ids, 0).astype(np.int32)  # pad slots' ids are never read; make them valid
    return ids, mask


def prepare_logits_inputs(config, input_ids, attention_mask, multiple: int = 16):
    """ids and mask right-padded to a multiple of `multiple` (causal attention makes that harmless),
    plus the original width to slice the logits back to."""
    ids, mask = as_batch(config, input_ids, attention_mask)
    width = ids.shape[1]
    longest = int(mask.sum(axis=1).max())
    if longest > config.n_positions:
        raise ValueError(f"a prompt has {longest} tokens; the model's n_positions is {config.n_positions}")
    padded = min(_round_up(width, multiple), max(width, config.n_positions))
    extra = padded - width
    ids = np.pad(ids, ((0, 0), (0, extra)))
    mask = np.pad(mask, ((0, 0), (0, extra)))
    return ids, mask, width


def left_padded(rows, pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of token ids as a left-padded batch: (ids, mask) int32 [len(rows), width], width at
    least the longest row (default: that)."""
    width = max([len(r) for r in rows] + [width or 0])
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, row in enumerate(rows):
        if len(row):
            ids[i, width - len(row):] = row
            mask[i, width - len(row):] = 1
    return ids, mask


def left_pad_to(ids: np.ndarray, mask: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Add left padding so the batch is `width` wide."""
    extra = width - ids.shape[1]
    return np.pad(ids, ((0, 0), (extra, 0))), np.pad(mask, ((0, 0), (extra, 0)))
