"""The request engine (minigen.engine): every request's tokens equal generate on that prompt alone
with its own options, greedy requests equal the reference's generate, in the same test; slots
refilled many times; no compile after warm-up; bad requests named before anything runs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from helpers import alone, hf_generate, until_end


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
            else:
                r.update(top_logprobs=3)
        elif i % 4 == 2:
            r.update(repetition_penalty=1.4, min_new_tokens=3, top_logprobs=int(rng.choice([1, 5])))
        elif i % 5 == 0 and r["max_new_tokens"] > 10:
            free, _ = alone(model, r)
            r["eos_token_id"] = [int(free[4])]  # a token its greedy output reaches at step 4 (or earlier)
        requests.append(r)
    return requests


# the first 8 of the 18 requests in the default run (each kind of request, both endings); all under `make soak`
@pytest.mark.parametrize("count", [8, pytest.param(18, marks=pytest.mark.slow)])
def test_requests_equal_generate_alone_and_the_reference(hf_and_minigen, count):
    hf, _, model = hf_and_minigen("tiny")
    requests = mixed_requests(model, np.random.default_rng(0), count)
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
        if request.get("top_logprobs"):  # each step's best tokens and log-probs, as generate alone keeps them
            options = {k: v for k, v in request.items() if k != "input_ids"}
            out = model.generate([request["input_ids"]], pad_token_id=0, **options)
            n, k = len(expected), request["top_logprobs"]
            assert np.shape(result.top_tokens) == np.shape(result.top_logprobs) == (n, k), f"request {i}"
            np.testing.assert_array_equal(result.top_tokens, out.top_tokens[0, :n])
            np.testing.assert_allclose(result.top_logprobs, out.top_logprobs[0, :n], atol=1e-4)
        else:
            assert result.top_tokens is None and result.top_logprobs is None
        plain = {"input_ids", "max_new_tokens", "eos_token_id"}
        if set(request) <= plain:  # greedy: the reference on the same weights
            ids = np.array([request["input_ids"]])
            ref = hf_generate(hf, ids, np.ones_like(ids), max_new_tokens=request["max_new_tokens"], do_sample=False,
                              eos_token_id=request["eos_token_id"] or None)
            assert result.new_tokens == until_end(ref[0, ids.shape[1]:], request["eos_token_id"]), f"request {i}"
    assert reasons == {"eos", "length"}  # both kinds of ending occur


@pytest.mark.slow
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
