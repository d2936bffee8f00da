"""The `minigen` command never loses a user's data and answers bad input with one line.

In-process through `minigen.cli.main` (no TensorFlow start-up per case); one real subprocess for
a closed stdout pipe, which only a real pipe shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from minigen.cli import main

FAST = ["--max-new-tokens", "2"]


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str, code_text: str = "minigen: error:") -> bool:
    """The error is one line (after any finished progress-bar line), with no traceback."""
    lines = err.splitlines()
    return len(lines) >= 1 and lines[-1].startswith(code_text) and code_text not in "".join(lines[:-1]) \
        and "Traceback" not in err and err.endswith("\n")


def prompts_file(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_output_is_never_overwritten_without_overwrite(tmp_path, capsys):
    prompts = prompts_file(tmp_path / "in.txt", ["It was a dark night", "Call me"])
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    code, _, err = run(capsys, "generate", "--input", str(prompts), "--output", str(out), *FAST)
    assert code == 2 and one_line_error(err) and "exists" in err and "--overwrite" in err
    assert out.read_text() == "precious\n"
    code, _, err = run(capsys, "generate", "--input", str(prompts), "--output", str(out), "--overwrite", *FAST)
    assert code == 0, err
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == ["It was a dark night", "Call me"]
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.jsonl"]  # no temporary file left


def test_output_equal_to_input_is_refused_even_with_overwrite(tmp_path, capsys):
    prompts = prompts_file(tmp_path / "in.txt", ["It was a dark night"])
    before = prompts.read_text()
    code, _, err = run(capsys, "generate", "--input", str(prompts), "--output", str(tmp_path / "." / "in.txt"),
                       "--overwrite", *FAST)
    assert code == 2 and one_line_error(err) and "would destroy the prompts" in err
    assert prompts.read_text() == before


def test_a_too_long_prompt_is_found_before_anything_is_written(tmp_path, capsys):
    lines = [f"prompt number {i}" for i in range(12)]
    lines[9] = "night " * 300  # line 10
    prompts = prompts_file(tmp_path / "in.txt", lines)
    code, _, err = run(capsys, "generate", "--input", str(prompts), "--output", str(tmp_path / "out.jsonl"),
                       "--batch-size", "2", *FAST)
    assert code == 2 and one_line_error(err) and "prompt 10 (line 10) has 301 tokens" in err and "n_positions" in err
    assert sorted(os.listdir(tmp_path)) == ["in.txt"]


def test_input_that_is_not_utf8_is_named_by_line(tmp_path, capsys):
    (tmp_path / "in.txt").write_bytes(b"good\nalso good\ncaf\xe9\n")
    code, _, err = run(capsys, "generate", "--input", str(tmp_path / "in.txt"), *FAST)
    assert code == 2 and one_line_error(err) and "line 3 is not UTF-8 text (byte 0xe9 at column 4)" in err
    (tmp_path / "bin").write_bytes(bytes(range(256)) * 4)  # binary garbage
    code, _, err = run(capsys, "generate", "--input", str(tmp_path / "bin"), *FAST)
    assert code == 2 and one_line_error(err) and "is not UTF-8 text" in err


@pytest.mark.slow
def test_ctrl_c_keeps_finished_lines_and_exits_130(tmp_path, capsys, monkeypatch):
    import minigen.engine

    real = minigen.engine.Engine.step
    calls = []

    def interrupted_on_second_chunk(self):  # one slot: the first chunk finishes the first prompt
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(minigen.engine.Engine, "step", interrupted_on_second_chunk)
    prompts = prompts_file(tmp_path / "in.txt", ["It was a dark night", "Call me", "The sea"])
    out = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "generate", "--input", str(prompts), "--output", str(out), "--batch-size", "1", *FAST)
    assert code == 130 and one_line_error(err, "minigen: interrupted:")
    assert "1 of 3 prompts finished" in err and "out.jsonl.partial" in err
    assert not out.exists()  # the output appears only when complete
    kept = (tmp_path / "out.jsonl.partial").read_text().splitlines()
    assert [json.loads(line)["prompt"] for line in kept] == ["It was a dark night"]
    calls.clear()
    code, stdout, err = run(capsys, "generate", "--input", str(prompts), "--batch-size", "1", *FAST)
    assert code == 130 and err.endswith("\nminigen: interrupted\n") and one_line_error(err, "minigen: interrupted")
    assert stdout.startswith("It was a dark night") and stdout.count("\n") == 1  # the finished line, whole


def test_usage_errors_found_before_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # no prefix matching: --prompt is not --prompt-lookup
        main(["generate", "--prompt", "Hello"])
    assert e.value.code == 2 and "unrecognized arguments: --prompt " in capsys.readouterr().err
    code, _, err = run(capsys, "generate", "Hello", "--model", str(tmp_path / "nowhere"), *FAST)
    assert code == 1 and one_line_error(err) and "does not exist" in err


def test_batch_checks_model_and_paths_before_the_pipeline(tmp_path, capsys):
    pytest.importorskip("apache_beam", reason="Apache Beam is not installed (pip install -e .[beam])")
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('"It was a dark night"\n')
    code, _, err = run(capsys, "batch", "--input", str(prompts), "--output", str(tmp_path / "o.jsonl"),
                       "--model", str(tmp_path / "missing-model"))
    assert code == 1 and one_line_error(err) and "does not exist" in err
    code, _, err = run(capsys, "batch", "--input", str(prompts), "--output", str(prompts), "--overwrite")
    assert code == 2 and one_line_error(err) and "would destroy the prompts" in err
    assert prompts.read_text() == '"It was a dark night"\n'
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl"]


@pytest.mark.slow
def test_closed_stdout_pipe_exits_quietly(tmp_path):
    prompts = prompts_file(tmp_path / "in.txt", ["It was a dark night"] * 40)
    done = subprocess.run(
        f"{sys.executable} -m minigen.cli generate --input {prompts} --batch-size 1 --max-new-tokens 2 | head -1; "
        "echo \"exit ${PIPESTATUS[0]}\" >&2",
        shell=True, capture_output=True, text=True, timeout=300, executable="/bin/bash",
    )
    assert done.stdout.startswith("It was a dark night") and done.stdout.count("\n") == 1
    assert done.stderr.endswith("exit 141\n"), done.stderr
    assert "Broken pipe" not in done.stderr and "Traceback" not in done.stderr and "error" not in done.stderr


def test_usage_errors_come_before_tensorflow_is_imported(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("x\n")
    check = (f"import sys; from minigen.cli import main; "
             f"code = main(['generate', 'Hello', '--output', {str(out)!r}]); "
             f"assert 'tensorflow' not in sys.modules, 'imported'; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "exists" in done.stderr and "imported" not in done.stderr, done.stderr
