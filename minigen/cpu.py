"""What this CPU does fast: its feature flags, and which compute dtypes they speed up.

minigen/precision.py picks kernels by them (never results: every choice it makes is exact), and
`load` says once when a dtype asked for has none of the instructions that make it fast.
"""

from __future__ import annotations

import sys

# The instructions that make a dtype fast on a CPU (/proc/cpuinfo flags): without any, `load` says so.
FAST_ON = {"bfloat16": ("avx512_bf16", "amx_bf16"), "int8": ("avx512_vnni", "amx_int8", "avx_vnni")}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_WARNED = set()


def warn_slow_dtype(dtype: str) -> None:
    """Say once per process on stderr when this CPU lacks the instructions that make `dtype` fast
    (it still works, through slower kernels)."""
    wanted = FAST_ON.get(dtype)
    flags = cpu_flags()
    if not wanted or dtype in _WARNED or not flags or flags & set(wanted):
        return
    _WARNED.add(dtype)
    print(f"minigen: this CPU has none of {', '.join(wanted)}; dtype={dtype!r} works but may not be faster "
          "than float32 here", file=sys.stderr)
