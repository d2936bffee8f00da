"""The text API: generate_text, streaming, continuing a state, threads; on a random GPT-2 with a
small BPE tokenizer trained here (conftest.text_model_dir), so nothing outside the repo is needed."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import PROMPTS


def test_load_attaches_the_tokenizer(text_model_dir):
    _, lm = text_model_dir
    assert lm.tokenizer is not None and lm.tokenizer.pad_id == lm.config.eos_token_id


def test_generate_text_batch_equals_each_prompt_alone(text_model_dir):
    _, lm = text_model_dir
    together = lm.generate_text(PROMPTS, max_new_tokens=12)
    alone = [lm.generate_text(p, max_new_tokens=12)[0] for p in PROMPTS]
    assert together == alone
    assert len(set(together)) > 1  # not a degenerate constant output


def test_generate_text_matches_token_level_generate(text_model_dir):
    _, lm = text_model_dir
    tok = lm.tokenizer
    ids = np.array([tok.encode(PROMPTS[0])])
    seq = lm.generate(ids, max_new_tokens=10, pad_token_id=tok.pad_id)
    expected = tok.decode(seq[0, ids.shape[1]:])
    assert lm.generate_text(PROMPTS[0], max_new_tokens=10) == [expected]
    assert lm.generate_text(PROMPTS[0], max_new_tokens=10, return_full_text=True) == [PROMPTS[0] + expected]


def test_generate_text_rejects_empty_prompts(text_model_dir):
    _, lm = text_model_dir
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        lm.generate_text(["ok", ""], max_new_tokens=2)


def test_two_threads_get_their_own_results(text_model_dir):
    _, lm = text_model_dir
    jobs = {"greedy": (PROMPTS[:2], dict(max_new_tokens=10)),
            "sample": (PROMPTS[2:], dict(max_new_tokens=10, do_sample=True, seed=(3, 4)))}
    alone = {k: lm.generate_text(p, **o) for k, (p, o) in jobs.items()}
    got = {}

    def work(key):
        prompts, options = jobs[key]
        for _ in range(3):
            got.setdefault(key, []).append(lm.generate_text(prompts, **options))

    threads = [threading.Thread(target=work, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in jobs:
        assert got[key] == [alone[key]] * 3


@pytest.mark.parametrize("chunk_size", [1, 3, 16])


def test_stream_tokens_equal_one_shot(text_model_dir, chunk_size):
    _, lm = text_model_dir
    tok = lm.tokenizer
    ids, mask = tok.encode_batch(PROMPTS)
    for options in (dict(), dict(do_sample=True, seed=(5, 6), top_p=0.9)):
        one_shot = lm.generate(ids, mask, max_new_tokens=11, pad_token_id=tok.pad_id, **options)[:, ids.shape[1]:]
        chunks = list(lm.stream_tokens(ids, mask, chunk_size=chunk_size, max_new_tokens=11,
                                       pad_token_id=tok.pad_id, **options))
        assert all(c.shape[1] <= chunk_size for c in chunks)
        streamed = np.concatenate(chunks, axis=1)
        np.testing.assert_array_equal(streamed, one_shot[:, :streamed.shape[1]])
        assert (one_shot[:, streamed.shape[1]:] == tok.pad_id).all()  # only an all-finished tail is cut


def test_stream_text_joins_to_generate_text(text_model_dir):
    _, lm = text_model_dir
    pieces = list(lm.stream(PROMPTS[2], chunk_size=2, max_new_tokens=9))
    assert len(pieces) > 1
    assert "".join(pieces) == lm.generate_text(PROMPTS[2], max_new_tokens=9)[0]


def test_stream_compiles_once_per_bucket(text_model_dir):
    _, lm = text_model_dir
    list(lm.stream(PROMPTS[0], max_new_tokens=7))
    traces = lm.trace_count
    list(lm.stream(PROMPTS[1], max_new_tokens=7, chunk_size=8))
    list(lm.stream(PROMPTS[3], max_new_tokens=7, chunk_size=8))
    assert lm.trace_count == traces


def test_continuing_from_a_state_equals_generating_from_the_concatenation(text_model_dir):
    _, lm = text_model_dir
    tok = lm.tokenizer
    first = ["The quick brown", "A journey of a thousand miles"]
    second = [" and then", " To be, or not"]
    for options in (dict(), dict(do_sample=True, seed=(7, 8), top_k=0)):
        ids1, mask1 = tok.encode_batch(first)
        out1 = lm.generate(ids1, mask1, max_new_tokens=6, eos_token_id=[], return_state=True, **options)
        ids2, mask2 = tok.encode_batch(second)
        out2 = lm.generate(ids2, mask2, max_new_tokens=7, eos_token_id=[], cache=out1.state, **options)
        assert out2.shape == (2, ids2.shape[1] + 7)  # the new segment's layout, as if it were the prompt
        assert out1.state.cache.keys[0].shape[1] == out1.state.width  # the state holds the filled cache

        # the same conversation as one left-padded batch of token histories, generated from scratch
        histories = []
        for row in range(2):
            turn1 = [int(t) for t, m in zip(out1.sequences[row], np.r_[mask1[row], np.ones(6)]) if m]
            histories.append(turn1 + [int(t) for t, m in zip(ids2[row], mask2[row]) if m])
        width = max(map(len, histories))
        ids = np.array([[tok.pad_id] * (width - len(h)) + h for h in histories])
        mask = np.array([[0] * (width - len(h)) + [1] * len(h) for h in histories])
        scratch = lm.generate(ids, mask, max_new_tokens=7, eos_token_id=[], **options)
        np.testing.assert_array_equal(out2[:, -7:], scratch[:, -7:])


def test_continuing_rejects_beams_and_mismatched_rows(text_model_dir):
    _, lm = text_model_dir
    ids, mask = lm.tokenizer.encode_batch(["one", "two"])
    with pytest.raises(ValueError, match="num_beams"):
        lm.generate(ids, mask, max_new_tokens=2, num_beams=2, return_state=True)
    state = lm.generate(ids, mask, max_new_tokens=2, return_state=True).state
    with pytest.raises(ValueError, match="2 rows"):
        lm.generate(ids[:1], mask[:1], max_new_tokens=2, cache=state)
