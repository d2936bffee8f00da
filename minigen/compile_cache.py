"""A bounded, least-recently-used cache of compiled functions (one per compile key).

Every distinct compile key (strategy, rows, bucket, max_new_tokens, ...) costs an XLA compile and
memory; a long-running process that sees many keys must not grow without bound. Evicting an entry
drops minigen's references to its traced graphs (measured on the shipped gutenberg-6l: ~20 MB of
the ~50 MB a greedy compile adds). TensorFlow keeps the XLA executable itself in its runtime
for the life of the process (TF 2.21 offers no way to evict it), so a service that generates with
many different `max_new_tokens` values should also fix that value or round it up.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import OrderedDict

import tensorflow as tf

DEFAULT_SIZE = 16
NOTICE_AFTER = 1.0  # seconds a compile may run before a terminal user is told what is happening


def xla_function(fn):
    """`fn` as one XLA computation: tf.function(jit_compile=True), traced once per input signature.

    TensorFlow warns "N out of the last M calls ... triggered tf.function retracing" when tf.functions
    made from the same Python code trace often; minigen makes one function per compile key on
    purpose (counted in `trace_count`, logged on the `minigen` logger), so that warning is turned off
    for these functions only.
    """
    compiled = tf.function(fn, jit_compile=True, autograph=False)
    compiled._omit_frequent_tracing_warning = True  # no public switch in TF 2.21; harmless if it goes away
    return compiled


class CompileCache:
    """Maps a compile key to its compiled function; keeps the `maxsize` most recently used.

    `traces` counts how often any of its functions was traced (a trace precedes each XLA compile),
    so tests can prove that a new option value reuses a compiled function."""

    def __init__(self, maxsize: int = DEFAULT_SIZE):
        self.maxsize = maxsize
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self.traces = 0

    def compiled(self, key, fn):
        """The compiled function for `key`: `xla_function(fn)` made on first use (traced and compiled
        when first called), each of its traces counted in `traces`."""

        def counted(*args):
            self.traces += 1
            return fn(*args)

        return self.get_or_create(key, lambda: xla_function(counted))

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"compile_cache_size must be an int >= 1, got {value!r}")
        self._maxsize = value
        if hasattr(self, "_entries"):
            self._evict()

    def get_or_create(self, key, make):
        """The entry for `key`, made with `make()` if absent (thread-safe: made once)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            value = self._entries[key] = make()
            self._evict()
            return value

    def get(self, key, default=None):
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key]

    def _evict(self) -> None:
        while len(self._entries) > self._maxsize:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every compiled function (the next call of each kind compiles again)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries


@contextlib.contextmanager
def compile_notice(what: str, compiling: bool):
    """Around a call that may compile: if it does (`compiling`) and is still running after
    NOTICE_AFTER seconds while stderr is a terminal, say so on stderr, then add the time taken:
    "minigen: compiling greedy for 1 row x bucket 16 (+32 new) ... 3.2 s". A user waiting on the
    first call of a kind then knows it is not hung. Nothing is printed when stderr is not a terminal
    (the `minigen` logger reports every compile at INFO level instead)."""
    stream = sys.stderr
    if not compiling or not getattr(stream, "isatty", lambda: False)():
        yield
        return
    lock, began = threading.Lock(), time.perf_counter()
    state = {"shown": False, "done": False}

    def announce():
        with lock:
            if not state["done"]:
                stream.write(f"minigen: compiling {what} ...")
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
                stream.write(f" {time.perf_counter() - began:.1f} s\n")
                stream.flush()
