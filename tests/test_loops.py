"""The decoding loops' bookkeeping with no model: a fake network whose next token is its position
plus one, run eagerly (no XLA compile). Greedy output is then prompt_len, prompt_len + 1, ... for
every row whatever its padding, so the position rule, per-row stopping, padding after EOS,
min_new_tokens and scores can be checked against values worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from conftest import left_padded_batch
from minigen.generation.beam_search import beam_search
from minigen.generation.config import GenerationConfig
from minigen.generation.core import compile_key, make_knobs
from minigen import cache as kv
from minigen.generation import core
from minigen.generation.search import decode_until, search, start_state
from minigen.generation.speculative import speculative_loop
from minigen.positions import positions_from_mask

VOCAB, MARGIN, EOS, PAD = 32, 5.0, 7, 0
MODEL_CONFIG = SimpleNamespace(vocab_size=VOCAB, eos_token_id=EOS, pad_token_id=PAD, n_positions=64)


class PositionNet:
    """After the token at position p, predict token p + 1 (a logit MARGIN above all others)."""

    config = MODEL_CONFIG

    def lm_head(self, hidden):
        return hidden

    def forward(self, tokens, positions, cache, view):
        return MARGIN * tf.one_hot((positions + 1) % VOCAB, VOCAB), cache

    def prefill(self, ids, mask, cache_len, prefix=None):
        hidden, _ = self.forward(ids, positions_from_mask(mask), (), None)
        cache = kv.allocate(1, ids.shape[0], 1, cache_len, 1)  # one layer, one head, head_dim 1
        return hidden, cache, tf.ones([tf.shape(ids)[0], cache_len], tf.bool)

    def decode_one_token(self, tokens, positions, cache, view):
        """Also checks the cache it is given: as long as the view's key_mask (and lineage), with room
        for slot view.index."""
        slots = cache.keys[0].shape[1] // view.group
        assert view.key_mask.shape[1] == slots and (view.lineage is None or view.lineage.shape[2] == slots)
        tf.debugging.assert_less(view.index, slots, message="decode step beyond its segment's cache")
        self.slots_seen.add(slots)
        hidden, cache = self.forward(tokens[:, None], positions[:, None], cache, view)
        return hidden[:, 0], cache

    slots_seen: set = set()


LENGTHS = [1, 4, 2]  # EOS (7) is new token 7, 4 and 6 of these rows


def expected(prompt_len: int, max_new: int, min_new: int = 0) -> list[int]:
    """By hand: token n is prompt_len + n; EOS ends the row (pads after), unless n < min_new, where
    EOS is forbidden and the best remaining logit (all 0) is token 0."""
    out, done = [], False
    for n in range(max_new):
        if done:
            out.append(PAD)
            continue
        token = (prompt_len + n) % VOCAB
        if token == EOS and n < min_new:
            token = 0
        out.append(token)
        done = token == EOS
    return out


def run(loop, max_new: int, **options):
    ids, mask = left_padded_batch(np.random.default_rng(0), VOCAB, LENGTHS)
    ids, mask = tf.constant(ids, tf.int32), tf.constant(mask, tf.int32)
    cfg = GenerationConfig(max_new_tokens=max_new, **options).check(MODEL_CONFIG)
    speculation = "lookup" if cfg.prompt_lookup_num_tokens else ""
    key = compile_key(cfg, MODEL_CONFIG, len(LENGTHS), ids.shape[1], speculation=speculation)
    if key.beam:
        ids, mask = tf.repeat(ids, cfg.num_beams, axis=0), tf.repeat(mask, cfg.num_beams, axis=0)
    return loop(PositionNet(), ids, mask, make_knobs(cfg), key), ids.shape[1]


@pytest.mark.parametrize("options", [dict(), dict(do_sample=True, top_k=1, seed=(1, 2))], ids=["greedy", "sample-top1"])
def test_search_follows_the_position_rule_and_stops_each_row(options):
    out, width = run(search, 9, **options)
    sequences = out.sequences
    assert sequences.numpy()[:, width:].tolist() == [expected(n, 9) for n in LENGTHS]


def test_min_new_tokens_forbids_eos_until_reached():
    out, width = run(search, 9, min_new_tokens=4)
    sequences = out.sequences
    assert sequences.numpy()[:, width:].tolist() == [expected(n, 9, min_new=4) for n in LENGTHS]


def test_max_new_tokens_one_and_scores():
    out, width = run(search, 1, output_logprobs=True)
    sequences, scores = out.sequences, out.record.logprobs
    assert sequences.numpy()[:, width:].tolist() == [[n] for n in LENGTHS]
    chosen = MARGIN - math.log(math.exp(MARGIN) + VOCAB - 1)  # log-softmax of the winning logit
    np.testing.assert_allclose(scores.numpy(), [[chosen]] * 3, rtol=1e-6)


def test_scores_are_zero_after_eos():
    out, width = run(search, 8, output_logprobs=True)
    sequences, scores = out.sequences, out.record.logprobs
    live = np.array([[t != PAD for t in expected(n, 8)] for n in LENGTHS])
    chosen = MARGIN - math.log(math.exp(MARGIN) + VOCAB - 1)
    np.testing.assert_allclose(scores.numpy(), np.where(live, chosen, 0.0), rtol=1e-6)


def test_chunked_decoding_equals_one_shot():
    ids, mask = left_padded_batch(np.random.default_rng(0), VOCAB, LENGTHS)
    ids, mask = tf.constant(ids, tf.int32), tf.constant(mask, tf.int32)
    cfg = GenerationConfig(max_new_tokens=9).check(MODEL_CONFIG)
    key = compile_key(cfg, MODEL_CONFIG, 3, ids.shape[1])
    net, knobs = PositionNet(), make_knobs(cfg)
    state, key_mask = start_state(net, ids, mask, key)
    for limit in (2, 3, 7, 9):  # streaming's chunks
        state = decode_until(net, state, mask, key_mask, knobs, key, limit)
        assert int(state.step) == min(limit, 7)  # every row has finished after 7 tokens
    assert state.sequences.numpy()[:, ids.shape[1]:].tolist() == [expected(n, 9) for n in LENGTHS]


def test_beam_search_best_hypothesis_is_the_most_likely_path():
    """Every step's best token is the same for all paths, so the best beam is the greedy path."""
    out, width = run(beam_search, 9, num_beams=2)
    sequences = out.sequences
    assert sequences.numpy()[:, 0, width:].tolist() == [expected(n, 9) for n in LENGTHS]


def prompt_lookup(net, ids, mask, knobs, key):
    return speculative_loop(net, None, ids, mask, knobs, key)


def test_speculative_verify_blocks_use_each_rows_positions():
    out, width = run(prompt_lookup, 9, prompt_lookup_num_tokens=3)
    sequences, stats = out.sequences, out.speculation
    assert sequences.numpy()[:, width:].tolist() == [expected(n, 9) for n in LENGTHS]
    assert int(stats[0]) >= 1  # verify steps ran


def test_segments_grow_the_cache_and_give_the_same_tokens(monkeypatch):
    """Long generations decode in segments over a growing cache (core.windows), greedy and beam
    search; forced here on the fake: segments of 2 new tokens from any size."""
    monkeypatch.setattr(core, "SEGMENT", 2)
    monkeypatch.setattr(core, "SEGMENT_FROM", 0)
    PositionNet.slots_seen = set()
    out, width = run(search, 9, output_logprobs=True)
    assert out.sequences.numpy()[:, width:].tolist() == [expected(n, 9) for n in LENGTHS]
    # segments end after 2, 4, 6 new tokens; the last runs to 9 (every row has stopped by token 7)
    assert PositionNet.slots_seen == {width + 2, width + 4, width + 6, width + 9}
    assert out.record.logprobs.shape == (3, 9)
    PositionNet.slots_seen = set()
    out, width = run(beam_search, 9, num_beams=2)
    assert out.sequences.numpy()[:, 0, width:].tolist() == [expected(n, 9) for n in LENGTHS]
    assert PositionNet.slots_seen == {width + 2, width + 4, width + 6, width + 9}
