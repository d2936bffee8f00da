"""What the options that become tables inside the compiled loop cost before the first token.

- stop strings: building the table (`stop_strings.stop_table`) over the real GPT-2 vocabulary from
  ../shared/data/gpt2-tokenizer, for 16 / 64 / 256 words of a novel, and the table's size;
- bad_words_ids / sequence_bias: the first call (compile included) on the shipped gutenberg-2l with
  1,000 banned bigrams and 2,000 biased words of 1-3 tokens, then a call with other words of the same
  lengths and counts (travelling as tensors, they must not compile again).

Run alone: `python benchmarks/probe_tables.py`. Prints one line per measurement and the CPU flags.
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def cpu_flags() -> str:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    return " ".join(f for f in ("amx_int8", "avx512_vnni", "avx512_bf16") if f in flags) or "none of amx/vnni/bf16"


def stop_tables() -> None:
    from tokenizers import Tokenizer

    from minigen.generation.stop_strings import stop_table, token_bytes

    path = SHARED / "gpt2-tokenizer" / "tokenizer.json"
    novel = SHARED / "corpora" / "gutenberg-classics" / "1342-pride-and-prejudice.txt"
    if not path.is_file() or not novel.is_file():
        print(f"stop strings: skipped ({path} or {novel} is absent)")
        return
    tokens = token_bytes(Tokenizer.from_file(str(path)))
    words = list(dict.fromkeys(w for w in novel.read_text(encoding="utf-8").split() if len(w) > 3))
    for count in (16, 64, 256):
        stops = tuple(words[:count])
        began = time.perf_counter()
        table = stop_table(tokens, stops)
        took = time.perf_counter() - began
        print(f"stop strings: {count} strings ({sum(len(s.encode()) for s in stops)} bytes) over "
              f"{len(tokens)} tokens: built in {took:.2f} s, table {table.table.nbytes / 2**20:.1f} MiB")


def word_tables() -> None:
    import minigen

    lm = minigen.load("gutenberg-2l")
    rng = np.random.default_rng(0)
    vocab = lm.config.vocab_size

    def bigrams():
        return [[int(a), int(b)] for a, b in rng.integers(0, vocab, (1000, 2))]

    def biases():
        return {tuple(int(t) for t in rng.integers(0, vocab, 1 + i % 3)): 1.5 for i in range(2000)}

    for name, make in (("bad_words_ids, 1,000 bigrams", lambda: dict(bad_words_ids=bigrams())),
                       ("sequence_bias, 2,000 words of 1-3 tokens", lambda: dict(sequence_bias=biases()))):
        began = time.perf_counter()
        lm.generate([[5, 6, 7]], max_new_tokens=16, **make())
        first = time.perf_counter() - began
        traces = lm.trace_count
        began = time.perf_counter()
        lm.generate([[5, 6, 7]], max_new_tokens=16, **make())
        again = time.perf_counter() - began
        print(f"{name}: first call {first:.1f} s (compile included); other words, same lengths: {again:.2f} s, "
              f"{lm.trace_count - traces} new traces")


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(f"CPU flags: {cpu_flags()}; {os.cpu_count()} cores")
    stop_tables()
    word_tables()


if __name__ == "__main__":
    main()
