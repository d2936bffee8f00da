"""The README's and docs/'s Python examples run as written (they use the shipped model), so the docs
cannot drift from the code: every fenced ```python block, page after page in one namespace
(tests/test_docs_commands.py runs the commands the pages show)."""

from __future__ import annotations

import pathlib
import re

import pytest

from helpers import DOC_PAGES as PAGES
from helpers import README, ROOT

README_LINES = 250  # a newcomer's five minutes; the rest lives in docs/


def python_blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def test_every_page_is_run_and_the_readme_stays_short():
    assert sorted(PAGES[1:]) == sorted((ROOT / "docs").glob("*.md")), "list each docs page in PAGES"
    assert len(README.read_text(encoding="utf-8").splitlines()) <= README_LINES


def run_blocks(pages, monkeypatch) -> int:
    """Run every ```python block of `pages`, page after page in one namespace; returns how many ran."""
    import minigen

    # every page loads the shipped model again; one object per set of arguments lets the pages share
    # its compiled functions (the examples run as written; only repeated loading is saved)
    loaded: dict = {}
    load = minigen.load

    def load_once(*args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = load(*args, **kwargs)
        return loaded[key]

    monkeypatch.setattr(minigen, "load", load_once)
    namespace: dict = {}
    ran = 0
    for page in pages:
        for number, block in enumerate(python_blocks(page), 1):
            where = f"{page.relative_to(ROOT)} python block {number}"
            try:
                exec(compile(block, where, "exec"), namespace)  # noqa: S102
            except Exception as e:  # noqa: BLE001 - name the block that broke
                raise AssertionError(f"{where} fails: {type(e).__name__}: {e}\n{block}") from e
            ran += 1
    return ran


def test_readme_python_examples_run(capsys, monkeypatch):
    assert run_blocks([README], monkeypatch) >= 2
    assert capsys.readouterr().out  # the streaming example printed text


@pytest.mark.slow
def test_docs_python_examples_run(capsys, monkeypatch):
    """The README's blocks, then every docs/ page's, in one namespace (a page may use the README's names)."""
    assert PAGES[0] == README and run_blocks(PAGES, monkeypatch) >= 6
    assert capsys.readouterr().out
