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
