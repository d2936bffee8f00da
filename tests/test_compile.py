"""Compilation: one trace per bucket and graph-shaping option set, all of it inside XLA, bad input before any."""

from __future__ import annotations

import io
import os
import re
import resource
import sys

import numpy as np
import pytest


def test_same_bucket_and_new_knob_values_do_not_retrace(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    options = dict(max_new_tokens=6, do_sample=True, pad_to_multiple_of=16, top_k=0)
    model.generate([[1, 2, 3]], temperature=0.7, top_p=0.9, seed=(0, 1), **options)
    traces = model.trace_count
    model.generate([[9, 8, 7, 6, 5, 4, 3]], temperature=1.3, top_p=0.5, seed=(5, 1), **options)
    model.generate([[4] * 16], temperature=0.2, top_p=1.0, repetition_penalty=1.0, **options)
    model.generate([[1, 2], [3, 4]], [[0, 1], [1, 1]], temperature=0.9, top_p=0.95, **options)[:, :0]  # new batch
    assert model.trace_count == traces + 1  # only the batch-2 call traced
    model.generate([[4] * 17], temperature=0.2, **options)  # a new bucket (32) traces once more
    assert model.trace_count == traces + 2


def test_beam_length_penalty_does_not_retrace(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    model.generate([[1, 2, 3]], max_new_tokens=5, num_beams=3, length_penalty=1.0)
    traces = model.trace_count
    for lp in (0.3, 2.0, -1.0):
        model.generate([[5, 2, 3, 9]], max_new_tokens=5, num_beams=3, length_penalty=lp)
    assert model.trace_count == traces


@pytest.mark.parametrize("options", [dict(), dict(do_sample=True, top_p=0.9), dict(num_beams=3)],
                         ids=["greedy", "sample", "beam"])
def test_whole_generation_is_one_xla_computation(hf_and_minigen, options):
    """The compiled function is jit_compile=True, and its XLA HLO holds the decode while loop."""
    import tensorflow as tf

    from minigen.generation.config import GenerationConfig
    from minigen.generation.core import compile_key, make_knobs
    from minigen.generation.generate import compiled_generate

    _, _, model = hf_and_minigen("tiny")
    cfg = GenerationConfig(max_new_tokens=4, **options).check(model.config)
    key = compile_key(cfg, model.config, 1, 16)
    fn = compiled_generate(model, key)
    rows = key.rows
    ids = tf.zeros([rows, 16], tf.int32) + 3
    mask = tf.ones([rows, 16], tf.int32)
    assert fn._jit_compile is True
    hlo = fn.experimental_get_compiler_ir(ids, mask, make_knobs(cfg))(stage="hlo")
    assert "while" in hlo and "dynamic-update-slice" in hlo


BAD = [
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, top_p=0.0), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=200), "n_positions"),
    (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(seed=5), "seed"),
    (dict(eos_token_id=10_000), "eos_token_id"),
    (dict(temprature=0.5), "unknown generate option"),
    (dict(repetition_penalty=0), "repetition_penalty"),
]


@pytest.mark.parametrize("options, message", BAD, ids=[m for _, m in BAD])
def test_bad_options_raise_before_compiling(hf_and_minigen, options, message):
    _, _, model = hf_and_minigen("tiny")
    traces, compiled = model.trace_count, len(model.compile_cache)
    with pytest.raises(ValueError, match=message):
        model.generate([[1, 2, 3]], **options)
    assert (model.trace_count, len(model.compile_cache)) == (traces, compiled)


@pytest.mark.parametrize(
    "ids, mask, message",
    [([[]], None, "empty"), ([[1, 2]], [[0, 0]], "all padding"), ([[1, 600]], None, "outside the vocabulary"),
     ([[1, 2], [3]], None, "same length"), ([[1, 2]], [[1, 2]], "only 0")],
)
def test_bad_prompts_raise_before_compiling(hf_and_minigen, ids, mask, message):
    _, _, model = hf_and_minigen("tiny")
    traces = model.trace_count
    with pytest.raises(ValueError, match=message):
        model.generate(np.array(ids, dtype=object) if message == "same length" else ids, mask, max_new_tokens=3)
    assert model.trace_count == traces


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.slow
def test_soak_2000_calls_no_retrace_no_memory_growth(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    rng = np.random.default_rng(0)

    def call(i):
        n = int(rng.integers(1, 17))
        ids = rng.integers(0, 512, size=(2, n))
        model.generate(ids, max_new_tokens=8, do_sample=True, temperature=float(rng.uniform(0.3, 1.5)),
                       top_p=float(rng.uniform(0.5, 1.0)), top_k=int(rng.integers(0, 100)), seed=(i, 0))

    for i in range(100):  # warm-up
        call(i)
    traces, before = model.trace_count, _rss_mb()
    for i in range(2000):
        call(i)
    after = _rss_mb()
    assert model.trace_count == traces
    assert after <= before * 1.05, (before, after)


@pytest.mark.slow
def test_many_compiles_give_no_tensorflow_retracing_warning(hf_and_minigen):
    import logging

    _, _, model = hf_and_minigen("tiny")
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(handler)
    try:
        for n in range(11, 18):  # seven compile keys in a row, as a sweep over max_new_tokens makes
            model.generate([[1, 2, 3]], max_new_tokens=n)
    finally:
        tf_logger.removeHandler(handler)
    assert not [m for m in seen if "retracing" in m], seen


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.slow
def test_a_long_compile_is_announced_on_a_terminal_only(hf_and_minigen, monkeypatch):
    import minigen.status

    _, _, model = hf_and_minigen("tiny")
    monkeypatch.setattr(minigen.status, "NOTICE_AFTER", 0.0)  # every compile counts as long here
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model.generate([[1, 2, 3]], max_new_tokens=19)
    said = terminal.getvalue()
    assert re.fullmatch(r"minigen: compiling greedy for 1 row x bucket 16 \(\+19 new\) \.\.\. \d+\.\d s\n", said), said
    model.generate([[4, 5, 6]], max_new_tokens=19)  # compiled already: nothing to announce
    assert terminal.getvalue() == said
    piped = io.StringIO()  # not a terminal: silent (the minigen logger reports compiles instead)
    monkeypatch.setattr(sys, "stderr", piped)
    model.generate([[1, 2, 3]], max_new_tokens=21)
    assert piped.getvalue() == ""


@pytest.mark.slow
def test_verbose_streaming_reports_speed(text_model_dir, cli):
    path, _ = text_model_dir
    result = cli("generate", "The quick", "--model", path, "--max-new-tokens", 6, "--stream", "--verbose")
    assert result.returncode == 0, result.stderr
    assert "minigen: compiled streaming greedy for 1 row x bucket 16 (+6 new)" in result.stderr
    assert re.search(r"minigen: streamed 1 x \d+ tokens in [\d.]+s \([\d.]+ tok/s", result.stderr), result.stderr
