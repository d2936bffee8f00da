"""Scoring: how likely a model finds a continuation after a context, or a whole text; perplexity.

These are the requests an evaluation harness sends (lm-evaluation-harness's `loglikelihood` and
`loglikelihood_rolling`), with its rules, so scores match its `hf` backend on the same weights:

    context / continuation   a context's trailing whitespace moves to the continuation; the
                             continuation's tokens are those the whole text has after the context's
                             (a BPE merge across the boundary is scored as the whole text has it);
                             an empty context is the end-of-text token
    too long                 the last n_positions + 1 tokens are kept (the context loses its start);
                             a continuation longer than n_positions is refused
    a whole text             scored in disjoint chunks of n_positions tokens, each predicted from
                             the n_positions tokens before its end (the first from end-of-text), so
                             every token is predicted once

One compiled forward pass per (rows, bucket width, scored tail) triple: rows are left-padded to a
multiple of BUCKET and only the tail's positions reach the LM head, so the [rows, width, vocab]
logits never exist and never reach the host. A batch may run at a wider width another batch needs,
when that padding costs less than a compile (plan_widths).

Requests sharing a context (a multiple-choice question's answers) share its forward pass: the
context runs once into a KV cache, which each answer's row then reads (`shared_score_fn`). The hf
backend runs the context once per answer.
"""

from __future__ import annotations

import math
import sys
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from . import cache as kv
from . import status

# Row widths and scored tails are rounded up to a multiple of BUCKET, and beyond WIDE to a multiple of
# WIDE: each distinct width is one compile (GPT-2 small: several seconds), and an evaluation's rows
# take every length up to n_positions, so long rows share coarser buckets (at most 1/8 padding there).
BUCKET, WIDE = 16, 128


def bucket(n: int) -> int:
    """The padded length of n tokens."""
    return _round_up(n, BUCKET if n <= WIDE else WIDE)


# A new width's compile, in tokens of forward pass it costs as much as, for GPT-2 small (768 wide):
# ~3.5 s per scoring compile against ~850 tokens/s (2-core AMD EPYC, 16 rows of 100-250 tokens). Both
# grow with the layers, the pass's cost also with the width squared, so a wider model pays for a
# compile with fewer tokens of padding: COMPILE_TOKENS * (768 / n_embd)^2.
COMPILE_TOKENS = 3000


def plan_widths(needs: list[tuple[int, int]], compile_tokens: float, compiled=frozenset()) -> dict[int, int]:
    """The width each needed width runs at. needs: (width a batch needs, the rows its pass runs) per
    batch. A batch may run at a wider compiled width (more padding) rather than compile its own: the
    set of widths minimises the tokens run plus compile_tokens per width not yet `compiled` (each needed
    width maps to the narrowest chosen one at or above it; the widest is always chosen)."""
    rows: dict[int, int] = {}
    for width, n in needs:
        rows[width] = rows.get(width, 0) + n
    widths = sorted(rows, reverse=True)  # widest first
    best, cut = [0.0] * (len(widths) + 1), [len(widths)] * len(widths)
    for i in range(len(widths) - 1, -1, -1):  # best[i]: widths[i:] served, widths[i] chosen
        fixed = 0.0 if widths[i] in compiled else compile_tokens
        served, best[i] = 0, math.inf
        for m in range(i + 1, len(widths) + 1):  # widths[i:m] run at widths[i]
            served += rows[widths[m - 1]]
            cost = fixed + widths[i] * served + best[m]
            if cost < best[i]:
                best[i], cut[i] = cost, m
    chosen, i = {}, 0
    while i < len(widths):
        chosen.update({w: widths[i] for w in widths[i:cut[i]]})
        i = cut[i]
    return chosen


class Row(NamedTuple):
    """One forward pass's worth of scoring: `targets` are predicted from the ends of `inputs`."""

    inputs: list  # token ids fed to the model
    targets: list  # the ids scored: inputs[i + 1 - len(targets)]'s successor is targets[i]

    @property
    def split(self) -> int:
        """Where the scored positions start: inputs[:split] (the context, less its last token)
        predicts nothing scored, inputs[split:] predicts the targets."""
        return len(self.inputs) - len(self.targets)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# Rows scoring at most PACK_TAIL tokens (a context and its continuation) are packed several to a row of
# at least PACK_WIDTH tokens, each reading only its own keys: padding then costs almost nothing. GPT-2
# small, 100 contexts of 28-300 tokens, batches of 16: 24,600 tokens run for 14,000 real ones when each
# had a row of its own (widths 128-384), ~15,000 packed. Rows scoring more (a rolling text's windows,
# every token scored) run one to a row.
PACK_TAIL, PACK_WIDTH = 64, 256


def pack(lengths: dict, width: int) -> list[list]:
    """Rows (keys of `lengths`, their token counts) into bins of `width` tokens, first fit in
    decreasing length: [[row, ...], ...], each bin's rows in the order they fill it."""
    bins, room = [], []
    for row in sorted(lengths, key=lambda r: -lengths[r]):
        fits = next((b for b, left in enumerate(room) if lengths[row] <= left), None)
        if fits is None:
            bins.append([row])
            room.append(width - lengths[row])
        else:
            bins[fits].append(row)
            room[fits] -= lengths[row]
    return bins


def _is_ids(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and all(
        isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in value)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list, list]:
    """(context ids, continuation ids) by the harness's rule (module docstring)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    head = tokenizer.encode(context)
    return head, whole[len(head):]


def _eos(model) -> int:
    eos = model.config.eos_token_id
    if eos is None or not 0 <= eos < model.config.vocab_size:
        raise ValueError("an empty context is scored after the end-of-text token, and this model's config has no "
                         "eos_token_id in its vocabulary")
    return int(eos)


def _tokens(model, value, where: str) -> list:
    """A text's ids (with the model's tokenizer) or checked ids."""
    if isinstance(value, str):
        if model.tokenizer is None:
            raise ValueError(f"{where} is text, and this model has no tokenizer: pass token ids, or load a directory "
                             "holding tokenizer.json")
        return model.tokenizer.encode(value)
    if not _is_ids(value):
        raise ValueError(f"{where} must be a string or a list of token ids, got {type(value).__name__}")
    bad = [int(t) for t in value if not 0 <= t < model.config.vocab_size]
    if bad:
        raise ValueError(f"{where} holds token id {bad[0]} outside the vocabulary [0, {model.config.vocab_size})")
    return [int(t) for t in value]


def pair_row(model, i: int, request, limit: int) -> Row:
    """The scoring row of loglikelihood request `i`: a (context, continuation) pair of strings or of id lists."""
    if not isinstance(request, (list, tuple)) or len(request) != 2:
        raise ValueError(f"requests[{i}] must be a (context, continuation) pair, got {request!r:.80}")
    context, continuation = request
    if isinstance(context, str) != isinstance(continuation, str):
        raise ValueError(f"requests[{i}]: context and continuation must both be text or both be token ids")
    if isinstance(context, str):
        if model.tokenizer is None:
            raise ValueError(f"requests[{i}] is text, and this model has no tokenizer: pass token ids, or load a "
                             "directory holding tokenizer.json")
        if context:
            context, continuation = encode_pair(model.tokenizer, context, continuation)
        else:
            context, continuation = [], model.tokenizer.encode(continuation)
    else:
        context, continuation = _tokens(model, context, f"requests[{i}][0]"), _tokens(model, continuation,
                                                                                     f"requests[{i}][1]")
    if not continuation:
        raise ValueError(f"requests[{i}]: the continuation is empty (no tokens to score)")
    if len(continuation) > limit:
        raise ValueError(f"requests[{i}]: the continuation has {len(continuation)} tokens; at most max_length "
                         f"({limit}, the model's n_positions unless given) can be scored")
    whole = ([_eos(model)] if not context else context) + continuation
    whole = whole[-(limit + 1):]  # the context loses its start, as the harness's hf backend does
    return Row(whole[:-1], continuation)


def rolling_rows(tokens: list, prefix: int, limit: int) -> list[Row]:
    """A whole text's rows: chunks of up to `limit` tokens, each predicted from the `limit` tokens
    before its end (the first from `prefix`, the end-of-text token), every token once."""
    prefixed = [prefix] + tokens
    rows = []
    for start in range(0, len(tokens), limit):
        end = min(start + limit, len(tokens))
        rows.append(Row(prefixed[max(0, end - limit):end], tokens[start:end]))
    return rows


def _target_logprobs(logits, targets):
    """Each target's log-prob and whether it is the argmax: logits [..., vocab], targets [...]."""
    chosen = tf.gather(tf.nn.log_softmax(logits), targets[..., None], batch_dims=targets.shape.rank)[..., 0]
    return chosen, tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), targets)


def _chosen(logits, targets, scored):
    """Each target's log-prob (0 where not scored) and whether every scored target is the argmax.
    logits [rows, tail, vocab], targets [rows, tail], scored [rows, tail] bool."""
    chosen, best = _target_logprobs(logits, targets)
    return tf.where(scored, chosen, 0.0), tf.reduce_all(~scored | best, axis=1)


def score_fn(net, tail: int):
    """The compiled pass: ids, mask [rows, width] left-padded, targets [rows, tail] right-aligned,
    counts [rows] -> (each target's log-prob [rows, tail], 0 where not scored; greedy [rows] bool:
    every scored target is the argmax)."""

    def run(ids, mask, targets, counts):
        hidden, _, _ = net.prefill(ids, mask, ids.shape[1])  # [rows, width, d]
        logits = net.lm_head(hidden[:, -tail:])  # [rows, tail, vocab]: only the positions scored
        return _chosen(logits, targets, tf.range(tail)[None, :] >= tail - counts[:, None])

    return run


def packed_score_fn(net):
    """The compiled pass for packed rows: ids, positions, texts [rows, width] (texts: which text of its
    row each slot holds, from 1; 0 for padding); at [scored, 2] (row, column) of each prediction scored,
    targets [scored] -> (each target's log-prob [scored], whether it is the argmax [scored])."""

    def run(ids, positions, texts, at, targets):
        rows, width = ids.shape
        view = kv.View(texts > 0, 0, packed=texts)  # each text reads only its own keys
        hidden, _ = net.forward(ids, positions, net.new_cache(rows, width), view)  # [rows, width, d]
        return _target_logprobs(net.lm_head(tf.gather_nd(hidden, at)), targets)  # only the positions scored

    return run


def shared_score_fn(net, contexts: int, tail: int):
    """The compiled pass for rows sharing contexts: context ids, mask [contexts, width] left-padded;
    owner [rows] (each row's context); ids, targets [rows, tail] left-aligned (the row's last context
    token, then its continuation but the last), counts [rows] -> as score_fn's, left-aligned.
    Each context runs once into a cache of width + tail slots; each row reads its owner's copy."""

    def run(context_ids, context_mask, owner, ids, targets, counts):
        width, heads = context_ids.shape[1], net.config.n_head
        _, cache, key_mask = net.prefill(context_ids, context_mask, width + tail)

        def owners(buffer):  # [contexts * heads, slots, head_dim] -> [rows * heads, slots, head_dim]
            by_context = tf.reshape(buffer, [contexts, heads, width + tail, -1])
            return tf.reshape(tf.gather(by_context, owner), [-1, width + tail, buffer.shape[-1]])

        cache = kv.KVCache(tuple(map(owners, cache.keys)), tuple(map(owners, cache.values)))
        lengths = tf.gather(tf.reduce_sum(tf.cast(context_mask, tf.int32), axis=1), owner)  # [rows]
        positions = lengths[:, None] + tf.range(tail)[None, :]  # [rows, tail]
        hidden, _ = net.forward(ids, positions, cache, kv.View(tf.gather(key_mask, owner), width))
        logits = net.lm_head(hidden)  # [rows, tail, vocab]
        return _chosen(logits, targets, tf.range(tail)[None, :] < counts[:, None])

    return run


def _checked_batch_size(batch_size) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return batch_size


def shared_batches(rows: list[Row], batch_size: int) -> tuple[list[list[list[int]]], list[int]]:
    """(batches of contexts, each context a list of row numbers sharing its inputs[:split], each
    batch at most batch_size rows; the row numbers left to score alone). Rows share a context when
    two or more have the same non-empty one; the longest contexts come first."""
    by_context: dict[tuple, list[int]] = {}
    for r, row in enumerate(rows):
        by_context.setdefault(tuple(row.inputs[:row.split]), []).append(r)
    alone, pieces = [], []
    for context, members in by_context.items():
        if len(members) < 2 or not context:
            alone += members
            continue
        pieces += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    pieces.sort(key=lambda piece: -rows[piece[0]].split)
    batches, current = [], []
    for piece in pieces:
        if current and sum(map(len, current)) + len(piece) > batch_size:
            batches.append(current)
            current = []
        current.append(piece)
    return batches + ([current] if current else []), sorted(alone)


def _power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _run_compiled(model, key, make, what: str, *arrays):
    fresh = key not in model.compile_cache
    fn = model.compile_cache.compiled(key, make())
    with status.compile_notice(what, fresh):
        out = fn(*(tf.constant(a) for a in arrays))
    return [o.numpy() for o in out]


def _compiled_widths(model, kind: str, batch_size: int | None = None) -> frozenset:
    """The widths of the scoring passes of `kind` this model has compiled (for batch_size rows if given)."""
    return frozenset(key[-2] for key in model.compile_cache.keys() if isinstance(key, tuple) and key[0] == kind
                     and (batch_size is None or key[1] == batch_size))


def _alone_width(model, rows: list[Row], numbers: list[int]) -> int:
    return min(bucket(max(len(rows[r].inputs) for r in numbers)), model.config.n_positions)


def _score_alone(model, rows: list[Row], numbers: list[int], batch_size: int, width: int):
    """Score rows[numbers] (at most batch_size), each its own forward pass row (filler rows added),
    left-padded to `width`: yields (row number, its targets' log-probs, greedy)."""
    batch = [rows[r] for r in numbers]
    tail = min(bucket(max(len(r.targets) for r in batch)), width)
    ids = np.zeros([batch_size, width], np.int32)  # left-padded
    mask = np.zeros([batch_size, width], np.int32)
    targets = np.zeros([batch_size, tail], np.int32)  # right-aligned
    counts = np.zeros([batch_size], np.int32)
    mask[len(batch):, -1] = 1  # filler rows: one token, nothing scored
    for j, row in enumerate(batch):
        ids[j, width - len(row.inputs):] = row.inputs
        mask[j, width - len(row.inputs):] = 1
        targets[j, tail - len(row.targets):] = row.targets
        counts[j] = len(row.targets)
    chosen, best = _run_compiled(model, ("score", batch_size, width, tail), lambda: score_fn(model.network, tail),
                                 f"scoring {batch_size} rows x {width} tokens", ids, mask, targets, counts)
    for j, r in enumerate(numbers):
        yield r, chosen[j, tail - counts[j]:], bool(best[j])


def _score_packed(model, rows: list[Row], bins: list[list[int]], count: int, width: int, scored: int):
    """Score the rows of `bins` (each a packed row's row numbers) in one pass of `count` rows of `width`
    tokens and `scored` predictions: yields (row number, its targets' log-probs, greedy)."""
    ids, positions, texts = (np.zeros([count, width], np.int32) for _ in range(3))
    at, targets = np.zeros([scored, 2], np.int32), np.zeros([scored], np.int32)
    spans, k = [], 0  # (row number, its first and last + 1 prediction in `at`)
    for b, members in enumerate(bins):
        column = 0
        for text, r in enumerate(members, 1):
            n, t = len(rows[r].inputs), len(rows[r].targets)
            ids[b, column:column + n] = rows[r].inputs
            positions[b, column:column + n] = np.arange(n)  # each text from position 0
            texts[b, column:column + n] = text
            at[k:k + t] = np.stack([np.full(t, b), column + n - t + np.arange(t)], axis=1)
            targets[k:k + t] = rows[r].targets
            spans.append((r, k, k + t))
            k, column = k + t, column + n
    chosen, best = _run_compiled(model, ("score-packed", count, width, scored), lambda: packed_score_fn(model.network),
                                 f"scoring {count} packed rows x {width} tokens", ids, positions, texts, at, targets)
    for r, first, end in spans:
        yield r, chosen[first:end], bool(best[first:end].all())


def _packed_calls(model, rows: list[Row], numbers: list[int], batch_size: int, cost: float) -> list[tuple]:
    """The packed passes for rows[numbers]: [(bins, rows of the pass, width, predictions scored), ...].
    One width and one count of predictions for all; the last pass takes fewer rows (a power of two)
    when the rows it saves cost more than a compile."""
    if not numbers:
        return []
    longest = max(len(rows[r].inputs) for r in numbers)
    width = min(model.config.n_positions, max(bucket(longest), PACK_WIDTH))
    bins = pack({r: len(rows[r].inputs) for r in numbers}, width)
    calls = [bins[i:i + batch_size] for i in range(0, len(bins), batch_size)]
    scored = bucket(max(sum(len(rows[r].targets) for b in call for r in b) for call in calls))
    out = []
    for call in calls:
        count = batch_size
        fewer = _power_of_two(len(call))
        if fewer < batch_size and (("score-packed", fewer, width, scored) in model.compile_cache
                                   or (batch_size - fewer) * width > cost):
            count = fewer
        out.append((call, count, width, scored))
    return out


def _shared_width(rows: list[Row], batch: list[list[int]]) -> int:
    return bucket(max(rows[members[0]].split for members in batch))


def _score_shared(model, rows: list[Row], batch: list[list[int]], batch_size: int, width: int):
    """Score the rows of `batch` (contexts, each a list of row numbers sharing it), each context
    once, left-padded to `width`: yields (row number, its targets' log-probs, greedy)."""
    contexts = _power_of_two(len(batch))  # few distinct counts, so few compiles
    tail = bucket(max(len(rows[r].targets) for members in batch for r in members))
    context_ids = np.zeros([contexts, width], np.int32)  # left-padded
    context_mask = np.zeros([contexts, width], np.int32)
    context_mask[len(batch):, -1] = 1  # filler contexts: one token
    owner = np.zeros([batch_size], np.int32)
    ids = np.zeros([batch_size, tail], np.int32)  # left-aligned after the context
    targets = np.zeros([batch_size, tail], np.int32)
    counts = np.zeros([batch_size], np.int32)  # filler rows: nothing scored
    numbers = []  # the batch's rows in order, owner[j] the context of numbers[j]
    for c, members in enumerate(batch):
        context = rows[members[0]].inputs[:rows[members[0]].split]
        context_ids[c, width - len(context):] = context
        context_mask[c, width - len(context):] = 1
        owner[len(numbers):len(numbers) + len(members)] = c
        numbers += members
    for j, r in enumerate(numbers):
        row = rows[r]
        ids[j, :len(row.targets)] = row.inputs[row.split:]
        targets[j, :len(row.targets)] = row.targets
        counts[j] = len(row.targets)
    chosen, best = _run_compiled(model, ("score-shared", contexts, batch_size, width, tail),
                                 lambda: shared_score_fn(model.network, contexts, tail),
                                 f"scoring {contexts} shared contexts x {width} tokens", context_ids, context_mask,
                                 owner, ids, targets, counts)
    for j, r in enumerate(numbers):
        yield r, chosen[j, :counts[j]], bool(best[j])


def score_rows(model, rows: list[Row], batch_size: int, progress: bool | None) -> tuple[list, list]:
    """(each row's target log-probs, float64 [len(targets)]; each row's greedy flag), in row order.
    Rows sharing a context are scored together, that context run once (shared_batches); the other
    rows scoring few tokens are packed several to a row (pack); the rest run one to a row, longest
    first, in batches of batch_size (the last batch filled with one-token rows). Shared and one-to-a-row
    passes run at the widths plan_widths chooses for their batches."""
    batch_size = _checked_batch_size(batch_size)
    shared, rest = shared_batches(rows, batch_size)
    packed = [r for r in rest if len(rows[r].targets) <= PACK_TAIL]
    alone = sorted((r for r in rest if len(rows[r].targets) > PACK_TAIL), key=lambda r: -len(rows[r].inputs))
    alone_batches = [alone[i:i + batch_size] for i in range(0, len(alone), batch_size)]
    # each pass's width: its rows' bucket, or a wider one already needed when that costs less than a compile
    cost = COMPILE_TOKENS * (768 / model.config.n_embd) ** 2
    shared_widths = [_shared_width(rows, b) for b in shared]
    alone_widths = [_alone_width(model, rows, b) for b in alone_batches]
    shared_plan = plan_widths([(w, _power_of_two(len(b))) for w, b in zip(shared_widths, shared)], cost,
                              _compiled_widths(model, "score-shared"))
    alone_plan = plan_widths([(w, batch_size) for w in alone_widths], cost, _compiled_widths(model, "score", batch_size))
    work = [(_score_shared, b, (batch_size, shared_plan[w])) for w, b in zip(shared_widths, shared)]
    work += [(_score_alone, b, (batch_size, alone_plan[w])) for w, b in zip(alone_widths, alone_batches)]
    work += [(_score_packed, call, shape) for call, *shape in _packed_calls(model, rows, packed, batch_size, cost)]
    logprobs, greedy = [None] * len(rows), [False] * len(rows)
    bar = status.Progress(len(rows), "requests") if (progress if progress is not None else
                                                    len(rows) > batch_size and status.is_terminal(sys.stderr)) else None
    done = 0
    for score, batch, shape in work:
        for r, chosen, best in score(model, rows, batch, *shape):
            logprobs[r], greedy[r] = chosen.astype(np.float64), best
            done += 1
        if bar is not None:
            bar.update(done)
    return logprobs, greedy


def _listed(requests, name: str) -> list:
    if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
        raise ValueError(f"{name} must be a list, got {type(requests).__name__}")
    return list(requests)


def _max_length(model, max_length) -> int:
    if max_length is None:
        return model.config.n_positions
    if not isinstance(max_length, int) or isinstance(max_length, bool) or not 1 <= max_length <= model.config.n_positions:
        raise ValueError(f"max_length must be an int in [1, {model.config.n_positions}] (the model's n_positions) "
                         f"or None, got {max_length!r}")
    return max_length


def loglikelihood(model, requests, batch_size: int = 16, progress: bool | None = None,
                  max_length: int | None = None) -> list[tuple[float, bool]]:
    """Per (context, continuation) request: (the continuation's summed log-prob given the context,
    whether it is the greedy continuation: every token the argmax). Strings (tokenised by the
    harness's rule, module docstring) or lists of ids; an empty context scores after end-of-text.
    max_length: the tokens one pass may see (default: the model's n_positions)."""
    requests = _listed(requests, "requests")
    limit = _max_length(model, max_length)
    rows = [pair_row(model, i, r, limit) for i, r in enumerate(requests)]
    logprobs, greedy = score_rows(model, rows, batch_size, progress)
    return [(float(lp.sum()), g) for lp, g in zip(logprobs, greedy)]


def _rolling_sums(model, tokens: list[list], batch_size: int, progress, limit: int) -> list[float]:
    """Each token list's summed log-prob over its rolling rows (rolling_rows)."""
    rows, owner = [], []
    for i, ids in enumerate(tokens):
        for row in rolling_rows(ids, _eos(model), limit):
            rows.append(row)
            owner.append(i)
    logprobs, _ = score_rows(model, rows, batch_size, progress)
    sums = [0.0] * len(tokens)
    for i, lp in zip(owner, logprobs):
        sums[i] += float(lp.sum())
    return sums


def _text_tokens(model, texts) -> list[list]:
    tokens = [_tokens(model, t, f"texts[{i}]") for i, t in enumerate(_listed(texts, "texts"))]
    for i, ids in enumerate(tokens):
        if not ids:
            raise ValueError(f"texts[{i}] is empty (no tokens to score)")
    return tokens


def loglikelihood_rolling(model, texts, batch_size: int = 16, progress: bool | None = None,
                          max_length: int | None = None) -> list[float]:
    """Per text (a string or a list of ids): its summed log-prob, every token predicted once, the first
    from end-of-text, in chunks of max_length tokens (default n_positions; module docstring)."""
    limit = _max_length(model, max_length)
    return _rolling_sums(model, _text_tokens(model, texts), batch_size, progress, limit)


def perplexity(model, texts, batch_size: int = 16, progress: bool | None = None) -> list[float]:
    """Per text (or ids): exp(-loglikelihood_rolling / its number of tokens), every token predicted once."""
    tokens = _text_tokens(model, texts)
    sums = _rolling_sums(model, tokens, batch_size, progress, model.config.n_positions)
    return [math.exp(-s / len(ids)) for s, ids in zip(sums, tokens)]
