"""The README's and docs/'s examples run as written (they use the shipped model), so the docs cannot
drift from the code: every fenced ```python block, page after page in one namespace, every command
whose output a page shows, and the README's export command."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# the pages in the order their Python blocks run (a later page may use a name an earlier one defined)
PAGES = [README] + [ROOT / "docs" / name for name in (
    "generation.md", "strategies.md", "parity.md", "cli.md", "convert.md", "serving.md", "speed.md",
    "how-it-works.md", "troubleshooting.md")]
README_LINES = 250  # a newcomer's five minutes; the rest lives in docs/


def python_blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_every_page_is_run_and_the_readme_stays_short():
    assert sorted(PAGES[1:]) == sorted((ROOT / "docs").glob("*.md")), "list each docs page in PAGES"
    assert len(README.read_text(encoding="utf-8").splitlines()) <= README_LINES


def test_readme_python_examples_run(capsys):
    namespace: dict = {}
    ran = 0
    for page in PAGES:
        for number, block in enumerate(python_blocks(page), 1):
            where = f"{page.relative_to(ROOT)} python block {number}"
            try:
                exec(compile(block, where, "exec"), namespace)  # noqa: S102
            except Exception as e:  # noqa: BLE001 - name the block that broke
                raise AssertionError(f"{where} fails: {type(e).__name__}: {e}\n{block}") from e
            ran += 1
    assert len(python_blocks(README)) >= 2 and ran >= 6
    assert capsys.readouterr().out  # the streaming example printed text


def command_outputs(text: str) -> list[tuple[str, str]]:
    """(command, the output shown under it) for every ```bash block of one `minigen ...` line that a
    ```text block follows at once: what the docs claim the command prints."""
    return re.findall(r"```bash\n(minigen [^\n]*)\n```\n```text\n(.*?)\n```", text, flags=re.S)


def test_readme_outputs_are_what_their_commands_print(cli):
    import shlex

    shown = [pair for page in PAGES for pair in command_outputs(page.read_text(encoding="utf-8"))]
    assert len(shown) >= 2
    for command, expected in shown:
        done = cli(*shlex.split(command)[1:])
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert done.stdout.rstrip("\n") == expected, f"the docs show another output for: {command}"


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
