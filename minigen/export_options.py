"""What a SavedModel export may be asked for, checked before TensorFlow is imported or a model is
loaded (the command checks its flags with it first; `export` checks again with the model's config)."""

from __future__ import annotations

import os

STRATEGIES = ("greedy", "sample", "beam", "contrastive")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_export_options(out_dir: str, batch_size, bucket, max_new_tokens, strategies, num_beams, top_k,
                         config=None) -> tuple:
    """ValueError naming the first bad option (FileExistsError if out_dir exists); returns the
    strategies as a tuple. config: the model's GPT2Config, for the checks that need it (None: skip)."""
    strategies = tuple(strategies) if isinstance(strategies, (list, tuple)) else (strategies,)
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {', '.join(STRATEGIES)}, got {list(strategies)}")
    for name, value in (("bucket", bucket), ("max_new_tokens", max_new_tokens), ("num_beams", num_beams),
                        ("top_k", top_k)):
        if not _is_int(value) or not 1 <= value <= 2**31 - 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if "beam" in strategies and num_beams < 2:
        raise ValueError(f"num_beams must be >= 2 for the beam signature (1 is greedy search), got {num_beams}")
    if batch_size is not None and (not _is_int(batch_size) or not 1 <= batch_size <= 2**31 - 1):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    if batch_size is None and "beam" in strategies:
        raise ValueError("beam search needs a fixed --batch-size (its beams are folded into the batch)")
    if config is not None:
        if "contrastive" in strategies and not 2 <= top_k <= config.vocab_size:
            raise ValueError(f"top_k must be in [2, {config.vocab_size}] for the contrastive signature "
                             f"(its candidates per step; 1 is greedy search), got {top_k}")
        if bucket + max_new_tokens > config.n_positions:
            raise ValueError(f"bucket {bucket} + max_new_tokens {max_new_tokens} exceeds n_positions "
                             f"{config.n_positions}")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError(f"out_dir must be a path, got {type(out_dir).__name__}")
    if os.path.lexists(out_dir):
        raise FileExistsError(f"{os.path.abspath(out_dir)} exists; choose a new directory")
    parent = os.path.dirname(os.path.abspath(out_dir))
    while not os.path.isdir(parent):  # made by export (a SavedModel version directory's parents)
        if os.path.lexists(parent):
            raise ValueError(f"cannot write {out_dir}: {parent} is not a directory")
        parent = os.path.dirname(parent)
    return strategies
