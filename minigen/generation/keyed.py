"""A user's logits processor as the compile key holds it (no TensorFlow here)."""

from __future__ import annotations


class KeyedProcessor:
    """A user's logits processor as the compile key holds it: equal to another made from the same code
    with equal captured values (a lambda written in a loop or a function called per request makes a
    new function object each time, and keyed by identity each one compiled anew and stayed in
    memory); anything else (a callable object, a closure over an unhashable value such as a tensor)
    is keyed by identity."""

    __slots__ = ("fn", "_key", "__weakref__")

    def __init__(self, fn):
        self.fn = fn
        code = getattr(fn, "__code__", None)
        key = ("id", fn)  # holds the function, so its id cannot be reused while the key lives
        if code is not None and hasattr(fn, "__globals__"):
            cells = tuple(c.cell_contents for c in (fn.__closure__ or ()))
            candidate = ("code", code, id(fn.__globals__), cells, fn.__defaults__,
                         tuple(sorted((fn.__kwdefaults__ or {}).items())))
            try:
                hash(candidate)
                key = candidate
            except (TypeError, ValueError):
                pass
        self._key = key

    def __call__(self, *args):
        return self.fn(*args)

    def __eq__(self, other):
        return isinstance(other, KeyedProcessor) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))

    def __repr__(self):
        return f"KeyedProcessor({self.fn!r})"
