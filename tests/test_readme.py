"""The README's Python examples run as written (they use the shipped model), so the README cannot
drift from the code: every fenced ```python block, in order, in one namespace."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_examples_run(capsys):
    blocks = python_blocks()
    assert len(blocks) >= 3
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)  # noqa: S102
        except Exception as e:  # noqa: BLE001 - name the block that broke
            raise AssertionError(f"README python block {number} fails: {type(e).__name__}: {e}\n{block}") from e
    assert capsys.readouterr().out  # the streaming example printed text


def command_outputs(text: str) -> list[tuple[str, str]]:
    """(command, the output shown under it) for every ```bash block of one `minigen ...` line that a
    ```text block follows at once: what the docs claim the command prints."""
    return re.findall(r"```bash\n(minigen [^\n]*)\n```\n```text\n(.*?)\n```", text, flags=re.S)


def test_readme_outputs_are_what_their_commands_print(cli):
    import shlex

    shown = command_outputs(README.read_text(encoding="utf-8"))
    assert len(shown) >= 2
    for command, expected in shown:
        done = cli(*shlex.split(command)[1:])
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert done.stdout.rstrip("\n") == expected, f"README shows another output for: {command}"


def test_readme_export_command_runs_as_written(cli, tmp_path, monkeypatch):
    """The README's `minigen export` line, verbatim, in a fresh directory (its parents do not exist)."""
    import shlex

    bash = "\n".join(re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S))
    command = next(line for line in bash.splitlines() if line.startswith("minigen export "))
    monkeypatch.chdir(tmp_path)
    done = cli(*shlex.split(command)[1:])
    assert done.returncode == 0, done.stderr
    out = shlex.split(command)[3]
    assert (tmp_path / out / "saved_model.pb").is_file()
