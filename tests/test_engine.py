"""The request engine (minigen.engine): every request's tokens equal generate on that prompt alone
with its own options, greedy requests equal the reference's generate, in the same test; slots
refilled many times; no compile after warm-up; bad requests named before anything runs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from helpers import hf_generate


def alone(model, request):
    """generate on the request's prompt alone with its options: (new tokens, log-probs or None)."""
    options = {k: v for k, v in request.items() if k not in ("input_ids", "prompt")}
    ids = np.array([request["input_ids"]])
    out = model.generate(ids, return_dict=True, pad_token_id=0, **options)
    return out.sequences[0, ids.shape[1]:], out.logprobs


def until_end(tokens, eos):
    """tokens through the first EOS (generate pads after it)."""
    tokens = list(tokens)
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i + 1]
    return tokens


def mixed_requests(model, rng, n: int):
    """Requests of very different prompt lengths and lengths asked for, every third sampled with its
    own seed and warpers, some with repetition_penalty / min_new_tokens, some with an EOS that the
    request's own greedy output reaches early (so it finishes long before its max_new_tokens)."""
    vocab = model.config.vocab_size
    requests = []
    for i in range(n):
        length = int(rng.choice([1, 9, 40, 70]))
        r = dict(input_ids=rng.integers(0, vocab, length).tolist(), max_new_tokens=int(rng.choice([1, 12, 45])),
                 eos_token_id=[])
        if i % 3 == 1:
            r.update(do_sample=True, seed=[i, 3], temperature=float(rng.choice([0.7, 1.0, 1.3])),
                     top_k=int(rng.choice([0, 5, 50])), top_p=float(rng.choice([1.0, 0.8])))
            if i % 2:
                r.update(min_p=0.05, output_logprobs=True)
        elif i % 4 == 2:
            r.update(repetition_penalty=1.4, min_new_tokens=3)
        elif i % 5 == 0 and r["max_new_tokens"] > 10:
            free, _ = alone(model, r)
            r["eos_token_id"] = [int(free[4])]  # a token its greedy output reaches at step 4 (or earlier)
        requests.append(r)
    return requests


def test_requests_equal_generate_alone_and_the_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny")
    requests = mixed_requests(model, np.random.default_rng(0), 18)
    results = model.generate_many(requests, slots=4, progress=False)
    assert [r.request_id for r in results] == list(range(len(requests)))
    reasons = set()
    for i, (request, result) in enumerate(zip(requests, results)):
        tokens, logprobs = alone(model, request)
        expected = until_end(tokens, request["eos_token_id"])
        assert result.new_tokens == expected, f"request {i}"
        assert result.prompt_ids == request["input_ids"]
        reason = "eos" if expected and expected[-1] in request["eos_token_id"] else "length"
        assert result.finish_reason == reason, f"request {i}"
        reasons.add(reason)
        if request.get("output_logprobs"):
            # a float32 ulp or two: the engine's prompt is not padded, generate's is (to a multiple of 16)
            np.testing.assert_allclose(result.logprobs, logprobs[0, :len(expected)], atol=1e-4)
        else:
            assert result.logprobs is None
        plain = {"input_ids", "max_new_tokens", "eos_token_id"}
        if set(request) <= plain:  # greedy: the reference on the same weights
            ids = np.array([request["input_ids"]])
            ref = hf_generate(hf, ids, np.ones_like(ids), max_new_tokens=request["max_new_tokens"], do_sample=False,
                              eos_token_id=request["eos_token_id"] or None)
            assert result.new_tokens == until_end(ref[0, ids.shape[1]:], request["eos_token_id"]), f"request {i}"
    assert reasons == {"eos", "length"}  # both kinds of ending occur


def test_stop_strings_and_text_per_request(text_model_dir):
    _, model = text_model_dir
    prompts = ["The quick brown fox", "A long time ago in", "It was", "The cat sat on the mat and"]
    free = model.generate_text(prompts, max_new_tokens=24)
    # each request stops at a word of its own free continuation (the random model's text is mostly
    # bytes that are not UTF-8: the first run of letters after its first token or so)
    words = [re.search(r"[a-z]{2,}", f[2:]).group() for f in free]
    requests = [dict(prompt=p, max_new_tokens=24, stop_strings=[w]) for p, w in zip(prompts, words)]
    requests.append(dict(prompt="Once upon", max_new_tokens=6))
    results = model.generate_many(requests, slots=2, progress=False)
    for request, result in zip(requests, results):
        ids = model.tokenizer.encode(request["prompt"])
        options = {k: v for k, v in request.items() if k != "prompt"}
        tokens = model.generate(np.array([ids]), **options)[0, len(ids):]
        expected = until_end(tokens, [model.config.eos_token_id])[:len(result.new_tokens)]
        assert result.new_tokens == expected
        assert result.text == model.tokenizer.decode(result.new_tokens)
        if request.get("stop_strings"):
            assert result.finish_reason == "stop_string"
            assert result.text.endswith(request["stop_strings"][0]) or request["stop_strings"][0] in result.text[-8:]
            assert len(result.new_tokens) < 24
    assert results[-1].finish_reason in ("length", "eos")


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
