"""`make test`: the default test suite in a few fresh pytest processes, one after another.

Why: TensorFlow keeps every XLA executable it compiled until the process exits (no API evicts
them; measured ~14 MB per compile of a 2-layer model, ~60 MB for the 6-layer shipped one), and the
suite compiles a few hundred functions. One process peaked at 8.4 GB, three groups at 5.3 GB; a
fresh process per group bounds the peak by the largest group. Each group pays its own start-up (~10 s: TensorFlow, torch,
its fixtures).

Prints each group's pytest output, then one closing line for the whole run
("N passed, N failed", then ", N skipped" if any); exits non-zero if any group did.
Extra arguments go to every pytest call (e.g. `python tests/suite.py -x`).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent

# Groups of test modules, balanced by measured duration (compiles dominate); a module not listed
# runs in the last group, so a new test file is never skipped.
GROUPS = [
    ["test_speculative.py", "test_model.py", "test_sampling.py", "test_config.py"],
    ["test_cli.py", "test_compile.py", "test_tokenizer.py"],
    ["test_readme.py", "test_text.py", "test_export.py", "test_cli_safety.py", "test_pipeline.py",
     "test_input_errors.py"],
    ["test_shipped.py", "test_train.py", "test_generate.py", "test_converter.py"],
]
COUNTED = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed", "deselected")


def groups() -> list[list[str]]:
    listed = {name for group in GROUPS for name in group}
    rest = sorted(p.name for p in HERE.glob("test_*.py") if p.name not in listed)
    found = [[name for name in group if (HERE / name).exists()] for group in GROUPS]
    found[-1] += rest
    return [g for g in found if g]


def run_passing_through(cmd: list[str]) -> tuple[str, int]:
    """Run `cmd`, showing its output as it comes (pytest's progress dots included); returns
    (all of its output, exit code)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    seen = bytearray()
    while chunk := os.read(proc.stdout.fileno(), 4096):
        seen += chunk
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    return seen.decode("utf-8", errors="replace"), proc.wait()


def main(extra: list[str]) -> int:
    totals = dict.fromkeys(COUNTED, 0)
    worst, began = 0, time.perf_counter()
    for number, group in enumerate(groups(), 1):
        print(f"== group {number}: {' '.join(group)}", flush=True)
        output, returncode = run_passing_through([sys.executable, "-m", "pytest", *extra,
                                                  *(str(HERE / name) for name in group)])
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        for count, word in re.findall(r"(\d+) (\w+)", summary):
            word = "errors" if word == "error" else word
            if word in totals:
                totals[word] += int(count)
        if returncode not in (0, 5):  # 5: this group selected no test (e.g. all deselected)
            worst = worst or returncode
    other = ", ".join(f"{totals[w]} {w}" for w in ("errors", "xfailed", "xpassed", "deselected") if totals[w])
    print(f"all {len(groups())} groups in {time.perf_counter() - began:.0f} s{f' ({other})' if other else ''}:")
    closing = f"{totals['passed']} passed, {totals['failed'] + totals['errors']} failed"  # errors count as failed
    print(closing + (f", {totals['skipped']} skipped" if totals["skipped"] else ""))
    if totals["passed"] == 0 and not worst:
        return 5
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
