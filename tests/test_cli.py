"""The `minigen` command, run in-process through `minigen.cli.main` (the `cli` fixture); the
installed entry point itself is exercised by test_shipped and test_cli_safety's pipe test."""

from __future__ import annotations

import json

import pytest

from conftest import PROMPTS, build_hf_model
from minigen.cli import RULE


@pytest.mark.slow
def test_cli_generate_matches_the_api(text_model_dir, cli):
    path, lm = text_model_dir
    result = cli("generate", PROMPTS[0], "--model", path, "--max-new-tokens", 8)
    assert result.returncode == 0, result.stderr
    assert result.stdout == PROMPTS[0] + lm.generate_text(PROMPTS[0], max_new_tokens=8)[0] + "\n"


@pytest.mark.slow
def test_cli_stdin_and_input_output_round_trip(text_model_dir, tmp_path, cli):
    path, lm = text_model_dir
    expected = lm.generate_text(PROMPTS, max_new_tokens=6)
    piped = cli("generate", "--model", path, "--max-new-tokens", 6, stdin="\n".join(PROMPTS) + "\n")
    assert piped.returncode == 0, piped.stderr
    # text: results separated by a rule line, since a continuation may hold newlines of its own
    assert piped.stdout == ("\n" + RULE + "\n").join(p + t for p, t in zip(PROMPTS, expected)) + "\n"
    as_jsonl = cli("generate", "--model", path, "--max-new-tokens", 6, "--format", "jsonl",
                   stdin="\n".join(PROMPTS) + "\n")
    records = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert records == [{"prompt": p, "text": t} for p, t in zip(PROMPTS, expected)]

    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = cli("generate", "--model", path, "--max-new-tokens", 6, "--input", tmp_path / "prompts.txt",
                 "--output", out, "--batch-size", 3)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == PROMPTS
    assert [r["text"] for r in records] == expected
    assert "4/4 prompts" in result.stderr  # progress bar over two batches


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["generate", "x", "--model", "/nonexistent/model"], 1, "does not exist"),
        (["generate", "x", "--model", "{model}", "--top-p", "1.5"], 2, "--top-p"),  # flags, not Python names
        (["generate", "x", "--model", "{model}", "--max-new-tokens", "zero"], 2, "--max-new-tokens"),
        (["generate", "", "--model", "{model}"], 2, "empty"),
        (["generate", "x", "--model", "{model}", "--no-such-flag"], 2, "unrecognized"),
        (["generate", "x", "--model", "{model}", "--max-time", "2"], 2, "--max-time is read between streamed chunks"),
    ],
)


def test_cli_bad_usage_is_one_line_without_traceback(text_model_dir, args, code, message, cli):
    path, _ = text_model_dir
    result = cli(*[a.replace("{model}", str(path)) for a in args])
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") <= 2  # argparse prints usage + one error line


def test_cli_convert_is_the_converter(tmp_path, cli):
    hf = build_hf_model("tiny")
    hf.save_pretrained(tmp_path / "hf")
    result = cli("convert", tmp_path / "hf", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    again = cli("convert", tmp_path / "hf", tmp_path / "out")
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow
def test_cli_stream_equals_non_streamed(text_model_dir, cli):
    path, _ = text_model_dir
    plain = cli("generate", PROMPTS[1], "--model", path, "--max-new-tokens", 9)
    streamed = cli("generate", PROMPTS[1], "--model", path, "--max-new-tokens", 9, "--stream")
    assert plain.returncode == 0 and streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == plain.stdout
    timed = cli("generate", PROMPTS[1], "--model", path, "--max-new-tokens", 9, "--stream", "--max-time", 600)
    assert timed.returncode == 0 and timed.stdout == plain.stdout, timed.stderr


@pytest.mark.slow
def test_cli_verbose_reports_compile_and_speed(text_model_dir, cli):
    path, _ = text_model_dir
    result = cli("generate", "--model", path, "--max-new-tokens", 5, "--verbose", "--batch-size", 1,
                 stdin=PROMPTS[0] + "\n" + PROMPTS[1] + "\n")
    assert result.returncode == 0, result.stderr
    # the request engine: each piece's one-off XLA compile with its time, then the run's speed
    assert result.stderr.count("minigen: compiled the engine's decode step") == 1
    assert "minigen: 2 prompts over 1 slots of the request engine in" in result.stderr and "tok/s" in result.stderr
    # options the engine does not take run as generate calls, reported per call
    result = cli("generate", "--model", path, "--max-new-tokens", 5, "--verbose", "--batch-size", 1, "--num-beams", 2,
                 stdin=PROMPTS[0] + "\n" + PROMPTS[1] + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("minigen: compiled beam") == 1  # the one-off XLA compile, with its time
    assert "minigen: generated 1 x 5 tokens in" in result.stderr and "tok/s" in result.stderr  # the second batch


def test_make_demo_runs(capsys, monkeypatch):
    """What `make demo` runs (the Makefile's demo target calls `python -m minigen.demo`), in-process;
    it imports TensorFlow through the muting import (tests/test_trust.py checks the muting itself in a
    subprocess of weights_tools, which shares it)."""
    from pathlib import Path

    import minigen.demo
    from minigen.demo import main

    muted = []
    monkeypatch.setattr(minigen.demo, "import_tensorflow_quietly", lambda: muted.append(True))

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "-m minigen.demo" in makefile
    # make demo installs the runtime only: its prerequisite's recipe installs no extra and no torch
    assert "\ndemo: $(RUNTIME)\n" in makefile
    runtime_recipe = makefile.split("\n$(RUNTIME):", 1)[1].split("\n\n", 1)[0]
    assert "pip install -q -e .\n" in runtime_recipe + "\n" and "[" not in runtime_recipe and "torch" not in runtime_recipe
    assert main(["--max-new-tokens", "3"]) == 0
    stdout = capsys.readouterr().out
    assert "greedy" in stdout and "beam search" in stdout
    assert muted == [True]


@pytest.mark.slow
def test_cli_speculative_flags_equal_plain_greedy(cli):
    """--assistant-model (the shipped draft) and --prompt-lookup print plain greedy's text."""
    prompt = "It was the best of times, it was the worst of times,"
    plain = cli("generate", prompt, "--max-new-tokens", 24)
    draft = cli("generate", prompt, "--max-new-tokens", 24, "--assistant-model", "gutenberg-2l", "--verbose")
    lookup = cli("generate", prompt, "--max-new-tokens", 24, "--prompt-lookup", 6)
    assert plain.returncode == draft.returncode == lookup.returncode == 0, draft.stderr + lookup.stderr
    assert draft.stdout == plain.stdout and lookup.stdout == plain.stdout
    assert "candidates accepted per step" in draft.stderr

