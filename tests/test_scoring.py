"""Scoring (loglikelihood, loglikelihood_rolling, perplexity) equals the reference's log-probs on the
same weights, computed in the same test one unpadded row at a time; the harness's tokenisation and
truncation rules; bad requests named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

TOLERANCE = 1e-4  # per scored token: a float32 sum of many log-probs moves by about this much


def reference(hf, inputs, targets):
    """(summed log-prob of targets, greedy) from one forward pass of the reference over `inputs`
    alone: targets[i] is predicted at position len(inputs) - len(targets) + i."""
    with torch.no_grad():
        logits = hf(torch.tensor([inputs])).logits[0, -len(targets):]
    chosen = torch.log_softmax(logits.double(), -1)[torch.arange(len(targets)), torch.tensor(targets)]
    return float(chosen.sum()), bool((logits.argmax(-1) == torch.tensor(targets)).all())


def test_loglikelihood_equals_the_reference(hf_and_minigen):
    """Contexts of 0 (end-of-text is the context), 1, 9, 60 and 150 tokens (longer than n_positions 128:
    its start is cut), continuations of 1 to 70 tokens, in batches mixing them (the shorter packed
    several to a row, the 70-token one in a row of its own); and the greedy continuation of a context
    is reported greedy."""
    hf, _, model = hf_and_minigen("tiny")
    rng = np.random.default_rng(40)
    eos, limit = model.config.eos_token_id, model.config.n_positions
    requests = [(rng.integers(0, 511, n).tolist(), rng.integers(0, 511, m).tolist())
                for n, m in ((0, 3), (1, 1), (9, 17), (60, 70), (150, 5), (4, 40), (30, 1))]
    greedy_context = rng.integers(0, 511, 6).tolist()
    with torch.no_grad():
        out = hf.generate(torch.tensor([greedy_context]), attention_mask=torch.ones(1, 6, dtype=torch.long),
                          max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0)
    requests.append((greedy_context, out[0, 6:].tolist()))
    ours = model.loglikelihood(requests, batch_size=3)
    for (context, continuation), (score, greedy) in zip(requests, ours):
        whole = ((context or [eos]) + continuation)[-(limit + 1):]
        expected, expected_greedy = reference(hf, whole[:-1], continuation)
        assert abs(score - expected) <= TOLERANCE * len(continuation), (len(context), len(continuation))
        assert greedy == expected_greedy
    assert ours[-1][1] and not all(g for _, g in ours[:-1])  # the greedy one is; random ones are not
    kinds = {key[0] for key in model.compile_cache.keys()}
    assert {"score-packed", "score"} <= kinds  # both passes ran


def test_answers_sharing_a_context_equal_the_reference(hf_and_minigen):
    """A multiple-choice question's answers share their context's forward pass (run once into a
    cache each answer reads): contexts of 2 to 70 tokens (three left-padded together, with a filler),
    answers of 1 to 30 tokens, one context with more answers than a batch holds, beside requests
    scored alone (an empty context, a context of its own): each equal to the reference's one-row pass."""
    hf, _, model = hf_and_minigen("tiny")
    rng = np.random.default_rng(42)
    eos = model.config.eos_token_id
    requests = []
    for n, answers in ((70, (5, 1)), (40, (6, 2)), (30, (1, 30)), (12, (4, 2)), (5, (3, 3, 1, 9, 2, 7, 1, 4)),
                       (2, (2, 1)), (20, (6,))):
        context = rng.integers(0, 511, n).tolist()
        requests += [(context, rng.integers(0, 511, m).tolist()) for m in answers]
    requests += [([], [7, 8]), ([], [9])]
    order = rng.permutation(len(requests))
    requests = [requests[i] for i in order]
    ours = model.loglikelihood(requests, batch_size=6)
    for (context, continuation), (score, greedy) in zip(requests, ours):
        expected, expected_greedy = reference(hf, ((context or [eos]) + continuation)[:-1], continuation)
        assert abs(score - expected) <= TOLERANCE * len(continuation), (len(context), len(continuation))
        assert greedy == expected_greedy
    assert any(key[0] == "score-shared" for key in model.compile_cache._entries)  # the shared pass ran


def test_loglikelihood_rolling_and_perplexity_equal_the_reference(hf_and_minigen):
    """Texts of 1, 40, 128 and 300 tokens: each chunk of up to n_positions tokens predicted from the
    n_positions tokens before its end, the first from end-of-text."""
    hf, _, model = hf_and_minigen("tiny")
    rng = np.random.default_rng(41)
    eos, limit = model.config.eos_token_id, model.config.n_positions
    texts = [rng.integers(0, 511, n).tolist() for n in (1, 40, 128, 300)]
    sums = model.loglikelihood_rolling(texts, batch_size=2)
    perplexities = model.perplexity(texts, batch_size=2)
    for tokens, ours, ppl in zip(texts, sums, perplexities):
        prefixed, expected = [eos] + tokens, 0.0
        for start in range(0, len(tokens), limit):
            end = min(start + limit, len(tokens))
            expected += reference(hf, prefixed[max(0, end - limit):end], tokens[start:end])[0]
        assert abs(ours - expected) <= TOLERANCE * len(tokens), len(tokens)
        assert math.isclose(ppl, math.exp(-expected / len(tokens)), rel_tol=1e-4)
    short = texts[1]
    assert abs(sums[1] - reference(hf, [eos] + short[:-1], short)[0]) <= TOLERANCE * len(short)


def test_text_requests_follow_the_harness_tokenisation(text_model_dir):
    """A context's trailing space moves to the continuation, the continuation's tokens are those the
    whole text has after the context's, and an empty context scores after end-of-text: equal to
    the reference on ids made by the tokenizer itself."""
    import transformers
    from tokenizers import Tokenizer

    path, model = text_model_dir
    hf = transformers.GPT2LMHeadModel.from_pretrained(path.parent / "hf").eval()
    tok = Tokenizer.from_file(str(path.parent / "hf" / "tokenizer.json"))

    def encode(text):
        return tok.encode(text, add_special_tokens=False).ids

    pairs = [("It was a dark ", "night"), ("Call me", " Ishmael."), ("", "The end.")]
    ours = model.loglikelihood(pairs)
    for (context, continuation), (score, _) in zip(pairs, ours):
        if context:
            context, continuation = context.rstrip(), context[len(context.rstrip()):] + continuation
            head = encode(context)
            tail = encode(context + continuation)[len(head):]
        else:
            head, tail = [model.config.eos_token_id], encode(continuation)
        expected = reference(hf, (head + tail)[:-1], tail)[0]
        assert abs(score - expected) <= TOLERANCE * len(tail), (context, continuation)
    text = "It was a dark night, and the rain fell."
    ids = encode(text)
    assert model.loglikelihood_rolling([text]) == pytest.approx(model.loglikelihood_rolling([ids]), abs=1e-9)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.loglikelihood([([1, 2], [])]), r"requests\[0\]: the continuation is empty"),
    (lambda m: m.loglikelihood([([1], [3]), ([1, 2], list(range(129)))]), r"requests\[1\]: the continuation has 129"),
    (lambda m: m.loglikelihood([([1], [600])]), r"requests\[0\]\[1\] holds token id 600 outside the vocabulary"),
    (lambda m: m.loglikelihood([("a", "b")]), r"requests\[0\] is text, and this model has no tokenizer"),
    (lambda m: m.loglikelihood([("a", [1])]), "both be text or both be token ids"),
    (lambda m: m.loglikelihood([[1, 2, 3]]), r"requests\[0\] must be a \(context, continuation\) pair"),
    (lambda m: m.loglikelihood("ab"), "requests must be a list"),
    (lambda m: m.loglikelihood_rolling([[1], []]), r"texts\[1\] is empty"),
    (lambda m: m.loglikelihood([([1], [2])], batch_size=0), "batch_size must be an int >= 1"),
])
def test_bad_requests_are_named_before_anything_compiles(hf_and_minigen, call, message):
    _, _, model = hf_and_minigen("tiny")
    traces = model.trace_count
    with pytest.raises(ValueError, match=message):
        call(model)
    assert model.trace_count == traces


def test_new_lengths_in_a_bucket_reuse_the_compiled_pass(hf_and_minigen):
    """Both passes (answers sharing a context; rows alone) reuse their compiled function for new
    lengths within the same width and tail buckets."""
    _, _, model = hf_and_minigen("tiny")
    model.loglikelihood([([5] * 20, [7] * 3)] * 4 + [([1] * 20, [2] * 3), ([3] * 10, [4])], batch_size=4)
    traces = model.trace_count
    model.loglikelihood([([6] * 30, [8] * 9), ([6] * 30, [9])] * 2 + [([2] * 25, [3] * 5), ([4] * 7, [5] * 2)],
                        batch_size=4)
    assert model.trace_count == traces


def test_width_plan_is_the_cheapest_set_of_compiled_widths():
    """plan_widths against every set of widths (the widest always in it), by brute force: the tokens
    run (rows x width per pass) plus a compile's cost per width not yet compiled."""
    import itertools

    from minigen.scoring import plan_widths

    rng = np.random.default_rng(3)
    for trial in range(40):
        needs = [(int(w), int(rng.choice([4, 16]))) for w in rng.choice([16, 32, 48, 64, 128, 256, 384], 9)]
        compile_tokens = float(rng.choice([0, 50, 500, 3000, 1e9]))
        compiled = frozenset(int(w) for w in rng.choice([32, 128, 999], int(rng.integers(0, 2))))
        widths = sorted({w for w, _ in needs}, reverse=True)

        def cost(chosen):
            run = sum(n * min(c for c in chosen if c >= w) for w, n in needs)
            return run + compile_tokens * len(set(chosen) - compiled)

        best = min(cost((widths[0], *rest)) for k in range(len(widths))
                   for rest in itertools.combinations(widths[1:], k))
        plan = plan_widths(needs, compile_tokens, compiled)
        assert set(plan) == set(widths) and all(plan[w] >= w for w in widths)
        assert cost(tuple(set(plan.values()))) == pytest.approx(best), trial
        if compile_tokens == 0:
            assert all(plan[w] == w for w in widths)  # free compiles: every pass at its own width
        if compile_tokens == 1e9 and not compiled & set(widths[1:]):
            assert set(plan.values()) == {widths[0]}  # dear compiles: one width for all
