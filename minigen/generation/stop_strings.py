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


def stop_table(tokens: list[bytes], stop_strings: tuple[str, ...]) -> StopTable:
    """The table `stop_hit` reads, for a vocabulary's token bytes."""
    stops = [s.encode("utf-8") for s in stop_strings]
    found = [[placements(t, s) for t in tokens] for s in stops]
    positions = max([len(o) for per in found for o, _ in per] + [1])
    ends = max([len(e) for per in found for _, e in per] + [0])
    if ends == 0:
        raise ValueError(f"stop_strings {list(stop_strings)!r}: no token of the vocabulary can end them")
    width = len(stops) * (positions + ends) + 1
    table = np.full((len(tokens) + 1, width), -1, np.int32)
    for i, per in enumerate(found):
        for token, (offsets, token_ends) in enumerate(per):
            table[token, i * positions:i * positions + len(offsets)] = offsets
            base = len(stops) * positions + i * ends
            table[token, base:base + len(token_ends)] = token_ends
    table[:-1, -1] = [len(t) for t in tokens]
    return StopTable(table, np.array([len(s) for s in stops], np.int32), positions, ends, max(map(len, stops)))


def stop_hit(table, lengths, shape_key: tuple, sequences, valid, slot):
    """[rows] bool: the row's text up to and including the token at `slot` ends with a stop string.

    table, lengths: a StopTable's arrays as tensors; sequences, valid: [rows, width]; slot: scalar."""
    strings, positions, ends, window, no_token = shape_key
    slots = slot - tf.range(window)  # newest first
    inside = slots >= 0
    safe = tf.maximum(slots, 0)
    tokens = tf.minimum(tf.gather(sequences, safe, axis=1), no_token - 1)  # ids past the tokenizer's: no token
    ids = tf.where(tf.gather(valid, safe, axis=1) & inside[None, :], tokens, no_token - 1)
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
    return tf.reduce_any(reached >= lengths[None, :], axis=1)
