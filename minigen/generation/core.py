"""The decoding core every strategy shares: the compile key, the run-time knobs, the step a
token is chosen by, the sequence buffer and the random key.

A strategy (search.py: greedy and sampling, beam_search.py, contrastive.py, speculative.py) owns only what is
its own - beam bookkeeping, speculative propose/verify/accept - and calls these for the rest:

    compile_key(cfg, ...)        the one compile key, from a checked GenerationConfig
    make_knobs(cfg)              every numeric option as a tensor (new values never retrace)
    scores(logits, step, ...)    the processed scores a token is chosen from (processors, warpers)
    choose_token(scores, ...)    argmax or a seeded draw
    new_record / record          what is kept of each step when asked (log-probs, scores, logits)
    write_column / write_runs    tokens into the [rows, bucket + max_new] sequence buffer
    rng_key(seed, step, use)     the one stateless random-key scheme
    windows(key)                 the cache length of each decode segment
    Outputs                      what every loop returns

Position ids follow the rule in minigen/positions.py.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

from . import constraints
from .options import dola_candidates
from . import processors as P
from .config import GenerationConfig
from .stop_strings import stop_hit

# -- what is compiled: one function per distinct key ------------------------------------------------

BEAMS = ("beam", "beam_sample", "group_beam")  # the strategies beam_search.py runs (group_beam: group_beams.py)
SAMPLING = ("sample", "beam_sample")  # the strategies whose scores go through the warpers


class BeamKey(NamedTuple):
    num_beams: int
    num_return_sequences: int
    early_stopping: object  # True | False | "never"
    groups: int = 1  # num_beam_groups: diverse beam search (group_beams.py) when > 1


class SpecKey(NamedTuple):
    source: str  # "lookup" (prompt lookup) | "draft" (assistant model)
    num_candidates: int  # tokens proposed per verify step (at most, with an adaptive draft)
    ngram: int = 0  # prompt lookup: longest n-gram matched
    heuristic: bool = False  # draft: num_assistant_tokens_schedule "heuristic": each row's count adapts
    confidence: bool = False  # draft: assistant_confidence_threshold set: a row stops drafting when unsure


class CompileKey(NamedTuple):
    """Options that shape the graph: each distinct value is one compiled function. Built only by
    `compile_key`; everything numeric travels in `Knobs` instead."""

    strategy: str  # "greedy" | "sample" | "beam" | "beam_sample" | "group_beam" | "contrastive"
    rows: int | None  # batch rows after expanding num_return_sequences / num_beams (None: any, export)
    bucket: int  # padded prompt width
    max_new_tokens: int
    eos_ids: tuple
    pad_id: int
    processors: tuple  # ((option, setting), ...): the processors in the graph, see processors.active
    logprobs: bool = False  # keep each chosen token's log-prob (output_logprobs): [rows, max_new]
    scores: bool = False  # keep each step's processed scores (output_scores): [max_new, rows, vocab]
    logits: bool = False  # keep each step's raw logits (output_logits): [max_new, rows, vocab]
    top_logprobs: int = 0  # keep each step's k most likely tokens and log-probs (top_logprobs): [rows, max_new, k]
    hidden_states: bool = False  # keep every layer's hidden states (output_hidden_states): layers.py
    guidance: int = 0  # classifier-free guidance: its unconditional prompt's bucket (0 = off)
    dola: tuple = ()  # DoLa decoding: the candidate premature layers (options.dola_candidates), () = off
    attentions: bool = False  # keep every layer's attention probabilities (output_attentions): layers.py
    beam: BeamKey | None = None
    speculation: SpecKey | None = None
    stop: tuple = ()  # stop strings: the check's shapes (stop_strings.StopTable.shape_key), () = off
    constraint: tuple = ()  # structured output: (state bucket, class bucket) of its tables, () = off
    candidates: int = 0  # contrastive search: top_k tokens scored per step (the block's width)
    prefix: int = 0  # continuing: cache slots [0, prefix) come from the previous call's cache
    return_cache: bool = False  # also return the final cache (for a later continuation)


def compile_key(cfg: GenerationConfig, model_config, batch: int | None, bucket: int, *, prefix: int = 0,
                return_cache: bool = False, speculation: str = "", runtime: tuple = (), stop: tuple = (),
                constraint: tuple = (), guidance: int = 0) -> CompileKey:
    """The compile key of a checked config for `batch` prompts padded to `bucket`.

    speculation: "" | "lookup" | "draft"; runtime: processor options given at run time whatever
    their value (the SavedModel's inputs), so they are in the graph even when off in `cfg`;
    stop: the stop-string table's shape_key when cfg.stop_strings (the table itself is a Knobs tensor);
    constraint: the structured-output tables' shape_key when cfg.constraint (likewise);
    guidance: the unconditional prompt's bucket when cfg.guidance_scale.
    """
    strategy = cfg.strategy
    beams = strategy in BEAMS
    expand = cfg.num_beams if beams else cfg.num_return_sequences
    beam = BeamKey(cfg.num_beams, cfg.num_return_sequences, cfg.early_stopping, cfg.num_beam_groups) if beams else None
    eos_ids = cfg.eos_ids(model_config)
    # beam sampling's warpers keep one token more than there are EOS ids, so a beam can go on past one
    processors = P.active(cfg, runtime, keep=max(2, len(eos_ids) + 1) if strategy == "beam_sample" else 1)
    spec = None
    if speculation == "draft":
        spec = SpecKey("draft", cfg.num_assistant_tokens,
                       heuristic=cfg.num_assistant_tokens_schedule != "constant",
                       confidence=cfg.assistant_confidence_threshold is not None)
    elif speculation == "lookup":
        spec = SpecKey("lookup", cfg.prompt_lookup_num_tokens, cfg.max_matching_ngram_size)
    return CompileKey(
        strategy=strategy,
        rows=None if batch is None else batch * expand,
        bucket=bucket,
        max_new_tokens=cfg.max_new_tokens,
        eos_ids=eos_ids,
        pad_id=cfg.pad_id(model_config),
        processors=processors,
        logprobs=cfg.output_logprobs,
        scores=cfg.output_scores,
        logits=cfg.output_logits,
        top_logprobs=cfg.top_logprobs,
        hidden_states=cfg.output_hidden_states,
        guidance=guidance,
        dola=() if cfg.dola_layers is None else dola_candidates(cfg.dola_layers, model_config.n_layer,
                                                                 model_config.tie_word_embeddings),
        attentions=cfg.output_attentions,
        beam=beam,
        speculation=spec,
        stop=stop,
        constraint=constraint,
        candidates=cfg.top_k if strategy == "contrastive" else 0,
        prefix=prefix,
        return_cache=return_cache,
    )


# -- what is passed at run time ------------------------------------------------------------------


class Knobs(NamedTuple):
    """Numeric options passed as tensors, so changing them never retraces."""

    temperature: tf.Tensor  # float32 scalar
    top_k: tf.Tensor  # int32 scalar, 0 = off
    top_p: tf.Tensor  # float32 scalar, 1.0 = off
    length_penalty: tf.Tensor  # float32 scalar (beam search)
    penalty_alpha: tf.Tensor  # float32 scalar (contrastive search)
    seed: tf.Tensor  # int32 [2]
    stop_table: tf.Tensor  # int32 [vocab + 1, n]: stop strings (stop_strings.StopTable), [1, 1] when off
    stop_lengths: tf.Tensor  # int32 [strings]: their lengths in bytes
    fsm_allowed: tf.Tensor  # int32 [states, vocab / 32]: structured output's allowed bits (constraints.Tables)
    fsm_next: tf.Tensor  # int32 [states, classes]: its transitions by token class
    fsm_class: tf.Tensor  # int32 [vocab]: each token's class ([1, 1], [1, 1], [1] when off)
    confidence: tf.Tensor  # float32 scalar: speculative decoding's assistant_confidence_threshold (0 when off)
    unconditional: tuple  # classifier-free guidance: (ids, mask) [rows, key.guidance] int32, () when off
    processors: dict  # option -> scalar tensor, for the processors whose value is not in the key


def make_knobs(cfg: GenerationConfig, **given) -> Knobs:
    """Knobs from a checked config (`given` tensors replace the config's values, e.g. a SavedModel's inputs)."""
    seed = cfg.seed if cfg.seed is not None else np.random.randint(-(2**31), 2**31 - 1, size=2)
    knobs = Knobs(
        temperature=tf.constant(cfg.temperature, tf.float32),
        top_k=tf.constant(cfg.top_k, tf.int32),
        top_p=tf.constant(cfg.top_p, tf.float32),
        length_penalty=tf.constant(cfg.length_penalty, tf.float32),
        penalty_alpha=tf.constant(cfg.penalty_alpha or 0.0, tf.float32),
        seed=tf.constant(np.asarray(seed, np.int64).astype(np.int32), tf.int32),
        stop_table=tf.zeros([1, 1], tf.int32),
        stop_lengths=tf.zeros([0], tf.int32),
        fsm_allowed=tf.zeros([1, 1], tf.int32),
        fsm_next=tf.zeros([1, 1], tf.int32),
        fsm_class=tf.zeros([1], tf.int32),
        confidence=tf.constant(cfg.assistant_confidence_threshold or 0.0, tf.float32),
        unconditional=(),
        processors={**P.knob_values(cfg), **{k: v for k, v in given.items() if k not in Knobs._fields}},
    )
    return knobs._replace(**{k: v for k, v in given.items() if k in Knobs._fields})


# -- one step: logits in, token out ----------------------------------------------------------------


def scores(logits, step: P.Step, knobs: Knobs, key: CompileKey):
    """The scores the next token is chosen from, over logits [..., vocab], in the reference's order
    (what it returns as `scores`): the processors in the key, then when sampling temperature, top-k,
    top-p and the other warpers, then renormalize_logits last of all."""
    scores = P.apply(logits, step, key.processors, knobs.processors)
    if key.strategy in SAMPLING:
        scores = P.warp(scores, knobs.temperature, knobs.top_k, knobs.top_p, key.processors, knobs.processors)
    if ("renormalize_logits", True) in key.processors:
        scores = tf.nn.log_softmax(scores)
    return scores


def choose_token(scores, key: CompileKey, rng):
    """Each row's token [rows] int32 from processed scores [rows, vocab]: the argmax, or when
    sampling a draw with the stateless key `rng`."""
    if key.strategy != "sample":
        return tf.argmax(scores, axis=-1, output_type=tf.int32)
    return P.sample_token(scores, rng)


def most_likely(logits, k: int):
    """(log-probs [..., k], token ids [..., k]): the k most likely tokens of log softmax(logits), best first."""
    values, ids = tf.math.top_k(tf.nn.log_softmax(logits), k)
    return values, ids


def token_logprob(logits, token):
    """log softmax(logits)[token] per row: logits [..., vocab], token [...] -> [...]"""
    return tf.gather(tf.nn.log_softmax(logits), token[..., None], batch_dims=token.shape.rank)[..., 0]


# -- what is kept of each step, each only when asked (a size-0 placeholder otherwise) ---------------


class Record(NamedTuple):
    logprobs: tf.Tensor  # [rows, max_new] float32: each chosen token's log-prob, 0 after EOS ([rows, 0] when off)
    scores: tf.Tensor  # [max_new, rows, vocab] float32: each step's processed scores ([0, rows, vocab] when off)
    logits: tf.Tensor  # [max_new, rows, vocab] float32: each step's raw logits ([0, rows, vocab] when off)
    invalid: tf.Tensor  # [rows] bool: a step's processed scores held NaN (only with a user processor, else [0])
    top_tokens: tf.Tensor  # [rows, max_new, k] int32: each step's k most likely tokens, -1 after EOS ([rows, 0, 0] off)
    top_logprobs: tf.Tensor  # [rows, max_new, k] float32: their log-probs, 0 after EOS ([rows, 0, 0] when off)


def checks_scores(key: CompileKey) -> bool:
    """Whether the loop watches its processed scores for NaN: only a user's processor can make them
    (weights are checked finite at load, built-in options are range-checked), so only then."""
    return any(name == "logits_processor" for name, _ in key.processors)


def new_record(key: CompileKey, rows, vocab: int) -> Record:
    """Zeros for what `key` asks to keep; step-major scores so each step writes one contiguous slab.
    Memory when on: rows x max_new x vocab x 4 bytes each for scores and logits."""
    steps, k = key.max_new_tokens, key.top_logprobs
    return Record(
        logprobs=tf.zeros([rows, steps if key.logprobs else 0], tf.float32),
        scores=tf.zeros([steps if key.scores else 0, rows, vocab], tf.float32),
        logits=tf.zeros([steps if key.logits else 0, rows, vocab], tf.float32),
        invalid=tf.zeros([rows if checks_scores(key) else 0], tf.bool),
        top_tokens=tf.fill([rows, steps if k else 0, k], -1),  # -1 where no step is written (after every EOS)
        top_logprobs=tf.zeros([rows, steps if k else 0, k], tf.float32),
    )


def record(rec: Record, key: CompileKey, step, logits, scores, token, finished) -> Record:
    """rec with step `step` written: logits, scores [rows, vocab] as the token was chosen from them,
    token [rows] and finished [rows] (rows done before this step: log-prob 0)."""
    logprobs, kept_scores, kept_logits, invalid, top_tokens, top_logprobs = rec
    at = tf.stack([step, 0, 0])
    if key.logprobs:
        logprobs = write_column(logprobs, step, tf.where(finished, 0.0, token_logprob(scores, token)))
    if key.top_logprobs:
        best, ids = most_likely(scores, key.top_logprobs)  # [rows, k] each
        done = tf.zeros_like(token, tf.bool) if finished is None else finished
        top_tokens = xla.dynamic_update_slice(top_tokens, tf.where(done[:, None], -1, ids)[:, None], tf.stack([0, step, 0]))
        top_logprobs = xla.dynamic_update_slice(top_logprobs, tf.where(done[:, None], 0.0, best)[:, None],
                                                tf.stack([0, step, 0]))
    if key.scores:
        kept_scores = xla.dynamic_update_slice(kept_scores, scores[None], at)
    if key.logits:
        kept_logits = xla.dynamic_update_slice(kept_logits, logits[None], at)
    if checks_scores(key):
        nan = tf.reduce_any(tf.math.is_nan(scores), axis=-1)
        invalid |= nan if finished is None else nan & ~finished
    return Record(logprobs, kept_scores, kept_logits, invalid, top_tokens, top_logprobs)


class Outputs(NamedTuple):
    """What every compiled loop returns; generate.py shapes it for the caller."""

    sequences: tf.Tensor  # [rows, bucket + max_new] int32 (beam search: [batch, num_return_sequences, width])
    record: Record
    steps: tf.Tensor  # int32 scalar: steps the loop ran (after them every row had finished)
    sequences_scores: tf.Tensor | None = None  # beam search: [batch, num_return_sequences]
    beam_indices: tf.Tensor | None = None  # beam search with scores: [batch, num_return_sequences, max_new]
    cache: object = None  # key.return_cache: the final KVCache
    speculation: tf.Tensor | None = None  # speculative decoding: [4] int32 verify steps, accepted, row-steps, proposed
    layers: object = None  # greedy search / sampling: layers.Layers (output_hidden_states / output_attentions)


# -- decode segments: long, wide generations attend over the part of the cache they can reach ------

# A decode step's attention reads every slot of the cache it is given, written or not, so a long
# generation decodes in segments of SEGMENT new tokens, each over a cache grown to the slots it can
# reach (the last segment is 65 to 192 tokens long and ends at the full cache). Each segment is one
# more copy of the decode step in the compiled graph (GPT-2 small: 1.3-2 s more compile each), which
# pays only where the cache is a large part of what a step reads: from SEGMENT_FROM rows x cache
# slots (GPT-2 small: a full-cache read of 600 MB per step beside 497 MB of weights).
# `python benchmarks/probe_segments.py`, GPT-2 small shape, greedy, 2-core AMD EPYC, segments vs one,
# tok/s after the first call (first call s): 8 rows x 512 new 299 vs 283 (21.0 vs 17.0 s, so not
# segmented); 16 x 512: 412 vs 380 (28.1 vs 24.3); 32 x 512: 530 vs 478 (40.2 vs 36.9); 64 x 256:
# 646 vs 586 (33.7 vs 30.9); beam search, 8 prompts x 4 beams x 512 (`--num-beams 4`): 88.2 vs 66.3
# (58.9 vs 65.8 s: a beam's query reads every beam row's slots, so it gains more). Tokens were equal
# in every case.
SEGMENT = 128
SEGMENT_FROM = 8192


def windows(key: CompileKey) -> list[int]:
    """The cache length of each decode segment, the last being the full cache (bucket + max_new_tokens).
    One segment for short generations, few rows, or any number of rows (key.rows None: export).
    Greedy search, sampling and beam search decode in segments (not when keeping every layer's
    output, whose buffers span the full cache); contrastive search and speculative
    decoding (blocks of several slots per step) in one."""
    full = key.bucket + key.max_new_tokens
    if key.strategy == "contrastive" or key.speculation or key.rows is None or key.rows * full < SEGMENT_FROM \
            or key.hidden_states or key.attentions or key.guidance:  # (buffers / a second cache of full width)
        return [full]
    return [*range(key.bucket + SEGMENT, full - SEGMENT // 2, SEGMENT), full]


def hide_placeholders(state):
    """`state` with its size-0 tensors (placeholders of outputs that are off) passed through an
    optimization barrier. Between decode segments: tf2xla's constant propagation fails on a constant
    handed from while loop to while loop to while loop ("Propagate: Cannot find body function ... for
    While node", TF 2.21); behind the barrier the placeholder is no longer a constant."""
    return tf.nest.map_structure(lambda t: xla.optimization_barrier(t)[0] if t.shape.num_elements() == 0 else t, state)


# The uses of randomness, each its own stream: rng_key(seed, step, use)
DRAW = 0  # the sampled token at a step (sampling; speculative's first token and redraw)
ACCEPT = 1  # speculative sampling: the uniforms that accept or reject the candidates
DRAFT = 2  # speculative sampling: the draft model's draw of candidate i uses DRAFT + i


def rng_key(seed, step, use: int = DRAW):
    """Stateless key for one use at one step: the same seed, step and use always give the same draws.

    The per-step draw folds the step in once: folding `use` in as well (a key made from a computed
    key) made sampling ~2.5x slower under XLA (shipped 6-layer model, batch 1, 128 tokens:
    906 -> 355 tok/s; GPT-2 small: 57 -> 36 tok/s), so only the other uses pay for the second fold."""
    fold = tf.random.experimental.stateless_fold_in
    key = fold(seed, step)
    return key if isinstance(use, int) and use == DRAW else fold(key, use)


# -- the sequence buffer [rows, bucket + max_new]: prompt, generated tokens, pad after EOS --------------


def new_sequences(ids, max_new: int, pad_id: int):
    """The buffer for prompts ids [rows, bucket]: the generated region starts as pad_id."""
    return tf.concat([ids, tf.fill([tf.shape(ids)[0], max_new], tf.constant(pad_id, tf.int32))], axis=1)


def write_column(buffer, slot, values):
    """buffer [..., width] with column `slot` (scalar) set to values [...]."""
    column = tf.one_hot(slot, buffer.shape[-1], on_value=True, off_value=False, dtype=tf.bool)
    return tf.where(column, values[..., None], buffer)


def write_runs(buffer, values, start, count):
    """buffer [rows, width] with values[r, :count[r]] written at columns start[r] .. start[r]+count[r]-1."""
    offset = tf.range(buffer.shape[1])[None, :] - start[:, None]  # [rows, width]
    inside = (offset >= 0) & (offset < count[:, None])
    picked = tf.gather(values, tf.clip_by_value(offset, 0, values.shape[1] - 1), batch_dims=1)
    return tf.where(inside, picked, buffer)


def written_slots(prompt_mask, step, max_new: int):
    """[rows, bucket + max_new] bool: real prompt tokens and the `step` tokens generated so far."""
    rows = tf.shape(prompt_mask)[0]
    generated = tf.range(max_new)[None, :] < step
    return tf.concat([tf.cast(prompt_mask, tf.bool), tf.tile(generated, [rows, 1])], axis=1)


def stops(sequences, mask, step, slot, knobs: Knobs, key: CompileKey):
    """[rows] bool: the row's text, through the token just written at `slot` (the step-th), ends with
    a stop string. Always False when the key has none."""
    if not key.stop:
        return tf.zeros([tf.shape(sequences)[0]], tf.bool)
    valid = written_slots(mask, step + 1, key.max_new_tokens)
    return stop_hit(knobs.stop_table, knobs.stop_lengths, key.stop, sequences, valid, slot)


# -- structured output: each row's automaton state (constraints.py), [rows] int32 --------------------


def start_automaton(rows):
    """[rows] int32: every row at the automaton's start (constraints.build numbers it 1)."""
    return tf.fill([rows], constraints.START)


def allowed_next(state, knobs: Knobs, key: CompileKey, vocab: int):
    """[rows, vocab] bool: what each row's automaton state allows next, or None without a constraint."""
    return constraints.allowed_tokens(knobs.fsm_allowed, state, vocab) if key.constraint else None


def follow(state, token, finished, knobs: Knobs, key: CompileKey):
    """(each row's state after its token [rows], [rows] bool: the new state allows nothing, so the
    row ends). Finished rows keep their state; without a constraint nothing moves or ends."""
    if not key.constraint:
        return state, tf.zeros_like(finished)
    moved = tf.where(finished, state, constraints.advance(knobs.fsm_next, knobs.fsm_class, state, token))
    return moved, ~finished & constraints.stranded(knobs.fsm_allowed, moved)


def is_eos(tokens, eos_ids):
    """tokens [...] int32 -> [...] bool"""
    if not eos_ids:
        return tf.zeros_like(tokens, tf.bool)
    return tf.reduce_any(tf.equal(tokens[..., None], tf.constant(eos_ids)), axis=-1)
