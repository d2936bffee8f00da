"""Contrastive search (penalty_alpha, top_k).

Parity: transformers removed contrastive search from its core in 4.56 (4.57 and 5.x want a hub
repository that cannot be reached here), so the reference is transformers 4.55.4 in its own venv
(`make reference-venv` builds .venv-ref; MINIGEN_REFERENCE_PYTHON points elsewhere), driven through
tests/hf455_contrastive.py in a subprocess. Without that venv the parity tests skip and say so; the
properties below need no reference and always run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import build_hf_model, left_padded_batch
from helpers import PAD, REFERENCE, needs_reference, reference
from minigen.generation.config import GenerationConfig
from minigen.generation.contrastive import contrastive_search
from minigen.generation.core import compile_key, make_knobs


def contrastive(model, ids, mask, alpha, k, max_new, **options):
    return model.generate(ids, mask, max_new_tokens=max_new, penalty_alpha=alpha, top_k=k, pad_token_id=PAD,
                          **options)


def eos_stopping_some_rows(tokens, max_new):
    """A token some rows produce in their first half and others never: an EOS that stops rows at
    different steps (taken from an EOS-free run; the test then checks the reference's rows do stop)."""
    rows = [set(row[: max_new // 2].tolist()) for row in tokens]
    for token in sorted(set(tokens.ravel().tolist()) - {PAD}):
        if any(token in r for r in rows) and not all(token in set(row.tolist()) for row in tokens):
            return token
    raise AssertionError("no token stops only some rows; pick another seed")


# alpha x k: every pair on the 2-layer model (default run), and on the odd one with the processors
# under `make soak` (the default suite's time is bounded)
GRID = {"tiny": [(a, k) for a in (0.0, 0.4, 0.6, 0.9) for k in (1, 2, 4, 8)],
        "odd": [(a, k) for a in (0.0, 0.4, 0.6, 0.9) for k in (1, 2, 4, 8)]}
MAX_NEW = 20


def grid_cases(model, name):
    """(ids, mask, eos, options for each alpha x k) on a left-padded batch whose rows stop at different steps."""
    ids, mask = left_padded_batch(np.random.default_rng(40), model.config.vocab_size, [5, 12, 2, 9], pad_id=PAD)
    free = contrastive(model, ids, mask, 0.6, 4, MAX_NEW, eos_token_id=[])[:, ids.shape[1]:]
    eos = eos_stopping_some_rows(free, MAX_NEW)
    options = [dict(max_new_tokens=MAX_NEW, penalty_alpha=a, top_k=k, eos_token_id=eos, pad_token_id=PAD,
                    output_scores=True) for a, k in GRID[name]]
    return ids, mask, eos, options


def processor_cases(model):
    """Processors act on the logits before the candidates are taken. Each option's ids come from the
    plain contrastive output, so each must change it (checked). repetition_penalty and
    no_repeat_ngram read every prompt id, padding included, in the reference (minigen never counts
    padding): an unpadded batch."""
    ids, mask = left_padded_batch(np.random.default_rng(41), model.config.vocab_size, [6, 6, 6], pad_id=PAD)
    common = dict(max_new_tokens=16, penalty_alpha=0.6, top_k=4, pad_token_id=PAD, eos_token_id=None)
    plain = model.generate(ids, mask, **{**common, "eos_token_id": []})
    new = plain[:, ids.shape[1]:]
    frequent = [int(t) for t in np.argsort(np.bincount(new.ravel(), minlength=model.config.vocab_size))[-3:]]
    options = [dict(min_new_tokens=6, eos_token_id=int(new[0, 2])),  # an EOS row 0 would emit at step 2
               dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=2),
               dict(suppress_tokens=frequent, bad_words_ids=[[int(new[1, 3]), int(new[1, 4])]])]
    return ids, mask, plain, [{**common, **o} for o in options]


@pytest.fixture(scope="module")
def expected(hf_and_minigen, request):
    """The parity cases the selected tests need, and the reference's output for each, from one
    subprocess (importing torch and transformers takes seconds)."""
    if not REFERENCE.exists():
        pytest.skip(needs_reference.kwargs["reason"])
    wanted = {getattr(item, "callspec", None) and item.callspec.params.get("name") or "processors"
              for item in request.session.items if item.module is request.module and "expected" in item.fixturenames}
    cases, jobs = {}, []
    for name in [n for n in GRID if n in wanted]:
        _, hf_dir, model = hf_and_minigen(name)
        ids, mask, eos, options = grid_cases(model, name)
        cases[name] = (model, ids, mask, eos, options)
        jobs.append((hf_dir, [(ids, mask, o) for o in options]))
    if "processors" in wanted:
        _, hf_dir, model = hf_and_minigen("tiny")
        ids, mask, plain, options = processor_cases(model)
        cases["processors"] = (model, ids, mask, plain, options)
        jobs.append((hf_dir, [(ids, mask, o) for o in options]))
    return {name: (case, ref) for (name, case), ref in zip(cases.items(), reference(jobs))}


@needs_reference
@pytest.mark.parametrize("name", [pytest.param("tiny"), pytest.param("odd", marks=pytest.mark.slow)])
def test_matches_reference(expected, name):
    """alpha x k on a left-padded batch whose rows stop at different steps: tokens identical,
    chosen-token log-probs (output_logprobs) within float rounding."""
    (model, ids, mask, eos, options), ref = expected[name]
    for o, r in zip(options, ref):
        ours = contrastive(model, ids, mask, o["penalty_alpha"], o["top_k"], MAX_NEW, eos_token_id=eos,
                           output_logprobs=True)
        np.testing.assert_array_equal(ours.sequences, r["sequences"], err_msg=str(o))
        theirs = np.asarray(r["scores"])  # [rows, steps until every row stopped]
        new = np.asarray(r["sequences"])[:, ids.shape[1]:ids.shape[1] + theirs.shape[1]]
        live = (np.cumsum(new == eos, axis=1) - (new == eos)) == 0  # up to and including each row's EOS
        np.testing.assert_allclose(ours.logprobs[:, :theirs.shape[1]][live], theirs[live], atol=2e-4, err_msg=str(o))
    # the EOS was picked from alpha 0.6, k 4's output: there, rows really stop at different steps
    at = GRID[name].index((0.6, 4))
    stopped = [(row[ids.shape[1]:] == eos).any() for row in np.asarray(ref[at]["sequences"])]
    assert any(stopped) and not all(stopped)
    assert len({json.dumps(r["sequences"]) for r in ref}) > len(ref) // 2  # the options change the output


@needs_reference
@pytest.mark.slow
def test_matches_reference_with_processors(expected):
    (model, ids, mask, plain, options), ref = expected["processors"]
    for o, r in zip(options, ref):
        ours = model.generate(ids, mask, **{**o, "eos_token_id": o["eos_token_id"] or []})
        np.testing.assert_array_equal(ours, r["sequences"], err_msg=str(o))
        assert not np.array_equal(ours, plain), f"{o} did not change the output"


@needs_reference
@pytest.mark.slow
@pytest.mark.parametrize("alpha, k", [(0.6, 4), (0.4, 2), (0.9, 8)])
def test_matches_reference_gpt2_small_shape(tmp_path, alpha, k):
    """GPT-2 small's shape (`make soak`: ~30 s and 2.6 GB each), a left-padded batch whose rows an EOS
    stops at different steps. Memory: the reference model lives only in its subprocess, and runs
    after minigen's copy is released."""
    import gc

    import minigen
    from weights_tools.convert import convert

    hf = build_hf_model("small", initializer_range=0.2)
    hf.save_pretrained(tmp_path / "hf")
    del hf
    convert(str(tmp_path / "hf"), str(tmp_path / "minigen"), quiet=True)
    model = minigen.load(tmp_path / "minigen")
    ids, mask = left_padded_batch(np.random.default_rng(42), 50257, [7, 3, 5], pad_id=PAD)
    free = contrastive(model, ids, mask, alpha, k, 16, eos_token_id=[])[:, ids.shape[1]:]
    eos = eos_stopping_some_rows(free, 16)
    ours = contrastive(model, ids, mask, alpha, k, 16, eos_token_id=eos)
    del model
    gc.collect()
    options = dict(max_new_tokens=16, penalty_alpha=alpha, top_k=k, eos_token_id=eos, pad_token_id=PAD)
    ref = reference([(tmp_path / "hf", [(ids, mask, options)])])[0][0]
    np.testing.assert_array_equal(ours, ref["sequences"])
    stopped = [(row[ids.shape[1]:] == eos).any() for row in ours]
    assert any(stopped) and not all(stopped)


# ---- properties that need no reference ------------------------------------------------------------


@pytest.mark.slow  # make soak; the default run's parity grid and full-forward test cover the loop
def test_alpha_zero_in_the_loop_is_greedy(hf_and_minigen):
    """The contrastive loop itself (not the dispatch, which sends alpha 0 to greedy) with alpha 0
    picks the most likely candidate: greedy's tokens. This exercises the candidate block (positions,
    the alternatives mask) and the next logits from the chosen row; the chosen candidate is always
    the first here, so the cache move is checked by the next test."""
    _, _, model = hf_and_minigen("odd")
    ids, mask = left_padded_batch(np.random.default_rng(43), 1003, [4, 9, 2], pad_id=PAD)
    max_new = 16
    greedy = model.generate(ids, mask, max_new_tokens=max_new, eos_token_id=[], pad_token_id=PAD,
                            pad_to_multiple_of=16)
    cfg = GenerationConfig(max_new_tokens=max_new, penalty_alpha=0.5, top_k=4, eos_token_id=[],
                           pad_token_id=PAD).check(model.config)
    padded = np.pad(ids, ((0, 0), (16 - ids.shape[1], 0)), constant_values=PAD)
    padded_mask = np.pad(mask, ((0, 0), (16 - ids.shape[1], 0)))
    key = compile_key(cfg, model.config, 3, 16)
    run = tf.function(lambda i, m, knobs: contrastive_search(model.network, i, m, knobs, key), jit_compile=True)
    out = run(tf.constant(padded, tf.int32), tf.constant(padded_mask, tf.int32),
              make_knobs(cfg, penalty_alpha=tf.constant(0.0)))
    np.testing.assert_array_equal(out.sequences.numpy()[:, 16:], greedy[:, ids.shape[1]:])


@pytest.mark.slow
def test_scores_equal_a_full_forward_pass(hf_and_minigen):
    """Each chosen token's log-prob, computed from the cache the loop keeps (the chosen candidate's
    keys/values moved into place, the others dropped), equals the one a fresh forward pass over the
    finished sequence gives: a wrong cache move or attention mask changes the logits after it."""
    _, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(47), 512, [3, 10, 6], pad_id=PAD)
    out = contrastive(model, ids, mask, 0.8, 8, 16, eos_token_id=[], output_logprobs=True)
    full_mask = np.concatenate([mask, np.ones((3, 16), mask.dtype)], axis=1)
    logits = model.logits(out.sequences, full_mask)[:, ids.shape[1] - 1:-1]  # [rows, 16, vocab]: next-token logits
    logprobs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    chosen = np.take_along_axis(logprobs, out.sequences[:, ids.shape[1]:, None], axis=-1)[..., 0]
    np.testing.assert_allclose(out.logprobs, chosen, atol=1e-4)
    greedy = model.generate(ids, mask, max_new_tokens=16, eos_token_id=[], pad_token_id=PAD)
    assert not np.array_equal(out.sequences, greedy)  # candidates other than the first were chosen


@pytest.mark.slow  # make soak; the default run's parity grid is a left-padded batch
def test_batch_rows_equal_prompts_alone(hf_and_minigen):
    """Padding never enters the similarity (nor the positions): each row as if alone."""
    _, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(45), 512, [2, 9, 5], pad_id=PAD)
    batch = contrastive(model, ids, mask, 0.6, 4, 12)
    for row in range(3):
        start = mask[row].argmax()
        alone = contrastive(model, ids[row:row + 1, start:], None, 0.6, 4, 12)
        np.testing.assert_array_equal(batch[row, start:], alone[0])


@pytest.mark.slow
def test_alpha_is_a_tensor_and_top_k_is_compiled(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids = np.arange(1, 7)[None, :]
    contrastive(model, ids, None, 0.6, 4, 8)
    traces = model.trace_count
    outputs = {alpha: contrastive(model, ids, None, alpha, 4, 8).tobytes() for alpha in (0.3, 0.5, 0.8)}
    assert model.trace_count == traces  # new alphas reuse the compiled function
    contrastive(model, ids, None, 0.6, 3, 8)
    assert model.trace_count == traces + 1  # a new candidate count is a new graph
    assert len(set(outputs.values())) > 1  # and alpha does reach the graph


@pytest.mark.slow
def test_streaming_gives_generate_tokens(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(46), 512, [4, 7], pad_id=PAD)
    whole = contrastive(model, ids, mask, 0.6, 4, 13)
    chunks = list(model.stream_tokens(ids, mask, chunk_size=5, max_new_tokens=13, penalty_alpha=0.6, top_k=4,
                               pad_token_id=PAD))
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1), whole[:, ids.shape[1]:])


@pytest.mark.parametrize("options, message", [
    (dict(penalty_alpha=1.5), "penalty_alpha must be None or a number in \\[0, 1\\]"),
    (dict(penalty_alpha=-0.1), "penalty_alpha must be"),
    (dict(penalty_alpha="0.5"), "penalty_alpha must be"),
    (dict(penalty_alpha=0.6, num_beams=2), "penalty_alpha \\(contrastive search\\) needs num_beams=1"),
    (dict(penalty_alpha=0.6, do_sample=True), "needs num_beams=1 and do_sample=False"),
    (dict(penalty_alpha=0.6, top_k=600), "top_k \\(contrastive search's candidates\\) must be at most"),
    (dict(penalty_alpha=0.6, prompt_lookup_num_tokens=3), "does not combine with speculative decoding"),
    (dict(penalty_alpha=0.6, return_state=True), "not contrastive search"),
])
def test_bad_options_are_refused_by_name(hf_and_minigen, options, message):
    _, _, model = hf_and_minigen("tiny")
    with pytest.raises(ValueError, match=message):
        model.generate(np.arange(1, 5)[None, :], max_new_tokens=4, **options)
