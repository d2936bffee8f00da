"""Batch generation on Apache Beam (DirectRunner): one result per valid prompt, equal to generate_text;
error records for invalid prompts; one request engine per worker; the `minigen batch` command."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("apache_beam", reason="Apache Beam is not installed (pip install -e .[beam])")

MAX_NEW = 6


def corpus_prompts(n: int) -> list[str]:
    """n prompts of 1 to ~40 words: several buckets of 16 tokens."""
    words = ("the old man said that it was a dark and stormy night when the ship came into the harbour "
             "and nobody on the shore could see her lights until she was very near").split()
    rng = np.random.default_rng(7)
    return [" ".join(words[s:s + k]) for s, k in zip(rng.integers(0, 10, n), rng.integers(1, 30, n))]


@pytest.fixture(scope="module")
def lm():
    import minigen

    return minigen.load()


def write_input(path, prompts, invalid):
    lines = []
    for i, p in enumerate(prompts):  # a mix of ids given and ids from line numbers, objects and strings
        lines.append(json.dumps({"id": f"p{i}", "prompt": p}) if i % 3 else json.dumps(p))
    lines[10:10] = invalid
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


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


def test_minigen_batch_command(tmp_path, cli):
    import glob
    import tempfile

    beam_temp = lambda: set(glob.glob(os.path.join(tempfile.gettempdir(), "beam-temp*")))  # noqa: E731
    temp_before = beam_temp()
    write_input(tmp_path / "in.jsonl", corpus_prompts(3), [])
    out = tmp_path / "out.jsonl"
    run = lambda *extra: cli("batch", "--input", tmp_path / "in.jsonl", "--output", out,  # noqa: E731
                             "--max-new-tokens", "4", *extra)
    done = run("--direct_num_workers=1")  # a Beam pipeline option passes through
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 3
    assert "3 prompts generated, 0 invalid" in done.stderr
    again = run()  # never overwrites without being asked
    assert again.returncode == 2 and "exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    missing = cli("batch", "--input", tmp_path / "nope.jsonl", "--output", tmp_path / "o2.jsonl")
    assert missing.returncode == 2 and "no input file matches" in missing.stderr
    typo = cli("batch", "--input", tmp_path / "in.jsonl", "--output", tmp_path / "o3.jsonl", "--max-new-tokns", "8")
    assert typo.returncode == 2 and "unrecognized option --max-new-tokns; did you mean --max-new-tokens?" in typo.stderr
    assert not (tmp_path / "o3.jsonl").exists()
    # the pipeline leaves no Beam temporary directories behind, beside the output or in the temp directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.errors.jsonl", "out.jsonl"]
    assert beam_temp() <= temp_before


def test_batch_refuses_a_bad_tokenizer_before_the_pipeline_and_nan_lines(tmp_path, cli, text_model_dir):
    import shutil

    path, _ = text_model_dir
    broken = tmp_path / "m"
    shutil.copytree(path, broken)
    (broken / "tokenizer.json").write_text("{ not json")
    (tmp_path / "in.jsonl").write_text('{"id": NaN, "prompt": "The quick"}\n"To be"\n', encoding="utf-8")
    bad = cli("batch", "--input", tmp_path / "in.jsonl", "--output", tmp_path / "o.jsonl", "--model", broken)
    assert bad.returncode == 1 and "could not load its tokenizer" in bad.stderr
    assert "minigen batch: " not in bad.stderr and "Traceback" not in bad.stderr  # no pipeline was started
    done = cli("batch", "--input", tmp_path / "in.jsonl", "--output", tmp_path / "o.jsonl", "--model", path,
               "--max-new-tokens", "2")
    assert done.returncode == 0, done.stderr
    assert "1 prompt generated, 1 invalid" in done.stderr
    (record,) = [json.loads(line) for line in (tmp_path / "o.errors.jsonl").read_text().splitlines()]
    assert record["id"] == 0 and "NaN is not a JSON value" in record["error"]


def test_batch_ctrl_c_exits_130_says_what_finished_and_cleans_up(tmp_path, text_model_dir):
    """A real SIGINT to a real `minigen batch` once its worker has generated a batch: Beam would wrap
    it in a RuntimeError with a traceback; the command says it was interrupted, exits 130 and leaves
    no Beam temporary directory beside the output."""
    import signal
    import subprocess
    import sys
    import time

    path, _ = text_model_dir
    with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as f:
        for i in range(3000):
            f.write(json.dumps({"id": i, "prompt": f"The quick brown fox {i}"}) + "\n")
    child = subprocess.Popen([sys.executable, "-m", "minigen.cli", "batch", "--input", str(tmp_path / "in.jsonl"),
                              "--output", str(tmp_path / "out.jsonl"), "--model", str(path), "--max-new-tokens", "8",
                              "--rows", "2"], stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines, deadline = [], time.time() + 240
    for line in child.stderr:
        lines.append(line)
        if "generated by this worker" in line or time.time() > deadline:
            break
    child.send_signal(signal.SIGINT)
    _, rest = child.communicate(timeout=120)
    err = "".join(lines) + rest
    assert child.returncode == 130, err[-2000:]
    assert "minigen: interrupted: " in err and "prompts had been generated" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
