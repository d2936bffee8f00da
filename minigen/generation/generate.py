"""`generate`: check the options, bucket the prompt, call the compiled loop, shape the result.

The compiled-function cache: one `tf.function(jit_compile=True)` per `Static` key (strategy,
rows, bucket width, max_new_tokens and the options that change the graph). Everything numeric
(temperature, top_k, top_p, penalties, min_new_tokens, seed) is a tensor argument, so new values
reuse the compiled function; `model.trace_count` counts traces so tests can prove it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref

import numpy as np
import tensorflow as tf

from ..cache import KVCache
from ..compile_cache import compile_notice, xla_function
from .beam import beam_search
from .config import GenerationConfig
from .decode import Knobs, Static, generate_loop, run_steps, start
from .speculative import speculative_loop
from .inputs import as_batch, left_pad_to

logger = logging.getLogger("minigen")


@dataclasses.dataclass
class GenerateOutput:
    """What `generate(..., return_dict=True)` returns."""

    sequences: np.ndarray  # [batch * num_return_sequences, prompt_width + max_new_tokens]
    scores: np.ndarray | None = None  # greedy/sampling: [rows, max_new_tokens] log-prob of each chosen token
    sequences_scores: np.ndarray | None = None  # beam search: [rows] length-penalised hypothesis scores
    state: "GenerationState | None" = None  # with return_state=True: pass as generate(..., cache=state)
    # speculative decoding: verify_steps, mean_accepted_tokens (candidates accepted per row and verify
    # step), tokens_per_step (mean_accepted_tokens + 1: the target adds one token of its own)
    speculation: dict | None = None


@dataclasses.dataclass
class GenerationState:
    """What `generate(..., return_state=True)` returns in `.state`: pass it back as
    `generate(new_ids, cache=state)` to continue without recomputing what came before.

    sequences, mask: [rows, width], every slot so far: prompts (left padding has mask 0), generated
    tokens, and pads after a row's EOS (mask 0). The cache holds the keys/values of slots
    [0, width - 1); the last slot's token is run through the model by the next call.
    """

    cache: KVCache
    sequences: np.ndarray
    mask: np.ndarray
    model: "weakref.ref | None" = None  # the model that made it: a cache is only valid with its weights

    @property
    def width(self) -> int:
        return self.sequences.shape[1]


def generated_mask(new_tokens: np.ndarray, eos_ids: tuple) -> np.ndarray:
    """1 for generated tokens up to and including each row's first EOS, 0 for the pads after it."""
    if not eos_ids:
        return np.ones_like(new_tokens, np.int32)
    hit = np.isin(new_tokens, eos_ids)
    before = np.cumsum(hit, axis=1) - hit  # EOS seen strictly before this token
    return (before == 0).astype(np.int32)


def static_key(model, cfg: GenerationConfig, batch: int, bucket: int) -> Static:
    strategy = cfg.strategy
    expand = cfg.num_beams if strategy == "beam" else cfg.num_return_sequences
    return Static(
        strategy=strategy,
        rows=batch * expand,
        bucket=bucket,
        max_new_tokens=cfg.max_new_tokens,
        eos_ids=cfg.eos_ids(model.config),
        pad_id=cfg.pad_id(model.config),
        use_repetition_penalty=cfg.repetition_penalty != 1.0,
        no_repeat_ngram_size=cfg.no_repeat_ngram_size,
        output_scores=cfg.output_scores and strategy != "beam",
        num_beams=cfg.num_beams,
        num_return_sequences=cfg.num_return_sequences if strategy == "beam" else 1,
        early_stopping=cfg.early_stopping if strategy == "beam" else False,
    )


def make_knobs(cfg: GenerationConfig) -> Knobs:
    seed = cfg.seed if cfg.seed is not None else np.random.randint(-(2**31), 2**31 - 1, size=2)
    return Knobs(
        temperature=tf.constant(cfg.temperature, tf.float32),
        top_k=tf.constant(cfg.top_k, tf.int32),
        top_p=tf.constant(cfg.top_p, tf.float32),
        repetition_penalty=tf.constant(cfg.repetition_penalty, tf.float32),
        length_penalty=tf.constant(cfg.length_penalty, tf.float32),
        min_new_tokens=tf.constant(cfg.min_new_tokens, tf.int32),
        seed=tf.constant(np.asarray(seed, np.int64).astype(np.int32), tf.int32),
    )


def compile_key(static: Static, assistant=None):
    return static if assistant is None else ("assisted", static, assistant)


def describe(static: Static, cfg: GenerationConfig) -> str:
    """What a compile is for, as users see it: 'greedy for 2 rows x bucket 16 (+32 new)'."""
    rows = f"{static.rows} row{'s' if static.rows != 1 else ''}"
    return f"{static.strategy} for {rows} x bucket {static.bucket} (+{cfg.max_new_tokens} new)"


def compiled_generate(model, static: Static, assistant=None):
    """The cached compiled function for this key (and draft model), created (not yet traced) on first use."""
    key = compile_key(static, assistant)

    def run(ids, mask, knobs):
        model.trace_count += 1
        if static.speculation:
            return speculative_loop(model, assistant, ids, mask, knobs, static)
        if static.strategy == "beam":
            return beam_search(model, ids, mask, knobs, static)
        return generate_loop(model, ids, mask, knobs, static)

    def run_continued(ids, mask, knobs, prefix_cache):  # static.prefix > 0: continuing a state
        model.trace_count += 1
        return generate_loop(model, ids, mask, knobs, static, prefix_cache)

    fn = run_continued if static.prefix else run
    return model._compiled.get_or_create(key, lambda: xla_function(fn))


def prepare(model, input_ids, attention_mask, generation_config, options):
    """Validate options and inputs, left-pad to the bucket, repeat rows for beams/return sequences.

    Returns (cfg, ids, mask, batch, width, static): ids/mask are [static.rows, bucket] int32.
    """
    if isinstance(generation_config, GenerationConfig):
        cfg = GenerationConfig.from_options(**{**dataclasses.asdict(generation_config), **options})
    elif isinstance(generation_config, dict):
        cfg = GenerationConfig.from_options(**{**generation_config, **options})
    elif generation_config is None:
        cfg = GenerationConfig.from_options(**options)
    else:
        raise ValueError(f"generation_config must be a GenerationConfig or a dict of its options, "
                         f"got {type(generation_config).__name__}")
    cfg.validate(model.config)
    ids, mask = as_batch(model.config, input_ids, attention_mask)
    check_left_padded(mask)
    batch, width = ids.shape
    longest = int(mask.sum(axis=1).max())
    if longest + cfg.max_new_tokens > model.config.n_positions:
        raise ValueError(
            f"prompt length {longest} + max_new_tokens {cfg.max_new_tokens} exceeds the model's "
            f"n_positions ({model.config.n_positions}); shorten the prompt or lower max_new_tokens"
        )
    bucket = -(-width // cfg.pad_to_multiple_of) * cfg.pad_to_multiple_of
    ids, mask = left_pad_to(ids, mask, bucket)
    static = static_key(model, cfg, batch, bucket)
    expand = static.rows // batch
    ids, mask = np.repeat(ids, expand, axis=0), np.repeat(mask, expand, axis=0)
    return cfg, ids, mask, batch, width, static


def check_left_padded(mask: np.ndarray) -> None:
    """ValueError unless every row's padding is on its left: generation continues from the last column."""
    bad = np.nonzero((np.diff(mask, axis=1) < 0).any(axis=1))[0]
    if len(bad):
        raise ValueError(f"attention_mask row(s) {bad.tolist()} have padding after a token (e.g. {mask[bad[0]].tolist()[:8]}"
                         f"{'...' if mask.shape[1] > 8 else ''}); generate continues each row from its last column, so "
                         "pad on the left (minigen.Tokenizer.encode_batch does)")


def check_assistant(model, assistant, cfg: GenerationConfig, longest: int) -> None:
    """ValueError unless `assistant` can draft for `model` with these options."""
    from ..model import GPT2

    if not isinstance(assistant, GPT2):
        raise ValueError(f"assistant_model must be a minigen model (minigen.load(...)), got {type(assistant).__name__}")
    if assistant is model:
        raise ValueError("assistant_model is the model itself; pass a smaller draft model (or use prompt_lookup_num_tokens)")
    if assistant.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"assistant_model has vocab_size {assistant.config.vocab_size} but the model has "
                         f"{model.config.vocab_size}; the draft must share the target's tokenizer")
    if cfg.prompt_lookup_num_tokens is not None:
        raise ValueError("use either assistant_model or prompt_lookup_num_tokens, not both")
    cfg.check_speculative("assistant_model")
    if longest + cfg.max_new_tokens > assistant.config.n_positions:
        raise ValueError(f"prompt length {longest} + max_new_tokens {cfg.max_new_tokens} exceeds the assistant "
                         f"model's n_positions ({assistant.config.n_positions})")


def speculation_key(static: Static, cfg: GenerationConfig, assistant) -> Static:
    if assistant is not None:
        return static._replace(speculation="draft", num_candidates=cfg.num_assistant_tokens)
    if cfg.prompt_lookup_num_tokens is not None:
        return static._replace(speculation="lookup", num_candidates=cfg.prompt_lookup_num_tokens,
                               ngram=cfg.max_matching_ngram_size)
    return static


def generate(model, input_ids, attention_mask=None, generation_config: GenerationConfig | None = None,
             cache: GenerationState | None = None, return_state: bool = False, assistant_model=None, **options):
    """Generate continuations of a (left-padded) batch of prompts, compiled whole with XLA.

    Args:
        input_ids: [batch, width] (or [width]) token ids; pads anywhere the mask says.
        attention_mask: [batch, width] of 0/1; None means no padding.
        generation_config: a GenerationConfig; keyword options override its fields.
        cache: a GenerationState from an earlier call: input_ids then continue that conversation
            (one new segment per row), its keys/values reused, not recomputed. Greedy/sampling.
        return_state: also return the state to continue from (in GenerateOutput.state).
        assistant_model: a smaller minigen model with the same vocabulary: speculative decoding,
            num_assistant_tokens drafted per step and verified in one pass of this model. Greedy
            output is this model's own greedy output; sampled output has its distribution.
        **options: GenerationConfig fields (max_new_tokens, do_sample, temperature, top_k, top_p,
            num_beams, num_return_sequences, length_penalty, early_stopping, repetition_penalty,
            no_repeat_ngram_size, min_new_tokens, eos_token_id, pad_token_id, seed,
            pad_to_multiple_of, return_dict, output_scores, prompt_lookup_num_tokens,
            max_matching_ngram_size, num_assistant_tokens).

    Returns:
        int32 array [batch * num_return_sequences, width + max_new_tokens] in Hugging Face's layout
        (the prompt as given, then new tokens, pad_token_id after EOS), or a GenerateOutput when
        return_dict, output_scores or return_state is set. With `cache`, the layout is that of the
        new segment alone as the prompt.
    """
    cfg, ids, mask, batch, width, static = prepare(model, input_ids, attention_mask, generation_config, options)
    if assistant_model is not None:
        check_assistant(model, assistant_model, cfg, int(mask.sum(axis=1).max()))
    static = speculation_key(static, cfg, assistant_model)
    if (cache is not None or return_state) and static.speculation:
        raise ValueError("cache/return_state (continuing a generation) do not combine with speculative decoding")
    if (cache is not None or return_state) and static.strategy == "beam":
        raise ValueError("cache/return_state (continuing a generation) support greedy search and sampling, not num_beams > 1")
    if (cache is not None or return_state) and cfg.num_return_sequences != 1:
        raise ValueError("cache/return_state need num_return_sequences=1: one continuation per row")
    prefix_cache = None
    if cache is not None:
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
        ids = np.concatenate([cache.sequences, ids], axis=1).astype(np.int32)
        mask = np.concatenate([cache.mask, mask], axis=1).astype(np.int32)
        static = static._replace(bucket=ids.shape[1], prefix=cache.width - 1)
        prefix_cache = cache.cache
    static = static._replace(return_cache=return_state)
    fresh = compile_key(static, assistant_model) not in model.compile_cache
    fn = compiled_generate(model, static, assistant_model)
    traces = model.trace_count
    began = time.perf_counter()
    args = (tf.constant(ids), tf.constant(mask), make_knobs(cfg)) + (() if prefix_cache is None else (prefix_cache,))
    with compile_notice(describe(static, cfg), fresh):
        result = fn(*args)
        sequences, scores = result[0].numpy(), result[1].numpy()
    elapsed = time.perf_counter() - began
    compiled = model.trace_count != traces
    if compiled:
        logger.info("compiled %s in %.2fs (incl. first run)", describe(static, cfg), elapsed)
    logger.info("generated %d x %d tokens in %.3fs (%.1f tok/s%s)", batch, cfg.max_new_tokens, elapsed,
                batch * cfg.max_new_tokens / elapsed, ", incl. the compile" if compiled else "")

    speculation = None
    if static.speculation:
        steps, accepted, row_steps = (int(x) for x in result[2].numpy())
        mean = accepted / row_steps if row_steps else 0.0
        speculation = {"verify_steps": steps, "mean_accepted_tokens": mean, "tokens_per_step": mean + 1}
        logger.info("speculative (%s): %d verify steps, %.2f candidates accepted per step",
                    static.speculation, steps, mean)
    state = None
    if return_state:
        gen = generated_mask(sequences[:, static.bucket:], static.eos_ids)
        state = GenerationState(cache=result[2], sequences=sequences, mask=np.concatenate([mask, gen], axis=1),
                                model=weakref.ref(model))
    # drop the bucket's extra left padding (and, continuing, the history): the caller's width back
    cut = static.bucket - width
    if static.strategy == "beam":
        sequences = sequences.reshape(batch * cfg.num_return_sequences, -1)[:, cut:]
        sequences_scores, token_scores = scores.reshape(-1), None
    else:
        sequences, sequences_scores, token_scores = sequences[:, cut:], None, scores
    # the prompt part exactly as given, pad ids included (the model saw valid ids in pad slots)
    sequences[:, :width] = np.repeat(given_ids(input_ids), len(sequences) // batch, axis=0)
    if not (cfg.return_dict or cfg.output_scores or return_state):
        return sequences
    return GenerateOutput(
        sequences=sequences,
        scores=token_scores if cfg.output_scores else None,
        sequences_scores=sequences_scores if cfg.output_scores else None,
        state=state,
        speculation=speculation,
    )


def given_ids(input_ids) -> np.ndarray:
    """The caller's ids as a [batch, width] int32 array (already validated by as_batch)."""
    ids = np.asarray(input_ids)
    return (ids[None, :] if ids.ndim == 1 else ids).astype(np.int32)


def compiled_stream(model, static: Static):
    """The cached (start, run_steps) pair of compiled functions for streaming with this key."""

    def begin(ids, mask):
        model.trace_count += 1
        return start(model, ids, mask, static)

    def advance(state, mask, key_mask, knobs, limit):
        model.trace_count += 1
        return run_steps(model, state, mask, key_mask, knobs, static, limit)

    return model._compiled.get_or_create(("stream", static), lambda: (
        xla_function(begin),
        xla_function(advance),
    ))


def stream(model, input_ids, attention_mask=None, chunk_size: int = 8, generation_config=None, **options):
    """Generate like `generate`, yielding new tokens as they come: int32 arrays [batch, n] (n <= chunk_size).

    The compiled decode loop runs `chunk_size` steps at a time and hands its state (the static KV
    cache included) back for the next chunk, so the tokens are exactly `generate`'s. Rows that
    finished get pad_token_id. Greedy search and sampling only (beam search's best hypothesis is
    only known at the end).
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    cfg, ids, mask, batch, width, static = prepare(model, input_ids, attention_mask, generation_config, options)
    if static.strategy == "beam":
        raise ValueError("streaming supports greedy search and sampling, not num_beams > 1")
    if cfg.prompt_lookup_num_tokens is not None:
        raise ValueError("streaming does not support prompt_lookup_num_tokens; use generate")
    fresh = ("stream", static) not in model.compile_cache
    begin, advance = compiled_stream(model, static)
    knobs = make_knobs(cfg)
    mask_t = tf.constant(mask)
    traces, began = model.trace_count, time.perf_counter()
    with compile_notice("streaming " + describe(static, cfg), fresh):
        state, key_mask = begin(tf.constant(ids), mask_t)
    bucket, done = static.bucket, 0
    while done < cfg.max_new_tokens:
        limit = min(done + chunk_size, cfg.max_new_tokens)
        with compile_notice("streaming " + describe(static, cfg), fresh and done == 0):
            state = advance(state, mask_t, key_mask, knobs, tf.constant(limit, tf.int32))
        if done == 0 and model.trace_count != traces:
            logger.info("compiled streaming %s in %.2fs (incl. first chunk)", describe(static, cfg),
                        time.perf_counter() - began)
        chosen = int(state.step)
        if chosen > done:
            yield state.sequences[:, bucket + done:bucket + chosen].numpy()
        done = chosen
        if done < limit:  # every row finished early
            break
    elapsed = time.perf_counter() - began
    logger.info("streamed %d x %d tokens in %.3fs (%.1f tok/s%s)", batch, done, elapsed, batch * done / elapsed,
                ", incl. the compile" if model.trace_count != traces else "")
