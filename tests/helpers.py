"""Helpers shared by several test modules (test modules never import each other)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
import torch

import minigen


# Not 0: the reference fills finished beams with `pad_token_id or eos_token_id[0]`, so a pad id of 0
# (falsy) silently becomes EOS there. minigen always fills with pad_token_id.
PAD = 1


def hf_generate(hf, ids, mask, width=None, **options):
    """Reference output, right-padded with PAD to `width` (HF stops early when all rows finish)."""
    with torch.no_grad():
        out = hf.generate(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pad_token_id=PAD, **options
        )
    sequences = out.sequences if hasattr(out, "sequences") else out
    seq = sequences.numpy()
    if width is not None:
        seq = np.pad(seq, ((0, 0), (0, width - seq.shape[1])), constant_values=PAD)
    return (seq, out) if hasattr(out, "sequences") else seq


def early_eos(hf, ids, mask, max_new):
    """An EOS id that some rows of greedy output produce early and others never: tests stopping."""
    free = hf_generate(hf, ids, mask, max_new_tokens=max_new, do_sample=False, eos_token_id=None)[:, ids.shape[1]:]
    counts = {}
    for row in free:
        for token in set(row[: max_new // 2].tolist()):
            counts[token] = counts.get(token, 0) + 1
    partial = [t for t, c in counts.items() if 0 < c < len(free) and t != PAD]
    assert partial, "no token appears in only some rows; pick another seed"
    return int(partial[0])


def chi_square_upper(df: int, z: float = 4.0) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile at a normal z (4 sigma: p ~ 3e-5)."""
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def same_weights(model_dir):
    """A second, independent model object with the target's own weights: a draft that always agrees."""
    return minigen.load(model_dir.parent / "minigen")


ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# -- the reference for what transformers 5.x dropped (contrastive search, DoLa, group beam search):
# transformers 4.55.4 in its own venv (`make reference-venv` builds .venv-ref; MINIGEN_REFERENCE_PYTHON
# points elsewhere), driven through tests/hf455_contrastive.py in a subprocess

REFERENCE = pathlib.Path(os.environ.get("MINIGEN_REFERENCE_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))
needs_reference = pytest.mark.skipif(
    not REFERENCE.exists(),
    reason=f"transformers 4.55.4 venv not found at {REFERENCE} (make reference-venv builds it): the reference "
           "for contrastive search, DoLa and group beam search is not installed")


def reference(jobs):
    """transformers 4.55.4's outputs for jobs [(model_dir, [(ids, mask, options), ...]), ...]: one
    list per job, from one subprocess of its venv (importing torch and transformers takes seconds)."""
    payload = [{"model_dir": str(model_dir),
                "cases": [{"ids": ids.tolist(), "mask": mask.tolist(), "options": options} for ids, mask, options in cases]}
               for model_dir, cases in jobs]
    run = subprocess.run([str(REFERENCE), str(ROOT / "tests" / "hf455_contrastive.py")], input=json.dumps(payload),
                         capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["transformers"] == "4.55.4"
    return out["outputs"]
# the documentation pages in the order their Python blocks run (a later page may use a name an earlier
# one defined): tests/test_readme.py and tests/test_docs_commands.py read them
DOC_PAGES = [README] + [ROOT / "docs" / name for name in (
    "generation.md", "options.md", "strategies.md", "structured.md", "engine.md", "scoring.md", "parity.md", "cli.md", "convert.md", "serving.md", "speed.md", "precision.md",
    "how-it-works.md", "troubleshooting.md")]


# -- batch generation inputs (tests/test_pipeline.py, tests/test_batch_command.py) --


def corpus_prompts(n: int) -> list[str]:
    """n prompts of 1 to ~40 words: several buckets of 16 tokens."""
    words = ("the old man said that it was a dark and stormy night when the ship came into the harbour "
             "and nobody on the shore could see her lights until she was very near").split()
    rng = np.random.default_rng(7)
    return [" ".join(words[s:s + k]) for s, k in zip(rng.integers(0, 10, n), rng.integers(1, 30, n))]


def write_input(path, prompts, invalid):
    lines = []
    for i, p in enumerate(prompts):  # a mix of ids given and ids from line numbers, objects and strings
        lines.append(json.dumps({"id": f"p{i}", "prompt": p}) if i % 3 else json.dumps(p))
    lines[10:10] = invalid
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


# -- the request engine (tests/test_engine.py, tests/test_engine_api.py) --


def alone(model, request):
    """generate on the request's prompt alone with its options: (new tokens, log-probs or None)."""
    options = {k: v for k, v in request.items() if k not in ("input_ids", "prompt")}
    ids = np.array([request["input_ids"]])
    out = model.generate(ids, return_dict=True, pad_token_id=0, **options)
    return out.sequences[0, ids.shape[1]:], out.logprobs


def until_end(tokens, eos):
    """tokens through the first EOS (generate pads after it)."""
    tokens = list(tokens)
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i + 1]
    return tokens
