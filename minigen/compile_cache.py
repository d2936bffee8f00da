"""A bounded, least-recently-used cache of compiled functions (one per compile key).

Every distinct compile key (strategy, rows, bucket, max_new_tokens, ...) costs an XLA compile and
memory; a long-running process that sees many keys must not grow without bound. Evicting an entry
drops minigen's references to its traced graphs (measured on the shipped gutenberg-6l: ~20 MB of
the ~50 MB a greedy compile adds). TensorFlow keeps the XLA executable itself in its runtime
for the life of the process (TF 2.21 offers no way to evict it), so a key compiled again after its
eviction adds its program once more: such a recompile warns (RuntimeWarning) and is counted in
`stats()`. A long-running process should use few distinct keys (one pad_to_multiple_of, a few
max_new_tokens values) and a maxsize of at least their number.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict

import tensorflow as tf

DEFAULT_SIZE = 16
EVICTED_KEPT = 4096  # evicted keys remembered (small tuples), to warn when one is compiled again


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
        self._evicted: OrderedDict = OrderedDict()  # keys dropped so far (the last EVICTED_KEPT), to see recompiles
        self._lock = threading.RLock()
        self.traces = 0
        self.recompiles = 0  # functions made again for a key that had been evicted

    def stats(self) -> dict:
        """What this cache holds and has cost: entries, its maxsize, traces, evictions remembered and
        recompiles (a key compiled again after its eviction: TensorFlow keeps both programs)."""
        with self._lock:
            return {"entries": len(self._entries), "maxsize": self._maxsize, "traces": self.traces,
                    "evicted": len(self._evicted), "recompiles": self.recompiles}

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
            if key in self._evicted:
                del self._evicted[key]
                self.recompiles += 1
                warnings.warn(
                    f"minigen compiles a function again that its compile cache (maxsize {self._maxsize}) had "
                    f"evicted ({self.recompiles} so far in this model): TensorFlow keeps every compiled program "
                    "until the process exits, so memory grows with each recompile. Use fewer distinct shapes "
                    "(one pad_to_multiple_of, a few max_new_tokens values) or a larger "
                    "minigen.load(..., compile_cache_size=N); model.compile_cache.stats() counts them",
                    RuntimeWarning, stacklevel=4)
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
            key, _ = self._entries.popitem(last=False)
            self._evicted[key] = None
            while len(self._evicted) > EVICTED_KEPT:
                self._evicted.popitem(last=False)

    def clear(self) -> None:
        """Forget every compiled function (the next call of each kind compiles again)."""
        with self._lock:
            self._entries.clear()

    def keys(self) -> list:
        """The keys of the functions held now, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries
