"""Logits processors and warpers: pure tensor functions, applied in Hugging Face's order.

    processors (PROCESSORS, every strategy):  guidance_scale -> sequence_bias -> diversity_penalty -> repetition_penalty -> presence_penalty
                                              -> frequency_penalty -> no_repeat_ngram -> bad_words_ids
                                              -> min_new_tokens (and min_length) -> structured output's
                                              mask -> forced_bos -> forced_eos
                                              -> remove_invalid_values -> exponential_decay_length_penalty
                                              -> suppress_tokens -> begin_suppress_tokens -> logits_processor (the
                                              user's functions)
    warpers (`warp`, sampling only):          temperature -> top_n_sigma -> top_h -> top_k -> top_p -> min_p -> typical_p
                                              -> epsilon_cutoff -> eta_cutoff (min_tokens_to_keep: each keeps
                                              at least that many of the best tokens)
    then renormalize_logits (last of all, as the reference's LogitNormalization; see core.scores)

Where the reference reads `input_ids`, these read the row's sequence buffer `[batch, width]` plus a
`valid` mask of the same shape (real prompt tokens and tokens generated so far). Unlike the
reference, left padding is never counted as part of a prompt: a pad is not text the model saw.

Adding a processor: write its function, add its row to PROCESSORS (the option that turns it on,
the value that means off, whether that value shapes the graph) and the option's row to
options.OPTIONS (its check, documentation, flag, and strategies: without SPECULATIVE if it reads the
row's tokens, which speculative verify blocks do not carry). A warper: a row of WARPERS instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

NEG_INF = float("-inf")
CANDIDATES = 256  # top-k/top-p look for their cut among this many best tokens before sorting everything


def token_counts(sequences, valid, vocab_size: int):
    """[batch, vocab] int32: how often each token occurs (at valid slots) in each row."""
    batch, width = tf.shape(sequences)[0], sequences.shape[1]
    tokens = tf.where(valid, sequences, vocab_size)  # invalid slots land in a spare column
    rows = tf.repeat(tf.range(batch), width)
    index = tf.stack([rows, tf.reshape(tokens, [-1])], axis=1)
    return tf.scatter_nd(index, tf.ones([batch * width], tf.int32), [batch, vocab_size + 1])[:, :vocab_size]


def token_presence(sequences, valid, vocab_size: int):
    """[batch, vocab] bool: which tokens occur (at valid slots) in each row."""
    return token_counts(sequences, valid, vocab_size) > 0


def generated_counts(step: "Step", vocab_size: int):
    """[batch, vocab] int32: how often each token was generated so far (the prompt not counted): the
    `generated` slots just before next_slot."""
    column = tf.range(step.sequences.shape[1])[None, :]
    generated = tf.convert_to_tensor(step.generated)
    generated = generated[:, None] if generated.shape.rank else generated  # one per row (a verify block's)
    new = step.valid & (column >= step.next_slot - generated) & (column < step.next_slot)
    return token_counts(step.sequences, new, vocab_size)


def repetition_penalty(logits, sequences, valid, penalty):
    """CTRL's penalty: a seen token's score is divided by `penalty` if positive, multiplied if negative."""
    seen = token_presence(sequences, valid, logits.shape[-1])
    penalized = tf.where(logits < 0, logits * penalty, logits / penalty)
    return tf.where(seen, penalized, logits)


def presence_penalty(logits, counts, penalty):
    """OpenAI's (and vLLM's) presence penalty: `penalty` off the score of every token generated at
    least once. counts [batch, vocab] int32 (generated_counts)."""
    return logits - penalty * tf.cast(counts > 0, logits.dtype)


def frequency_penalty(logits, counts, penalty):
    """OpenAI's (and vLLM's) frequency penalty: `penalty` off a token's score per time it was generated."""
    return logits - penalty * tf.cast(counts, logits.dtype)


def no_repeat_ngram(logits, sequences, valid, next_slot, n: int):
    """Ban every token that would complete an n-gram already present in the row.

    next_slot: scalar, the slot the next token goes to; slots before it that are `valid` form the row.
    """
    width, vocab = sequences.shape[1], logits.shape[-1]
    if n > width:
        return logits
    # the n-1 tokens just before next_slot are the prefix a repeat would continue
    prefix_slots = tf.maximum(next_slot - (n - 1) + tf.range(n - 1), 0)
    prefix = tf.gather(sequences, prefix_slots, axis=1)  # [batch, n-1]
    prefix_ok = tf.reduce_all(tf.gather(valid, prefix_slots, axis=1), axis=1) & (next_slot >= n - 1)
    starts = width - n + 1  # windows sequences[:, j : j+n]
    match = tf.ones([tf.shape(sequences)[0], starts], tf.bool)
    window_valid = tf.ones_like(match)
    for o in range(n):
        column = sequences[:, o : o + starts]
        window_valid &= valid[:, o : o + starts]
        if o < n - 1:
            match &= tf.equal(column, prefix[:, o : o + 1])
    ends_before = tf.range(starts)[None, :] + n - 1 < next_slot  # the window's last token is already written
    banned_here = match & window_valid & ends_before & prefix_ok[:, None]  # [batch, starts]
    banned_tokens = tf.where(banned_here, sequences[:, n - 1 :], vocab)
    banned = token_presence(banned_tokens, banned_here, vocab)
    return tf.where(banned, NEG_INF, logits)


def token_mask(vocab: int, token_ids: tuple[int, ...]):
    """[vocab] bool: True at the given token ids."""
    return tf.reduce_any(tf.equal(tf.range(vocab)[:, None], tf.constant(token_ids)[None, :]), axis=1)


def guide(logits, unconditional, scale):
    """Classifier-free guidance (the reference's UnbatchedClassifierFreeGuidanceLogitsProcessor):
    scale x (log-probs - unconditional log-probs) + unconditional log-probs, over logits and the
    unconditional stream's logits [rows, vocab]."""
    scores, base = tf.nn.log_softmax(logits), tf.nn.log_softmax(unconditional)
    return scale * (scores - base) + base


def forbid_eos(logits, eos_ids: tuple[int, ...], active):
    """min_new_tokens: where `active`, EOS tokens get -inf.

    logits: [..., vocab]; active: bool of logits' leading shape ([] for one flag for every row,
    [rows, s] for each position of a speculative verify block).
    """
    if not eos_ids:
        return logits
    is_eos = token_mask(logits.shape[-1], eos_ids)
    return tf.where(is_eos & tf.expand_dims(active, -1), NEG_INF, logits)


def word_table(words) -> tuple[tuple, dict]:
    """sequence_bias / bad_words_ids as tensors: (the compile key's part: ((length, count), ...) per
    word length, the arrays by length: "prefix{L}" int32 [count, L-1], "last{L}" int32 [count],
    "bias{L}" float32 [count]). New words of the same lengths and counts reuse the compiled loop, and
    the graph is the same size for ten words or four thousand."""
    by_length: dict[int, list] = {}
    for word, bias in words:
        by_length.setdefault(len(word), []).append((word, bias))
    key, arrays = [], {}
    for length in sorted(by_length):
        rows = by_length[length]
        key.append((length, len(rows)))
        arrays[f"prefix{length}"] = np.array([w[:-1] for w, _ in rows], np.int32).reshape(len(rows), length - 1)
        arrays[f"last{length}"] = np.array([w[-1] for w, _ in rows], np.int32)
        arrays[f"bias{length}"] = np.array([b for _, b in rows], np.float32)
    return tuple(key), arrays


def word_hits(sequences, valid, next_slot, prefix, length: int):
    """[rows, count] bool: each word's other tokens (prefix [count, length-1]) are the row's latest
    ones before next_slot, none of them padding (a one-token word: always)."""
    count = prefix.shape[0]
    if length == 1:
        return tf.ones([tf.shape(sequences)[0], count], tf.bool)
    slots = tf.maximum(next_slot - (length - 1) + tf.range(length - 1), 0)
    latest = tf.gather(sequences, slots, axis=1)  # [rows, length-1]
    real = tf.reduce_all(tf.gather(valid, slots, axis=1), axis=1) & (next_slot >= length - 1)  # [rows]
    same = tf.reduce_all(tf.equal(latest[:, None, :], prefix[None, :, :]), axis=2)  # [rows, count]
    return same & real[:, None]


def per_token(values, last, vocab: int):
    """values [rows, count] summed into each word's last token: [rows, vocab]."""
    return tf.transpose(tf.math.unsorted_segment_sum(tf.transpose(values), last, vocab))


def sequence_bias(logits, sequences, valid, next_slot, table):
    """Add each word's bias to its last token wherever the rest of the word ends the row (HF's
    SequenceBiasLogitsProcessor; a one-token word's bias applies at every step). Biases of words
    sharing a last token add up. table: word_table's (key, tensors)."""
    lengths, arrays = table
    vocab = logits.shape[-1]
    for length, _ in lengths:
        hit = word_hits(sequences, valid, next_slot, arrays[f"prefix{length}"], length)
        bias = tf.where(hit, arrays[f"bias{length}"][None, :], 0.0)
        logits += per_token(bias, arrays[f"last{length}"], vocab)
    return logits


def bad_words(logits, sequences, valid, next_slot, table, eos_ids: tuple[int, ...]):
    """Ban the last token of every word whose other tokens are the row's latest ones (HF's
    NoBadWordsLogitsProcessor, which also drops one-token words that are an EOS id)."""
    lengths, arrays = table
    vocab = logits.shape[-1]
    banned = tf.zeros_like(logits, tf.bool)
    for length, _ in lengths:
        last = arrays[f"last{length}"]
        hit = word_hits(sequences, valid, next_slot, arrays[f"prefix{length}"], length)
        if length == 1 and eos_ids:
            hit &= ~tf.reduce_any(tf.equal(last[:, None], tf.constant(eos_ids)[None, :]), axis=1)[None, :]
        banned |= per_token(tf.cast(hit, tf.float32), last, vocab) > 0
    return tf.where(banned, NEG_INF, logits)


def force_tokens(logits, token_ids: tuple[int, ...], active):
    """Where `active` (bool of logits' leading shape), only `token_ids` remain: score 0, the rest -inf
    (HF's ForcedBOS/ForcedEOS)."""
    forced = token_mask(logits.shape[-1], token_ids)
    return tf.where(tf.expand_dims(active, -1), tf.where(forced, 0.0, NEG_INF), logits)


def remove_invalid_values(logits):
    """nan -> 0, +inf / -inf -> the largest / smallest finite float32 (HF's InfNanRemoveLogitsProcessor)."""
    logits = tf.convert_to_tensor(logits)
    big = logits.dtype.max
    logits = tf.where(tf.math.is_nan(logits), tf.zeros_like(logits), logits)
    return tf.clip_by_value(logits, -big, big)


def exponential_decay(logits, eos_ids: tuple[int, ...], generated, start: int, factor: float):
    """After `start` new tokens, EOS scores grow by |score| * (factor ** (generated - start) - 1)
    (HF's ExponentialDecayLengthPenalty; a non-finite EOS score is left as it is)."""
    if not eos_ids:
        return logits
    is_eos = token_mask(logits.shape[-1], eos_ids)
    steps = tf.cast(generated - start, tf.float32)
    growth = tf.expand_dims(tf.where(steps > 0, tf.pow(factor, steps) - 1.0, 0.0), -1)
    penalty = tf.where(is_eos & tf.math.is_finite(logits), tf.abs(logits) * growth, 0.0)
    return logits + penalty


def suppress_tokens(logits, token_ids: tuple[int, ...]):
    """These tokens never come: their logits become -inf (HF's SuppressTokensLogitsProcessor)."""
    banned = token_mask(logits.shape[-1], token_ids)
    return tf.where(banned, NEG_INF, logits)


def _cut_from_sorted(sorted_desc, keep_k, top_p, log_norm, keep: int = 1):
    """Threshold logit for top-k then top-p, given each row's best logits in descending order.

    sorted_desc: [batch, n]; keep_k: [batch, 1], tokens top-k keeps (already clipped to [1, vocab]);
    top_p: [batch, 1] (or a scalar); log_norm: [batch], the log-normaliser of the top-k-filtered distribution.
    Returns (threshold [batch], mass [batch]): keep tokens with logit >= threshold; `mass` is the
    probability the n listed tokens hold, so the caller can tell whether the top-p cut fell inside them.
    """
    n = sorted_desc.shape[1]
    rank = tf.range(n)[None, :]
    in_k = rank < keep_k
    probs = tf.where(in_k, tf.exp(sorted_desc - log_norm[:, None]), 0.0)
    before = tf.cumsum(probs, axis=1, exclusive=True)  # mass strictly above each token
    # HF: remove when ascending cumsum <= 1 - top_p, but never the `keep` best
    kept = ((before < top_p) & in_k) | (rank < keep)
    count = tf.reduce_sum(tf.cast(kept, tf.int32), axis=1)
    threshold = tf.gather(sorted_desc, count - 1, batch_dims=1)
    return threshold, tf.reduce_sum(probs, axis=1)


def _top_p_threshold_by_bisection(logits, log_norm, top_p):
    """Top-p cut (top-k off) without sorting: the lowest logit HF's TopPLogitsWarper keeps, per row.

    A token is kept when the probability mass of the tokens more likely than it is below top_p.
    That mass only shrinks as the token's probability grows, and non-negative float32 values order
    like their int32 bit patterns, so 31 halvings of the bit range find the least likely kept
    probability exactly: 31 masked sums over the vocabulary instead of a full sort and cumsum.
    """
    probs = tf.exp(logits - log_norm[:, None])  # [batch, vocab]
    bits = tf.bitcast(probs, tf.int32)
    batch = tf.shape(logits)[0]

    def halve(lo, hi):
        mid = lo + (hi - lo) // 2
        above = tf.reduce_sum(tf.where(bits > mid[:, None], probs, 0.0), axis=1)
        kept = above < top_p  # a token with these bits would be kept
        active = lo < hi  # rows already converged stay put
        return tf.where(active & ~kept, mid + 1, lo), tf.where(active & kept, mid, hi)

    lo = tf.zeros([batch], tf.int32)
    hi = tf.fill([batch], tf.reduce_max(bits))  # the most likely token is always kept
    lo, hi = tf.while_loop(lambda lo, hi: tf.reduce_any(lo < hi), halve, (lo, hi), maximum_iterations=32)
    return tf.reduce_min(tf.where(bits >= lo[:, None], logits, float("inf")), axis=1)


def top_k_top_p(logits, top_k, top_p, keep: int = 1):
    """HF's TopKLogitsWarper then TopPLogitsWarper as one threshold per row; filtered logits get -inf.

    top_k: int (0 = off) and top_p: float (1.0 = off), each a scalar or one per row ([batch]: the
    request engine's rows each have their own); keep: min_tokens_to_keep (static, at most
    CANDIDATES): top-k keeps max(top_k, keep), top-p never fewer than `keep`. Exact, and in the
    common case it sorts only the best CANDIDATES logits. When the top-p cut lies beyond them (a flat
    distribution) with top-k off, a bisection finds it without sorting; only a top_k between
    CANDIDATES and the vocabulary size sorts the full vocabulary.
    """
    vocab, batch = logits.shape[-1], tf.shape(logits)[0]
    n = min(CANDIDATES, vocab)
    keep_k = tf.where(top_k > 0, tf.minimum(tf.maximum(top_k, keep), vocab), vocab)
    keep_k = tf.broadcast_to(tf.reshape(keep_k, [-1, 1]), [batch, 1])  # [batch, 1]
    top_p = tf.reshape(top_p, [-1, 1])  # [1, 1] or [batch, 1]
    top_p_on = top_p[:, 0] < 1.0  # [1] or [batch]
    full_norm = tf.reduce_logsumexp(logits, axis=1)  # [batch]

    def threshold_from(sorted_desc):
        count = sorted_desc.shape[1]
        in_k = tf.range(count)[None, :] < keep_k
        k_norm = tf.reduce_logsumexp(tf.where(in_k, sorted_desc, NEG_INF), axis=1)
        norm = tf.where(keep_k[:, 0] < vocab, k_norm, full_norm)
        k_threshold = tf.where(
            keep_k[:, 0] < vocab, tf.gather(sorted_desc, tf.minimum(keep_k, count) - 1, batch_dims=1)[:, 0], NEG_INF
        )
        p_threshold, mass = _cut_from_sorted(sorted_desc, keep_k, top_p, norm, keep)
        p_threshold = tf.where(top_p_on, p_threshold, NEG_INF)
        return tf.maximum(k_threshold, p_threshold), mass

    best = tf.math.top_k(logits, n).values  # [batch, n], descending
    threshold, mass = threshold_from(best)
    whole = keep_k[:, 0] == vocab  # top-k off
    exact = (keep_k[:, 0] <= n) | (whole & (~top_p_on | (mass >= top_p[:, 0])))  # [batch]
    if n < vocab:
        def bisection():  # never above the keep-th best logit
            return tf.minimum(_top_p_threshold_by_bisection(logits, full_norm, top_p[:, 0]), best[:, keep - 1])

        def by_sorting():
            return threshold_from(tf.sort(logits, direction="DESCENDING"))[0]

        # the rows whose cut is not among the best n: by bisection (top-k off) or by a full sort
        bisect, sort = ~exact & whole, ~exact & ~whole
        threshold = tf.cond(tf.reduce_any(bisect), lambda: tf.where(bisect, bisection(), threshold), lambda: threshold)
        threshold = tf.cond(tf.reduce_any(sort), lambda: tf.where(sort, by_sorting(), threshold), lambda: threshold)
    return tf.where(logits >= threshold[:, None], logits, NEG_INF)


def _keeps(logits, keep: int):
    """[rows, vocab] bool: the `keep` best tokens of each row, which no warper removes."""
    return logits >= tf.math.top_k(logits, keep).values[:, -1:]


def entropy(logp):
    """Each row's entropy from its log-probs [rows, vocab] -> [rows, 1] (0 * log 0 counts as 0)."""
    return -tf.reduce_sum(tf.where(logp > float("-inf"), logp * tf.exp(logp), 0.0), axis=1, keepdims=True)


TOP_H_CANDIDATES = 100  # HF's TopHLogitsWarper looks among the 100 most likely tokens only


def top_n_sigma(logits, n, keep: int):
    """Top-nσ (Tang et al. 2024, arXiv 2411.07641): keep the tokens whose logit is within n standard
    deviations of the best one, the deviation over the row's finite logits (a population deviation,
    as llama.cpp's sampler); temperature scales both sides alike, so it does not move the cut."""
    finite = tf.math.is_finite(logits)
    count = tf.reduce_sum(tf.cast(finite, tf.float32), axis=1, keepdims=True)
    mean = tf.reduce_sum(tf.where(finite, logits, 0.0), axis=1, keepdims=True) / count
    spread = tf.sqrt(tf.reduce_sum(tf.where(finite, tf.square(logits - mean), 0.0), axis=1, keepdims=True) / count)
    cut = tf.reduce_max(logits, axis=1, keepdims=True) - n * spread
    return tf.where((logits < cut) & ~_keeps(logits, keep), NEG_INF, logits)


def top_h(logits, h, keep: int):
    """HF's TopHLogitsWarper (Top-H, arXiv 2509.02510): among the row's 100 best tokens, renormalised,
    keep the best ones while the entropy they add up to stays within h x that distribution's entropy
    (the best token always stays). min_tokens_to_keep does not apply (as in HF)."""
    best, index = tf.math.top_k(logits, min(TOP_H_CANDIDATES, logits.shape[-1]))  # [rows, n], sorted
    logp = tf.nn.log_softmax(best)
    p = tf.exp(logp)
    # HF's entropy clamps log 0 to the lowest float (0 * log 0 = 0); its running sum does not (a 0
    # probability makes it NaN, which keeps nothing after it)
    tau = h * -tf.reduce_sum(p * tf.maximum(logp, np.finfo(np.float32).min), axis=1, keepdims=True)
    chosen = (tf.cumsum(-p * logp, axis=1) <= tau) | (tf.range(tf.shape(best)[1]) == 0)[None, :]
    kept = tf.scatter_nd(tf.stack([tf.repeat(tf.range(tf.shape(logits)[0]), tf.shape(best)[1]),
                                   tf.reshape(index, [-1])], axis=1),
                         tf.reshape(tf.cast(chosen, tf.int32), [-1]), tf.shape(logits)) > 0
    return tf.where(kept, logits, NEG_INF)


def min_p(logits, p, keep: int):
    """HF's MinPLogitsWarper: drop tokens less likely than p times the row's most likely one."""
    probs = tf.nn.softmax(logits)
    remove = probs < p * tf.reduce_max(probs, axis=1, keepdims=True)
    return tf.where(remove & ~_keeps(logits, keep), NEG_INF, logits)


def typical(logits, mass, keep: int):
    """HF's TypicalLogitsWarper (locally typical sampling): keep the tokens whose surprisal is closest
    to the row's entropy until they hold `mass` of the probability. Sorts the vocabulary."""
    vocab = logits.shape[-1]
    logp = tf.nn.log_softmax(logits)
    shifted = tf.abs(-logp - entropy(logp))  # [rows, vocab]
    order = tf.argsort(shifted, axis=1, stable=True)  # most typical first
    sorted_shifted = tf.gather(shifted, order, batch_dims=1)
    cumulative = tf.cumsum(tf.nn.softmax(tf.gather(logits, order, batch_dims=1)), axis=1)
    last = tf.minimum(tf.reduce_sum(tf.cast(cumulative < mass, tf.int32), axis=1), vocab - 1)
    cut = tf.gather(sorted_shifted, last[:, None], batch_dims=1)  # [rows, 1]
    most_typical = shifted <= sorted_shifted[:, keep - 1:keep]  # the `keep` most typical always stay
    return tf.where((shifted > cut) & ~most_typical, NEG_INF, logits)


def epsilon_cutoff(logits, epsilon, keep: int):
    """HF's EpsilonLogitsWarper: drop tokens with probability below epsilon."""
    remove = tf.nn.softmax(logits) < epsilon
    return tf.where(remove & ~_keeps(logits, keep), NEG_INF, logits)


def eta_cutoff(logits, epsilon, keep: int):
    """HF's EtaLogitsWarper: drop tokens with probability below min(epsilon, sqrt(epsilon) * exp(-entropy))."""
    logp = tf.nn.log_softmax(logits)
    eta = tf.minimum(epsilon, tf.sqrt(epsilon) * tf.exp(-entropy(logp)))
    return tf.where((tf.exp(logp) < eta) & ~_keeps(logits, keep), NEG_INF, logits)


# A draw is an inverse-CDF lookup of one float64 uniform per row in integer weights (sample_token).
# It replaced Gumbel-max (argmax of logits - log(-log(u)) with a uniform per vocab entry), which
# spent 15.8 ms of a step on 16 rows x 50257 (the per-entry RNG and two logs; 2-core AMD EPYC Zen4)
# where this costs ~1 ms, and the request engine's per-slot Gumbel draws after the warpers made its
# sampling step 357 ms against generate's 80. Integer sums are exact in any order, so a row draws
# the same token alone or in any batch (the engine's rows equal generate alone).
WEIGHT_SCALE = 2.0 ** 32  # the best token's weight; tokens below 2**-32 of it are never drawn
SAMPLE_BLOCK = 256  # the lookup: the block holding the target, then the token inside it


def uniforms(rows: int, key):
    """[rows] float64 uniforms in [0, 1) from the stateless key: each row's draw."""
    return tf.random.stateless_uniform([rows], key, dtype=tf.float64)


def inverse_cdf(logits, uniform):
    """The token [rows] int32 where each row's uniform [rows] falls in the cumulative distribution of
    softmax(logits) [rows, vocab] (unnormalised is fine; -inf entries are never drawn).

    Each token's weight is floor(exp(logit - best) * WEIGHT_SCALE) as int64, so the cumulative sums
    are exact; the vocabulary is cut into blocks of SAMPLE_BLOCK, the target found among the block
    sums, then among the tokens of its block (no cumsum over the whole vocabulary)."""
    vocab = logits.shape[-1]
    blocks = -(-vocab // SAMPLE_BLOCK)
    best = tf.reduce_max(logits, axis=-1, keepdims=True)
    best = tf.where(tf.math.is_finite(best), best, 0.0)  # a row of -inf draws token 0, as argmax would
    weight = tf.cast(tf.exp(logits - best) * WEIGHT_SCALE, tf.int64)  # [rows, vocab]
    weight = tf.reshape(tf.pad(weight, [[0, 0], [0, blocks * SAMPLE_BLOCK - vocab]]), [-1, blocks, SAMPLE_BLOCK])
    ends = tf.cumsum(tf.reduce_sum(weight, axis=-1), axis=-1)  # [rows, blocks]: weight up to each block's end
    total = ends[:, -1]
    target = tf.minimum(tf.cast(uniform * tf.cast(total, tf.float64), tf.int64), total - 1)  # [rows] in [0, total)
    block = tf.reduce_sum(tf.cast(ends <= target[:, None], tf.int32), axis=-1)  # [rows]: the first block past it
    block = tf.minimum(block, blocks - 1)
    before = tf.concat([tf.zeros_like(ends[:, :1]), ends[:, :-1]], axis=-1)  # [rows, blocks]: weight before each
    inside = tf.cumsum(tf.gather(weight, block, batch_dims=1), axis=-1)  # [rows, SAMPLE_BLOCK]
    inside += tf.gather(before, block[:, None], batch_dims=1)
    return block * SAMPLE_BLOCK + tf.reduce_sum(tf.cast(inside <= target[:, None], tf.int32), axis=-1)


def sample_token(logits, key):
    """One draw per row from softmax(logits) [rows, vocab] (unnormalised is fine), stateless `key`."""
    return inverse_cdf(logits, uniforms(tf.shape(logits)[0], key))


# ---- the table every strategy applies ------------------------------------------------------------


def custom(logits, step: "Step", fns):
    """The user's processors, in order: fn(sequences [rows, width] int32, valid [rows, width] bool,
    generated (int32 scalar: tokens generated so far), logits [rows, vocab] float32) -> logits."""
    for fn in fns:
        logits = fn(step.sequences, step.valid, step.generated, logits)
    return logits


_COMPILABLE: OrderedDict = OrderedDict()  # (fn, rows, width, vocab) already checked, the latest CHECKED_KEPT
CHECKED_KEPT = 256


def check_custom(fns, rows: int, width: int, vocab: int) -> None:
    """Run each user processor alone, compiled with XLA, on zeros of the loop's shapes: ValueError
    naming the function if it does not compile or does not return logits of the same shape and dtype
    (so the error names it, instead of failing deep inside the generation loop's compile)."""
    for fn in fns:
        if (fn, rows, width, vocab) in _COMPILABLE:
            _COMPILABLE.move_to_end((fn, rows, width, vocab))
            continue
        name = fn.name if hasattr(fn, "name") and hasattr(fn, "fn") else getattr(fn, "__qualname__", repr(fn))
        args = (tf.zeros([rows, width], tf.int32), tf.zeros([rows, width], tf.bool), tf.constant(0),
                tf.zeros([rows, vocab], tf.float32))
        try:
            out = tf.function(getattr(fn, "fn", fn), jit_compile=True, autograph=False)(*args)
        except Exception as e:  # noqa: BLE001 - any failure is reported against the user's function
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"logits_processor {name} is not an XLA-compilable function of (sequences, valid, "
                             f"generated, logits) in TensorFlow ops: {type(e).__name__}: {first}") from None
        if not isinstance(out, tf.Tensor) or out.shape != (rows, vocab) or out.dtype != tf.float32:
            got = f"{out.dtype.name} {out.shape}" if isinstance(out, tf.Tensor) else type(out).__name__
            raise ValueError(f"logits_processor {name} must return float32 logits of shape [{rows}, {vocab}], got {got}")
        _COMPILABLE[(fn, rows, width, vocab)] = None
        while len(_COMPILABLE) > CHECKED_KEPT:
            _COMPILABLE.popitem(last=False)


class Step(NamedTuple):
    """What a processor may read when scoring the next token of each row."""

    sequences: tf.Tensor | None  # [rows, width] int32: prompt, generated tokens (None in a verify block)
    valid: tf.Tensor | None  # [rows, width] bool: real prompt tokens and tokens generated so far
    next_slot: tf.Tensor | None  # int32 scalar: the slot of `sequences` the next token goes to
    generated: tf.Tensor  # int32: tokens generated before this one, [] or one per position ([rows, s])
    eos_ids: tuple
    allowed: tf.Tensor | None = None  # [rows, vocab] bool: what each row's structured-output automaton allows
    unconditional: tf.Tensor | None = None  # [rows, vocab]: classifier-free guidance's unconditional logits
    diversity: tf.Tensor | None = None  # [rows, vocab] float32: group beam search, earlier groups' choices this step


ALWAYS = "always"  # a Processor's `off` for one that is always in the graph (cheap, value at run time)


class Processor(NamedTuple):
    option: str  # the GenerationConfig field (or resolved property) that sets it
    off: object  # the value that leaves the logits unchanged, or ALWAYS
    in_key: bool  # the value shapes the graph (compile key) instead of travelling as a tensor (Knobs)
    dtype: object  # the tensor's dtype when not in_key
    apply: Callable | None  # (logits [..., vocab], step: Step, value) -> logits; None: applied by core.scores
    # a value that travels as a table: value -> (its shape for the compile key, {name: array}); apply
    # then gets (shape, tensors)
    table: Callable | None = None
    reads_row: bool = False  # reads the row's tokens (Step.sequences): a verify block gives each position its own


PROCESSORS = (
    Processor("guidance_scale", None, False, tf.float32,  # first, as the reference adds it
              lambda logits, s, scale: guide(logits, s.unconditional, scale)),
    Processor("sequence_bias", (), True, None,
              lambda logits, s, table: sequence_bias(logits, s.sequences, s.valid, s.next_slot, table), word_table,
              reads_row=True),
    Processor("diversity_penalty", 0.0, False, tf.float32,  # group beam search (group_beams.py), HF's Hamming
              lambda logits, s, penalty: logits - penalty * s.diversity),
    Processor("repetition_penalty", 1.0, False, tf.float32,
              lambda logits, s, value: repetition_penalty(logits, s.sequences, s.valid, value), reads_row=True),
    Processor("presence_penalty", 0.0, False, tf.float32,
              lambda logits, s, value: presence_penalty(logits, generated_counts(s, logits.shape[-1]), value),
              reads_row=True),
    Processor("frequency_penalty", 0.0, False, tf.float32,
              lambda logits, s, value: frequency_penalty(logits, generated_counts(s, logits.shape[-1]), value),
              reads_row=True),
    Processor("no_repeat_ngram_size", 0, True, None,
              lambda logits, s, n: no_repeat_ngram(logits, s.sequences, s.valid, s.next_slot, n), reads_row=True),
    Processor("bad_words_ids", (), True, None,
              lambda logits, s, table: bad_words(logits, s.sequences, s.valid, s.next_slot, table, s.eos_ids),
              lambda words: word_table((w, 0.0) for w in words), reads_row=True),
    Processor("min_new_tokens", ALWAYS, False, tf.int32,  # min_length is folded in (GenerationConfig.for_prompt)
              lambda logits, s, n: forbid_eos(logits, s.eos_ids, s.generated < n)),
    Processor("constrained", False, True, None,  # structured output (constraints.py): the automaton's mask
              lambda logits, s, on: tf.where(s.allowed, logits, NEG_INF)),
    Processor("forced_bos_token_id", None, True, None,
              lambda logits, s, token: force_tokens(logits, (token,), s.generated == 0)),
    Processor("forced_eos", (), True, None,  # ((ids), the last step)
              lambda logits, s, forced: force_tokens(logits, forced[0], s.generated == forced[1])),
    Processor("remove_invalid_values", False, True, None,
              lambda logits, s, on: remove_invalid_values(logits)),
    Processor("exponential_decay_length_penalty", None, True, None,
              lambda logits, s, decay: exponential_decay(logits, s.eos_ids, s.generated, *decay)),
    Processor("suppress_tokens", (), True, None,
              lambda logits, s, ids: suppress_tokens(logits, ids)),
    Processor("begin_suppress", (), True, None,  # ((ids), the step it fires at)
              lambda logits, s, at: tf.where(tf.expand_dims(s.generated == at[1], -1), suppress_tokens(logits, at[0]),
                                             logits)),
    Processor("logits_processor", (), True, None,  # the user's functions, by identity
              lambda logits, s, fns: custom(logits, s, fns), reads_row=True),
    # always last, after the sampling warpers too (as HF's LogitNormalization): core.scores applies it
    Processor("renormalize_logits", False, True, None, None),
)


class Warper(NamedTuple):
    option: str
    off: object
    in_key: bool
    dtype: object
    apply: Callable | None  # (logits [rows, vocab], value, keep: min_tokens_to_keep) -> logits; None: a setting
    before_top_k: bool = False  # applied after temperature but before top-k / top-p (HF's order)


# After temperature, top-k and top-p (`warp`), sampling only. Their on/off state is in the compile
# key, their values are tensors; min_tokens_to_keep is a setting every warper reads.
WARPERS = (
    Warper("min_tokens_to_keep", 1, True, None, None),
    Warper("top_n_sigma", None, False, tf.float32, top_n_sigma, before_top_k=True),
    Warper("top_h", None, False, tf.float32, top_h, before_top_k=True),
    Warper("min_p", None, False, tf.float32, min_p),
    Warper("typical_p", 1.0, False, tf.float32, typical),
    Warper("epsilon_cutoff", 0.0, False, tf.float32, epsilon_cutoff),
    Warper("eta_cutoff", 0.0, False, tf.float32, eta_cutoff),
)


def reads_rows(on: tuple) -> bool:
    """Whether a processor named in `on` (see `active`) reads the row's tokens."""
    names = dict(on)
    return any(p.reads_row and p.option in names for p in PROCESSORS)


def active(cfg, runtime: tuple = (), keep: int = 1) -> tuple:
    """The compile key's part for processors and warpers: ((option, value if it shapes the graph
    else True), ...) for each `cfg` turns on (or that `runtime` names: its value comes at run time).
    keep: the least min_tokens_to_keep the strategy needs (beam sampling: one more than the EOS ids,
    as the reference's beam sampling sets its warpers'; a larger value of the caller's wins)."""
    on = []
    for p in PROCESSORS + (WARPERS if cfg.do_sample else ()):
        value = getattr(cfg, p.option)
        if p.option == "min_tokens_to_keep":
            value = max(value, keep)
        if p.off is ALWAYS or p.option in runtime or value != p.off:
            table = getattr(p, "table", None)  # warpers never travel as tables
            on.append((p.option, table(value)[0] if table else value if p.in_key else True))
    return tuple(on)


def knob_values(cfg) -> dict:
    """The run-time values (tensors) of the processors whose value is not in the compile key, and the
    tables of those that travel as tables (sequence_bias, bad_words_ids)."""
    values = {p.option: tf.constant(getattr(cfg, p.option) if getattr(cfg, p.option) is not None else 0.0, p.dtype)
              for p in PROCESSORS + WARPERS if not p.in_key}
    for p in PROCESSORS:
        if p.table is not None and getattr(cfg, p.option) != p.off:
            values[p.option] = {name: tf.constant(a) for name, a in p.table(getattr(cfg, p.option))[1].items()}
    return values


def apply(logits, step: Step, on: tuple, values: dict):
    """Apply the processors named in `on` (see `active`) in the table's order; `values` holds the
    tensors of those not in the key (and the tables of those that travel as tables)."""
    settings = dict(on)
    for p in PROCESSORS:
        if p.apply is not None and p.option in settings:
            value = (settings[p.option], values[p.option]) if p.table else \
                settings[p.option] if p.in_key else values[p.option]
            logits = p.apply(logits, step, value)
    return logits


def skip_when_off(w: Warper, logits, value, keep: int):
    """w applied to logits [rows, vocab], or skipped when `value` is its off value at run time (a
    SavedModel input): typical_p sorts the vocabulary, ~9 ms per GPT-2-small step otherwise."""
    off = 0.0 if w.off is None else w.off
    return tf.cond(tf.equal(value, off), lambda: logits, lambda: w.apply(logits, value, keep))


def warp(logits, temperature, top_k, top_p, on: tuple = (), values: dict | None = None):
    """The sampling warpers over the last axis of logits [..., vocab]: temperature, top-k and top-p,
    then those of WARPERS that `on` (see `active`) names, with their tensors from `values`."""
    settings = dict(on)
    keep = settings.get("min_tokens_to_keep", 1)
    flat = logits if logits.shape.rank == 2 else tf.reshape(logits, [-1, logits.shape[-1]])
    flat = flat / temperature
    for before in (True, False):
        if not before:
            flat = top_k_top_p(flat, top_k, top_p, keep)
        for w in WARPERS:
            if w.apply is not None and w.option in settings and w.before_top_k == before:
                flat = skip_when_off(w, flat, values[w.option], keep)
    return flat if logits.shape.rank == 2 else tf.reshape(flat, tf.shape(logits))
