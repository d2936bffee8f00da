"""The request engine: many requests, each with its own prompt, length, stops and sampling options,
scheduled over a fixed number of slots of one compiled decode loop (continuous batching).

    lm.generate_many(requests, slots=16)      every request to its end, results in input order
    engine = lm.engine(slots=16)              the incremental form:
        rid = engine.submit(request)           queue one (checked now: ValueError naming the option)
        engine.cancel(rid)                     drop it, queued or running
        for result in engine: ...              run until idle, each Result as its request finishes
        for update in engine.stream(): ...     the same, with each chunk's new tokens per request

A request is a dict: `input_ids` (a list of ids) or `prompt` (text, needs the tokenizer), plus any
of generate's per-row options (PER_REQUEST, the option table's rows marked `engine`). The host loop (Engine.step) gives free slots to
waiting requests (slots.prefill_into, a few prompts of one width bucket at a time), then advances
every slot up to chunk_size tokens (slots.decode_chunk), returning early when a row finishes and
another request waits. Each piece compiles once per shape: prefill once per width bucket, decode
once per engine shape (and stop-string table shape); model.trace_count proves it.

Where minigen's engine differs from generate: a result holds only the request's own new tokens
(through its EOS, or the token a stop string ended in), never padding.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
import time
from collections import deque
from typing import Iterator

import numpy as np
import tensorflow as tf

from . import status
from .generation import constraints
from .generation import slots as S
from .generation.config import GenerationConfig, normalise_names
from .generation.generate import _stop_table, as_config, model_defaults
from .generation.options import BY_NAME, OPTIONS

logger = logging.getLogger("minigen")

# The options a request may set: each slot has its own value (slots.RowOptions), or it has no effect on
# the results (pad_token_id, pad_to_multiple_of, return_dict: no padding in them). The table's rows say
# which (options.Option.engine); every other option must keep its default (or the model's
# generation_config.json value): the engine refuses it by name.
PER_REQUEST = tuple(o.name for o in OPTIONS if o.engine)
EOS_BUDGET = 4  # EOS ids a request may have (a fixed [slots, 4] table)
# A prefill call runs one piece of one prompt: several prompts per call would save a read of the weights
# for short pieces, at one more compile per (rows, width), and TensorFlow keeps every compiled program
# (a `minigen batch` worker of the shipped 2-layer model: 1.86 -> 2.77 GB resident with them)
DEFAULT_CHUNK = 16  # decode steps per call at most (a call returns early when a slot frees and a request waits)


@dataclasses.dataclass
class Result:
    """One finished request."""

    request_id: int  # submit's id (generate_many: the request's index)
    prompt_ids: list  # the prompt's token ids
    new_tokens: list  # the generated ids: through the EOS or the token a stop string ended in
    finish_reason: str  # "eos" | "stop_string" | "length" | "cancelled"
    text: str | None = None  # the new tokens decoded, when the model has a tokenizer
    logprobs: list | None = None  # each new token's log-prob, when the request asked (output_logprobs)
    top_tokens: list | None = None  # per new token its top_logprobs=k most likely tokens, best first (when asked)
    top_logprobs: list | None = None  # and their log-probs under the distribution the token was chosen from
    incomplete: bool | None = None  # structured output: the text is only a prefix of a match (None: no constraint)


@dataclasses.dataclass
class Update:
    """What Engine.stream yields per request per chunk: the tokens it gained, and its Result once done."""

    request_id: int
    new_tokens: list
    result: Result | None = None


@dataclasses.dataclass
class Request:
    """A checked request: its prompt, its resolved options and what its slot needs."""

    request_id: int
    prompt_ids: list
    cfg: GenerationConfig  # checked, resolved for its prompt (GenerationConfig.for_prompt)
    eos: tuple
    seed: np.ndarray  # [2] int32
    wants_text: bool
    automaton: object = None  # structured output's constraints.Automaton (regex / json_schema / choices)


def unsupported(model, options: dict) -> list[str]:
    """The options (given, or set by the model's generation defaults) that keep requests with these
    options out of the engine; [] when the engine takes them. For front doors that choose between the
    engine and generate (the `minigen generate` command)."""
    given = [name for name in options if name not in PER_REQUEST]
    defaults, plain = model_defaults(model), GenerationConfig()
    if defaults is not None:
        given += [name for name in BY_NAME if name not in PER_REQUEST and name not in given
                  and getattr(defaults, name) != getattr(plain, name)]
    return given


def _refusal(index, message: str) -> ValueError:
    return ValueError(f"request {index}: {message}")


def check_request(model, request, index, max_length: int) -> Request:
    """A Request from a request dict, or ValueError naming the request's index and the option."""
    if not isinstance(request, dict):
        raise _refusal(index, f"must be a dict with input_ids or prompt (and options), got {type(request).__name__}")
    options = dict(request)
    ids, prompt = options.pop("input_ids", None), options.pop("prompt", None)
    if (ids is None) == (prompt is None):
        raise _refusal(index, "give exactly one of input_ids (a list of token ids) and prompt (text)")
    try:
        options = normalise_names(options)
    except ValueError as e:
        raise _refusal(index, str(e)) from None
    for name in options:
        if name not in PER_REQUEST:
            raise _refusal(index, f"{name} cannot be set per request in the engine (it takes "
                                  f"{', '.join(PER_REQUEST)}); use generate for it")
    if prompt is not None:
        if model.tokenizer is None:
            raise _refusal(index, "prompt (text) needs the model's tokenizer; pass input_ids, or load a directory "
                                  "holding tokenizer.json")
        if not isinstance(prompt, str):
            raise _refusal(index, f"prompt must be a string, got {type(prompt).__name__}")
        ids = model.tokenizer.encode(prompt)
    ids = _as_ids(ids, index, model.config.vocab_size)
    try:
        cfg = as_config(None, options, model_defaults(model)).check(model.config)
        cfg = cfg.for_prompt(len(ids))
    except ValueError as e:
        raise _refusal(index, str(e)) from None
    default = GenerationConfig()
    for name in BY_NAME:  # what the model's generation_config.json set, beyond the engine's options
        if name not in PER_REQUEST and getattr(cfg, name) != getattr(default, name):
            raise _refusal(index, f"the model's generation defaults set {name}, which the engine cannot apply per "
                                  "request; use generate, or reset it in model.generation_config")
    if cfg.stop_strings and model.tokenizer is None:
        raise _refusal(index, "stop_strings need the model's tokenizer")
    total = len(ids) + cfg.max_new_tokens
    if total > max_length:
        raise _refusal(index, f"prompt length {len(ids)} + max_new_tokens {cfg.max_new_tokens} exceeds the "
                              f"engine's max_length ({max_length} tokens per slot)")
    eos = cfg.eos_ids(model.config)
    if len(eos) > EOS_BUDGET:
        raise _refusal(index, f"eos_token_id has {len(eos)} ids; the engine takes at most {EOS_BUDGET} per request")
    seed = cfg.seed if cfg.seed is not None else np.random.randint(-(2**31), 2**31 - 1, size=2)
    seed = np.asarray(seed, np.int64).astype(np.int32)
    automaton = None
    if cfg.constraint is not None:
        kind, value = cfg.constraint
        if model.tokenizer is None:
            raise _refusal(index, f"{kind} (structured output) needs the model's tokenizer")
        try:
            automaton = constraints.automaton(model.tokenizer, kind, value)
            constraints.tables(automaton, (), model.config.vocab_size, kind)  # refuses one too large
        except ValueError as e:
            raise _refusal(index, str(e)) from None
    return Request(index, ids, cfg, eos, seed, model.tokenizer is not None, automaton)


def _as_ids(ids, index, vocab: int) -> list:
    try:
        array = np.asarray(ids)
    except Exception:  # noqa: BLE001
        array = np.asarray([], object)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise _refusal(index, "input_ids must be a flat list of integer token ids")
    if array.size == 0:
        raise _refusal(index, "the prompt is empty: every prompt needs at least one token")
    bad = array[(array < 0) | (array >= vocab)]
    if bad.size:
        raise _refusal(index, f"input_ids holds token id {int(bad[0])} outside the vocabulary [0, {vocab})")
    return [int(t) for t in array]


def cache_width(max_length: int) -> int:
    """Cache slots per slot row for max_length tokens: a power of two up to 128, then a multiple of
    128. A multiple of 16, so every prefill piece fits (pieces); coarse, so engines of nearby lengths
    (generate_many calls, the harness's tasks) share their compiled functions: each new width
    compiles a new decode step and prefill pieces (GPT-2 small, 16 slots, AMD EPYC Zen4: a first call
    ~11 s longer greedy, ~16 s sampling), while a step's attention reads 38 MB more per 32 slots of
    width (16 rows: ~1.4 ms at the 27 GB/s measured there). Slots past max_length hold only a last
    piece's padding."""
    if max_length <= 128:
        return max(16, 1 << (max_length - 1).bit_length())
    return -(-max_length // 128) * 128


PIECE_WIDTHS = (16, 32, 64, 128, 256)  # prefill widths (a compile each, times the rows it takes)
# Padding a last piece may carry rather than split it: about what one more call costs (GPT-2 small:
# a read of the block weights, ~14 ms, against ~0.5-0.75 ms of prefill per prompt token, 2-core EPYC)
PIECE_PADDING = 32


def pieces(n: int, width: int, start: int = 0) -> list[tuple[int, int]]:
    """How an n-token prompt is prefilled: [(start, piece width), ...] in order, each piece attending
    to those before it. The narrowest piece that covers the rest if it pads at most PIECE_PADDING
    tokens, else the widest that the rest fills: 140 tokens as 128 + 16 (4 padding) rather than 256
    (116); 250 as 256. A piece never runs past the engine's width (a multiple of 16). start: tokens
    already in the slot (a shared prefix, a multiple of 16)."""
    out = []
    while start < n:
        left = n - start
        fits = [w for w in PIECE_WIDTHS if start + w <= width]
        cover = [w for w in fits if w >= left]
        if cover and cover[0] - left <= PIECE_PADDING:
            w = cover[0]
        else:
            w = max([w for w in fits if w <= left] or fits[:1])
        out.append((start, w))
        start += w
    return out


PREFIX_MIN = 32  # the shortest shared prefix worth copying (tokens; used in multiples of 16)


def common_start(a: list, b: list) -> int:
    """How many tokens two prompts share from their first."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n


class Prefixes:
    """The prompts kept for reuse (least recently used dropped first): their tokens here, their keys
    and values in a slots.PrefixStore of `entries` rows (each one engine slot's size in memory). A
    new request whose prompt begins with a kept prompt's tokens starts from that many of its keys
    and values (rounded down to 16, and at least one token left to run) and prefills only the rest."""

    def __init__(self, net, entries: int, width: int):
        self.entries = entries
        self.store = S.new_store(net, entries, width) if entries else None
        self.tokens: dict[int, list] = {}  # entry -> the kept prompt's ids
        self.order: list[int] = []  # entries, least recently used first
        self.hits = self.reused = 0

    def match(self, ids: list) -> tuple[int, int]:
        """(entry, tokens reusable) of the kept prompt sharing the longest start with `ids`; (-1, 0) if none."""
        best, most = -1, 0
        for entry, kept in self.tokens.items():
            common = min(common_start(kept, ids), len(ids) - 1)
            if common > most:
                best, most = entry, common
        most = most // 16 * 16
        return (best, most) if most >= PREFIX_MIN else (-1, 0)

    def use(self, entry: int, tokens: int) -> None:
        self.order.remove(entry)
        self.order.append(entry)
        self.hits += 1
        self.reused += tokens

    def worth_keeping(self, ids: list, reused: int) -> bool:
        """Keep a prompt unless it is short or mostly what is kept already."""
        return self.entries > 0 and len(ids) >= PREFIX_MIN and reused < len(ids) // 2

    def slot_for(self, ids: list) -> int:
        """The entry a new prompt goes to: a free one, else the least recently used."""
        entry = len(self.tokens) if len(self.tokens) < self.entries else self.order.pop(0)
        if entry in self.order:
            self.order.remove(entry)
        self.order.append(entry)
        self.tokens[entry] = list(ids)
        return entry


class Engine:
    """Continuous batching over `slots` slots of `max_length` tokens each (prompt + new); see the module."""

    def __init__(self, model, slots: int = 16, max_length: int | None = None, chunk_size: int = DEFAULT_CHUNK,
                 prefix_cache: int = 4, top_logprobs: int = 0):
        for name, value, least in (("slots", slots, 1), ("chunk_size", chunk_size, 1), ("prefix_cache", prefix_cache, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        BY_NAME["top_logprobs"].check("top_logprobs", top_logprobs)
        limit = model.config.n_positions
        max_length = limit if max_length is None else max_length
        if not isinstance(max_length, int) or isinstance(max_length, bool) or not 2 <= max_length <= limit:
            raise ValueError(f"max_length must be an int in [2, {limit}] (the model's n_positions), got {max_length!r}")
        self.model, self.slots, self.max_length, self.chunk_size = model, slots, max_length, chunk_size
        self.width = cache_width(max_length)
        self.top = top_logprobs  # the most likely tokens kept per step, the most a request may ask (top_logprobs)
        self.state = S.new_state(model.network, slots, self.width, self.top)
        self.prefixes = Prefixes(model.network, prefix_cache, self.width)
        self.seconds = {"prefill": 0.0, "decode": 0.0}  # wall time in each kind of call (compiles included)
        self.queue: deque[Request] = deque()
        self.running: dict[int, Request] = {}  # slot -> request
        self.reported: dict[int, int] = {}  # slot -> tokens already handed out by stream()
        self._ids = itertools.count()
        self._stop_strings: list[str] = []
        self._stop = ((), tf.zeros([1, 1], tf.int32), tf.zeros([0], tf.int32))
        self._constraints: list = []  # the running requests' distinct constraints, in the Automata's order
        self._fsm = ((), automata([], model.config.vocab_size))
        self._rows = self._empty_rows()  # each slot's options (numpy), as slots.RowOptions
        self._rows_t = None  # the same as tensors, made when the running set changes
        self.cancelled: list[int] = []

    # -- the public calls --

    def submit(self, request: dict, request_id: int | None = None) -> int:
        """Queue a request (checked now: ValueError naming its option); returns its id."""
        rid = next(self._ids) if request_id is None else request_id
        self.enqueue(check_request(self.model, request, rid, self.max_length))
        return rid

    def enqueue(self, checked: Request) -> None:
        """Queue a request already checked (check_request with this engine's max_length)."""
        if checked.cfg.top_logprobs > self.top:
            raise _refusal(checked.request_id, f"top_logprobs={checked.cfg.top_logprobs} is more than this engine keeps "
                                               f"(top_logprobs={self.top}: give lm.engine(..., top_logprobs=k))")
        for s in checked.cfg.stop_strings:
            if s not in self._stop_strings:
                self._stop_strings.append(s)
                self._stop = None  # the table is rebuilt before the next chunk
        self.queue.append(checked)

    def cancel(self, request_id: int) -> bool:
        """Drop a queued or running request (it gives a Result with finish_reason "cancelled");
        False if it is not here (finished already, or never submitted)."""
        for r in list(self.queue):
            if r.request_id == request_id:
                self.queue.remove(r)
                self.cancelled.append(request_id)
                return True
        for slot, r in list(self.running.items()):
            if r.request_id == request_id:
                self._release([slot])
                del self.running[slot]
                self.cancelled.append(request_id)
                return True
        return False

    @property
    def idle(self) -> bool:
        return not self.queue and not self.running

    def __iter__(self) -> Iterator[Result]:
        """Run until every submitted request has finished, yielding each Result as it does."""
        for update in self.stream():
            if update.result is not None:
                yield update.result

    def stream(self) -> Iterator[Update]:
        """Run until idle, yielding per chunk each running request's new tokens (and its Result when done)."""
        while not self.idle or self.cancelled:
            yield from self.step()

    def step(self) -> list[Update]:
        """Admit waiting requests into free slots, run one decode chunk, return the updates."""
        updates = [Update(rid, [], Result(rid, [], [], "cancelled")) for rid in self.cancelled]
        self.cancelled = []
        self._admit()
        if not self.running:
            return updates
        stop_key, table, lengths = self._stop_table()
        fsm_key, fsm = self._fsm
        sampling = any(r.cfg.do_sample for r in self.running.values())
        fn = self._compiled(("engine-decode", self.slots, self.width, self.top, EOS_BUDGET, stop_key, fsm_key, sampling),
                            lambda state, rows, table, lengths, fsm, steps, refill: S.decode_chunk(
                                self.model.network, state, rows, table, lengths, fsm, steps, refill, stop_key, fsm_key,
                                sampling),
                            f"the engine's decode step ({self.slots} slots x {self.width} tokens)")
        began = time.perf_counter()
        with status.compile_notice(fn.what, fn.fresh):
            fn.call(self.state, self._rows_t, table, lengths, fsm, tf.constant(self.chunk_size, tf.int32),
                    tf.constant(bool(self.queue)))
        updates += self._collect()
        self.seconds["decode"] += time.perf_counter() - began
        return updates

    # -- inside --

    def _compiled(self, key, body, what: str):
        cache = self.model.compile_cache
        fresh = key not in cache
        return _Fn(cache.compiled(key, body), fresh, what)

    def _empty_rows(self) -> S.RowOptions:
        n = self.slots
        return S.RowOptions(
            do_sample=np.zeros(n, bool), temperature=np.ones(n, np.float32), top_k=np.zeros(n, np.int32),
            top_p=np.ones(n, np.float32), min_p=np.zeros(n, np.float32),
            repetition_penalty=np.ones(n, np.float32), min_new_tokens=np.zeros(n, np.int32),
            max_new_tokens=np.ones(n, np.int32), seed=np.zeros([n, 2], np.int32),
            eos=np.full([n, EOS_BUDGET], -1, np.int32), stops=np.zeros([n, 0], bool), logprobs=np.array(False),
            constraint=np.full(n, -1, np.int32))

    def _set_row(self, slot: int, r: Request) -> None:
        rows, cfg = self._rows, r.cfg
        rows.do_sample[slot] = cfg.do_sample
        rows.temperature[slot] = cfg.temperature
        rows.top_k[slot] = cfg.top_k
        rows.top_p[slot] = cfg.top_p
        rows.min_p[slot] = cfg.min_p or 0.0
        rows.repetition_penalty[slot] = cfg.repetition_penalty
        rows.min_new_tokens[slot] = cfg.min_new_tokens
        rows.max_new_tokens[slot] = cfg.max_new_tokens
        rows.seed[slot] = r.seed
        rows.eos[slot] = -1
        rows.eos[slot, :len(r.eos)] = r.eos

    def _row_tensors(self) -> S.RowOptions:
        rows = self._rows
        stops = np.zeros([self.slots, max(len(self._stop_strings), 1)], bool)
        for slot, r in self.running.items():
            for s in r.cfg.stop_strings:
                stops[slot, self._stop_strings.index(s)] = True
        wants = any(r.cfg.output_logprobs for r in self.running.values())
        which = np.full(self.slots, -1, np.int32)
        for slot, r in self.running.items():
            if r.cfg.constraint is not None:
                which[slot] = self._constraints.index(r.cfg.constraint)
        return S.RowOptions(*(tf.constant(v) for v in rows._replace(stops=stops, logprobs=np.array(wants),
                                                                       constraint=which)))

    def _automata(self) -> None:
        """The Automata of the running requests' constraints, rebuilt when that set changes (a compile
        when its buckets grow); a row's state is local to its constraint's block, so rows keep theirs."""
        running = {}
        for r in self.running.values():
            if r.cfg.constraint is not None:
                running.setdefault(_frozen(r.cfg.constraint), r)
        wanted = [r.cfg.constraint for r in running.values()]
        if [_frozen(c) for c in wanted] != [_frozen(c) for c in self._constraints]:
            self._constraints = wanted
            fsm = automata([r.automaton for r in running.values()], self.model.config.vocab_size)
            self._fsm = (fsm.shape_key if wanted else (), fsm)

    def _stop_table(self):
        if self._stop is None:
            table = _stop_table(self.model.tokenizer, tuple(self._stop_strings))
            self._stop = (table.shape_key, tf.constant(table.table), tf.constant(table.lengths))
        if not self._stop_strings:
            return (), self._stop[1], self._stop[2]
        return self._stop

    def _admit(self) -> None:
        """Give free slots to waiting requests and prefill their prompts. A request sharing its start
        with one admitted in the same round waits for that one's keys and values to be kept (a
        later wave), so that a shared header is prefilled once."""
        free = [s for s in range(self.slots) if s not in self.running]
        admitted = []
        while free and self.queue:
            admitted.append((self.queue.popleft(), free.pop(0)))
        began = time.perf_counter()
        while admitted:
            wave, later = [], []
            for r, slot in admitted:
                kept = self.prefixes.match(r.prompt_ids)[1]
                sharing = self.prefixes.entries and any(
                    common_start(r.prompt_ids, w.prompt_ids) >= max(PREFIX_MIN, kept + 16) for w, _ in wave)
                (later if sharing else wave).append((r, slot))
            self._prefill_wave(wave)
            admitted = later
        self.seconds["prefill"] += time.perf_counter() - began
        self._automata()
        self._rows_t = self._row_tensors() if self.running else None

    def _prefill_wave(self, admitted: list) -> None:
        """Prefill these (request, slot) pairs piece by piece (`pieces`), stage by stage (a prompt's
        pieces in order); keep their prompts for reuse."""
        todo, reused = [], {}
        for r, slot in admitted:
            entry, filled = self.prefixes.match(r.prompt_ids)
            if filled:
                self._load_prefix(r, slot, entry, filled)
            reused[slot] = filled
            todo.append((r, slot, pieces(len(r.prompt_ids), self.width, filled)))
        for stage in range(max((len(p) for _, _, p in todo), default=0)):
            by_width: dict[int, list] = {}
            for r, slot, parts in todo:
                if stage < len(parts):
                    by_width.setdefault(parts[stage][1], []).append((r, slot, parts[stage][0]))
            for w, group in sorted(by_width.items()):
                for one in group:
                    self._prefill([one], w)
        for r, slot in admitted:
            if self.prefixes.worth_keeping(r.prompt_ids, reused[slot]):
                self._save_prefix(slot, self.prefixes.slot_for(r.prompt_ids))
            self.running[slot] = r
            self.reported[slot] = 0
            self._set_row(slot, r)

    def _prefill(self, group: list, w: int) -> None:
        """One prefill call: for each (request, slot, start) the prompt's tokens start .. start + w - 1."""
        k = len(group)
        ids = np.zeros([k, w], np.int32)
        start, lengths, at = (np.zeros([k], np.int32) for _ in range(3))
        for i, (r, slot, first) in enumerate(group):
            piece = r.prompt_ids[first:first + w]
            ids[i, :len(piece)] = piece
            start[i], lengths[i], at[i] = first, len(piece), slot
        fn = self._compiled(("engine-prefill", self.slots, self.width, self.top, k, w),
                            lambda state, ids, start, lengths, at: S.prefill_into(self.model.network, state, ids,
                                                                                  start, lengths, at),
                            f"the engine's prefill ({k} x {w} tokens)")
        with status.compile_notice(fn.what, fn.fresh):
            fn.call(self.state, tf.constant(ids), tf.constant(start), tf.constant(lengths), tf.constant(at))

    def _load_prefix(self, r: Request, slot: int, entry: int, filled: int) -> None:
        self.prefixes.use(entry, filled)
        tokens = np.zeros([self.width], np.int32)
        tokens[:len(r.prompt_ids)] = r.prompt_ids
        fn = self._compiled(("engine-load-prefix", self.slots, self.width, self.top, self.prefixes.entries),
                            lambda state, store, entry, slot, tokens, filled: S.load_prefix(
                                self.model.network, state, store, entry, slot, tokens, filled),
                            "the engine's prefix copy")
        fn.call(self.state, self.prefixes.store, tf.constant(entry), tf.constant(slot), tf.constant(tokens),
                tf.constant(filled))

    def _save_prefix(self, slot: int, entry: int) -> None:
        fn = self._compiled(("engine-save-prefix", self.slots, self.width, self.top, self.prefixes.entries),
                            lambda state, store, slot, entry: S.save_prefix(self.model.network, state, store, slot,
                                                                            entry),
                            "the engine's prefix keeping")
        fn.call(self.state, self.prefixes.store, tf.constant(slot), tf.constant(entry))

    def stats(self) -> dict:
        """Requests waiting and running, the shared-prefix cache's hits and tokens not prefilled again,
        and the wall time spent prefilling and decoding (compiles included)."""
        return {"queued": len(self.queue), "running": len(self.running), "prefix_hits": self.prefixes.hits,
                "prefix_tokens_reused": self.prefixes.reused, "prefill_seconds": self.seconds["prefill"],
                "decode_seconds": self.seconds["decode"]}

    def _release(self, slots: list) -> None:
        fn = self._compiled(("engine-release", self.slots, self.width, self.top), S.release, "the engine's release")
        fn.call(self.state, tf.constant(slots, tf.int32))

    def _collect(self) -> list[Update]:
        """Updates from the state after a chunk: new tokens per running request, Results for those done."""
        st = self.state
        finished, reason = st.finished.numpy(), st.reason.numpy()
        generated, tokens = st.generated.numpy(), st.tokens.numpy()
        logprobs = st.logprobs.numpy() if any(r.cfg.output_logprobs for r in self.running.values()) else None
        top = (st.top_tokens.numpy(), st.top_logprobs.numpy()) if any(r.cfg.top_logprobs for r in
                                                                       self.running.values()) else None
        updates = []
        for slot, r in sorted(self.running.items(), key=lambda item: item[1].request_id):
            p, g = len(r.prompt_ids), int(generated[slot])
            new = tokens[slot, p + self.reported[slot]:p + g].tolist()
            self.reported[slot] = g
            result = None
            if finished[slot]:
                result = self._result(r, tokens[slot, p:p + g].tolist(), S.REASONS[int(reason[slot])],
                                      None if logprobs is None else logprobs[slot, p:p + g],
                                      None if top is None else (top[0][slot, p:p + g], top[1][slot, p:p + g]))
                del self.running[slot]
            updates.append(Update(r.request_id, new, result))
        return updates

    def _result(self, r: Request, new: list, reason: str, logprobs, top) -> Result:
        text = self.model.tokenizer.decode(new) if r.wants_text else None
        kept = [float(x) for x in logprobs] if r.cfg.output_logprobs and logprobs is not None else None
        result = Result(r.request_id, r.prompt_ids, new, reason, text, kept)
        if r.automaton is not None:
            result.incomplete = reason != "constraint" and not constraints.walk(r.automaton, new, r.eos)
        if r.cfg.top_logprobs and top is not None:
            k = r.cfg.top_logprobs
            result.top_tokens, result.top_logprobs = top[0][:, :k].tolist(), top[1][:, :k].tolist()
        return result


def _frozen(constraint) -> tuple:
    """A constraint (kind, value) as a hashable key (choices come as a tuple, a schema as its JSON text)."""
    kind, value = constraint
    return kind, tuple(value) if isinstance(value, (list, tuple)) else value


def automata(autos: list, vocab: int) -> S.Automata:
    """The engine's tensors for these constraints' automata, padded to common buckets (states,
    classes: constraints.bucket; constraints: a power of two); one all-zero block when there are none."""
    states = max([constraints.bucket(a.allowed.shape[0]) for a in autos], default=1)
    classes = max([constraints.bucket(a.next_state.shape[1]) for a in autos], default=1)
    k = 1 << max(len(autos) - 1, 0).bit_length()
    allowed = np.zeros([k, states, constraints.words(vocab)], np.int32)
    accepting = np.zeros([k, states], bool)
    next_state = np.zeros([k, states, classes], np.int32)
    token_class = np.zeros([k, vocab], np.int32)
    for i, a in enumerate(autos):
        n, c, v = a.allowed.shape[0], a.next_state.shape[1], min(a.token_class.shape[0], vocab)
        allowed[i, :n] = constraints.packed_for(a, vocab)
        accepting[i, :n] = a.accepting
        next_state[i, :n, :c] = a.next_state
        token_class[i, :v] = a.token_class[:v]
    return S.Automata(tf.constant(allowed), tf.constant(accepting), tf.constant(next_state), tf.constant(token_class))


class _Fn:
    """A compiled engine piece and whether this call is its first (it compiles: logged with its time)."""

    def __init__(self, fn, fresh: bool, what: str):
        self.fn, self.fresh, self.what = fn, fresh, what

    def call(self, *args):
        began = time.perf_counter()
        out = self.fn(*args)
        if self.fresh:
            logger.info("compiled %s in %.2fs (incl. first run)", self.what, time.perf_counter() - began)
        return out


def generate_many(model, requests, slots: int = 16, max_length: int | None = None, chunk_size: int = DEFAULT_CHUNK,
                  progress: bool | None = None, prefix_cache: int = 4) -> list[Result]:
    """Run every request to its end over `slots` slots; one Result per request, in input order.

    requests: dicts with input_ids (a list of ids) or prompt (text), plus any of PER_REQUEST
    (max_new_tokens, do_sample, temperature, top_k, top_p, min_p, seed, repetition_penalty,
    min_new_tokens, eos_token_id, stop_strings, output_logprobs, top_logprobs). Every request is checked before
    anything runs (ValueError naming its index and the option). max_length: tokens per slot (prompt
    + new; default: the longest request's, so the cache is no wider than needed). progress: a
    progress line on stderr (default: when stderr is a terminal and there are more requests than slots).
    prefix_cache: prompts kept for requests that begin with the same tokens (each one slot's cache
    row in memory: n_layer x 2 x n_embd x width x 4 bytes; 0 = off).
    """
    if isinstance(requests, dict) or not hasattr(requests, "__iter__"):
        raise ValueError("requests must be a list of request dicts")
    requests = list(requests)
    if not requests:
        return []
    limit = model.config.n_positions if max_length is None else max_length
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise ValueError(f"max_length must be an int, got {limit!r}")
    checked = [check_request(model, r, i, limit) for i, r in enumerate(requests)]
    if max_length is None:  # the longest request decides the width
        max_length = max(2, max(len(c.prompt_ids) + c.cfg.max_new_tokens for c in checked))
    engine = Engine(model, slots=slots, max_length=max_length, chunk_size=chunk_size, prefix_cache=prefix_cache,
                    top_logprobs=max(c.cfg.top_logprobs for c in checked))
    # longest first: the long requests start early and the last ones to run are short, so the slots
    # stay full to the end (in input order, a long request submitted late runs nearly alone)
    for r in sorted(checked, key=lambda c: -c.cfg.max_new_tokens):
        engine.enqueue(r)
    show = progress if progress is not None else len(requests) > slots and status.is_terminal(sys.stderr)
    bar = status.Progress(len(requests), "requests") if show else None
    results: list = [None] * len(requests)
    done = 0
    for result in engine:
        results[result.request_id] = result
        done += 1
        if bar is not None:
            bar.update(done)
    return results
