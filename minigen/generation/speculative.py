"""Speculative decoding: propose k tokens cheaply, check them with one forward pass of the target.

Two sources of proposals share one loop:
    prompt lookup   the k tokens that followed an earlier occurrence of the row's last n tokens
                    (n from max_matching_ngram_size down to 1), found with tensor ops
    draft model     a smaller model with the same vocabulary runs k decode steps on its own static cache

Phases, all inside one XLA-compiled function (`speculative_loop`):
    start       prefill the target (and the draft) with the prompt; choose the first token
    while_loop:
      propose   k candidate tokens per row
      verify    the target runs [pending, c_1 .. c_k] as one block, each row at its own cache slot
      accept    greedy: the candidates agreeing with the target's argmax, then the target's own token.
                sampling: accept c_j with probability min(1, p(c_j) / q(c_j)); the first rejected one
                is redrawn from max(p - q, 0) renormalised, or a bonus token comes from p when all
                pass, so every token is distributed exactly as the target alone would draw it.
      commit    write the accepted tokens; each row's length grows by its own count

Nothing is rolled back by copying: a rejected token's keys and values sit in cache slots at or past
its row's new length, where the causal mask hides them until the next block overwrites them.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from .. import cache as kv
from ..positions import generated_position
from . import core
from . import processors as P
from .core import ACCEPT, DRAFT, CompileKey, Knobs
from .processors import Step


class SpecState(NamedTuple):
    cache: kv.KVCache  # the target's
    draft_cache: tuple  # the draft model's KVCache, or () with prompt lookup
    sequences: tf.Tensor  # [rows, bucket + max_new] int32: prompt, accepted tokens, pad after
    lengths: tf.Tensor  # [rows] int32: slots of `sequences` written (bucket + tokens generated)
    finished: tf.Tensor  # [rows] bool: EOS produced or max_new_tokens reached
    automaton: tf.Tensor  # [rows] int32: structured output's state after the written tokens (core.follow)
    logprobs: tf.Tensor  # [rows, max_new] float32: log-prob of each token (0 after EOS; [rows, 0] when not asked)
    iteration: tf.Tensor  # int32 scalar: verify steps run
    accepted: tf.Tensor  # int32 scalar: candidates accepted, summed over rows and steps
    row_steps: tf.Tensor  # int32 scalar: verify steps summed over the rows still running
    budget: tf.Tensor  # [rows] int32: tokens each row may draft next (the heuristic schedule's count; else k)
    drafted: tf.Tensor  # int32 scalar: candidates proposed, summed over the rows still running and steps


# ---- small pure functions ----------------------------------------------------------------------


def leading_true(flags):
    """[rows, k] bool -> [rows] int32: how many flags are True before the first False."""
    return tf.reduce_sum(tf.math.cumprod(tf.cast(flags, tf.int32), axis=1), axis=1)


def lookup_candidates(sequences, valid, lengths, k: int, max_ngram: int, pad_id: int):
    """Prompt lookup: per row, the k tokens after the latest earlier match of its last n tokens.

    sequences, valid: [rows, width]; lengths: [rows], slots written. The longest n (<= max_ngram)
    with a match wins; a match must end before the row's own last n tokens and be followed by at
    least one written token. Among matches, the latest one followed by k written tokens is taken,
    else the latest one. Rows without a match get pad_id candidates (verified, then rejected).
    Returns [rows, k] int32.
    """
    rows, width = tf.shape(sequences)[0], sequences.shape[1]
    start = tf.fill([rows], -1)  # slot where the copied continuation begins
    for n in range(max_ngram, 0, -1):
        if n >= width:
            continue
        suffix_slots = lengths[:, None] - n + tf.range(n)[None, :]  # [rows, n]
        suffix = tf.gather(sequences, tf.maximum(suffix_slots, 0), batch_dims=1)
        suffix_ok = tf.reduce_all(tf.gather(valid, tf.maximum(suffix_slots, 0), batch_dims=1), axis=1)
        windows = width - n  # window j covers slots j .. j+n-1; its continuation starts at j+n
        match = tf.ones([rows, windows], tf.bool)
        for o in range(n):
            match &= tf.equal(sequences[:, o:o + windows], suffix[:, o:o + 1]) & valid[:, o:o + windows]
        j = tf.range(windows)[None, :]
        match &= j + n < lengths[:, None]  # not the suffix itself, and a written token follows
        # the latest match followed by k written tokens, else the latest at all (a loop's latest
        # match is right behind the suffix, with only a token or two known after it)
        full = tf.reduce_max(tf.where(match & (j + n + k <= lengths[:, None]), j, -1), axis=1)
        latest = tf.where(full >= 0, full, tf.reduce_max(tf.where(match, j, -1), axis=1))  # [rows]
        take = (start < 0) & (latest >= 0) & suffix_ok & (lengths >= n)
        start = tf.where(take, latest + n, start)
    slots = start[:, None] + tf.range(k)[None, :]  # [rows, k]
    known = (start[:, None] >= 0) & (slots < lengths[:, None])
    tokens = tf.gather(sequences, tf.clip_by_value(slots, 0, width - 1), batch_dims=1)
    return tf.where(known, tokens, pad_id)


def accept_greedy(scores, candidates, proposed=None):
    """Greedy verification: scores [rows, k+1, vocab] (the target's, processed, at the pending token
    and each candidate), candidates [rows, k] of which the first proposed [rows] are real (None: all). Returns
    (tokens [rows, k+1]: the target's choice at each position, accepted [rows]: how many candidates
    agree with it before the first that does not). A row keeps tokens[:accepted + 1]: its accepted
    candidates, then the target's own token."""
    choice = tf.argmax(scores, axis=-1, output_type=tf.int32)
    agree = leading_true(tf.equal(candidates, choice[:, :candidates.shape[1]]))
    return choice, agree if proposed is None else tf.minimum(agree, proposed)


def accept_sampled(scores, candidates, q, seed, iteration, proposed=None):
    """Speculative sampling's verification (Leviathan et al. 2023): candidate c_j, drawn from the
    draft's q, is accepted with probability min(1, p(c_j) / q(c_j)) while all before it were; the
    first rejected one is redrawn from max(p - q, 0) renormalised (p itself where that is empty), or
    when all pass a bonus token is drawn from p, so each kept token is distributed as the target alone
    would draw it. scores [rows, k+1, vocab] (processed, warped), candidates [rows, k], q [rows, k,
    vocab] probabilities; seed int32 [2], iteration: the verify step (the draws' stream); proposed
    [rows]: how many candidates are real (past them the next token comes from p, as when all pass; None: all).
    Returns (tokens [rows, k+1]: the accepted candidates, then the redrawn or bonus token; accepted [rows])."""
    rows, k = tf.shape(candidates)[0], candidates.shape[1]
    p = tf.nn.softmax(scores)  # [rows, k+1, vocab]
    p_c = tf.gather(p[:, :k], candidates[:, :, None], batch_dims=2)[:, :, 0]  # [rows, k]
    q_c = tf.gather(q, candidates[:, :, None], batch_dims=2)[:, :, 0]
    u = tf.random.stateless_uniform([rows, k], core.rng_key(seed, iteration, ACCEPT))
    n = leading_true(u * q_c < p_c)  # accept c_j with probability min(1, p/q)
    residual = tf.concat([tf.maximum(p[:, :k] - q, 0.0), p[:, k:]], axis=1)  # [rows, k+1, vocab]
    if proposed is not None:
        n = tf.minimum(n, proposed)
        real = tf.range(k + 1)[None, :] < proposed[:, None]
        residual = tf.where(real[:, :, None], residual, p)
    redraw_from = tf.gather(residual, n, batch_dims=1)  # [rows, vocab]
    empty = tf.reduce_sum(redraw_from, axis=-1, keepdims=True) <= 0.0  # p == q: keep p itself
    redraw_from = tf.where(empty, tf.gather(p, n, batch_dims=1), redraw_from)
    token = P.sample_token(tf.math.log(redraw_from), core.rng_key(seed, iteration))
    padded = tf.concat([candidates, candidates[:, :1]], axis=1)
    return tf.where(tf.range(k + 1)[None, :] < n[:, None], padded, token[:, None]), n


def block_histories(sequences, prompt_valid, lengths, candidates):
    """Each verify-block position's own row, for the processors that read a row's tokens: position j
    sees the row's written tokens, then candidates 1..j, as plain decoding would have had them had
    those been accepted. sequences [rows, width], prompt_valid [rows, bucket] bool, lengths [rows],
    candidates [rows, k]. Returns (sequences, valid) [rows * (k+1), W] and W = width + k: each row is
    shifted so that its next token goes to slot W, one slot for all, as the processors take it."""
    rows, width, k = sequences.shape[0], sequences.shape[1], candidates.shape[1]
    full = width + k
    room = tf.concat([sequences, tf.zeros([rows, k], sequences.dtype)], axis=1)  # [rows, W]
    real = tf.concat([prompt_valid, tf.ones([rows, full - prompt_valid.shape[1]], tf.bool)], axis=1)
    rows_j, valid_j = [], []
    for j in range(k + 1):
        row = core.write_runs(room, candidates, lengths, tf.fill([rows], j))
        source = tf.range(full)[None, :] + (lengths + j - full)[:, None]  # [rows, W]: the slot each column shows
        inside = source >= 0
        source = tf.maximum(source, 0)
        rows_j.append(tf.where(inside, tf.gather(row, source, batch_dims=1), 0))
        valid_j.append(inside & tf.gather(real, source, batch_dims=1))
    flat = lambda parts: tf.reshape(tf.stack(parts, axis=1), [rows * (k + 1), full])  # noqa: E731
    return flat(rows_j), flat(valid_j), full


def block_scores(logits, state_sequences, prompt_valid, lengths, candidates, number, allowed, knobs: Knobs,
                 key: CompileKey):
    """The processed scores [rows, k+1, vocab] of a verify block's logits [rows, k+1, vocab]; number
    [rows, k+1]: the generated tokens before each position; allowed: structured output's [rows, k+1,
    vocab] or None. With a processor that reads the row's tokens, each position is scored over its own
    history (block_histories), so the accepted tokens are plain decoding's."""
    if not P.reads_rows(key.processors):
        return core.scores(logits, Step(None, None, None, number, key.eos_ids, allowed), knobs, key)
    rows, k1, vocab = logits.shape[0], logits.shape[1], logits.shape[2]
    sequences, valid, next_slot = block_histories(state_sequences, prompt_valid, lengths, candidates)
    flat_allowed = None if allowed is None else tf.reshape(allowed, [rows * k1, vocab])
    step = Step(sequences, valid, next_slot, tf.reshape(number, [-1]), key.eos_ids, flat_allowed)
    return tf.reshape(core.scores(tf.reshape(logits, [rows * k1, vocab]), step, knobs, key), [rows, k1, vocab])


def kept_count(tokens, accepted, generated, finished, max_new: int, eos_ids: tuple):
    """How many of a verify block's tokens [rows, k+1] each row keeps: its accepted candidates and one
    more, cut after its first EOS and at max_new tokens in all; 0 for a row already finished.
    accepted, generated [rows] int32, finished [rows] bool. Returns (count [rows], hit_eos [rows])."""
    count = tf.minimum(accepted + 1, max_new - generated)
    eos = core.is_eos(tokens, eos_ids) & (tf.range(tokens.shape[1])[None, :] < count[:, None])
    hit = tf.reduce_any(eos, axis=1)
    count = tf.where(hit, tf.argmax(tf.cast(eos, tf.int32), axis=1, output_type=tf.int32) + 1, count)
    return tf.where(finished, 0, count), hit


def block_automaton(automaton, candidates, knobs: Knobs, key: CompileKey):
    """Structured output along a verify block: [rows, k+1], the state each block position chooses
    from: the row's own (its written tokens, the pending one included), then the state after each
    candidate in turn. A forbidden candidate scores -inf where it is proposed, so it is rejected, and
    it leads to the dead state, where nothing after it is allowed."""
    states = [automaton]
    for j in range(candidates.shape[1]):
        states.append(core.follow(states[-1], candidates[:, j], tf.zeros_like(automaton, tf.bool), knobs, key)[0])
    return tf.stack(states, axis=1)


def kept_automaton(automaton, tokens, count, knobs: Knobs, key: CompileKey):
    """(count cut after a token whose state allows nothing, the row's state after its kept tokens, [rows]
    bool: that state allows nothing, so the row ends). tokens [rows, k+1], count [rows]."""
    stranded = tf.zeros_like(count, tf.bool)
    for j in range(tokens.shape[1]):
        past = (j >= count) | stranded  # this token is not kept
        automaton, ends = core.follow(automaton, tokens[:, j], past, knobs, key)
        count = tf.where(ends, j + 1, count)
        stranded |= ends
    return count, automaton, stranded


# ---- proposals -----------------------------------------------------------------------------------


def adapted_budget(budget, accepted, proposed, k: int):
    """The heuristic schedule (HF's num_assistant_tokens_schedule="heuristic", per row): 2 more draft
    tokens after a step that accepted all it proposed, 1 fewer otherwise, within [1, k]."""
    return tf.clip_by_value(tf.where(accepted >= proposed, budget + 2, budget - 1), 1, k)


def draft_adaptive(draft, logits, cache, state: SpecState, key_mask, prompt_len, knobs: Knobs, key: CompileKey):
    """The draft's proposals when their number varies by row: row r drafts up to state.budget[r]
    tokens (the heuristic schedule) and, with a confidence threshold, stops after a token whose draft
    probability is below it (HF's ConfidenceCriteria). A while loop, so the draft runs only while some
    row drafts. logits [rows, vocab]: the draft's next-token logits after the row's last token.
    Returns (candidates [rows, k] (pad past a row's own), q [rows, k, vocab] or None, cache, proposed [rows])."""
    k, bucket, rows = key.speculation.num_candidates, key.bucket, logits.shape[0]
    sampling, generated = key.strategy == "sample", state.lengths - bucket
    vocab = logits.shape[-1]

    def draw(i, logits, tokens, probs, drafting, proposed):
        """Token i of each row still drafting."""
        if sampling:
            logits = P.warp(logits, knobs.temperature, knobs.top_k, knobs.top_p, key.processors, knobs.processors)
        p = tf.nn.softmax(logits)
        token = core.choose_token(logits, key, core.rng_key(knobs.seed, state.iteration + 1, DRAFT + i))
        writing = drafting & (i < state.budget)
        tokens = tf.where(writing[:, None], core.write_column(tokens, i, token), tokens)
        if sampling:
            column = tf.one_hot(i, k, on_value=True, off_value=False)[None, :, None]
            probs = tf.where(column & writing[:, None, None], p[:, None], probs)
        sure = tf.gather(p, token[:, None], batch_dims=1)[:, 0] >= knobs.confidence if key.speculation.confidence \
            else tf.ones_like(writing)
        return token, tokens, probs, writing & sure, proposed + tf.cast(writing, tf.int32)

    tokens0 = tf.fill([rows, k], tf.constant(key.pad_id, tf.int32))
    probs0 = tf.zeros([rows, k if sampling else 0, vocab])
    token, tokens, probs, drafting, proposed = draw(0, logits, tokens0, probs0, tf.ones([rows], tf.bool),
                                                    tf.zeros([rows], tf.int32))

    def more(i, token, cache, tokens, probs, drafting, proposed):
        return (i < k) & tf.reduce_any(drafting)

    def step(i, token, cache, tokens, probs, drafting, proposed):
        position = generated_position(prompt_len, generated + i - 1)
        logits, cache = draft.decode_one_token(token, position, cache, kv.View(key_mask, state.lengths + i - 1))
        token, tokens, probs, drafting, proposed = draw(i, logits, tokens, probs, drafting, proposed)
        return i + 1, token, cache, tokens, probs, drafting, proposed

    _, _, cache, tokens, probs, _, proposed = tf.while_loop(
        more, step, (tf.constant(1), token, cache, tokens, probs, drafting, proposed), maximum_iterations=k - 1)
    return tokens, probs if sampling else None, cache, proposed


def draft_candidates(draft, state: SpecState, key_mask, prompt_len, knobs: Knobs, key: CompileKey):
    """Run the draft model k steps from each row's last two tokens.

    The draft's cache holds every accepted token but possibly the last two (the newest accepted
    candidate was never fed to it, and the target's own token is new), so the first draft call is a
    2-token block at slots L-2, L-1; each row at its own slot. Returns (candidates [rows, k],
    q [rows, k, vocab] probabilities the candidates were drawn from (None when greedy), draft cache,
    proposed [rows]: how many candidates are real when the draft adapts (draft_adaptive), else None: all k).
    """
    k, bucket = key.speculation.num_candidates, key.bucket
    lengths = state.lengths
    generated = lengths - bucket  # tokens each row has so far
    last_two = tf.gather(state.sequences, tf.stack([lengths - 2, lengths - 1], axis=1), batch_dims=1)  # [rows, 2]
    positions = generated_position(prompt_len, generated)[:, None] + tf.constant([[-2, -1]])
    hidden, cache = draft.forward(last_two, positions, state.draft_cache, kv.View(key_mask, lengths - 2))
    logits = draft.lm_head(hidden[:, 1])  # [rows, vocab]
    if key.speculation.heuristic or key.speculation.confidence:
        return draft_adaptive(draft, logits, cache, state, key_mask, prompt_len, knobs, key)
    tokens, probs = [], []
    for i in range(k):
        # the draft's own distribution: warped as the target's, not processed (it only proposes)
        if key.strategy == "sample":
            logits = P.warp(logits, knobs.temperature, knobs.top_k, knobs.top_p, key.processors, knobs.processors)
            probs.append(tf.nn.softmax(logits))
        token = core.choose_token(logits, key, core.rng_key(knobs.seed, state.iteration + 1, DRAFT + i))
        tokens.append(token)
        if i + 1 < k:  # the last candidate needs no forward pass
            position = generated_position(prompt_len, generated + i)
            logits, cache = draft.decode_one_token(token, position, cache, kv.View(key_mask, lengths + i))
    candidates = tf.stack(tokens, axis=1)  # [rows, k]
    q = tf.stack(probs, axis=1) if probs else None  # [rows, k, vocab]
    return candidates, q, cache, None


# ---- the loop --------------------------------------------------------------------------------------


def speculative_loop(net, draft, ids, mask, knobs: Knobs, key: CompileKey):
    """Greedy search or sampling with prompt lookup (draft None) or a draft model. ids, mask: [rows, bucket].

    Returns core.Outputs: sequences [rows, bucket + max_new], chosen-token log-probs when asked,
    speculation stats [3] int32 (verify steps, candidates accepted, row-steps).
    """
    bucket, max_new, k = key.bucket, key.max_new_tokens, key.speculation.num_candidates
    rows = ids.shape[0]
    cache_len = bucket + max_new + k  # a finished row's last block may reach k slots past the end
    sampling = key.strategy == "sample"
    prompt_len = tf.reduce_sum(mask, axis=1)  # [rows]
    prompt_valid = tf.cast(mask, tf.bool)

    # -- start: prefill, then the first token from the prompt's last logits
    hidden, cache, key_mask = net.prefill(ids, mask, cache_len)
    draft_cache = ()
    if draft is not None:
        _, draft_cache, _ = draft.prefill(ids, mask, cache_len)
    start = core.start_automaton(rows)
    allowed = core.allowed_next(start, knobs, key, net.config.vocab_size)
    prompt = core.new_sequences(ids, max_new, key.pad_id)
    first_step = Step(prompt, core.written_slots(mask, 0, max_new), bucket, 0, key.eos_ids, allowed)
    scores = core.scores(net.lm_head(hidden[:, -1]), first_step, knobs, key)
    first = core.choose_token(scores, key, core.rng_key(knobs.seed, 0))
    automaton, stranded = core.follow(start, first, tf.zeros([rows], tf.bool), knobs, key)
    logprobs = core.new_record(key, rows, scores.shape[-1]).logprobs
    if key.logprobs:
        logprobs = core.write_column(logprobs, 0, core.token_logprob(scores, first))
    state = SpecState(
        cache=cache,
        draft_cache=draft_cache,
        sequences=core.write_column(prompt, bucket, first),
        lengths=tf.fill([rows], bucket + 1),
        finished=core.is_eos(first, key.eos_ids) | (max_new == 1) | stranded,
        automaton=automaton,
        logprobs=logprobs,
        iteration=tf.constant(0),
        accepted=tf.constant(0),
        row_steps=tf.constant(0),
        budget=tf.fill([rows], k),
        drafted=tf.constant(0),
    )

    def propose(state: SpecState):
        if draft is not None:
            return draft_candidates(draft, state, key_mask, prompt_len, knobs, key)
        written = tf.range(bucket + max_new)[None, :] < state.lengths[:, None]
        valid = tf.concat([prompt_valid, tf.ones([rows, max_new], tf.bool)], axis=1) & written
        candidates = lookup_candidates(state.sequences, valid, state.lengths, k, key.speculation.ngram, key.pad_id)
        q = tf.one_hot(candidates, net.config.vocab_size) if sampling else None  # a lookup is certain
        return candidates, q, (), None  # every candidate is real (a pad where nothing matched is rejected)

    def verify_step(state: SpecState) -> SpecState:
        iteration = state.iteration + 1
        lengths, generated = state.lengths, state.lengths - bucket
        candidates, q, draft_cache, proposed = propose(state)
        pending = tf.gather(state.sequences, lengths - 1, batch_dims=1)  # [rows], not yet run by the target
        block = tf.concat([pending[:, None], candidates], axis=1)  # [rows, k+1]
        number = generated[:, None] + tf.range(k + 1)[None, :]  # which generated token each position picks
        positions = generated_position(prompt_len[:, None], number - 1)  # [rows, k+1]: the pending token first
        hidden, cache = net.forward(block, positions, state.cache, kv.View(key_mask, lengths - 1))
        allowed = None
        if key.constraint:  # each position's states: [rows, k+1] -> its allowed tokens [rows, k+1, vocab]
            states = block_automaton(state.automaton, candidates, knobs, key)
            allowed = tf.reshape(core.allowed_next(tf.reshape(states, [-1]), knobs, key, net.config.vocab_size),
                                 [rows, k + 1, -1])
        scores = block_scores(net.lm_head(hidden), state.sequences, prompt_valid, lengths, candidates, number,
                              allowed, knobs, key)
        tokens, n = accept_sampled(scores, candidates, q, knobs.seed, iteration, proposed) if sampling else \
            accept_greedy(scores, candidates, proposed)
        count, hit = kept_count(tokens, n, generated, state.finished, max_new, key.eos_ids)
        count, automaton, stranded = kept_automaton(state.automaton, tokens, count, knobs, key)
        logprobs = state.logprobs
        if key.logprobs:
            logprobs = core.write_runs(logprobs, core.token_logprob(scores, tokens), generated, count)
        active = ~state.finished
        return SpecState(
            cache=cache,
            draft_cache=draft_cache,
            sequences=core.write_runs(state.sequences, tokens, lengths, count),
            lengths=lengths + count,
            finished=state.finished | hit | stranded | (generated + count >= max_new),
            automaton=automaton,
            logprobs=logprobs,
            iteration=iteration,
            accepted=state.accepted + tf.reduce_sum(tf.where(active, tf.minimum(n, count), 0)),
            row_steps=state.row_steps + tf.reduce_sum(tf.cast(active, tf.int32)),
            budget=adapted_budget(state.budget, n, proposed, k) if key.speculation.heuristic else state.budget,
            drafted=state.drafted + tf.reduce_sum(tf.where(active, k if proposed is None else proposed, 0)),
        )

    state = tf.while_loop(
        lambda s: ~tf.reduce_all(s.finished), lambda s: (verify_step(s),), (state,), maximum_iterations=max_new - 1
    )[0]
    stats = tf.stack([state.iteration, state.accepted, state.row_steps, state.drafted])
    vocab = net.config.vocab_size
    none = tf.zeros([rows, 0, 0])  # scores, logits, top_logprobs: refused (config)
    record = core.Record(state.logprobs, tf.zeros([0, rows, vocab]), tf.zeros([0, rows, vocab]), tf.zeros([0], tf.bool),
                         tf.cast(none, tf.int32), none)
    return core.Outputs(state.sequences, record, tf.reduce_max(state.lengths) - bucket, speculation=stats)
