"""The commands the README and docs/ show run as written: every command whose output a page shows
prints exactly that output, and the README's `minigen export` line works in a fresh directory."""

from __future__ import annotations

import re
import shlex
import pytest

from helpers import DOC_PAGES, README


def command_outputs(text: str) -> list[tuple[str, str]]:
    """(command, the output shown under it) for every ```bash block of one `minigen ...` line that a
    ```text block follows at once: what the docs claim the command prints."""
    return re.findall(r"```bash\n(minigen [^\n]*)\n```\n```text\n(.*?)\n```", text, flags=re.S)


@pytest.mark.slow
def test_readme_outputs_are_what_their_commands_print(cli):
    shown = [pair for page in DOC_PAGES for pair in command_outputs(page.read_text(encoding="utf-8"))]
    assert len(shown) >= 2
    for command, expected in shown:
        done = cli(*shlex.split(command)[1:])
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert done.stdout.rstrip("\n") == expected, f"the docs show another output for: {command}"


@pytest.mark.slow
def test_readme_export_command_runs_as_written(cli, tmp_path, monkeypatch):
    """The README's `minigen export` line, verbatim, in a fresh directory (its parents do not exist)."""
    bash = "\n".join(re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S))
    command = next(line for line in bash.splitlines() if line.startswith("minigen export "))
    monkeypatch.chdir(tmp_path)
    done = cli(*shlex.split(command)[1:])
    assert done.returncode == 0, done.stderr
    out = shlex.split(command)[3]
    assert (tmp_path / out / "saved_model.pb").is_file()
