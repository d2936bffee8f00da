"""What minigen says on stderr while it works: compile notices and progress lines.

One rule for terminals and files: on a terminal a status line is redrawn or completed in place; into
a file or pipe only the `minigen` command writes, in whole lines (no carriage returns), and at most
one progress line every PROGRESS_EVERY seconds, since a library must not fill a program's logs (the
`minigen` logger reports the same events at INFO). No TensorFlow here: the command imports it first.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

NOTICE_AFTER = 1.0  # seconds a compile may run before the user is told what is happening
ANNOUNCE_TO_FILES = False  # set by the `minigen` command for its run: write status into files and pipes too
PROGRESS_EVERY = 10.0  # seconds between progress lines written into a file or pipe


def is_terminal(stream) -> bool:
    return getattr(stream, "isatty", lambda: False)()


@contextlib.contextmanager
def compile_notice(what: str, compiling: bool):
    """Around a call that may compile: if it does (`compiling`) and is still running after
    NOTICE_AFTER seconds while stderr is a terminal, say so on stderr, then add the time taken:
    "minigen: compiling greedy for 1 row x bucket 16 (+32 new) ... 3.2 s". A user waiting on the
    first call of a kind then knows it is not hung. Into a file or pipe, only when ANNOUNCE_TO_FILES
    (the `minigen` command): two whole lines, "compiling X ..." when it starts and "compiling X ... 3.2 s"
    when it is done."""
    stream = sys.stderr
    terminal = getattr(stream, "isatty", lambda: False)()
    if not compiling or not (terminal or ANNOUNCE_TO_FILES):
        yield
        return
    lock, began = threading.Lock(), time.perf_counter()
    state = {"shown": False, "done": False}

    def announce():
        with lock:
            if not state["done"]:
                stream.write(f"minigen: compiling {what} ..." + ("" if terminal else "\n"))
                stream.flush()
                state["shown"] = True

    timer = threading.Timer(NOTICE_AFTER, announce)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True  # a timer that fires late prints nothing
            if state["shown"]:
                took = time.perf_counter() - began  # in a file: the line a terminal shows, again whole
                stream.write(f" {took:.1f} s\n" if terminal else f"minigen: compiling {what} ... {took:.1f} s\n")
                stream.flush()


class Progress:
    """A progress line for `total` items on stderr: redrawn in place on a terminal; into a file or
    pipe (the command only) a whole line at most every PROGRESS_EVERY seconds and at the end."""

    def __init__(self, total: int, what: str = "prompts"):
        self.total, self.what = total, what
        self.started = self.last = time.perf_counter()
        self.open = False  # a terminal line without its newline yet

    def update(self, done: int) -> None:
        stream, now = sys.stderr, time.perf_counter()
        rate = done / max(now - self.started, 1e-9)
        text = f"{done}/{self.total} {self.what}, {rate:.1f} {self.what}/s"
        if is_terminal(stream):
            width = 30
            filled = width * done // self.total
            stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}")
            self.open = done < self.total
            if not self.open:
                stream.write("\n")
        elif ANNOUNCE_TO_FILES and (done >= self.total or now - self.last >= PROGRESS_EVERY):
            stream.write(f"minigen: {text}\n")
            self.last = now
        stream.flush()

    def close_line(self) -> None:
        """End an open terminal line, so that a message that follows starts on its own line."""
        if self.open:
            sys.stderr.write("\n")
            self.open = False


def import_tensorflow_quietly():
    """Import TensorFlow and initialise its devices with stderr (fd 2) muted.

    TensorFlow 2.21 logs INFO lines (oneDNN, CUDA probing: "failed call to cuInit") from C++ before
    absl logging is set up, which TF_CPP_MIN_LOG_LEVEL does not silence; a command line tool should
    print only its own messages. Python exceptions are raised after stderr is restored, so nothing
    real is hidden. The `minigen` command, `make demo` and `python -m weights_tools` call it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_logical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
