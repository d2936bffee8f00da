"""The options of `generate`, one row each: default, check, documentation, where the value goes,
which strategies and modes take it, its `minigen generate` flag and whether a SavedModel takes it.

Everything else is derived from OPTIONS: GenerationConfig's fields and docstring (config.py), the
value and combination checks (`check_value`, `check_combination`), the command's flags (cli.py) and
the SavedModel signatures' inputs (export.py). tests/test_structure.py holds the rules that keep it so.

Adding a run-time scalar option: one row here, its processor function and row (processors.py), one
test. Adding an option that shapes the graph: the same, with role KEY.

No TensorFlow here (the command checks its flags before importing it); numpy only.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple

import numpy as np

from .keyed import KeyedProcessor

INT32_MAX = 2**31 - 1  # integer options become int32 tensors or shapes: larger values would wrap
# float options become float32 tensors: a nonzero value below the smallest normal float32 (or above the
# largest) would arrive as 0 (or inf): temperature=1e-50 divided the logits by 0
FLOAT32 = np.finfo(np.float32)

# Where an option's value goes
KEY = "key"  # shapes the graph: part of the compile key (generation/core.py CompileKey)
TENSOR = "tensor"  # travels as a tensor (core.Knobs): a new value reuses the compiled loop
HOST = "host"  # read outside the loop: lengths, ids, bucket, which outputs are returned

# The strategies (generate's dispatch, as the reference's) and speculative decoding, which runs greedy
# search or sampling with drafted tokens verified in blocks
GREEDY, SAMPLE, BEAM, CONTRASTIVE, SPECULATIVE = "greedy", "sample", "beam", "contrastive", "speculative"
BEAM_SAMPLE = "beam_sample"  # beam search drawing its continuations (num_beams > 1, do_sample=True)
GROUP_BEAM = "group_beam"  # diverse beam search (num_beams > 1, num_beam_groups > 1)
STRATEGY_ORDER = (GREEDY, SAMPLE, BEAM, BEAM_SAMPLE, GROUP_BEAM, CONTRASTIVE, SPECULATIVE)
ALL = frozenset(STRATEGY_ORDER)
BEAMS = frozenset((BEAM, BEAM_SAMPLE, GROUP_BEAM))
TITLES = {GREEDY: "greedy search", SAMPLE: "sampling", BEAM: "beam search (num_beams > 1)",
          BEAM_SAMPLE: "beam sampling (num_beams > 1, do_sample=True)",
          GROUP_BEAM: "diverse beam search (num_beams > 1, num_beam_groups > 1)",
          CONTRASTIVE: "contrastive search (penalty_alpha)", SPECULATIVE: "speculative decoding"}
# The ways a call runs: one compiled loop (generate), chunk by chunk (stream), or keeping its state
# for a later call (continue: cache= / return_state=, beside generate)
GENERATE, STREAM, CONTINUE = "generate", "stream", "continue"
ALL_MODES = frozenset((GENERATE, STREAM, CONTINUE))
# which strategy runs in which mode, and what a refusal says
MODES = {GREEDY: ALL_MODES, SAMPLE: ALL_MODES, **dict.fromkeys(BEAMS, frozenset((GENERATE,))),
         CONTRASTIVE: frozenset((GENERATE, STREAM)), SPECULATIVE: frozenset((GENERATE,))}
MODE_REFUSALS = {
    **{(STREAM, beams): "streaming supports greedy search, sampling and contrastive search, not num_beams > 1"
       for beams in BEAMS},
    (STREAM, SPECULATIVE): "streaming does not support prompt_lookup_num_tokens or assistant_model; use generate",
    **{(CONTINUE, beams): "cache/return_state (continuing a generation) support greedy search and sampling, not "
                          "num_beams > 1" for beams in BEAMS},
    (CONTINUE, CONTRASTIVE): "cache/return_state (continuing a generation) support greedy search and sampling, "
                             "not contrastive search (penalty_alpha)",
    (CONTINUE, SPECULATIVE): "cache/return_state (continuing a generation) do not combine with speculative decoding",
}
# what a strategy or mode says of an option it does not take (a row's `refusals` may say more);
# {via}: assistant_model or prompt_lookup_num_tokens, {off}: the value(s) that leave it off
REFUSALS = {
    GREEDY: "{name} is not used by greedy search; leave it at {off}",
    SAMPLE: "{name} is not used by sampling; leave it at {off}",
    BEAM: "{name} is not used by beam search (num_beams > 1); leave it at {off}",
    BEAM_SAMPLE: "{name} is not used by beam sampling (num_beams > 1, do_sample=True); leave it at {off}",
    GROUP_BEAM: "{name} is not used by diverse beam search (num_beam_groups > 1); leave it at {off}",
    CONTRASTIVE: "{name} is not used by contrastive search (penalty_alpha); leave it at {off}",
    SPECULATIVE: "{via} (speculative decoding) does not support {name}; leave it at {off}",
    STREAM: "streaming yields token ids only; {name} needs generate",
    GENERATE: "{name} needs streaming; leave it at {off}",
    CONTINUE: "cache/return_state (continuing a generation) need {name} at {off}",
}


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def fits_float32(value) -> bool:
    """Whether float32 holds `value` without turning it into 0 or inf (0 itself is fine)."""
    return value == 0 or FLOAT32.tiny <= abs(value) <= FLOAT32.max


# -- checks: a value's type and range; each raises ValueError naming the option --------------------


class Rule(NamedTuple):
    """A check written once for Python values and, for an option a SavedModel takes, for its tensor."""

    allowed: str  # "an integer >= 1 (at most 2**31 - 1)": the message says "{name} must be {allowed}"
    ok: Callable  # value -> bool, type included
    in_range: Callable | None = None  # the range alone in operators that work on tensors too
    tensor_allowed: str | None = None  # the SavedModel input's message (its type is the signature's)
    number: bool = False  # a float32 value: also refused where float32 would turn it into 0 or inf

    def __call__(self, name: str, value) -> None:
        if not self.ok(value):
            raise ValueError(f"{name} must be {self.allowed}, got {value!r}")
        if self.number and value is not None and not fits_float32(value):
            raise ValueError(f"{name} must be {self.allowed} that float32 can hold (0, or a magnitude between "
                             f"{FLOAT32.tiny:.3g} and {FLOAT32.max:.3g}), got {value!r}")


def integer(minimum: int, maximum: int = INT32_MAX) -> Rule:
    allowed = f"an integer >= {minimum} (at most 2**31 - 1)" if maximum == INT32_MAX else \
        f"an integer in [{minimum}, {maximum}]"
    return Rule(allowed, lambda v: _is_int(v) and minimum <= v <= maximum, lambda v: v >= minimum, f">= {minimum}")


def number(allowed: str, in_range: Callable = lambda v: True, tensor_allowed: str | None = None) -> Rule:
    """A finite number in range, as float32 holds it."""
    return Rule(allowed, lambda v: _is_number(v) and math.isfinite(v) and bool(in_range(v)), in_range,
                tensor_allowed or allowed, number=True)


def optional(rule: Rule, say_none: bool = True) -> Rule:
    """None, or a value the rule allows (say_none: the message names None as allowed too)."""
    return rule._replace(allowed=f"None or {rule.allowed}" if say_none else rule.allowed,
                         ok=lambda v: v is None or rule.ok(v))


BOOL = Rule("True or False", lambda v: isinstance(v, bool))


def _ids(value) -> tuple:
    """A token id or a list of them, as a tuple (None: ())."""
    return () if value is None else (value,) if _is_int(value) else tuple(value)


def token_id(name: str, value) -> None:
    """a token id, or None"""
    if value is not None and not (_is_int(value) and 0 <= value <= INT32_MAX):
        raise ValueError(f"{name} must be a token id (an int in [0, 2**31 - 1]) or None, got {value!r}")


def token_ids(empty: bool) -> Callable:
    """A token id, a list of them (empty too if `empty`), or None."""
    def check(name: str, value) -> None:
        """a token id, a list of them, or None"""
        ids = [value] if _is_int(value) else value if isinstance(value, (list, tuple)) else None
        if value is not None and (ids is None or not (ids or empty)
                                  or not all(_is_int(t) and 0 <= t <= INT32_MAX for t in ids)):
            raise ValueError(f"{name} must be a token id, a{'' if empty else ' non-empty'} list of them or None "
                             f"(ids in [0, 2**31 - 1]), got {value!r}")
    return check


# (the lists' ids are checked against the vocabulary, or int32, by GenerationConfig.check: `ids` of their rows)
def id_list(name: str, value) -> None:
    """a list of token ids"""
    if not isinstance(value, (list, tuple)) or not all(_is_int(t) for t in value):
        raise ValueError(f"{name} must be a list of token ids, got {value!r}")


def word_list(name: str, value) -> None:
    """a list of non-empty lists of token ids (at most 4096)"""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(w, (list, tuple)) and w and all(_is_int(t) for t in w) for w in value):
        raise ValueError(f"{name} must be a list of non-empty lists of token ids, e.g. [[12], [7, 9]], got {value!r}")
    if len(value) > MAX_WORDS:
        raise ValueError(f"{name}: at most {MAX_WORDS} entries (each step checks every one), got {len(value)}")


def bias_pairs(value) -> tuple | None:
    """sequence_bias as ((ids, bias), ...) from a dict {ids: bias} or a list of [ids, bias] pairs, or
    None when it is neither."""
    items = value.items() if isinstance(value, dict) else value
    try:
        return tuple((tuple(ids), bias) for ids, bias in items)
    except (TypeError, ValueError):
        return None


def bias_map(name: str, value) -> None:
    """{token id sequence: finite number} or [[ids, bias], ...] (at most 4096)"""
    pairs = bias_pairs(value)
    if pairs is None or not all(ids and all(_is_int(t) for t in ids) and _is_number(bias)
                                and math.isfinite(bias) for ids, bias in pairs):
        raise ValueError(f"{name} must map non-empty token id sequences to finite numbers, e.g. "
                         f"{{(12,): -2.0, (7, 9): 3.5}}, got {value!r}")
    if not all(fits_float32(bias) for _, bias in pairs):
        raise ValueError(f"{name} values must be numbers float32 can hold (0, or a magnitude between "
                         f"{FLOAT32.tiny:.3g} and {FLOAT32.max:.3g}), got {value!r}")
    if len(pairs) > MAX_WORDS:
        raise ValueError(f"{name}: at most {MAX_WORDS} entries (each step checks every one), got {len(pairs)}")


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Bounds on the options that become tables inside the compiled loop. Stop strings: the table has a
# row per token and columns per string; on GPT-2's vocabulary (2-core EPYC) 16 / 64 / 256 strings
# took 1.5 / 6.0 / 23 s to build and 19 / 74 / 295 MiB (/tmp probe, stop_strings.stop_table); 1,600
# strings had cost 145 s and 3.5 GB before the first token.
MAX_STOP_STRINGS, MAX_STOP_BYTES = 64, 1024
# bad_words_ids / sequence_bias travel as tensors (processors.word_table: 1,000 banned bigrams compile
# in 2.0 s, any number of the same lengths reuses it); each step compares every entry.
MAX_WORDS = 4096


def stop_list(name: str, value) -> None:
    """a non-empty string or a list of them (at most 64, 1024 UTF-8 bytes in all)"""
    stops = (value,) if isinstance(value, str) else value
    if not isinstance(stops, (list, tuple)) or not all(isinstance(t, str) and t for t in stops):
        raise ValueError(f"{name} must be a non-empty string or a list of them, got {value!r}")
    for i, text in enumerate(stops):
        if not _is_text(text):
            raise ValueError(f"{name}[{i}] holds a lone surrogate, which is not valid Unicode text "
                             f"(often an undecodable byte from the command line or a JSON \\ud800 escape): {text!r}")
    size = sum(len(t.encode("utf-8")) for t in stops)
    if len(stops) > MAX_STOP_STRINGS or size > MAX_STOP_BYTES:
        raise ValueError(f"{name}: at most {MAX_STOP_STRINGS} strings of {MAX_STOP_BYTES} UTF-8 bytes in all, got "
                         f"{len(stops)} of {size} bytes (each string is a table checked inside the compiled loop)")


MAX_CHOICES = 4096  # choices=: each is a path of the automaton, built on the host


def regex_text(name: str, value) -> None:
    """None or a regex (a non-empty str, outlines-core's syntax)"""
    if value is not None and (not isinstance(value, str) or not value or not _is_text(value)):
        raise ValueError(f"{name} must be a non-empty regex string (valid Unicode text), got {value!r}")


def schema_text(name: str, value) -> None:
    """None or a JSON schema: a dict, or its JSON text"""
    import json  # noqa: PLC0415

    if value is None:
        return
    try:
        parsed = json.loads(value) if isinstance(value, str) else json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a JSON schema: a dict of JSON values or its JSON text ({e})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON schema object (a dict or its JSON text), got {value!r}")


def choice_list(name: str, value) -> None:
    """None or a non-empty list of non-empty strings (at most 4096)"""
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c and _is_text(c)
                                                                    for c in value):
        raise ValueError(f"{name} must be a non-empty list of non-empty strings, got {value!r}")
    if len(value) > MAX_CHOICES:
        raise ValueError(f"{name}: at most {MAX_CHOICES} strings, got {len(value)}")


SCHEDULES = ("constant", "heuristic", "heuristic_transient")  # num_assistant_tokens_schedule (HF's values)
# the options only a draft model reads (GenerationConfig.check refuses them without assistant_model)
DRAFT_ONLY = ("num_assistant_tokens_schedule", "assistant_confidence_threshold")


def dola_setting(name: str, value) -> None:
    """None, "low", "high" or a non-empty list of layer numbers (ints >= 0)"""
    if value is None or value in ("low", "high"):
        return
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(i) and 0 <= i <= INT32_MAX for i in value):
        raise ValueError(f"{name} must be 'low', 'high' or a non-empty list of layer numbers (ints >= 0), got {value!r}")


def dola_candidates(setting, n_layer: int, tied: bool = True) -> tuple[int, ...]:
    """The premature layers (0 = the embeddings' output) for dola_layers "low", "high" or a list,
    by the reference's rule (with tied embeddings the first layers are skipped: 2 of > 2, 1 of 2)."""
    start = 0 if not tied else 2 if n_layer > 2 else 1 if n_layer == 2 else 0
    if setting == "low":
        if start == n_layer // 2:
            return (start,)
        return tuple(range(start, n_layer // 2, 2) if n_layer <= 40 else range(start, 20, 2))
    if setting == "high":
        return tuple(range(n_layer // 2, n_layer, 2) if n_layer <= 40 else range(n_layer - 20, n_layer, 2))
    return tuple(i for i in setting if i < n_layer)


def functions(name: str, value) -> None:
    """a list of functions fn(sequences, valid, generated, logits) -> logits"""
    if not isinstance(value, (list, tuple)) or not all(callable(f) for f in value):
        raise ValueError(f"{name} must be a list of functions fn(sequences, valid, generated, logits) -> logits, "
                         f"got {value!r}")


def decay_pair(name: str, value) -> None:
    """None or (start: int >= 0, factor: number >= 1)"""
    if value is not None and (
            not isinstance(value, (list, tuple)) or len(value) != 2 or not _is_int(value[0])
            or not 0 <= value[0] <= INT32_MAX or not _is_number(value[1]) or not math.isfinite(value[1])
            or value[1] < 1 or not fits_float32(value[1])):
        raise ValueError(f"{name} must be (start, factor): an int >= 0 and a finite number >= 1 (1 = off), the "
                         f"start at most 2**31 - 1, got {value!r}")


def seed_pair(name: str, value) -> None:
    """None or a pair of 32-bit ints"""
    pair = tuple(value) if isinstance(value, (list, tuple)) else None
    if value is not None and (pair is None or len(pair) != 2 or not all(_is_int(s) and -(2**31) <= s < 2**31
                                                                        for s in pair)):
        raise ValueError(f"{name} must be a pair of 32-bit ints, e.g. (0, 42), got {value!r}")


EARLY_STOPPING = Rule("True, False or 'never'", lambda v: isinstance(v, (bool, str)) and v in (True, False, "never"))

# -- the rows ------------------------------------------------------------------------------------


class Option(NamedTuple):
    name: str  # the GenerationConfig field (the reference's name)
    default: object
    check: Callable  # (name, value) -> None, ValueError naming the option; a Rule or a function
    doc: str  # GenerationConfig's docstring line, and the flag's help
    role: str  # KEY, TENSOR or HOST: where the value goes
    strategies: frozenset = ALL  # the strategies that take a value other than `off`
    modes: frozenset = ALL_MODES  # the modes that take a value other than `off`
    flag: str | None = None  # `minigen generate` / `minigen batch` flag; None: Python only
    cli: dict = {}  # the flag's argparse settings beyond the derived ones (e.g. its own default)
    export: frozenset = frozenset()  # strategies whose SavedModel signature takes it as an input
    dtype: str | None = None  # the tensor's dtype (role TENSOR, or a SavedModel input)
    shape: tuple = ()  # the SavedModel input's shape
    off: tuple | None = None  # the values that leave it off; None: (default,)
    refusals: dict = {}  # strategy or mode -> what a refusal says, where REFUSALS would say too little
    also: Callable | None = None  # cfg -> True where any value is taken whatever the strategy
    normalise: Callable | None = None  # checked value -> the form the code reads (after the check)
    ids: Callable | None = None  # value -> the token ids it holds, checked against the vocabulary
    engine: bool = False  # the request engine (minigen/engine.py) takes a value per request

    @property
    def off_values(self) -> tuple:
        return (self.default,) if self.off is None else self.off

    def is_off(self, value) -> bool:
        """Whether a checked value leaves the option off."""
        return value in self.off_values


WARPER = ("{name} is a sampling warper: set do_sample=True, or leave it at {off} (greedy and beam search take "
          "the most likely tokens)")
SAMPLING_ONLY = frozenset((SAMPLE, BEAM_SAMPLE, SPECULATIVE))  # speculative sampling samples
WARPER_REFUSALS = {GREEDY: WARPER, BEAM: WARPER, GROUP_BEAM: WARPER, CONTRASTIVE: WARPER}
NO_ROW_TOKENS = ALL - {SPECULATIVE}  # your own processors get a scalar `generated`, not a verify block's per row
OUTPUTS = frozenset((GENERATE, CONTINUE))  # what streaming (token ids only) cannot return
IDS = lambda v: tuple(int(t) for t in v)  # noqa: E731
# structured output's options (constraints.py): at most one per call
CONSTRAINT_OPTIONS = ("regex", "json_schema", "choices")
CONSTRAINED = ALL
CONSTRAINED_MODES = frozenset((GENERATE, STREAM))
# output_hidden_states / output_attentions: kept by greedy search and sampling's loop (layers.py)
LAYER_STRATEGIES = frozenset((GREEDY, SAMPLE))
LAYER_REFUSALS = {
    **dict.fromkeys(BEAMS | {CONTRASTIVE, SPECULATIVE},
                    "{name} is kept by greedy search and sampling (not yet by beam search, contrastive search or "
                    "speculative decoding); model.logits(ids, mask, output_hidden_states=True, output_attentions=True) "
                    "gives them for a whole sequence"),
    CONTINUE: "{name} is kept for a whole generate call; it does not combine with cache/return_state",
}
CONSTRAINT_REFUSALS = {
    CONTINUE: "{name} (structured output) does not combine with cache/return_state (continuing a generation)"}


def _words(value) -> tuple:
    return tuple(tuple(int(t) for t in w) for w in value)


def _bias(value) -> tuple:
    return tuple((tuple(int(t) for t in ids), float(bias)) for ids, bias in bias_pairs(value))


def _stops(value) -> tuple:
    return (value,) if isinstance(value, str) else tuple(value)


def schema_argument(text: str) -> str:
    """--json-schema's value: JSON text as it is, else the path of a file holding it."""
    import argparse  # noqa: PLC0415 - the command's type function

    if text.lstrip().startswith("{"):
        return text
    try:
        with open(text, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"not JSON text (it does not start with '{{') and not a readable file: "
                                         f"{e.strerror}: {text!r}") from None


def _schema(value) -> str:
    import json  # noqa: PLC0415

    return value if value is None or isinstance(value, str) else json.dumps(value)


def _keyed(value) -> tuple:
    return tuple(f if isinstance(f, KeyedProcessor) else KeyedProcessor(f) for f in value)


def _decay(value):
    return None if value is None else (int(value[0]), float(value[1]))


OPTIONS = (
    # -- lengths
    Option("max_new_tokens", None, optional(integer(1), say_none=False),
           "tokens to generate after the prompt. None: max_length - the prompt's width if max_length is given, "
           "else 20 (HF's default total of 20 is kept as 20 new)", HOST,
           flag="--max-new-tokens", cli={"default": 32}, engine=True),
    Option("max_length", None, optional(integer(1), say_none=False),
           "prompt width (padding included, as HF counts it) + new tokens; max_new_tokens wins", HOST,
           flag="--max-length", engine=True),
    Option("min_new_tokens", 0, integer(0), "EOS is forbidden until this many tokens were generated", TENSOR,
           flag="--min-new-tokens", export=ALL - {SPECULATIVE}, dtype="int32", engine=True),
    Option("min_length", 0, integer(0),
           "EOS is forbidden until prompt width + generated reaches this (HF's MinLength); with min_new_tokens "
           "the later of the two holds", HOST, flag="--min-length", engine=True),
    # -- the prompt
    Option("token_healing", False, BOOL,
           "replace each prompt's last token by the model's choice among the tokens that extend it (+10 on them, "
           "as HF's heal_tokens; needs the model's tokenizer). As HF, prompts are decoded, stripped and encoded "
           "again first; the returned sequences hold the healed prompts", HOST, modes=frozenset((GENERATE, STREAM)),
           flag="--token-healing",
           refusals={CONTINUE: "token_healing rewrites the prompt; it does not combine with cache/return_state "
                               "(continuing a generation)"}),
    # -- the strategy
    Option("do_sample", False, BOOL, "sample instead of taking the most likely token (with num_beams=1)", KEY,
           strategies=SAMPLING_ONLY, flag="--do-sample", engine=True,
           refusals={GROUP_BEAM: "num_beam_groups > 1 (diverse beam search) needs do_sample=False, as the reference"}),
    Option("num_beams", 1, integer(1), "beam search width (1 = greedy search or sampling)", KEY,
           strategies=ALL - {SPECULATIVE}, flag="--num-beams",
           refusals={SPECULATIVE: "{via} (speculative decoding) needs num_beams=1, got num_beams={value}"}),
    Option("num_beam_groups", 1, integer(1),
           "diverse beam search (transformers 4.x's group beam search): the num_beams beams form this many groups "
           "that choose in turn each step, a group penalised by diversity_penalty for the tokens earlier groups "
           "chose (1 = off; num_beams must be a multiple of it)", KEY, strategies=frozenset((GROUP_BEAM,)),
           flag="--num-beam-groups",
           refusals={**dict.fromkeys(ALL - BEAMS, "num_beam_groups > 1 (diverse beam search) needs num_beams > 1, a "
                                                  "multiple of num_beam_groups"),
                     SPECULATIVE: "{via} (speculative decoding) does not combine with num_beam_groups > 1"}),
    Option("num_return_sequences", 1, integer(1),
           "beam search: the best hypotheses per prompt (at most num_beams); sampling: samples per prompt", KEY,
           strategies=frozenset((SAMPLE, SPECULATIVE)) | BEAMS, modes=frozenset((GENERATE, STREAM)),
           flag="--num-return-sequences",
           refusals={GREEDY: "num_return_sequences > 1 needs do_sample=True or num_beams >= num_return_sequences",
                     CONTRASTIVE: "num_return_sequences > 1 needs do_sample=True or num_beams >= "
                                  "num_return_sequences",
                     CONTINUE: "cache/return_state need num_return_sequences=1: one continuation per row"}),
    Option("penalty_alpha", None, optional(number("a number in [0, 1] (0 = off)", lambda v: (v >= 0) & (v <= 1),
                                                  "a number in [0, 1]")),
           "contrastive search (with num_beams=1, do_sample=False and top_k > 1): each step picks among the "
           "top_k tokens the one maximising (1 - penalty_alpha) * probability - penalty_alpha * its largest "
           "cosine similarity with the row's earlier hidden states. None or 0 = off (greedy)", TENSOR,
           strategies=frozenset((GREEDY, CONTRASTIVE)), flag="--penalty-alpha", cli={"metavar": "A"},
           export=frozenset((CONTRASTIVE,)), dtype="float32", off=(None, 0, 0.0),
           refusals={**dict.fromkeys(BEAMS | {SAMPLE}, "penalty_alpha (contrastive search) needs num_beams=1 and "
                                     "do_sample=False, got num_beams={num_beams}, do_sample={do_sample}; leave "
                                     "penalty_alpha=None for beam search or sampling"),
                     SPECULATIVE: "penalty_alpha (contrastive search) does not combine with speculative decoding "
                                  "(assistant_model / prompt_lookup_num_tokens)"}),
    Option("guidance_scale", None, optional(number("a number > 0 (1 = off)", lambda v: v > 0, "> 0")),
           "classifier-free guidance (HF's UnbatchedClassifierFreeGuidanceLogitsProcessor, first of the processors): "
           "the scores become scale x (log-probs - unconditional log-probs) + unconditional log-probs, the "
           "unconditional stream continuing generate's negative_prompt_ids (default: each prompt's last token) "
           "with its own cache in the same loop. None or 1 = off", TENSOR, strategies=frozenset((GREEDY, SAMPLE)),
           modes=frozenset((GENERATE, STREAM)), flag="--guidance-scale", dtype="float32", off=(None, 1, 1.0),
           normalise=lambda v: None if v is None or v == 1 else float(v),
           refusals={**dict.fromkeys(BEAMS | {CONTRASTIVE, SPECULATIVE},
                                     "guidance_scale (classifier-free guidance) runs with greedy search and sampling; "
                                     "leave it at None"),
                     CONTINUE: "guidance_scale (classifier-free guidance) does not combine with cache/return_state"}),
    Option("dola_layers", None, dola_setting,
           "DoLa decoding (transformers 4.x's dola_layers): contrast the final layer's log-probs with a premature "
           "layer's ('low', 'high' or a list of layers; with several, the furthest by Jensen-Shannon divergence), "
           "then the processors; repetition_penalty ~1.2 is advised. None = off", KEY,
           strategies=frozenset((GREEDY, SAMPLE)), modes=frozenset((GENERATE, STREAM)), flag="--dola-layers",
           cli={"type": lambda text: text if text in ("low", "high") else [int(i) for i in text.split(",")],
                "metavar": "{low,high,N,N,...}"},
           normalise=lambda v: v if v is None or isinstance(v, str) else tuple(int(i) for i in v),
           refusals={**dict.fromkeys(BEAMS | {CONTRASTIVE, SPECULATIVE},
                                     "dola_layers (DoLa decoding) runs with greedy search and sampling; leave it at "
                                     "None"),
                     CONTINUE: "dola_layers (DoLa decoding) does not combine with cache/return_state"}),
    # -- sampling warpers, in the order they apply
    Option("temperature", 1.0, number("a finite number > 0", lambda v: v > 0),
           "sampling temperature: the logits are divided by it first", TENSOR, strategies=SAMPLING_ONLY,
           flag="--temperature", export=frozenset((SAMPLE,)), dtype="float32", refusals=WARPER_REFUSALS, engine=True),
    Option("top_n_sigma", None, optional(number("a number > 0", lambda v: v > 0, "> 0")),
           "sampling: Top-nσ, keep the tokens whose logit is within top_n_sigma standard deviations of the best "
           "(None = off)", TENSOR, strategies=SAMPLING_ONLY, flag="--top-n-sigma", dtype="float32",
           refusals=WARPER_REFUSALS),  # not a SavedModel input (as top_h)
    Option("top_h", None, optional(number("a number in (0, 1]", lambda v: (v > 0) & (v <= 1), "in (0, 1]")),
           "sampling: Top-H, keep the best tokens while their entropy stays within top_h x the entropy of the 100 "
           "best (None = off)", TENSOR, strategies=SAMPLING_ONLY, flag="--top-h", dtype="float32",
           refusals=WARPER_REFUSALS),  # not a SavedModel input: a new required input would break its clients
    Option("top_k", 50, integer(0),
           "sampling: keep the k most likely tokens (0 = off); contrastive search: its candidates per step "
           "(part of the compile key there)", TENSOR, strategies=frozenset((SAMPLE, BEAM_SAMPLE, SPECULATIVE, CONTRASTIVE)),
           flag="--top-k", export=frozenset((SAMPLE,)), dtype="int32", off=(50, 0), refusals=WARPER_REFUSALS,
           also=lambda cfg: cfg.penalty_alpha is not None, engine=True),  # contrastive's candidates, even where HF falls back to greedy
    Option("top_p", 1.0, number("in (0, 1]", lambda v: (v > 0) & (v <= 1)),
           "sampling: keep the most likely tokens whose probabilities sum to top_p (1.0 = off)", TENSOR,
           strategies=SAMPLING_ONLY, flag="--top-p", export=frozenset((SAMPLE,)), dtype="float32",
           refusals=WARPER_REFUSALS, engine=True),
    Option("min_p", None, optional(number("a number in [0, 1]", lambda v: (v >= 0) & (v <= 1), "in [0, 1]")),
           "sampling: drop tokens less likely than min_p x the most likely one's probability (None = off)", TENSOR,
           strategies=SAMPLING_ONLY, flag="--min-p", export=frozenset((SAMPLE,)), dtype="float32",
           refusals=WARPER_REFUSALS, engine=True),
    Option("typical_p", 1.0, number("in (0, 1] (1.0 = off)", lambda v: (v > 0) & (v <= 1), "in (0, 1]"),
           "sampling: locally typical sampling's mass (1.0 = off)", TENSOR, strategies=SAMPLING_ONLY,
           flag="--typical-p", export=frozenset((SAMPLE,)), dtype="float32", refusals=WARPER_REFUSALS),
    Option("epsilon_cutoff", 0.0, number("in [0, 1) (0 = off)", lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
           "sampling: drop tokens of probability below this (0 = off)", TENSOR, strategies=SAMPLING_ONLY,
           flag="--epsilon-cutoff", export=frozenset((SAMPLE,)), dtype="float32", refusals=WARPER_REFUSALS),
    Option("eta_cutoff", 0.0, number("in [0, 1) (0 = off)", lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
           "sampling: eta sampling's cutoff, scaled by the distribution's entropy (0 = off)", TENSOR,
           strategies=SAMPLING_ONLY, flag="--eta-cutoff", export=frozenset((SAMPLE,)), dtype="float32",
           refusals=WARPER_REFUSALS),
    Option("min_tokens_to_keep", 1, integer(1, 256),
           "every warper keeps at least this many of the best tokens (HF's warper argument)", KEY,
           strategies=SAMPLING_ONLY, flag="--min-tokens-to-keep", refusals=WARPER_REFUSALS),
    Option("seed", None, seed_pair, "pair of ints for the stateless sampler; same seed, same output. None draws "
           "a fresh one", TENSOR, flag="--seed", cli={"nargs": 2, "metavar": ("A", "B")},
           export=frozenset((SAMPLE,)), dtype="int32", shape=(2,), normalise=lambda v: None if v is None else tuple(v), engine=True),
    # -- beam search
    Option("length_penalty", 1.0, number("a finite number"),
           "beam search: hypotheses score sum_logprobs / generated_length ** length_penalty", TENSOR,
           flag="--length-penalty", export=frozenset((BEAM,)), dtype="float32"),
    Option("early_stopping", False, EARLY_STOPPING,
           "beam search's stopping rule: True, False (a heuristic) or 'never' (HF's semantics)", KEY,
           flag="--early-stopping", cli={"type": lambda text: {"true": True, "false": False}.get(text.lower(), text),
                                         "metavar": "{true,false,never}"}),
    # -- logits processors, in the order they apply (processors.PROCESSORS)
    Option("sequence_bias", (), bias_map,
           "{token sequence: bias} (or [[ids, bias], ...]): the bias is added to the sequence's last token "
           "wherever the rest of it ends the row", KEY, normalise=_bias,
           ids=lambda v: [t for ids, _ in v for t in ids]),
    Option("diversity_penalty", 0.0, number("a number >= 0 (0 = off)", lambda v: v >= 0, ">= 0"),
           "diverse beam search (num_beam_groups > 1): taken off a token's score once per beam of an earlier group "
           "that chose it this step (HF's HammingDiversityLogitsProcessor)", TENSOR,
           strategies=frozenset((GROUP_BEAM,)), flag="--diversity-penalty", dtype="float32",
           refusals=dict.fromkeys(ALL - {GROUP_BEAM}, "diversity_penalty needs num_beam_groups > 1 (diverse beam "
                                                       "search) and num_beams a multiple of it; leave it at 0.0")),
    Option("repetition_penalty", 1.0, number("a finite number > 0 (1.0 = off)", lambda v: v > 0),
           "> 1 discourages tokens already in the row (padding ignored, unlike HF)", TENSOR,
           flag="--repetition-penalty", export=ALL - {SPECULATIVE}, dtype="float32", engine=True),
    Option("presence_penalty", 0.0, number("a number in [-2, 2] (0 = off)", lambda v: (v >= -2) & (v <= 2), "in [-2, 2]"),
           "OpenAI's: subtracted from the score of every token generated at least once (the prompt not counted; "
           "> 0 discourages repeats)", TENSOR, flag="--presence-penalty", dtype="float32"),
    Option("frequency_penalty", 0.0, number("a number in [-2, 2] (0 = off)", lambda v: (v >= -2) & (v <= 2), "in [-2, 2]"),
           "OpenAI's: subtracted from a token's score once per time it was generated (the prompt not counted)",
           TENSOR, flag="--frequency-penalty", dtype="float32"),
    Option("no_repeat_ngram_size", 0, integer(0),
           "forbid repeating any n-gram of this size (padding ignored, unlike HF)", KEY, flag="--no-repeat-ngram-size"),
    Option("bad_words_ids", (), word_list,
           "token sequences never generated: the last token of each is banned wherever the rest of it ends the "
           "row (a list of lists of ids)", KEY, normalise=_words,
           ids=lambda v: [t for w in v for t in w]),
    Option("forced_bos_token_id", None, token_id,
           "the first new token of a 1-token-wide prompt (HF forces it at length 1)", KEY, ids=_ids,
           flag="--forced-bos-token-id"),
    Option("forced_eos_token_id", None, token_ids(empty=False), "id (or ids) forced as the last token (at max_new_tokens)", KEY,
           ids=_ids, flag="--forced-eos-token-id", cli={"nargs": "+", "metavar": "ID"}),
    Option("remove_invalid_values", False, BOOL,
           "nan scores become 0 and +-inf the largest finite float32 values", KEY, flag="--remove-invalid-values"),
    Option("exponential_decay_length_penalty", None, decay_pair,
           "(start, factor): after `start` new tokens, EOS scores grow by |score| * (factor ** (generated - start) "
           "- 1)", KEY, normalise=_decay),
    Option("suppress_tokens", (), id_list, "token ids that are never generated", KEY, normalise=IDS, ids=tuple,
           flag="--suppress-tokens", cli={"nargs": "+", "metavar": "ID"}),
    Option("begin_suppress_tokens", (), id_list, "token ids that are not generated as the first new token", KEY,
           normalise=IDS, ids=tuple, flag="--begin-suppress-tokens", cli={"nargs": "+", "metavar": "ID"}),
    Option("logits_processor", (), functions,
           "your own processors, applied after the built-in ones (as HF applies a user LogitsProcessorList): "
           "functions fn(sequences, valid, generated, logits) -> logits in TensorFlow ops, compiled into the loop "
           "(keyed by their code and captured values); see processors.custom for the shapes", KEY,
           strategies=NO_ROW_TOKENS, normalise=_keyed),
    Option("renormalize_logits", False, BOOL,
           "log-softmax the processed scores (matters for beam scores; the choice of greedy, sampling and "
           "contrastive search does not change)", KEY, flag="--renormalize-logits"),
    # -- structured output (constraints.py): one of them; the automaton's table travels as tensors, its size
    # buckets shape the graph; the mask applies with the processors (after min_new_tokens, as HF's
    # PrefixConstrainedLogitsProcessor), before the warpers
    Option("regex", None, regex_text,
           "the new text must match this regex (outlines-core's syntax, matched whole; needs the model's "
           "tokenizer and minigen[structured]); EOS only where the match is complete", KEY,
           strategies=CONSTRAINED, modes=CONSTRAINED_MODES, flag="--regex", cli={"metavar": "REGEX", "type": str},
           refusals=CONSTRAINT_REFUSALS, engine=True),
    Option("json_schema", None, schema_text,
           "the new text must be JSON valid against this schema (a dict or its JSON text; via outlines-core's "
           "schema-to-regex, keywords it would ignore refused)", KEY, strategies=CONSTRAINED,
           modes=CONSTRAINED_MODES, flag="--json-schema", cli={"metavar": "FILE|JSON", "type": schema_argument},
           normalise=_schema, refusals=CONSTRAINT_REFUSALS, engine=True),
    Option("choices", None, choice_list,
           "the new text must be one of these strings", KEY, strategies=CONSTRAINED, modes=CONSTRAINED_MODES,
           flag="--choice", cli={"action": "append", "metavar": "TEXT"},
           normalise=lambda v: None if v is None else tuple(v), refusals=CONSTRAINT_REFUSALS, engine=True),
    # -- stopping
    Option("eos_token_id", None, token_ids(empty=True), "int or list of ints; None uses the model config's", KEY, ids=_ids,
           flag="--eos-token-id", cli={"nargs": "*", "metavar": "ID"}, engine=True),
    Option("pad_token_id", None, token_id,
           "fills positions after a row's EOS; None uses the config's, else the first EOS id", KEY,
           ids=_ids, flag="--pad-token-id", engine=True),
    Option("stop_strings", (), stop_list,
           "a row stops once one of these ends inside its latest token (a str or a list; needs the model's "
           "tokenizer). Matched as bytes over the tokens, inside the compiled loop, as HF's StopStringCriteria: "
           "a string may span tokens or start inside one", KEY,
           strategies=frozenset((GREEDY, SAMPLE, CONTRASTIVE)), flag="--stop",
           cli={"action": "append", "metavar": "TEXT"}, normalise=_stops,
           refusals=dict.fromkeys(BEAMS | {SPECULATIVE}, "stop_strings work with greedy search, sampling and "
                                  "contrastive search, not with num_beams > 1 or speculative decoding"), engine=True),
    Option("max_time", None, optional(number("a number of seconds > 0", lambda v: v > 0)),
           "seconds: streaming stops after the chunk during which this much time has passed (the loop runs "
           "compiled, so the clock is read between chunks)", HOST, modes=frozenset((STREAM,)), flag="--max-time",
           cli={"metavar": "SECONDS", "type": float},
           refusals={GENERATE: "max_time is read between streamed chunks (the whole generate call runs as one "
                               "compiled loop): use stream / stream_tokens (minigen generate --stream), or leave it "
                               "None"}),
    # -- speculative decoding
    Option("prompt_lookup_num_tokens", None, optional(integer(1), say_none=False),
           "speculative decoding with prompt lookup: candidates per verify step copied from the row's own "
           "earlier text (None = off)", KEY, flag="--prompt-lookup", cli={"metavar": "K"}),
    Option("max_matching_ngram_size", 2, integer(1),
           "prompt lookup matches the row's last n tokens, n from this down to 1", KEY,
           flag="--max-matching-ngram-size"),
    Option("num_assistant_tokens", 4, integer(1),
           "speculative decoding with assistant_model=: draft tokens per verify step (the verify block's width)", KEY,
           flag="--num-assistant-tokens"),
    Option("num_assistant_tokens_schedule", "constant",
           Rule("'constant', 'heuristic' or 'heuristic_transient'", lambda v: v in SCHEDULES),
           "speculative decoding with assistant_model=: 'heuristic' (or 'heuristic_transient', the same here: each "
           "call starts anew) drafts 2 more tokens for a row after a verify step that accepted all it drafted, 1 fewer "
           "after one that did not, between 1 and num_assistant_tokens (HF's rule, per row)", KEY,
           strategies=frozenset((GREEDY, SAMPLE, SPECULATIVE)), flag="--num-assistant-tokens-schedule",
           cli={"choices": SCHEDULES}),  # (without assistant_model: refused by GenerationConfig.check)
    Option("assistant_confidence_threshold", None,
           optional(number("a number in (0, 1)", lambda v: (v > 0) & (v < 1), "in (0, 1)")),
           "speculative decoding with assistant_model=: a row stops drafting after a token the draft gave a "
           "probability below this (None = off; HF defaults to 0.4 and tunes it as it goes, minigen keeps it as "
           "given)", TENSOR, strategies=frozenset((GREEDY, SAMPLE, SPECULATIVE)), flag="--assistant-confidence-threshold",
           dtype="float32"),
    # -- shapes and outputs
    Option("pad_to_multiple_of", 16, integer(1),
           "prompts are left-padded to this bucket width so new lengths reuse compiles", HOST,
           flag="--pad-to-multiple-of", engine=True),
    Option("return_dict", False, BOOL,
           "return a GenerateOutput instead of a bare array (also implied by the output_* options)", HOST,
           modes=OUTPUTS, engine=True),
    Option("output_scores", False, BOOL,
           "as HF: GenerateOutput.scores, each step's processed scores (what the token was chosen from: log-probs "
           "after the processors for beam search), a tuple of max_new_tokens [rows, vocab] arrays; beam search "
           "adds sequences_scores and beam_indices. Costs rows x max_new_tokens x vocab x 4 bytes", KEY,
           strategies=ALL - {SPECULATIVE}, modes=OUTPUTS,
           refusals={SPECULATIVE: "{via} (speculative decoding) does not return {name}; use output_logprobs for the "
                                  "chosen tokens' log-probs"}),
    Option("output_logits", False, BOOL, "as HF: GenerateOutput.logits, each step's raw logits, same layout and cost",
           KEY, strategies=ALL - {SPECULATIVE}, modes=OUTPUTS,
           refusals={SPECULATIVE: "{via} (speculative decoding) does not return {name}; use output_logprobs for the "
                                  "chosen tokens' log-probs"}),
    Option("output_logprobs", False, BOOL,
           "GenerateOutput.logprobs [rows, max_new_tokens]: the log-prob of each chosen token under the "
           "distribution it was chosen from (0 after EOS); cheap (minigen's own option: HF users get it from "
           "compute_transition_scores(..., normalize_logits=True))", KEY, strategies=ALL - BEAMS, modes=OUTPUTS,
           refusals=dict.fromkeys(BEAMS, "output_logprobs is for greedy search, sampling and contrastive search; with "
                                  "num_beams > 1 use output_scores and compute_transition_scores(sequences, scores, "
                                  "beam_indices)"), engine=True),
    Option("output_hidden_states", False, BOOL,
           "as HF: GenerateOutput.hidden_states, per step a tuple of n_layer + 1 arrays (the embeddings, each "
           "block's output, the last after the final layer norm): [rows, prompt width, d] for the first token (the "
           "prompt's pass), [rows, 1, d] after. Costs rows x (n_layer + 1) x d x (bucket + max_new_tokens) x 4 "
           "bytes", KEY, strategies=LAYER_STRATEGIES, modes=frozenset((GENERATE,)), refusals=LAYER_REFUSALS),
    Option("output_attentions", False, BOOL,
           "as HF: GenerateOutput.attentions, per step a tuple of n_layer attention probabilities [rows, heads, "
           "prompt width, prompt width] for the first token, [rows, heads, 1, prompt width + i] for token i. Costs "
           "rows x n_layer x heads x (bucket + max_new_tokens)**2 x 4 bytes", KEY, strategies=LAYER_STRATEGIES,
           modes=frozenset((GENERATE,)), refusals=LAYER_REFUSALS),
    Option("top_logprobs", 0, integer(0, 256),
           "GenerateOutput.top_logprobs and .top_tokens [rows, max_new_tokens, k]: each step's k most likely tokens "
           "and their log-probs under the distribution the token was chosen from, best first (0 = off; after EOS "
           "tokens -1, log-probs 0; -inf for tokens a warper ruled out); minigen's own, as OpenAI's top_logprobs",
           KEY, strategies=ALL - BEAMS - {SPECULATIVE}, modes=OUTPUTS,
           refusals={**dict.fromkeys(BEAMS, "top_logprobs is for greedy search, sampling and contrastive search; with "
                                     "num_beams > 1 use output_scores"),
                     SPECULATIVE: "{via} (speculative decoding) does not return {name}; use output_logprobs for the "
                                  "chosen tokens' log-probs"}, engine=True),
)
BY_NAME = {o.name: o for o in OPTIONS}


# -- the reference's names that are not rows ----------------------------------------------------

# The reference's names for options minigen spells its own way.
ALIASES = {"return_dict_in_generate": "return_dict"}
# Options of the reference's `generate` (and its GenerationConfig) that minigen does not have, with
# what to do instead: a transformers user's option is "not supported (yet)", not a typo.
NOT_SUPPORTED = {
    "streamer": "use model.stream(prompt) (text) or model.stream_tokens(ids, mask) (token ids) instead",
    **dict.fromkeys(("negative_prompt_ids", "negative_prompt_attention_mask"),
                    "classifier-free guidance's unconditional prompt is an argument of generate and stream_tokens "
                    "(with guidance_scale); the text API does not take it"),
    **dict.fromkeys(("assistant_lookbehind",
                     "target_lookbehind", "assistant_early_exit", "is_assistant", "speculation_type", "use_mtp"),
                    "minigen's speculative decoding takes assistant_model= with num_assistant_tokens (and its "
                    "schedule and confidence threshold), or prompt_lookup_num_tokens with max_matching_ngram_size"),
    **dict.fromkeys(("constraints", "force_words_ids"), "constrained beam search is not supported"),
    **dict.fromkeys(("prefix_allowed_tokens_fn", "stopping_criteria"),
                    "pass logits_processor=[fn(sequences, valid, generated, logits) -> logits] (TensorFlow ops, "
                    "compiled into the loop) or stop_strings / eos_token_id"),
    "watermarking_config": "watermarking is not supported",
    "low_memory": "beam search always runs all beams at once",
    **dict.fromkeys(("cache_implementation", "cache_config", "max_cache_len", "compile_config", "disable_compile",
                     "prefill_chunk_size", "continuous_batching_config"),
                    "minigen always decodes with its own preallocated static cache, compiled with XLA"),
    **dict.fromkeys(("encoder_repetition_penalty", "encoder_no_repeat_ngram_size", "decoder_start_token_id"),
                    "encoder-decoder options do not apply to GPT-2"),
    "tokenizer": "stop_strings use the model's own tokenizer (model.tokenizer); drop tokenizer=",
    **dict.fromkeys(("synced_gpus", "assistant_tokenizer", "custom_generate", "trust_remote_code",
                     "use_model_defaults"), "not applicable to minigen"),
}
# The reference's fields that carry no option (metadata, or ids GPT-2's generate does not read):
# accepted and ignored when they come from a transformers GenerationConfig or generation_config.json.
IGNORED = ("transformers_version", "_from_model_config", "_commit_hash", "bos_token_id", "use_cache")


# -- checking ------------------------------------------------------------------------------------


def check_value(option: Option, value):
    """`value` checked by the option's rule (ValueError naming it), then in the form the code reads."""
    option.check(option.name, value)
    return value if option.normalise is None else option.normalise(value)


def columns(cfg, speculative: bool) -> tuple[str, ...]:
    """The strategy columns a call runs under: its dispatch strategy, and speculative decoding."""
    return (cfg.strategy, SPECULATIVE) if speculative else (cfg.strategy,)


def _refusal(option: Option, where: str, cfg, via: str) -> str:
    template = option.refusals.get(where, REFUSALS[where])
    off = " or ".join(map(str, option.off_values))
    return template.format(name=option.name, off=off, via=via, value=getattr(cfg, option.name),
                           **{k: getattr(cfg, k) for k in ("num_beams", "do_sample")})


def check_combination(cfg, speculation: str, modes: frozenset) -> None:
    """ValueError for an option set (not off) where the call's strategy or mode does not take it, then
    for a strategy the mode does not run. speculation: "" or the option that turns it on
    (assistant_model / prompt_lookup_num_tokens); modes: the call's (GENERATE or STREAM, and CONTINUE)."""
    used = columns(cfg, bool(speculation))
    for option in OPTIONS:
        value = getattr(cfg, option.name)
        if option.is_off(value) or (option.also is not None and option.also(cfg)):
            continue
        for where in used:
            if where not in option.strategies:
                raise ValueError(_refusal(option, where, cfg, speculation))
        for mode in modes:
            if mode not in option.modes:
                raise ValueError(_refusal(option, mode, cfg, speculation))
    for mode in sorted(modes):
        for strategy in used:
            if mode not in MODES[strategy]:
                raise ValueError(MODE_REFUSALS[(mode, strategy)])


def doc_lines(indent: str = "    ") -> str:
    """GenerationConfig's Attributes section, from the rows."""
    import textwrap  # noqa: PLC0415 - only the class definition needs it

    out = []
    for o in OPTIONS:
        where = {KEY: " Shapes the graph (compile key).", TENSOR: " A run-time value.", HOST: ""}[o.role]
        text = f"{o.name}: {o.doc}.{where}"
        out.append(textwrap.fill(text, 110, initial_indent=indent, subsequent_indent=indent + "    "))
    return "\n".join(out)


def export_inputs(strategy: str) -> dict:
    """A strategy's SavedModel inputs after input_ids and attention_mask: name -> (dtype, shape)."""
    return {o.name: (o.dtype, o.shape) for o in OPTIONS if strategy in o.export}


def markdown() -> str:
    """docs/options.md: the table as a page (`make docs` writes it; tests/test_structure.py checks
    the page is current)."""
    where = {KEY: "compile key", TENSOR: "tensor", HOST: "host"}
    lines = ["# Options", "",
             "Generated from `minigen/generation/options.py` by `make docs`."
             " Each option of `generate` once: its default, what it allows, where its value goes (compile key: "
             "a new value compiles anew; tensor: a new value reuses the compiled loop; host: read outside the "
             "loop), the strategies that take a value other than its off value, its `minigen generate` / "
             "`minigen batch` flag, whether a SavedModel signature takes it and whether a request of the request "
             "engine (`generate_many`, [engine.md](engine.md)) may set it.", "",
             "| option | default | allowed | value goes to | strategies | flag | SavedModel input | per request |",
             "|---|---|---|---|---|---|---|---|"]
    for o in OPTIONS:
        allowed = getattr(o.check, "allowed", None) or (o.check.__doc__ or "see its check").strip().split("\n")[0]
        strategies = "all" if o.strategies == ALL else ", ".join(s for s in STRATEGY_ORDER if s in o.strategies)
        if o.modes != ALL_MODES:
            strategies += " (" + ", ".join(m for m in (GENERATE, STREAM, CONTINUE) if m in o.modes) + " only)"
        flag = f"`{o.flag}`" if o.flag else "Python only"
        export = ", ".join(s for s in (GREEDY, SAMPLE, BEAM, CONTRASTIVE) if s in o.export) or "-"
        lines.append(f"| `{o.name}` | `{o.default!r}` | {allowed} | {where[o.role]} | {strategies} | {flag} | "
                     f"{export} | {'yes' if o.engine else '-'} |")
    lines += ["", "What each does: `help(minigen.generation.GenerationConfig)`, and [generation.md](generation.md)."]
    return "\n".join(lines) + "\n"
