"""Export the whole compiled generate as a TensorFlow SavedModel, for TF Serving or any TF runtime.

Each strategy becomes one signature (`greedy`, `sample`, `beam`; the first exported is also
`serving_default`) taking

    input_ids       int32 [batch, bucket]   left-padded prompts
    attention_mask  int32 [batch, bucket]   1 = token, 0 = padding
    temperature, top_k, top_p, repetition_penalty   scalars (sample; repetition_penalty everywhere)
    seed            int32 [2]               the stateless sampling seed

and returning `sequences` int32 [batch, bucket + max_new_tokens] (prompt, new tokens, pad after EOS)
and `scores` (greedy/sample: per-token log-probs [batch, max_new_tokens]; beam: [batch]).
The generation loop is inside the graph, compiled with XLA (`jit_compile=True` is kept in the
SavedModel); the weights are variables. Loading needs only TensorFlow.
"""

from __future__ import annotations

import os

import tensorflow as tf

from .generation.beam import beam_search
from .generation.config import GenerationConfig
from .generation.decode import Knobs, Static, generate_loop

STRATEGIES = ("greedy", "sample", "beam")


def _static(model, strategy: str, rows: int | None, bucket: int, max_new_tokens: int, num_beams: int) -> Static:
    defaults = GenerationConfig()  # EOS and pad ids as `generate` would take them from the model's config
    return Static(
        strategy=strategy,
        rows=rows,
        bucket=bucket,
        max_new_tokens=max_new_tokens,
        eos_ids=defaults.eos_ids(model.config),
        pad_id=defaults.pad_id(model.config),
        use_repetition_penalty=True,  # a knob: 1.0 leaves the logits as they are
        no_repeat_ngram_size=0,
        output_scores=strategy != "beam",
        num_beams=num_beams if strategy == "beam" else 1,
        num_return_sequences=1,
        early_stopping=False,
    )


class Exported(tf.Module):
    """The variables plus one compiled function per strategy."""

    def __init__(self, model, batch_size, bucket, max_new_tokens, strategies, num_beams):
        super().__init__()
        self.weights = [v for v in _variables(model)]
        spec = [tf.TensorSpec([batch_size, bucket], tf.int32, "input_ids"),
                tf.TensorSpec([batch_size, bucket], tf.int32, "attention_mask"),
                tf.TensorSpec([], tf.float32, "temperature"), tf.TensorSpec([], tf.int32, "top_k"),
                tf.TensorSpec([], tf.float32, "top_p"), tf.TensorSpec([], tf.float32, "repetition_penalty"),
                tf.TensorSpec([2], tf.int32, "seed")]
        self.functions = {}
        for strategy in strategies:
            if strategy == "beam" and batch_size is None:
                raise ValueError("beam search needs a fixed --batch-size (its beams are folded into the batch)")
            rows = None if batch_size is None else batch_size * (num_beams if strategy == "beam" else 1)
            static = _static(model, strategy, rows, bucket, max_new_tokens, num_beams)
            self.functions[strategy] = tf.function(_runner(model, static), input_signature=spec, jit_compile=True,
                                                   autograph=False)


def _variables(model):
    yield model.wte
    yield model.wpe
    for block in model.blocks:
        yield from block
    yield model.ln_f_scale
    yield model.ln_f_bias
    if model.lm_head_weight is not model.wte:
        yield model.lm_head_weight


def _runner(model, static: Static):
    def run(input_ids, attention_mask, temperature, top_k, top_p, repetition_penalty, seed):
        knobs = Knobs(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                      length_penalty=tf.constant(1.0), min_new_tokens=tf.constant(0), seed=seed)
        if static.strategy == "beam":
            nb = static.num_beams
            ids, mask = tf.repeat(input_ids, nb, axis=0), tf.repeat(attention_mask, nb, axis=0)
            sequences, scores = beam_search(model, ids, mask, knobs, static)
            return {"sequences": sequences[:, 0], "scores": scores[:, 0]}
        sequences, scores = generate_loop(model, input_ids, attention_mask, knobs, static)
        return {"sequences": sequences, "scores": scores}

    return run


def export(model, out_dir: str, batch_size: int | None = 1, bucket: int = 64, max_new_tokens: int = 64,
           strategies=("greedy",), num_beams: int = 4) -> str:
    """Write a SavedModel of `generate` to `out_dir` (which must not exist); returns out_dir.

    batch_size None lets greedy/sample signatures take any batch size; beam needs a fixed one.
    """
    strategies = tuple(strategies)
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {', '.join(STRATEGIES)}, got {list(strategies)}")
    for name, value in (("bucket", bucket), ("max_new_tokens", max_new_tokens), ("num_beams", num_beams)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    if bucket + max_new_tokens > model.config.n_positions:
        raise ValueError(f"bucket {bucket} + max_new_tokens {max_new_tokens} exceeds n_positions {model.config.n_positions}")
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} exists; choose a new directory")
    module = Exported(model, batch_size, bucket, max_new_tokens, strategies, num_beams)
    signatures = {name: fn.get_concrete_function() for name, fn in module.functions.items()}
    signatures["serving_default"] = signatures[strategies[0]]
    tmp = out_dir.rstrip("/") + ".partial"
    tf.saved_model.save(module, tmp, signatures=signatures)
    os.replace(tmp, out_dir)
    return out_dir
