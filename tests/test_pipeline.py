"""Batch generation on Apache Beam (DirectRunner): one result per valid prompt, equal to generate_text;
error records for invalid prompts; one request engine per worker (the command: tests/test_batch_command.py)."""

from __future__ import annotations

import json
import os

import pytest

from helpers import corpus_prompts, write_input

pytest.importorskip("apache_beam", reason="Apache Beam is not installed (pip install -e .[beam])")

MAX_NEW = 6


@pytest.fixture(scope="module")
def lm():
    import minigen

    return minigen.load()


@pytest.mark.slow
def test_direct_runner_pipeline(tmp_path, lm):
    from minigen.pipeline import run_pipeline

    prompts = corpus_prompts(48)
    invalid = [json.dumps({"id": "empty", "prompt": ""}), json.dumps({"id": "long", "prompt": "night " * 300}),
               '{"id": "surrogate", "prompt": "a \\ud800 b"}', '{"id": "\\udfff", "prompt": "fine"}']
    lines = write_input(tmp_path / "in.jsonl", prompts, invalid)
    with open(tmp_path / "in.jsonl", "ab") as f:  # one line that is not UTF-8 at all (line 53)
        f.write(b'{"id": "latin1", "prompt": "caf\xe9"}\n')
    counts = run_pipeline(str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), model=None, rows=8,
                          max_new_tokens=MAX_NEW)
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    errors = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text(encoding="utf-8").splitlines()]

    # nothing lost: one record per input line, joined back by id; bad lines do not sink the job
    assert len(results) == 48 and len(errors) == 5
    reasons = {e["id"]: e["error"] for e in errors}
    assert set(reasons) == {"empty", "long", "surrogate", 13, 52}
    assert "empty" in reasons["empty"]
    assert "n_positions" in reasons["long"]
    assert "lone surrogate" in reasons["surrogate"] and "lone surrogate" in reasons[13]
    assert "line 53 is not UTF-8 text (byte 0xe9" in reasons[52]
    expected_ids = [json.loads(line).get("id", n) if line.startswith("{") else n for n, line in enumerate(lines)
                    if line not in invalid]
    assert sorted(map(str, (r["id"] for r in results))) == sorted(map(str, expected_ids))

    # each text is what generate_text gives for that prompt
    want = dict(zip(prompts, lm.generate_text(prompts, max_new_tokens=MAX_NEW)))
    for r in results:
        assert r["text"] == want[r["prompt"]], r
        assert r["prompt_tokens"] == len(lm.tokenizer.encode(r["prompt"]))
        assert 1 <= r["new_tokens"] <= MAX_NEW

    # the worker's request engine compiles its pieces once (DirectRunner: one worker, one model): the
    # decode step, a prefill per piece width (one or several rows), keeping and reusing prompts
    from minigen.engine import PIECE_WIDTHS
    assert 1 < counts["compiles"] <= 1 + 2 * len(PIECE_WIDTHS) + 2, counts
    assert counts["prompts_generated"] == 48 and counts["invalid_prompts"] == 5


@pytest.mark.slow
def test_handler_runs_each_batch_on_one_engine_per_worker(lm):
    """Every batch after the first reuses the worker's engine: nothing compiles again, and the
    texts are generate_text's."""
    from minigen.pipeline import MinigenModelHandler

    prompts = corpus_prompts(12)
    examples = [{"id": i, "prompt": p, "prompt_tokens": len(lm.tokenizer.encode(p))} for i, p in enumerate(prompts)]
    handler = MinigenModelHandler(rows=4, max_new_tokens=MAX_NEW)
    first = [r.inference["text"] for r in handler.run_inference(examples[:6], lm)]
    traces = lm.trace_count
    second = [r.inference["text"] for r in handler.run_inference(examples[6:][::-1], lm)]
    assert lm.trace_count == traces
    assert first + second[::-1] == lm.generate_text(prompts, max_new_tokens=MAX_NEW)


@pytest.mark.slow
def test_handler_max_time_cuts_each_generate_call(lm):
    """max_time in a batch job: each generate call streams and stops once the time is up (after its
    first chunk of 8 tokens here), and every result says whether it was cut."""
    from minigen.pipeline import MinigenModelHandler

    prompts = corpus_prompts(3)
    examples = [{"id": i, "prompt": p, "prompt_tokens": len(lm.tokenizer.encode(p))} for i, p in enumerate(prompts)]
    whole = [r.inference for r in MinigenModelHandler(rows=4, max_new_tokens=24, max_time=600.0).run_inference(examples, lm)]
    cut = [r.inference for r in MinigenModelHandler(rows=4, max_new_tokens=24, max_time=1e-9).run_inference(examples, lm)]
    assert [r["text"] for r in whole] == lm.generate_text(prompts, max_new_tokens=24)
    assert not any(r["truncated"] for r in whole)
    for short, full in zip(cut, whole):
        assert short["truncated"] and short["new_tokens"] == 8 and full["new_tokens"] > 8, (short, full)
        assert full["text"].startswith(short["text"])
    with pytest.raises(ValueError, match="streaming supports greedy search, sampling and contrastive search"):
        MinigenModelHandler(num_beams=2, max_time=5.0)
