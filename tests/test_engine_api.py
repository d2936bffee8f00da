"""The request engine's incremental API (minigen.engine.Engine): no compile after warm-up, cancel and
stream, bad requests named before anything runs, shared prefixes. Apart from tests/test_engine.py so
that each process holds fewer compiled programs."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import alone


@pytest.mark.slow
def test_no_compile_after_warm_up_over_many_requests(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    rng = np.random.default_rng(5)

    def requests(n):
        out = []
        for i in range(n):
            r = dict(input_ids=rng.integers(0, 512, int(rng.integers(1, 60))).tolist(),
                     max_new_tokens=int(rng.integers(1, 40)), eos_token_id=[int(rng.integers(0, 512))])
            if i % 2:
                r.update(do_sample=True, seed=[i, 0], top_p=float(rng.uniform(0.5, 1.0)), temperature=0.9)
            if i % 3 == 0:
                r.update(repetition_penalty=1.2, output_logprobs=True)
            out.append(r)
        return out

    engine = model.engine(slots=6, max_length=100)
    for r in [dict(input_ids=[1] * n, max_new_tokens=2) for n in (1, 20, 40)]:  # every prefill width
        engine.submit(r)
    list(engine)  # the decode step with greedy rows only, and (below) with a sampling row
    engine.submit(dict(input_ids=[1], max_new_tokens=2, do_sample=True, seed=[0, 0]))
    list(engine)
    before = model.trace_count
    batch = requests(120)
    ids = [engine.submit(r) for r in batch]
    results = list(engine)
    assert len(results) == 120 and model.trace_count == before
    # and a fresh engine of the same shape reuses the compiled pieces
    again = model.generate_many(batch[:30], slots=6, max_length=100, progress=False)
    assert model.trace_count == before
    by_id = {r.request_id: r for r in results}
    assert [r.new_tokens for r in again] == [by_id[i].new_tokens for i in ids[:30]]


@pytest.mark.slow
def test_incremental_engine_cancel_and_stream(hf_and_minigen):
    _, _, model = hf_and_minigen("four")
    rng = np.random.default_rng(7)
    engine = model.engine(slots=2, max_length=96, chunk_size=4)
    requests = [dict(input_ids=rng.integers(0, 777, 5 + i).tolist(), max_new_tokens=30 + i, eos_token_id=[])
                for i in range(5)]
    ids = [engine.submit(r) for r in requests]
    assert engine.cancel(ids[4])  # still queued
    streamed, results, cancelled_running = {}, {}, False
    for update in engine.stream():
        streamed.setdefault(update.request_id, []).extend(update.new_tokens)
        if update.request_id == ids[1] and len(streamed[ids[1]]) >= 8 and not cancelled_running:
            cancelled_running = engine.cancel(ids[1])  # running
        if update.result is not None:
            results[update.request_id] = update.result
    assert cancelled_running and not engine.cancel(ids[1]) and not engine.cancel(999)
    assert results[ids[4]].finish_reason == "cancelled" and results[ids[1]].finish_reason == "cancelled"
    for i in (0, 2, 3):
        expected = list(alone(model, requests[i])[0])
        assert results[ids[i]].new_tokens == expected
        assert streamed[ids[i]] == expected  # the chunks' tokens add up to the result
    assert engine.idle


@pytest.mark.parametrize("request_, message", [
    (dict(input_ids=[1, 2], max_new_tokens=4, num_beams=2), "request 1: num_beams cannot be set per request"),
    (dict(input_ids=[1, 2], max_new_tokens=4, temprature=0.5), "request 1: unknown generate option 'temprature'; "
                                                                "did you mean temperature"),
    (dict(input_ids=[1, 2], top_p=1.5), "request 1: top_p must be in (0, 1]"),
    (dict(input_ids=[]), "request 1: the prompt is empty"),
    (dict(input_ids=[1, 2], prompt="hi"), "request 1: give exactly one of input_ids"),
    (dict(input_ids=[1, 5000]), "request 1: input_ids holds token id 5000 outside the vocabulary"),
    (dict(input_ids=[1] * 60, max_new_tokens=50), "request 1: prompt length 60 + max_new_tokens 50 exceeds"),
    (dict(prompt="hello"), "request 1: prompt (text) needs the model's tokenizer"),
    (dict(input_ids=[1], stop_strings=["x"]), "request 1: stop_strings need the model's tokenizer"),
    ("hello", "request 1: must be a dict"),
])
def test_bad_requests_are_named_before_anything_runs(hf_and_minigen, request_, message):
    _, _, model = hf_and_minigen("four")
    before = model.trace_count
    with pytest.raises(ValueError) as e:
        model.generate_many([dict(input_ids=[3, 4], max_new_tokens=2), request_], max_length=100, progress=False)
    assert message in str(e.value)
    assert model.trace_count == before


@pytest.mark.slow
def test_shared_prefix_is_prefilled_once_with_the_same_tokens(hf_and_minigen):
    _, _, model = hf_and_minigen("four")
    rng = np.random.default_rng(11)
    header = rng.integers(0, 777, 70).tolist()  # a few-shot header: 64 of its tokens are reusable
    requests = [dict(input_ids=header + rng.integers(0, 777, int(rng.integers(1, 12))).tolist(),
                     max_new_tokens=int(rng.integers(3, 20)), eos_token_id=[]) for _ in range(9)]
    requests[4].update(do_sample=True, seed=[4, 4], top_p=0.9)
    requests.append(dict(input_ids=rng.integers(0, 777, 50).tolist(), max_new_tokens=5))  # shares nothing
    engine = model.engine(slots=3, max_length=100, prefix_cache=2)
    for r in requests:
        engine.submit(r)
    shared = {r.request_id: r.new_tokens for r in engine}
    stats = engine.stats()
    assert stats["prefix_hits"] == 8 and stats["prefix_tokens_reused"] == 8 * 64  # all but the first with the header
    assert len(engine.prefixes.tokens) <= 2  # bounded: the least recently used prompt is dropped
    plain = model.generate_many(requests, slots=3, max_length=100, prefix_cache=0, progress=False)
    for i, (request, result) in enumerate(zip(requests, plain)):
        assert shared[i] == result.new_tokens == list(alone(model, request)[0]), f"request {i}"
