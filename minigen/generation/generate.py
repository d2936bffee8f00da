"""`generate` and `stream`: check the options, bucket the prompt, call the compiled loop, shape the result.

The compiled-function cache: one `tf.function(jit_compile=True)` per `CompileKey` (strategy,
rows, bucket width, max_new_tokens and the options that change the graph; see core.py).
Everything numeric (temperature, top_k, top_p, penalties, min_new_tokens, seed) is a tensor
argument, so new values reuse the compiled function; `model.trace_count` counts traces so tests
can prove it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import warnings
import weakref
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from ..status import compile_notice
from ..model import Transformer
from . import constraints, contrastive, healing, layers
from .beam_search import beam_search
from . import group_beams
from .config import GenerationConfig
from . import core
from .core import CompileKey, compile_key, make_knobs, windows
from .inputs import as_batch, left_pad_to
from .outputs import GenerateOutput, GenerationState, generated_mask, per_step
from .processors import check_custom
from .stop_strings import StopTable, stop_table, token_bytes
from . import search as search_loop
from .search import search
from .speculative import speculative_loop

logger = logging.getLogger("minigen")


def describe(key: CompileKey) -> str:
    """What a compile is for, as users see it: 'greedy for 2 rows x bucket 16 (+32 new)'."""
    rows = f"{key.rows} row{'s' if key.rows != 1 else ''}"
    what = key.strategy
    if key.speculation:
        source = "a draft model" if key.speculation.source == "draft" else "prompt lookup"
        what = f"speculative {key.strategy} ({source}, {key.speculation.num_candidates} candidates per step)"
    return f"{what} for {rows} x bucket {key.bucket} (+{key.max_new_tokens} new)"


class Strategy(NamedTuple):
    """How `generate` runs a strategy: its whole compiled loop, and the module whose start_state /
    decode_until `stream` compiles apart (None: the strategy does not stream)."""

    run: Callable  # (net, draft, ids, mask, knobs, key, *prefix_cache) -> core.Outputs
    stream: object = None


# The strategies, each registered once: a new one is a row here (plus its options' rows in
# options.OPTIONS and its MODES there).
STRATEGIES = {
    "greedy": Strategy(lambda net, draft, *args: search(net, *args), search_loop),
    "sample": Strategy(lambda net, draft, *args: search(net, *args), search_loop),
    "beam": Strategy(lambda net, draft, *args: beam_search(net, *args)),
    "beam_sample": Strategy(lambda net, draft, *args: beam_search(net, *args)),
    "group_beam": Strategy(lambda net, draft, *args: beam_search(net, *args, rules=group_beams.RULES)),
    "contrastive": Strategy(lambda net, draft, *args: contrastive.contrastive_search(net, *args), contrastive),
    "speculative": Strategy(speculative_loop),  # greedy or sampling, with drafted tokens (key.speculation)
}


def strategy_of(key: CompileKey) -> Strategy:
    return STRATEGIES["speculative" if key.speculation else key.strategy]


def compiled_generate(model, key: CompileKey, assistant=None):
    """The cached compiled function for this key (and draft model), created (not yet traced) on first use.
    It takes (ids, mask, knobs), plus the previous cache when continuing (key.prefix > 0)."""
    net, draft = model.network, None if assistant is None else assistant.network
    run = strategy_of(key).run
    if key.prefix:
        def loop(ids, mask, knobs, prefix_cache):
            return run(net, draft, ids, mask, knobs, key, prefix_cache)
    else:
        def loop(ids, mask, knobs):
            return run(net, draft, ids, mask, knobs, key)
    return model.compile_cache.compiled(cache_key(key, assistant), loop)


def cache_key(key: CompileKey, assistant=None):
    """The compile cache's key: a draft model is part of what was compiled."""
    return key if assistant is None else ("assisted", key, assistant)


@functools.lru_cache(maxsize=8)
def _stop_table(tokenizer, stop_strings: tuple) -> StopTable:
    return stop_table(token_bytes(tokenizer.backend), stop_strings)


def stop_inputs(model, cfg: GenerationConfig) -> tuple[tuple, dict]:
    """(the compile key's stop part, the Knobs tensors) for cfg.stop_strings, from the model's tokenizer."""
    if not cfg.stop_strings:
        return (), {}
    if model.tokenizer is None:
        raise ValueError("stop_strings need the model's tokenizer: load a model directory that holds tokenizer.json "
                         "(or vocab.json + merges.txt)")
    table = _stop_table(model.tokenizer, cfg.stop_strings)
    return table.shape_key, {"stop_table": tf.constant(table.table), "stop_lengths": tf.constant(table.lengths)}


def constraint_inputs(model, cfg: GenerationConfig) -> tuple[tuple, dict, object]:
    """(the compile key's constraint part, the Knobs tensors, the host Automaton) for cfg.constraint
    (regex / json_schema / choices), built over the model's tokenizer; ((), {}, None) without one."""
    if cfg.constraint is None:
        return (), {}, None
    kind, value = cfg.constraint
    if model.tokenizer is None:
        raise ValueError(f"{kind} (structured output) needs the model's tokenizer: load a model directory that holds "
                         "tokenizer.json (or vocab.json + merges.txt)")
    automaton, shape_key, knobs = constraints.loop_inputs(model.tokenizer, kind, value, cfg.eos_ids(model.config),
                                                          model.config.vocab_size)
    return shape_key, knobs, automaton


def incomplete_rows(automaton, new_tokens: np.ndarray, eos_ids: tuple) -> np.ndarray:
    """[rows] bool: the row's new tokens [rows, n] do not complete its constraint (max_new_tokens ran out
    first, or a stop string ended it early)."""
    return np.array([not constraints.walk(automaton, row.tolist(), eos_ids) for row in new_tokens], bool)


def warn_incomplete(incomplete: np.ndarray, cfg: GenerationConfig) -> None:
    """Say which rows' structured output is incomplete: never return them silently."""
    rows = np.nonzero(incomplete)[0].tolist()
    if rows:
        warnings.warn(f"row(s) {rows[:10]}{' ...' if len(rows) > 10 else ''} did not complete their {cfg.constraint[0]} "
                      f"within max_new_tokens={cfg.max_new_tokens}: their text is a prefix of a match, not a match; "
                      "raise max_new_tokens (return_dict=True gives GenerateOutput.incomplete)", stacklevel=3)


def as_config(generation_config, options, defaults: GenerationConfig | None = None) -> GenerationConfig:
    """One GenerationConfig, not yet checked, from (lowest first) the model's defaults (what its
    generation_config.json sets), generate's generation_config (a minigen GenerationConfig: all its
    fields; a dict; or a transformers.GenerationConfig: the fields it sets) and keyword options."""
    base = {} if defaults is None else defaults.set_fields()
    if isinstance(generation_config, GenerationConfig):
        given = dataclasses.asdict(generation_config)
    elif isinstance(generation_config, dict):
        given = generation_config
    elif generation_config is None:
        given = {}
    elif type(generation_config).__module__.startswith("transformers") and hasattr(generation_config, "to_diff_dict"):
        return GenerationConfig.from_transformers(generation_config, **{**base, **options})
    else:
        raise ValueError(f"generation_config must be a GenerationConfig or a dict of options "
                         f"(minigen.generation.GenerationConfig or transformers.GenerationConfig), got "
                         f"{type(generation_config).__name__}")
    return GenerationConfig.from_options(**{**base, **given, **options})


def model_defaults(model) -> GenerationConfig | None:
    """The model's own generation defaults (minigen.load reads generation_config.json), or None."""
    return getattr(model, "generation_config", None)


def prepare(model, input_ids, attention_mask, cfg: GenerationConfig):
    """Check the prompts against a checked config, resolve its lengths for their width
    (GenerationConfig.for_prompt), left-pad them to the bucket.

    Returns (cfg for this width, ids, mask, batch, width, bucket): ids/mask [batch, bucket] int32.
    """
    ids, mask = as_batch(model.config, input_ids, attention_mask)
    check_left_padded(mask)
    batch, width = ids.shape
    cfg = cfg.for_prompt(width)
    longest = int(mask.sum(axis=1).max())
    if longest + cfg.max_new_tokens > model.config.n_positions:
        raise ValueError(
            f"prompt length {longest} + max_new_tokens {cfg.max_new_tokens} exceeds the model's "
            f"n_positions ({model.config.n_positions}); shorten the prompt or lower max_new_tokens"
        )
    bucket = -(-width // cfg.pad_to_multiple_of) * cfg.pad_to_multiple_of
    ids, mask = left_pad_to(ids, mask, bucket)
    return cfg, ids, mask, batch, width, bucket


def expand_rows(ids, mask, key: CompileKey):
    """Repeat each prompt row for its beams / return sequences: [key.rows, bucket]."""
    expand = key.rows // ids.shape[0]
    return np.repeat(ids, expand, axis=0), np.repeat(mask, expand, axis=0)


def check_left_padded(mask: np.ndarray) -> None:
    """ValueError unless every row's padding is on its left: generation continues from the last column."""
    bad = np.nonzero((np.diff(mask, axis=1) < 0).any(axis=1))[0]
    if len(bad):
        raise ValueError(f"attention_mask row(s) {bad.tolist()} have padding after a token (e.g. {mask[bad[0]].tolist()[:8]}"
                         f"{'...' if mask.shape[1] > 8 else ''}); generate continues each row from its last column, so "
                         "pad on the left (minigen.Tokenizer.encode_batch does)")


# output_scores / output_logits at their peak, measured (shipped model, 32 rows x 200 new tokens, 210 MB
# per buffer: RSS grew 2.5x the buffers with both, 2.9x with one, a compile included): the loop's buffer,
# its copy to the host and the per-step tuple
RECORD_PEAK = 3


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_record_memory(key: CompileKey, config) -> None:
    """ValueError, before compiling, when output_scores / output_logits or output_hidden_states /
    output_attentions would not fit in memory."""
    buffers = int(key.scores) + int(key.logits)
    need = RECORD_PEAK * buffers * key.rows * key.max_new_tokens * config.vocab_size * 4
    free = available_memory()
    if buffers and free is not None and need > free:
        asked = " and ".join(n for n, on in (("output_scores", key.scores), ("output_logits", key.logits)) if on)
        raise ValueError(f"{asked} for {key.rows} rows x {key.max_new_tokens} new tokens x {config.vocab_size} "
                         f"vocabulary need about {need / 2**30:.1f} GiB at their peak ({RECORD_PEAK}x the {buffers} "
                         f"buffer(s) of rows x steps x vocab float32), and {free / 2**30:.1f} GiB is available: ask for "
                         "fewer rows or tokens, or use output_logprobs (the chosen tokens' log-probs only)")
    need += RECORD_PEAK * layers.memory(key, config)
    if (key.hidden_states or key.attentions) and free is not None and need > free:
        asked = " and ".join(n for n, on in (("output_hidden_states", key.hidden_states),
                                             ("output_attentions", key.attentions)) if on)
        raise ValueError(f"{asked} for {key.rows} rows x {key.bucket + key.max_new_tokens} slots need about "
                         f"{need / 2**30:.1f} GiB at their peak (the loop's buffers, their host copy and the tuples), "
                         f"and {free / 2**30:.1f} GiB is available: ask for fewer rows or tokens")


def check_assistant(model, assistant, cfg: GenerationConfig, longest: int) -> None:
    """ValueError unless `assistant` can draft for `model` (options already checked)."""
    if not isinstance(getattr(assistant, "network", None), Transformer):
        raise ValueError(f"assistant_model must be a minigen model (minigen.load(...)), got {type(assistant).__name__}")
    if assistant is model:
        raise ValueError("assistant_model is the model itself; pass a smaller draft model (or use prompt_lookup_num_tokens)")
    if assistant.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"assistant_model has vocab_size {assistant.config.vocab_size} but the model has "
                         f"{model.config.vocab_size}; the draft must share the target's tokenizer")
    if longest + cfg.max_new_tokens > assistant.config.n_positions:
        raise ValueError(f"prompt length {longest} + max_new_tokens {cfg.max_new_tokens} exceeds the assistant "
                         f"model's n_positions ({assistant.config.n_positions})")


def check_state(model, cache, ids, mask, cfg: GenerationConfig) -> None:
    """ValueError unless `cache` is a state this model returned, for these rows, with room left."""
    if not isinstance(cache, GenerationState):
        raise ValueError(f"cache must be the GenerationState of an earlier call, got {type(cache).__name__}")
    if cache.model is None or cache.model() is not model:
        raise ValueError("cache holds the state of another model: continue a state only with the model that "
                         "returned it (its keys and values were computed with that model's weights)")
    if cache.sequences.shape[0] != ids.shape[0]:
        raise ValueError(f"cache holds {cache.sequences.shape[0]} rows but input_ids has {ids.shape[0]}")
    real = int((cache.mask.sum(axis=1) + mask.sum(axis=1)).max())
    if real + cfg.max_new_tokens > model.config.n_positions:
        raise ValueError(f"conversation length {real} + max_new_tokens {cfg.max_new_tokens} exceeds the "
                         f"model's n_positions ({model.config.n_positions})")


class Call(NamedTuple):
    """One checked call, ready to run: what `generate` and `stream` share."""

    cfg: GenerationConfig  # resolved for the prompts' width (GenerationConfig.for_prompt)
    key: CompileKey
    ids: np.ndarray  # [key.rows, key.bucket] int32: left-padded, rows expanded for beams / samples
    mask: np.ndarray  # [key.rows, key.bucket] int32
    batch: int  # prompts as given
    width: int  # their width as given
    knobs: core.Knobs
    prefix_cache: tuple  # (the continued state's KVCache,) or ()
    prompt: np.ndarray  # [batch, width] int32: the prompts as given (token_healing: as healed), pad ids included
    automaton: object = None  # structured output's constraints.Automaton (the host's check of each row)


def guidance_inputs(model, cfg: GenerationConfig, ids, mask, negative_ids, negative_mask) -> tuple[int, dict]:
    """(the compile key's guidance part: the unconditional prompt's bucket, 0 when off; the Knobs'
    unconditional (ids, mask) [batch, bucket'] int32) for classifier-free guidance. The unconditional
    prompt is negative_prompt_ids (left-padded as input_ids may be), else each prompt's last token (the
    reference's default); ids, mask: the bucketed prompts [batch, bucket]."""
    if cfg.guidance_scale is None:
        if negative_ids is not None or negative_mask is not None:
            raise ValueError("negative_prompt_ids / negative_prompt_attention_mask are classifier-free guidance's "
                             "unconditional prompt: set guidance_scale (not None or 1) to use them")
        return 0, {}
    if negative_ids is None:
        if negative_mask is not None:
            raise ValueError("negative_prompt_attention_mask needs negative_prompt_ids")
        negative_ids, negative_mask = ids[:, -1:], np.ones([len(ids), 1], np.int32)  # the last column: real
    try:
        negative_ids, negative_mask = as_batch(model.config, negative_ids, negative_mask)
        check_left_padded(negative_mask)
    except ValueError as e:
        raise ValueError(f"negative_prompt_ids: {e}") from None
    if len(negative_ids) != len(ids):
        raise ValueError(f"negative_prompt_ids has {len(negative_ids)} rows but input_ids has {len(ids)}: one "
                         "unconditional prompt per prompt")
    if int(negative_mask.sum(axis=1).max()) + cfg.max_new_tokens > model.config.n_positions:
        raise ValueError(f"negative_prompt_ids length + max_new_tokens {cfg.max_new_tokens} exceeds the model's "
                         f"n_positions ({model.config.n_positions})")
    width = negative_ids.shape[1]
    bucket = -(-width // cfg.pad_to_multiple_of) * cfg.pad_to_multiple_of
    return bucket, dict(zip(("ids", "mask"), left_pad_to(negative_ids, negative_mask, bucket)))


def plan(model, input_ids, attention_mask, generation_config, options: dict, *, streaming: bool = False,
         cache: GenerationState | None = None, return_state: bool = False, assistant=None,
         negative: tuple = (None, None)) -> Call:
    """Everything before the compiled loop runs, for generate and stream alike: the options checked
    (alone, together, against the model), the prompts checked and bucketed, a continued state
    joined, the compile key, the rows expanded, the memory and user-processor checks, the knobs.
    Raises ValueError before anything compiles."""
    cfg = as_config(generation_config, options, model_defaults(model)).check(
        model.config, streaming=streaming, continuing=cache is not None or return_state, assistant=assistant is not None)
    if cfg.token_healing:
        input_ids, attention_mask = healing.heal(model, *as_batch(model.config, input_ids, attention_mask),
                                                 cfg.pad_id(model.config), cfg.pad_to_multiple_of)
    cfg, ids, mask, batch, width, bucket = prepare(model, input_ids, attention_mask, cfg)
    if assistant is not None:
        check_assistant(model, assistant, cfg, int(mask.sum(axis=1).max()))
    speculation = "draft" if assistant is not None else "lookup" if cfg.prompt_lookup_num_tokens else ""
    prefix, prefix_cache = 0, ()
    if cache is not None:
        check_state(model, cache, ids, mask, cfg)
        ids = np.concatenate([cache.sequences, ids], axis=1).astype(np.int32)
        mask = np.concatenate([cache.mask, mask], axis=1).astype(np.int32)
        bucket, prefix, prefix_cache = ids.shape[1], cache.width - 1, (cache.cache,)
    stop, stop_knobs = stop_inputs(model, cfg)
    constraint, constraint_knobs, automaton = constraint_inputs(model, cfg)
    guidance, unconditional = guidance_inputs(model, cfg, ids, mask, *negative)
    key = compile_key(cfg, model.config, batch, bucket, prefix=prefix, return_cache=return_state,
                      speculation=speculation, stop=stop, constraint=constraint, guidance=guidance)
    ids, mask = expand_rows(ids, mask, key)
    guidance_knobs = {"unconditional": tuple(tf.constant(a) for a in expand_rows(*unconditional.values(), key))} \
        if guidance else {}
    check_record_memory(key, model.config)
    scored_rows = key.rows // (key.beam.groups if key.beam else 1)  # diverse beam search scores a group at a time
    check_custom(cfg.logits_processor, scored_rows, key.bucket + key.max_new_tokens, model.config.vocab_size)
    return Call(cfg, key, ids, mask, batch, width, make_knobs(cfg, **stop_knobs, **constraint_knobs, **guidance_knobs),
                prefix_cache,
                given_ids(input_ids), automaton)


def generate(model, input_ids, attention_mask=None, generation_config: GenerationConfig | None = None,
             cache: GenerationState | None = None, return_state: bool = False, assistant_model=None,
             negative_prompt_ids=None, negative_prompt_attention_mask=None, **options):
    """Generate continuations of a (left-padded) batch of prompts, compiled whole with XLA.

    Args:
        input_ids: [batch, width] (or [width]) token ids; pads anywhere the mask says.
        attention_mask: [batch, width] of 0/1; None means no padding.
        generation_config: a GenerationConfig (or a dict of its options); keyword options override its fields.
        cache: a GenerationState from an earlier call: input_ids then continue that conversation
            (one new segment per row), its keys/values reused, not recomputed. Greedy/sampling.
        return_state: also return the state to continue from (in GenerateOutput.state).
        negative_prompt_ids, negative_prompt_attention_mask: [batch, width'] classifier-free guidance's
            unconditional prompt (with guidance_scale; default: each prompt's last token), as the reference's.
        assistant_model: a smaller minigen model with the same vocabulary: speculative decoding,
            num_assistant_tokens drafted per step and verified in one pass of this model. Greedy
            output is this model's own greedy output; sampled output has its distribution.
        **options: GenerationConfig fields (max_new_tokens, do_sample, temperature, top_k, top_p,
            num_beams, num_return_sequences, length_penalty, early_stopping, repetition_penalty,
            no_repeat_ngram_size, min_new_tokens, penalty_alpha (contrastive search), eos_token_id,
            pad_token_id, seed,
            pad_to_multiple_of, return_dict, output_scores, output_logits, output_logprobs, top_logprobs,
            prompt_lookup_num_tokens, max_matching_ngram_size, num_assistant_tokens; see GenerationConfig).

    Returns:
        int32 array [batch * num_return_sequences, width + max_new_tokens] in Hugging Face's layout
        (the prompt as given, then new tokens, pad_token_id after EOS), or a GenerateOutput when
        return_dict, an output_* option or return_state is set (see outputs.GenerateOutput). With `cache`, the layout is that of the
        new segment alone as the prompt.
    """
    call = plan(model, input_ids, attention_mask, generation_config, options, cache=cache, return_state=return_state,
                assistant=assistant_model, negative=(negative_prompt_ids, negative_prompt_attention_mask))
    cfg, key, ids, mask, batch, width = call.cfg, call.key, call.ids, call.mask, call.batch, call.width
    fresh = cache_key(key, assistant_model) not in model.compile_cache
    fn = compiled_generate(model, key, assistant_model)
    traces = model.trace_count
    began = time.perf_counter()
    with compile_notice(describe(key), fresh):
        result = fn(tf.constant(ids), tf.constant(mask), call.knobs, *call.prefix_cache)
        sequences = result.sequences.numpy()
    elapsed = time.perf_counter() - began
    compiled = model.trace_count != traces
    if compiled:
        logger.info("compiled %s in %.2fs (incl. first run)", describe(key), elapsed)
    logger.info("generated %d x %d tokens in %.3fs (%.1f tok/s%s)", batch, cfg.max_new_tokens, elapsed,
                batch * cfg.max_new_tokens / elapsed, ", incl. the compile" if compiled else "")

    if result.record.invalid.shape[0]:
        refuse_invalid_scores(result.record.invalid.numpy(), cfg)
    speculation_stats = None
    if key.speculation:
        steps, accepted, row_steps, drafted = (int(x) for x in result.speculation.numpy())
        mean = accepted / row_steps if row_steps else 0.0
        speculation_stats = {"verify_steps": steps, "mean_accepted_tokens": mean, "tokens_per_step": mean + 1,
                             "mean_proposed_tokens": drafted / row_steps if row_steps else 0.0}
        logger.info("speculative (%s): %d verify steps, %.2f candidates accepted per step",
                    key.speculation.source, steps, mean)
    state = None
    if return_state:
        gen = generated_mask(sequences[:, key.bucket:], key.eos_ids)
        state = GenerationState(cache=result.cache, sequences=sequences, mask=np.concatenate([mask, gen], axis=1),
                                model=weakref.ref(model))
    # drop the bucket's extra left padding (and, continuing, the history): the caller's width back
    cut = key.bucket - width
    sequences = sequences.reshape(batch * cfg.num_return_sequences, -1)[:, cut:]
    # the prompt part exactly as given, pad ids included (the model saw valid ids in pad slots)
    sequences[:, :width] = np.repeat(call.prompt, len(sequences) // batch, axis=0)
    incomplete = None if call.automaton is None else \
        incomplete_rows(call.automaton, sequences[:, width:], key.eos_ids)
    if not (cfg.return_dict or cfg.output_scores or cfg.output_logits or cfg.output_logprobs or cfg.top_logprobs
            or cfg.output_hidden_states or cfg.output_attentions or return_state):
        if incomplete is not None:
            warn_incomplete(incomplete, cfg)
        return sequences
    steps = int(result.steps)
    output = GenerateOutput(sequences=sequences, state=state, speculation=speculation_stats, incomplete=incomplete)
    if cfg.output_scores:
        output.scores = per_step(result.record.scores.numpy(), steps, key.pad_id)
    if cfg.output_logits:
        output.logits = per_step(result.record.logits.numpy(), steps, key.pad_id)
    if cfg.output_logprobs:
        output.logprobs = result.record.logprobs.numpy()
    if cfg.top_logprobs:
        output.top_tokens = result.record.top_tokens.numpy()
        output.top_logprobs = result.record.top_logprobs.numpy()
    if key.hidden_states or key.attentions:
        output.hidden_states, output.attentions = layers.as_outputs(
            tf.nest.map_structure(lambda t: t.numpy(), result.layers), key, steps, width)
    if key.beam and cfg.output_scores:
        output.sequences_scores = result.sequences_scores.numpy().reshape(-1)
        output.beam_indices = result.beam_indices.numpy().reshape(len(sequences), -1)
    return output


def refuse_invalid_scores(invalid: np.ndarray, cfg: GenerationConfig) -> None:
    """ValueError when a user's processor made a row's scores NaN: the tokens chosen from them mean
    nothing, and returning them would look like a plausible answer."""
    rows = np.nonzero(invalid)[0].tolist()
    if rows:
        names = ", ".join(f.name for f in cfg.logits_processor)
        raise ValueError(f"logits_processor ({names}) returned NaN scores for row(s) {rows[:10]}"
                         f"{' ...' if len(rows) > 10 else ''}: the tokens chosen from them are meaningless, so none "
                         "are returned; make it return finite scores (-inf for a token it forbids)")


def given_ids(input_ids) -> np.ndarray:
    """The caller's ids as a [batch, width] int32 array (already validated by as_batch)."""
    ids = np.asarray(input_ids)
    return (ids[None, :] if ids.ndim == 1 else ids).astype(np.int32)


def compiled_stream(model, key: CompileKey):
    """The cached (start, advance) pair of compiled functions for streaming with this key."""
    net = model.network
    loop = strategy_of(key).stream

    def begin(ids, mask, unconditional=()):
        guided = {"unconditional": unconditional} if key.guidance else {}  # (search.start_state's alone)
        return loop.start_state(net, ids, mask, key, **guided)

    def advance(state, mask, key_mask, knobs, limit):
        return loop.decode_until(net, state, mask, key_mask, knobs, key, limit)

    return model.compile_cache.compiled(("stream-start", key), begin), model.compile_cache.compiled(("stream", key), advance)


def stream(model, input_ids, attention_mask=None, chunk_size: int = 8, generation_config=None,
           negative_prompt_ids=None, negative_prompt_attention_mask=None, **options):
    """Generate like `generate`, yielding new tokens as they come: int32 arrays [batch, n] (n <= chunk_size).

    The compiled decode loop runs `chunk_size` steps at a time and hands its state (the static KV
    cache included) back for the next chunk, so the tokens are exactly `generate`'s. Rows that
    finished get pad_token_id. Greedy search, sampling and contrastive search (beam search's best
    hypothesis is only known at the end). The generator's return value (StopIteration.value) is
    "max_time" when max_time cut it short, else None.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    call = plan(model, input_ids, attention_mask, generation_config, options, streaming=True,
                negative=(negative_prompt_ids, negative_prompt_attention_mask))
    cfg, key, ids, mask, batch, bucket, knobs = call.cfg, call.key, call.ids, call.mask, call.batch, call.key.bucket, \
        call.knobs
    fresh = ("stream", key) not in model.compile_cache
    begin, advance = compiled_stream(model, key)
    mask_t = tf.constant(mask)
    traces, began = model.trace_count, time.perf_counter()
    with compile_notice("streaming " + describe(key), fresh):
        state, key_mask = begin(tf.constant(ids), mask_t, knobs.unconditional)
    # decode in segments, as one-shot generation does: a chunk stops at a segment's end, where the
    # cache grows (advance compiles once more per segment)
    ends = [size - key.bucket for size in windows(key)]
    done, stopped = 0, None
    while done < cfg.max_new_tokens:
        if done == ends[0] and len(ends) > 1:
            ends.pop(0)
            state, key_mask = search_loop.grow(state, key_mask, key.bucket + ends[0])
        limit = min(done + chunk_size, ends[0])
        with compile_notice("streaming " + describe(key), fresh and done == 0):
            state = advance(state, mask_t, key_mask, knobs, tf.constant(limit, tf.int32))
        if done == 0 and model.trace_count != traces:
            logger.info("compiled streaming %s in %.2fs (incl. first chunk)", describe(key),
                        time.perf_counter() - began)
        if state.record.invalid.shape[0]:
            refuse_invalid_scores(state.record.invalid.numpy(), cfg)
        chosen = int(state.step)
        if chosen > done:
            yield state.sequences[:, bucket + done:bucket + chosen].numpy()
        done = chosen
        if done < limit:  # every row finished early
            break
        if cfg.max_time is not None and time.perf_counter() - began > cfg.max_time:
            logger.info("max_time %.3gs reached after %d tokens", cfg.max_time, done)
            stopped = "max_time"
            break
    elapsed = time.perf_counter() - began
    logger.info("streamed %d x %d tokens in %.3fs (%.1f tok/s%s)", batch, done, elapsed, batch * done / elapsed,
                ", incl. the compile" if model.trace_count != traces else "")
    if call.automaton is not None and stopped is None:
        warn_incomplete(incomplete_rows(call.automaton, state.sequences[:, bucket:bucket + done].numpy(), key.eos_ids),
                        cfg)
    return stopped
