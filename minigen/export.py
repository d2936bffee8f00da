"""Export the whole compiled generate as a TensorFlow SavedModel, for TF Serving or any TF runtime.

Each strategy becomes one signature (`greedy`, `sample`, `beam`, `contrastive`; the first exported
is also `serving_default`) taking

    input_ids       int32 [batch, bucket]   left-padded prompts
    attention_mask  int32 [batch, bucket]   1 = token, 0 = padding
    greedy, sample, beam:
      repetition_penalty  float32 scalar
      min_new_tokens  int32 scalar            EOS forbidden before this many new tokens
      sample also:    temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff (scalars;
                      off: top_k 0, the rest 1, 0, 1, 0, 0) and seed int32 [2], the stateless seed
      beam also:      length_penalty
    contrastive (its top_k candidates fixed at export):
      penalty_alpha, repetition_penalty       float32 scalars
      min_new_tokens  int32 scalar

and returning `sequences` int32 [batch, bucket + max_new_tokens] (prompt, new tokens, pad after EOS)
and, greedy/sample/contrastive, `logprobs` float32 [batch, max_new_tokens] (each chosen token's
log-prob, 0 after EOS) or, beam, `sequences_scores` float32 [batch] (the best hypothesis' score).
The generation loop is inside the graph, compiled with XLA (`jit_compile=True` is kept in the
SavedModel); the weights are variables. Loading needs only TensorFlow.

Every input is checked before the loop runs (shape, a 0/1 left-padded mask with a token in each
row, ids in the vocabulary, knob ranges): a bad request fails with InvalidArgument naming the
input, not deep inside XLA. Pad slots may hold any id.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf

from .compile_cache import xla_function
from .export_options import STRATEGIES, check_export_options  # noqa: F401 - STRATEGIES is part of this API
from .generation.config import GenerationConfig
from .generation.core import CompileKey, compile_key, make_knobs
from .generation.options import BY_NAME, export_inputs
from .generation.generate import strategy_of



def inputs(strategy: str) -> dict:
    """A strategy's signature inputs after input_ids and attention_mask, from the option table (rows
    whose `export` names the strategy): name -> (dtype, shape). Sampling's only where they act: a
    greedy or beam signature has no temperature to be ignored."""
    return {name: (tf.as_dtype(dtype), list(shape)) for name, (dtype, shape) in export_inputs(strategy).items()}


def _config(strategy: str, max_new_tokens: int, num_beams: int, top_k: int) -> GenerationConfig:
    """The options a strategy's signature is compiled with (EOS and pad ids come from the model's
    config, as in `generate`); checked like any other caller's."""
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=strategy == "sample",
                            num_beams=num_beams if strategy == "beam" else 1,
                            penalty_alpha=0.5 if strategy == "contrastive" else None,
                            top_k=top_k if strategy == "contrastive" else 50,
                            output_logprobs=strategy != "beam").check()


class Exported(tf.Module):
    """The variables plus one compiled function per strategy."""

    def __init__(self, model, batch_size, bucket, max_new_tokens, strategies, num_beams, top_k):
        super().__init__()
        self.weights = [v for v in model.network.variables()]
        self.functions = {}
        for strategy in strategies:
            cfg = _config(strategy, max_new_tokens, num_beams, top_k)
            # the processors among the inputs are in the graph whatever the compile-time value says
            key = compile_key(cfg, model.config, batch_size, bucket, runtime=tuple(inputs(strategy)))
            compiled = xla_function(_runner(model.network, cfg, key))
            # The signature takes any shape, so that a request of the wrong size meets a check naming
            # the input instead of failing inside XLA; the checks run outside the compiled loop (XLA
            # drops Assert ops), which is a nested jit_compile function kept as such in the SavedModel.
            spec = [tf.TensorSpec([None, None], tf.int32, "input_ids"),
                    tf.TensorSpec([None, None], tf.int32, "attention_mask")]
            spec += [tf.TensorSpec([None] * len(shape), dtype, name) for name, (dtype, shape) in inputs(strategy).items()]
            self.functions[strategy] = tf.function(
                _checked(compiled, batch_size, bucket, model.config.vocab_size, strategy),
                input_signature=spec, autograph=False)


def _knob_checks(knobs: dict) -> list:
    """Each scalar input checked by its option's rule (options.Rule.in_range), a message naming it;
    a shaped input (the seed) by its shape."""
    checks = []
    for name, value in knobs.items():
        option = BY_NAME[name]
        if option.shape:
            checks.append(tf.debugging.assert_equal(tf.shape(value), list(option.shape),
                                                    message=f"{name} must be {option.dtype} {list(option.shape)}"))
            continue
        ok = option.check.in_range(value)
        if value.dtype.is_floating:
            ok = tf.math.is_finite(value) & ok
        checks.append(tf.debugging.assert_equal(ok, True, message=f"{name} must be {option.check.tensor_allowed}"))
    return checks


def _checked(compiled, batch_size, bucket: int, vocab: int, strategy: str):
    """The signature's function: check every input with a message naming it, then run `compiled`."""
    names = list(inputs(strategy))

    def run(input_ids, attention_mask, *values):
        knobs = dict(zip(names, values))
        rows = -1 if batch_size is None else batch_size
        shape = f"[{'batch' if batch_size is None else batch_size}, {bucket}]"
        real = tf.equal(attention_mask, 1)
        checks = [
            tf.debugging.assert_equal(tf.shape(input_ids)[1:], [bucket], message=f"input_ids must be int32 {shape}"),
            tf.debugging.assert_equal(tf.shape(attention_mask), tf.shape(input_ids),
                                      message="attention_mask must have input_ids' shape"),
            tf.debugging.assert_equal(tf.reduce_all(real | tf.equal(attention_mask, 0)), True,
                                      message="attention_mask must hold only 0 (padding) and 1 (token)"),
            tf.debugging.assert_equal(tf.reduce_all(tf.reduce_any(real, axis=1)), True,
                                      message="every row of attention_mask needs at least one 1 (a token)"),
            tf.debugging.assert_equal(tf.reduce_all(attention_mask[:, 1:] >= attention_mask[:, :-1]), True,
                                      message="attention_mask must be left-padded (0s before 1s in each row)"),
            tf.debugging.assert_equal(tf.reduce_all(~real | ((input_ids >= 0) & (input_ids < vocab))), True,
                                      message=f"input_ids holds a token id outside the vocabulary [0, {vocab})"),
        ] + _knob_checks(knobs)
        if batch_size is not None:
            checks.append(tf.debugging.assert_equal(tf.shape(input_ids)[0], rows,
                                                    message=f"input_ids must be int32 {shape}: {batch_size} rows"))
        with tf.control_dependencies(checks):
            ids = tf.where(real, input_ids, 0)  # pad slots may hold any id; the model reads valid ones
            mask = tf.identity(attention_mask)
            knobs = {name: tf.identity(value) for name, value in knobs.items()}
            for name in knobs:  # statically shaped (the seed: [2]): a wrong one meets its check, not XLA
                if BY_NAME[name].shape:
                    size = BY_NAME[name].shape[0]
                    knobs[name] = tf.concat([knobs[name], tf.zeros([size], knobs[name].dtype)], 0)[:size]
        # reshape, not ensure_shape: grappler trusts ensure_shape and folds the shape checks above away
        static_shape = [rows, bucket]
        return compiled(tf.reshape(ids, static_shape), tf.reshape(mask, static_shape), knobs)

    return run


def _runner(net, cfg: GenerationConfig, key: CompileKey):
    run = strategy_of(key).run

    def signature(input_ids, attention_mask, given: dict):
        knobs = make_knobs(cfg, **given)
        if key.beam:
            nb = key.beam.num_beams
            ids, mask = tf.repeat(input_ids, nb, axis=0), tf.repeat(attention_mask, nb, axis=0)
            out = run(net, None, ids, mask, knobs, key)
            return {"sequences": out.sequences[:, 0], "sequences_scores": out.sequences_scores[:, 0]}
        out = run(net, None, input_ids, attention_mask, knobs, key)
        return {"sequences": out.sequences, "logprobs": out.record.logprobs}

    return signature


def export(model, out_dir: str, batch_size: int | None = 1, bucket: int = 64, max_new_tokens: int = 64,
           strategies=("greedy",), num_beams: int = 4, top_k: int = 4) -> str:
    """Write a SavedModel of `generate` to `out_dir` (which must not exist); returns out_dir.

    batch_size None lets greedy/sample/contrastive signatures take any batch size; beam needs a
    fixed one. num_beams: the beam signature's beams; top_k: the contrastive signature's candidates.
    """
    strategies = check_export_options(out_dir, batch_size, bucket, max_new_tokens, strategies, num_beams, top_k,
                                      model.config)
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)  # e.g. models/gutenberg/ for models/gutenberg/1, as TF Serving lays them out
    module = Exported(model, batch_size, bucket, max_new_tokens, strategies, num_beams, top_k)
    signatures = {name: fn.get_concrete_function() for name, fn in module.functions.items()}
    signatures["serving_default"] = signatures[strategies[0]]
    # a fresh temporary directory of our own: a leftover from a killed run is never reused
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-", dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
