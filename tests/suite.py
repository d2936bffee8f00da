"""`make test`: the default test suite as fresh pytest processes, two at a time within a memory budget.

Why fresh processes: TensorFlow keeps every XLA executable it compiled until the process exits (no
API evicts them; ~20 MB per compile even of a 2-layer model), and the suite compiles a few hundred
functions: one process peaked at 8.4 GB. A process per group bounds what each one holds.
Why two at a time: the suite is bound by XLA compiles, which run on one core, and the machines it
targets have two. A group starts only when its expected peak fits beside the running one's within
BUDGET_GB; otherwise a smaller group that fits goes first, or it waits.

Memory is sampled every 0.5 s over the running processes and their children: their anonymous
memory plus the file-backed pages (the libraries they all map, TensorFlow's ~0.45 GB) once, as
those take RAM once (see MemoryWatch).

Prints each group's pytest output when it finishes (with its time and peak), then the run's time,
its peak memory and one closing line, "N passed, N failed" (", N skipped" if any). Exits non-zero if
any group did. Extra arguments go to every pytest call (`python tests/suite.py -x`); `--jobs 1`
runs the groups one after another.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
BUDGET_GB = 4.0
# What every group maps from the same files (TensorFlow, torch and transformers' libraries: 0.44 GB
# file-backed in a process that imported them, measured from /proc/self/statm). Each group's expected
# peak includes it, but it is in RAM once however many groups run, as MemoryWatch counts it.
SHARED_GB = 0.44
# One compute thread per pytest process (TensorFlow's and torch's pools): two processes share two
# cores, and more threads than cores only adds switching. Compiles, which dominate, use one anyway.
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}

# (modules, expected peak memory in GB), the heaviest and longest first (they need light partners,
# which must not all be used up before them). Peaks were measured with this runner
# (each group's own peak); a group is ~0.75 GB once TensorFlow, torch and transformers are imported,
# the rest is its compiled functions. A module not listed joins the last group, so a new test file
# is never skipped (measure it and give it a place).
GROUPS = [
    (["test_cli_safety.py", "test_pipeline.py", "test_contrastive.py"], 2.6),  # + the reference's subprocess
    (["test_export.py", "test_input_errors.py"], 1.65),
    (["test_speculative.py", "test_processors.py"], 2.6),
    (["test_readme.py"], 1.8),
    (["test_generate.py", "test_config.py", "test_tokenizer.py", "test_outputs.py"], 1.8),
    (["test_compile.py"], 1.65),
    (["test_sampling.py", "test_train.py", "test_converter.py"], 2.05),
    (["test_text.py"], 2.1),
    (["test_cli.py", "test_loops.py", "test_structure.py"], 2.0),
    (["test_shipped.py"], 1.9),
    (["test_model.py"], 2.45),  # GPT-2 small and its reference twin
    (["test_speculative_sampling.py"], 1.95),
]
COUNTED = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed", "deselected")


def groups() -> list[tuple[list[str], float]]:
    listed = {name for modules, _ in GROUPS for name in modules}
    rest = sorted(p.name for p in HERE.glob("test_*.py") if p.name not in listed)
    found = [([name for name in modules if (HERE / name).exists()], peak) for modules, peak in GROUPS]
    found[-1] = (found[-1][0] + rest, found[-1][1])
    return [(modules, peak) for modules, peak in found if modules]


def memory_bytes(pid: int) -> tuple[int, int]:
    """(anonymous, file-backed) resident bytes of a process, from /proc/PID/statm."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            resident, shared = (int(x) for x in f.read().split()[1:3])
    except (OSError, ValueError):
        return 0, 0  # the process ended while we looked
    page = os.sysconf("SC_PAGE_SIZE")
    return (resident - shared) * page, shared * page


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
    """Every 0.5 s, the memory of each running group's process tree: `.peak` (all groups together)
    and `.group_peak[number]`, in bytes. A tree's memory is its processes' anonymous memory plus
    the largest file-backed set among them once: the groups map the same libraries (TensorFlow's are
    ~0.45 GB), whose pages are in RAM once however many processes map them."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.group_peak, self.running = 0, {}, {}  # running: group number -> pid
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(0.5):
            anon_total, file_max = 0, 0
            for number, pid in list(self.running.items()):
                usage = [memory_bytes(p) for p in descendants(pid)]
                anon, files = sum(a for a, _ in usage), max((f for _, f in usage), default=0)
                self.group_peak[number] = max(self.group_peak.get(number, 0), anon + files)
                anon_total, file_max = anon_total + anon, max(file_max, files)
            self.peak = max(self.peak, anon_total + file_max)

    def stop(self):
        self._halt.set()
        self.join()


def run_group(number: int, modules: list[str], extra: list[str], env: dict, watch: MemoryWatch,
              results: dict) -> None:
    """Run one group's pytest; results[number] = (its output, exit code, seconds)."""
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *extra, *(str(HERE / name) for name in modules)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    watch.running[number] = proc.pid
    output = proc.stdout.read()
    proc.wait()
    watch.running.pop(number, None)
    results[number] = (output.decode("utf-8", errors="replace"), proc.returncode, time.perf_counter() - began)


def next_group(todo: list, running: list, jobs: int):
    """The first waiting group whose expected peak fits beside the running ones, or None."""
    if len(running) >= jobs:
        return None
    in_use = sum(peak - SHARED_GB for _, _, peak in running)
    for entry in todo:
        if not running or in_use + entry[2] <= BUDGET_GB:
            return entry
    return None


def main(argv: list[str]) -> int:
    jobs = 2
    if "--jobs" in argv:
        at = argv.index("--jobs")
        jobs, argv = int(argv[at + 1]), argv[:at] + argv[at + 2:]
    env = {**os.environ, **(ONE_THREAD if jobs > 1 else {})}
    todo = [(number, modules, peak) for number, (modules, peak) in enumerate(groups(), 1)]
    totals = dict.fromkeys(COUNTED, 0)
    results: dict = {}
    watch = MemoryWatch()
    watch.start()
    began, running, threads, worst = time.perf_counter(), [], {}, 0
    while todo or running:
        while (entry := next_group(todo, running, jobs)) is not None:
            todo.remove(entry)
            number, modules, _ = entry
            print(f"== group {number} started: {' '.join(modules)}", flush=True)
            threads[number] = threading.Thread(target=run_group, args=(number, modules, argv, env, watch, results))
            threads[number].start()
            running.append(entry)
        time.sleep(0.1)
        for entry in list(running):
            number = entry[0]
            if threads[number].is_alive():
                continue
            running.remove(entry)
            output, returncode, seconds = results[number]
            peak = watch.group_peak.get(number, 0) / 2**30
            print(f"== group {number} finished in {seconds:.0f} s, peak {peak:.2f} GB (expected {entry[2]:.1f}):\n"
                  f"{output.rstrip()}", flush=True)
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
          f"{watch.peak / 2**30:.2f} GB{f' ({other})' if other else ''}:")
    closing = f"{totals['passed']} passed, {totals['failed'] + totals['errors']} failed"  # errors count as failed
    print(closing + (f", {totals['skipped']} skipped" if totals["skipped"] else ""))
    if totals["passed"] == 0 and not worst:
        return 5
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
