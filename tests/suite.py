"""`make test`: the default test suite as fresh pytest processes, two at a time within a memory budget.

Why fresh processes: TensorFlow keeps every XLA executable it compiled until the process exits (no
API evicts them; ~20 MB per compile even of a 2-layer model), and the suite compiles a few hundred
functions: one process peaked at 8.4 GB. A process per group bounds what each one holds.
Why forked: each group's process is forked from this one after it has imported TensorFlow, torch,
transformers - ~4.5 s of imports on an idle 2-core machine, paid once instead of once per group. Nothing has run a TensorFlow op or a torch kernel before the fork, so
no runtime thread pool exists yet to be lost by it; each child starts its own.
Why two at a time: the suite is bound by XLA compiles, which run on one core, and the machines it
targets have two. A group starts only when its expected peak fits beside the running ones' within
BUDGET_GB; otherwise a smaller group that fits goes first, or it waits.

Memory is sampled every 0.5 s as the proportional set size (PSS, /proc/PID/smaps_rollup) of this
process, the groups and their children: a page shared by several processes (the libraries, the
imported modules the forks share) counts once in their sum, which is the RAM the run holds.

Prints each group's pytest output when it finishes (with its time and peak), then the run's time,
its peak memory and one closing line, "N passed, N failed" (", N skipped" if any). Exits non-zero if
any group did. Extra arguments go to every pytest call (`python tests/suite.py -x`); `--jobs 1`
runs the groups one after another.
"""

from __future__ import annotations

import gc
import os
import pathlib
import re
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
# the running groups' expected peaks together; this runner's own share comes on top (0.72 GB PSS at the
# last run's peak, 3.13 GB in all, 2026-12-06 on the Zen 4 EPYC)
BUDGET_GB = 3.1
# One compute thread per pytest process (TensorFlow's and torch's pools): two processes share two
# cores, and more threads than cores only adds switching. Compiles, which dominate, use one anyway.
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
# imported once here, before the groups are forked (import only: no op runs before the fork)
# (not Apache Beam: one group needs it, and every fork would carry its ~70 MB)
SHARED_IMPORTS = ("tensorflow", "torch", "transformers", "transformers.models.gpt2.modeling_gpt2", "numpy",
                  "pytest", "safetensors", "tokenizers")

# (modules, expected peak memory in GB: the group's PSS, its share of the pages it shares with the
# others included, as measured plus 0.08): the ones with the highest peaks first, each beside a lighter
# one, then the longest first (so that the last to finish are short). A module not listed joins
# the last group, so a new test file is never skipped (measure it and give it a place).
# Modules that build the same small models share a group: a session's fixtures and compiled functions
# then serve them all (a group's memory is mostly the XLA programs it compiled, ~20-25 MB each, held
# until its process exits). Groups of about a minute each keep the two cores busy to the end.
GROUPS = [  # seconds and peaks as measured with this runner (2026-12-06, Zen 4 EPYC: 341 s in all; 310 s in CI)
    (["test_readme.py", "test_shipped.py"], 1.66),  # 55 s: the README's examples on the shipped model
    (["test_text.py", "test_cli.py"], 1.44),  # 65 s: the text model: generate_text, stop strings, `make demo`
    (["test_precision.py", "test_speculative.py", "test_beam_sample.py", "test_export.py"], 1.63),  # 39 s
    (["test_sampling.py", "test_processors.py"], 1.41),  # 68 s: each warper and processor against the reference
    (["test_structured.py", "test_contrastive.py", "test_outputs.py"], 1.30),  # 68 s
    (["test_trust.py", "test_compile.py", "test_input_errors.py"], 1.30),  # 65 s
    (["test_lm_eval.py", "test_scoring.py", "test_converter.py"], 0.95),  # 61 s: the harness with both backends
    (["test_dola.py", "test_group_beams.py"], 1.35),  # 60 s: against 4.55.4 (its subprocess)
    (["test_model.py", "test_generate.py", "test_layers_output.py", "test_healing.py"], 1.28),  # 58 s
    (["test_engine.py", "test_speculative_sampling.py", "test_guidance.py"], 1.13),  # 48 s
    (["test_batch_command.py", "test_cli_safety.py", "test_segments.py", "test_engine_api.py",
      "test_docs_commands.py", "test_train.py", "test_pipeline.py", "test_structure.py", "test_loops.py",
      "test_bookkeeping.py", "test_config.py", "test_tokenizer.py"], 1.24),  # 27 s (+ unlisted: test_engine_soak, all slow)
]
COUNTED = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed", "deselected")


def groups() -> list[tuple[list[str], float]]:
    listed = {name for modules, _ in GROUPS for name in modules}
    rest = sorted(p.name for p in HERE.glob("test_*.py") if p.name not in listed)
    found = [([name for name in modules if (HERE / name).exists()], peak) for modules, peak in GROUPS]
    found[-1] = (found[-1][0] + rest, found[-1][1])
    return [(modules, peak) for modules, peak in found if modules]


def pss_bytes(pid: int) -> int:
    """A process's proportional set size in bytes (0 if it has ended)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def descendants(root: int) -> list[int]:
    """`root` and every process below it (Linux /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class MemoryWatch(threading.Thread):
    """Every 0.5 s: `.peak`, the PSS of this process plus every running group's process tree, and
    `.group_peak[number]`, each group tree's own, in bytes."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.own_peak, self.group_peak, self.running = 0, 0, {}, {}  # running: group number -> pid
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(0.5):
            total = pss_bytes(os.getpid())
            self.own_peak = max(self.own_peak, total)
            for number, pid in list(self.running.items()):
                tree = sum(pss_bytes(p) for p in descendants(pid))
                self.group_peak[number] = max(self.group_peak.get(number, 0), tree)
                total += tree
            self.peak = max(self.peak, total)

    def stop(self):
        self._halt.set()
        self.join()


def start_group(modules: list[str], extra: list[str]) -> tuple[int, str]:
    """Fork a child that runs pytest on `modules`, its output going to a temporary file.
    Returns (pid, the file's path)."""
    fd, path = tempfile.mkstemp(prefix="minigen-suite-", suffix=".log")
    pid = os.fork()
    if pid == 0:  # the child: pytest in this (already importing) interpreter, then exit with its code
        code = 1
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            import pytest

            # anyio's pytest plugin was imported here (by transformers) before pytest could rewrite its asserts
            quiet = "ignore:Module already imported so cannot be rewritten; anyio:pytest.PytestAssertRewriteWarning"
            code = pytest.main(["-W", quiet, *extra, *(str(HERE / name) for name in modules)])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(code))
    os.close(fd)
    return pid, path


def import_shared() -> None:
    """Import SHARED_IMPORTS, their start-up chatter (TensorFlow's C++ info lines) hidden; an import
    error other than a missing optional extra is raised after stderr is back."""
    saved, quiet = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)
    try:
        for name in SHARED_IMPORTS:
            try:
                __import__(name)
            except ImportError:  # an optional extra (apache_beam): its tests skip and say why
                pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)


def next_group(todo: list, running: list, jobs: int):
    """The first waiting group whose expected peak fits beside the running ones, or None."""
    if len(running) >= jobs:
        return None
    in_use = sum(peak for _, _, peak in running)
    for entry in todo:
        if not running or in_use + entry[2] <= BUDGET_GB:
            return entry
    return None


def main(argv: list[str]) -> int:
    jobs = 2
    if "--jobs" in argv:
        at = argv.index("--jobs")
        jobs, argv = int(argv[at + 1]), argv[:at] + argv[at + 2:]
    if jobs > 1:
        os.environ.update(ONE_THREAD)  # before TensorFlow and torch are imported: the children inherit it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path[:0] = [str(HERE.parent), str(HERE)]  # as `python -m pytest` from the root would have it
    import_shared()
    # the imported modules' objects into the permanent generation: the groups' garbage collections then
    # never touch (and so never copy) the pages they share with this process (0.85 -> 0.72 GB PSS here)
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory(prefix="minigen-xla-cache-") as cache:
        os.environ["TF_XLA_FLAGS"] = xla_flags(cache)
        return run_all(argv, jobs)


def xla_flags(cache: str) -> str:
    """TF_XLA_FLAGS with a persistent compile cache that this run's groups share: a function several
    groups compile (the same HLO - same shapes and options; weights are parameters, not constants) is
    compiled once and loaded by the others (~4 % of the suite's time). Same executable, same numerics.
    It lives as long as the run (~0.3 GB of temporary files)."""
    return f"{os.environ.get('TF_XLA_FLAGS', '')} --tf_xla_persistent_cache_directory={cache}".strip()


def run_all(argv: list[str], jobs: int) -> int:
    """Run every group (forked from this process), `jobs` at a time; print as in the module docstring."""
    todo = [(number, modules, peak) for number, (modules, peak) in enumerate(groups(), 1)]
    totals = dict.fromkeys(COUNTED, 0)
    watch = MemoryWatch()
    watch.start()
    began, running, worst = time.perf_counter(), [], 0
    started: dict = {}  # pid -> (entry, output path, start time)
    while todo or running:
        while (entry := next_group(todo, running, jobs)) is not None:
            todo.remove(entry)
            number, modules, _ = entry
            print(f"== group {number} started: {' '.join(modules)}", flush=True)
            pid, path = start_group(modules, argv)
            watch.running[number] = pid
            started[pid] = (entry, path, time.perf_counter())
            running.append(entry)
        pid, status = os.waitpid(-1, 0)
        if pid not in started:
            continue
        entry, path, t0 = started.pop(pid)
        number = entry[0]
        watch.running.pop(number, None)
        running.remove(entry)
        returncode = os.waitstatus_to_exitcode(status)
        output = pathlib.Path(path).read_text(encoding="utf-8", errors="replace")
        os.unlink(path)
        peak = watch.group_peak.get(number, 0) / 2**30
        print(f"== group {number} finished in {time.perf_counter() - t0:.0f} s, peak {peak:.2f} GB "
              f"(expected {entry[2]:.2f}):\n{output.rstrip()}", flush=True)
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        for count, word in re.findall(r"(\d+) (\w+)", summary):
            word = "errors" if word == "error" else word
            if word in totals:
                totals[word] += int(count)
        if returncode not in (0, 5):  # 5: this group selected no test (e.g. all deselected)
            worst = worst or returncode
    watch.stop()
    other = ", ".join(f"{totals[w]} {w}" for w in ("errors", "xfailed", "xpassed", "deselected") if totals[w])
    print(f"all {len(groups())} groups, {jobs} at a time, in {time.perf_counter() - began:.0f} s; peak memory "
          f"{watch.peak / 2**30:.2f} GB (this runner {watch.own_peak / 2**30:.2f}){f', {other}' if other else ''}:")
    closing = f"{totals['passed']} passed, {totals['failed'] + totals['errors']} failed"  # errors count as failed
    print(closing + (f", {totals['skipped']} skipped" if totals["skipped"] else ""))
    if totals["passed"] == 0 and not worst:
        return 5
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
