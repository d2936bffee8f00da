"""Stop strings checked inside the compiled loop: a row stops once one of them appears in its text
ending inside the newest token (which may run on a few bytes past it), even when the string spans
several tokens or starts inside one: the semantics of HF's StopStringCriteria, with no decoding on
the host.

What makes it a tensor computation is a table built once per (tokenizer, stop strings) on the host
(`stop_table`): for every token and stop string,
  - the offsets (counted from the string's end) at which the token can sit *wholly inside* the
    string, or run past its start: the tokens before the last one;
  - how many of the string's last bytes the token can hold with the string ending inside it (it may
    go on after): the last token;
  - the token's length in bytes.
A step then reads the row's last few tokens newest first (`stop_hit`): the newest must hold an end
of the string, and each older one must sit exactly where the bytes counted so far put it, until the
count reaches the string's length. Strings are matched as UTF-8 bytes over GPT-2's byte-level
vocabulary, so a string may end or begin in the middle of a token's multi-byte character.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet back to bytes: printable bytes stand for themselves, the other
    byte values were mapped to the code points from 256 on, in order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes(backend) -> list[bytes]:
    """Each token id's bytes, for a byte-level BPE `tokenizers.Tokenizer` (a token whose characters
    are not all in the byte alphabet, e.g. an added special token, is its UTF-8 text)."""
    decode = byte_decoder()
    vocab = backend.get_vocab(with_added_tokens=True)
    out = [b""] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        if all(c in decode for c in token):
            out[index] = bytes(decode[c] for c in token)
        else:
            out[index] = token.encode("utf-8")
    return out


class StopTable(NamedTuple):
    table: np.ndarray  # [vocab + 1, strings * (positions + ends) + 1] int32; the last row: no token
    lengths: np.ndarray  # [strings] int32: each stop string's length in bytes
    positions: int  # the most offsets any token has in any string
    ends: int  # the most end overlaps any token has in any string
    window: int  # tokens read per check: the longest string's length in bytes

    @property
    def shape_key(self) -> tuple:
        """What shapes the compiled check (the values travel as tensors)."""
        return len(self.lengths), self.positions, self.ends, self.window, self.table.shape[0]


def placements(token: bytes, stop: bytes) -> tuple[list[int], list[int]]:
    """(offsets from the string's end at which `token` can sit with the string going on after it,
    the lengths of the string's tail that `token` can hold as the string's last token)."""
    offsets, ends = [], []
    for offset in range(1, len(stop)):
        start = len(stop) - offset - len(token)  # where the token would begin, in the string
        inside = stop[max(start, 0):len(stop) - offset]
        if token.endswith(inside):
            offsets.append(offset)
    for i in range(len(token)):  # the string's last byte at token[i]
        overlap = min(i + 1, len(stop))
        if token[i + 1 - overlap:i + 1] == stop[-overlap:]:
            ends.append(overlap)
    return offsets, ends


def token_grids(tokens: list[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The vocabulary by token length: (token ids [n], their bytes [n, length] uint8) per length."""
    by_length: dict[int, list[int]] = {}
    for index, token in enumerate(tokens):
        if token:
            by_length.setdefault(len(token), []).append(index)
    return [(np.array(ids), np.frombuffer(b"".join(tokens[i] for i in ids), np.uint8).reshape(len(ids), length))
            for length, ids in sorted(by_length.items())]


def _left_aligned(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each row's `values` where `mask`, in order, then -1s: [n, width] int32."""
    big = np.iinfo(np.int32).max
    out = np.sort(np.where(mask, values[None, :], big), axis=1)
    return np.where(out == big, -1, out).astype(np.int32)


def all_placements(grids, vocab: int, stop: bytes) -> tuple[np.ndarray, np.ndarray]:
    """`placements(token, stop)` for every token at once, as (offsets [vocab, n-1], ends [vocab,
    longest token]) int32, each row's values first and -1 after: NumPy over the tokens of each length
    (a Python loop over GPT-2's 50,257 tokens took ~0.45 s per string)."""
    target, n = np.frombuffer(stop, np.uint8), len(stop)
    widest = max(grid.shape[1] for _, grid in grids)
    offsets = np.full((vocab, max(n - 1, 1)), -1, np.int32)
    ends = np.full((vocab, widest), -1, np.int32)
    for ids, grid in grids:
        length = grid.shape[1]
        inside = np.zeros((len(ids), max(n - 1, 1)), bool)
        for offset in range(1, n):  # the token ends `offset` bytes before the string's end
            part = target[max(n - offset - length, 0):n - offset]
            inside[:, offset - 1] = (grid[:, length - len(part):] == part).all(axis=1)
        holds = np.zeros((len(ids), length), bool)
        for i in range(length):  # the string's last byte at token[i]
            overlap = min(i + 1, n)
            holds[:, i] = (grid[:, i + 1 - overlap:i + 1] == target[n - overlap:]).all(axis=1)
        offsets[ids] = _left_aligned(inside, np.arange(1, max(n, 2)))
        ends[ids, :length] = _left_aligned(holds, np.minimum(np.arange(1, length + 1), n))
    return offsets, ends


def stop_table(tokens: list[bytes], stop_strings: tuple[str, ...]) -> StopTable:
    """The table `stop_hit` reads, for a vocabulary's token bytes."""
    stops = [s.encode("utf-8") for s in stop_strings]
    grids = token_grids(tokens)
    found = [all_placements(grids, len(tokens), s) for s in stops]
    positions = max([int((o >= 0).sum(axis=1).max()) for o, _ in found] + [1])
    ends = max([int((e >= 0).sum(axis=1).max()) for _, e in found] + [0])
    if ends == 0:
        raise ValueError(f"stop_strings {list(stop_strings)!r}: no token of the vocabulary can end them")
    width = len(stops) * (positions + ends) + 1
    table = np.full((len(tokens) + 1, width), -1, np.int32)
    for i, (offsets, token_ends) in enumerate(found):
        kept = offsets[:, :positions]
        table[:-1, i * positions:i * positions + kept.shape[1]] = kept
        base = len(stops) * positions + i * ends
        kept = token_ends[:, :ends]
        table[:-1, base:base + kept.shape[1]] = kept
    table[:-1, -1] = [len(t) for t in tokens]
    return StopTable(table, np.array([len(s) for s in stops], np.int32), positions, ends, max(map(len, stops)))


def stop_hit(table, lengths, shape_key: tuple, sequences, valid, slot):
    """[rows] bool: the row's text up to and including the token at `slot` ends with a stop string.

    table, lengths: a StopTable's arrays as tensors; sequences, valid: [rows, width]; slot: scalar."""
    return tf.reduce_any(stops_reached(table, lengths, shape_key, sequences, valid, slot), axis=1)


def stops_reached(table, lengths, shape_key: tuple, sequences, valid, slot):
    """[rows, strings] bool: which stop strings the row's text ends with, through the token at `slot`
    (a scalar, or one slot per row [rows]: the request engine's rows each have their own length)."""
    strings, positions, ends, window, no_token = shape_key
    slot = tf.convert_to_tensor(slot)
    slots = slot[..., None] - tf.range(window)  # newest first: [window] or [rows, window]
    inside = slots >= 0
    safe = tf.maximum(slots, 0)
    if slot.shape.rank == 0:
        tokens, real = tf.gather(sequences, safe, axis=1), tf.gather(valid, safe, axis=1) & inside[None, :]
    else:
        tokens, real = tf.gather(sequences, safe, batch_dims=1), tf.gather(valid, safe, batch_dims=1) & inside
    tokens = tf.minimum(tokens, no_token - 1)  # ids past the tokenizer's: no token
    ids = tf.where(real, tokens, no_token - 1)
    rows_of = tf.gather(table, ids)  # [rows, window, vec]
    rows = tf.shape(ids)[0]
    offsets = tf.reshape(rows_of[:, 1:, :strings * positions], [rows, window - 1, strings, positions])
    last_ends = tf.reshape(rows_of[:, :1, strings * positions:-1], [rows, 1, strings, ends])
    sizes = tf.broadcast_to(rows_of[:, 1:, -1:, None], [rows, window - 1, strings, ends])
    covered = tf.cumsum(tf.concat([last_ends, sizes], axis=1), axis=1)  # bytes matched, per end overlap
    first = last_ends > 0
    later = tf.reduce_any(covered[:, :-1, :, None, :] == offsets[:, :, :, :, None], axis=3)
    unbroken = tf.cumsum(tf.cast(~tf.concat([first, later], axis=1), tf.int32), axis=1) == 0
    reached = tf.reduce_max(tf.where(unbroken, covered, 0), axis=[1, 3])  # [rows, strings]
    return reached >= lengths[None, :]
