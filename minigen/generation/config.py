"""GenerationConfig: the options of `generate`, with Hugging Face's names and defaults, and their checks."""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers

import numpy as np

INT32_MAX = 2**31 - 1  # integer options become int32 tensors or shapes: larger values would wrap
# float options become float32 tensors: a nonzero value below the smallest normal float32 (or above the
# largest) would arrive as 0 (or inf): temperature=1e-50 divided the logits by 0
FLOAT32 = np.finfo(np.float32)

# The reference's names for options minigen spells its own way.
ALIASES = {"return_dict_in_generate": "return_dict"}
# Options of the reference's `generate` (and its GenerationConfig) that minigen does not have, with
# what to do instead: a transformers user's option is "not supported (yet)", not a typo.
NOT_SUPPORTED = {
    **dict.fromkeys(("output_hidden_states", "output_attentions"),
                    "per-step hidden states and attentions are not kept by generate yet; "
                    "model.logits(ids, mask, output_hidden_states=True, output_attentions=True) gives them for a "
                    "whole sequence"),
    "streamer": "use model.stream(prompt) (text) or model.stream_tokens(ids, mask) (token ids) instead",
    **dict.fromkeys(("num_beam_groups", "diversity_penalty"), "diverse (group) beam search is not supported yet"),
    **dict.fromkeys(("guidance_scale", "negative_prompt_ids", "negative_prompt_attention_mask"),
                    "classifier-free guidance is not supported yet"),
    "dola_layers": "DoLa decoding is not supported yet",
    "token_healing": "token healing is not supported yet",
    "top_h": "the top-h warper is not supported yet",
    **dict.fromkeys(("num_assistant_tokens_schedule", "assistant_confidence_threshold", "assistant_lookbehind",
                     "target_lookbehind", "assistant_early_exit", "is_assistant", "speculation_type", "use_mtp"),
                    "minigen's speculative decoding takes assistant_model= with num_assistant_tokens, or "
                    "prompt_lookup_num_tokens with max_matching_ngram_size"),
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
# The processors that read a row's tokens (processors.PROCESSORS), with their "off" values:
# speculative decoding's verify blocks do not carry the tokens, so it refuses them.
READS_ROW_TOKENS = (("sequence_bias", ()), ("repetition_penalty", 1.0), ("no_repeat_ngram_size", 0),
                    ("bad_words_ids", ()), ("logits_processor", ()))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def fits_float32(value) -> bool:
    """Whether float32 holds `value` without turning it into 0 or inf (0 itself is fine)."""
    return value == 0 or FLOAT32.tiny <= abs(value) <= FLOAT32.max


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Sampling warpers with the values that leave them off (top_k: its default, or 0 = off): without
# do_sample=True they would have no effect, so any other value is refused (one rule for all of them).
SAMPLING_ONLY = {"temperature": (1.0,), "top_k": (50, 0), "top_p": (1.0,), "min_p": (None,), "typical_p": (1.0,),
                 "epsilon_cutoff": (0.0,), "eta_cutoff": (0.0,), "min_tokens_to_keep": (1,)}
# Bounds on the options that become tables inside the compiled loop. Stop strings: the table has a
# row per token and columns per string; on GPT-2's vocabulary (2-core EPYC) 16 / 64 / 256 strings
# took 1.5 / 6.0 / 23 s to build and 19 / 74 / 295 MiB (/tmp probe, stop_strings.stop_table); 1,600
# strings had cost 145 s and 3.5 GB before the first token.
MAX_STOP_STRINGS, MAX_STOP_BYTES = 64, 1024
# bad_words_ids / sequence_bias travel as tensors (processors.word_table: 1,000 banned bigrams compile
# in 2.0 s, any number of the same lengths reuses it); each step compares every entry.
MAX_WORDS = 4096


class KeyedProcessor:
    """A user's logits processor as the compile key holds it: equal to another made from the same code
    with equal captured values (a lambda written in a loop or a function called per request makes a
    new function object each time, and keyed by identity each one compiled anew and stayed in
    memory); anything else (a callable object, a closure over an unhashable value such as a tensor)
    is keyed by identity."""

    __slots__ = ("fn", "_key", "__weakref__")

    def __init__(self, fn):
        self.fn = fn
        code = getattr(fn, "__code__", None)
        key = ("id", fn)  # holds the function, so its id cannot be reused while the key lives
        if code is not None and hasattr(fn, "__globals__"):
            cells = tuple(c.cell_contents for c in (fn.__closure__ or ()))
            candidate = ("code", code, id(fn.__globals__), cells, fn.__defaults__,
                         tuple(sorted((fn.__kwdefaults__ or {}).items())))
            try:
                hash(candidate)
                key = candidate
            except (TypeError, ValueError):
                pass
        self._key = key

    def __call__(self, *args):
        return self.fn(*args)

    def __eq__(self, other):
        return isinstance(other, KeyedProcessor) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))

    def __repr__(self):
        return f"KeyedProcessor({self.fn!r})"


def _bias_pairs(value) -> tuple:
    """sequence_bias as ((ids, bias), ...) from a dict {ids: bias} or a list of [ids, bias] pairs."""
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = tuple((tuple(ids), bias) for ids, bias in items)
    except (TypeError, ValueError):
        pairs = None
    if pairs is None or not all(
            ids and all(_is_int(t) for t in ids) and _is_number(bias) and math.isfinite(bias) for ids, bias in pairs):
        raise ValueError(f"sequence_bias must map non-empty token id sequences to finite numbers, e.g. "
                         f"{{(12,): -2.0, (7, 9): 3.5}}, got {value!r}")
    return tuple((tuple(int(t) for t in ids), float(bias)) for ids, bias in pairs)


def normalise_names(options: dict) -> dict:
    """`options` with the reference's aliases renamed; ValueError for a name minigen does not know:
    "not supported (yet)" for the reference's own options, "did you mean" for a typo."""
    options = dict(options)
    for alias, name in ALIASES.items():
        if alias in options:
            if name in options and options[name] != options[alias]:
                raise ValueError(f"{alias} is the reference's name for {name}: pass one of them")
            options[name] = options.pop(alias)
    if options.get("use_cache", True) is not True:
        raise ValueError("use_cache=False is not supported: minigen always decodes with its static KV cache")
    options.pop("use_cache", None)
    known = [f.name for f in dataclasses.fields(GenerationConfig)]
    for name in options:
        if name in known:
            continue
        if name in NOT_SUPPORTED:
            raise ValueError(f"{name} is an option of transformers' generate that minigen does not support: "
                             f"{NOT_SUPPORTED[name]}")
        close = difflib.get_close_matches(name, known + list(ALIASES), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see minigen.generation.GenerationConfig for the options"
        raise ValueError(f"unknown generate option {name!r}; {hint}")
    return options


@dataclasses.dataclass
class GenerationConfig:
    """Options for `generate`. Names and defaults follow Hugging Face's `GenerationConfig`.

    Attributes:
        max_new_tokens: tokens to generate after the prompt. None: max_length - the prompt's width if
            max_length is given, else 20 (HF's default total of 20 is kept as 20 new).
        max_length: prompt width (padding included, as HF counts it) + new tokens; max_new_tokens wins.
        min_new_tokens: EOS is forbidden until this many tokens were generated.
        min_length: EOS is forbidden until prompt width + generated reaches this (HF's MinLength);
            with min_new_tokens the later of the two holds.
        do_sample: sample instead of taking the argmax (with num_beams=1).
        temperature, top_k, top_p: sampling warpers, applied in that order (top_k=0 or top_p=1.0 disable).
        min_p, typical_p, epsilon_cutoff, eta_cutoff: the further sampling warpers, in that order after
            top_p (None / 1.0 / 0.0 / 0.0 = off); run-time values.
        min_tokens_to_keep: every warper keeps at least this many of the best tokens (1 to 256; part
            of the compile key; HF's warper argument).
        num_beams: beam search width (1 = greedy / sampling).
        num_return_sequences: beam search: best hypotheses per prompt; sampling: samples per prompt.
        length_penalty: beam scores are sum_logprobs / generated_length ** length_penalty.
        early_stopping: beam search stopping rule: True, False (heuristic) or "never" (HF semantics).
        repetition_penalty: >1 discourages tokens already in the row (padding ignored, unlike HF).
        no_repeat_ngram_size: forbid repeating any n-gram of this size (padding ignored, unlike HF).
        sequence_bias: {token sequence: bias} (or [[ids, bias], ...]): the bias is added to the
            sequence's last token wherever the rest of it ends the row (part of the compile key).
        bad_words_ids: token sequences never generated: the last token of each is banned wherever the
            rest of it ends the row (a list of lists of ids; part of the compile key).
        suppress_tokens: token ids that are never generated (a tuple; part of the compile key).
        begin_suppress_tokens: token ids that are not generated as the first new token.
        forced_bos_token_id: the first new token of a 1-token-wide prompt (HF forces it at length 1).
        forced_eos_token_id: id (or ids) forced as the last token (at max_new_tokens).
        exponential_decay_length_penalty: (start, factor): after `start` new tokens, EOS scores grow
            by |score| * (factor ** (generated - start) - 1) (part of the compile key).
        remove_invalid_values: nan scores become 0 and +-inf the largest finite float32 values.
        max_time: seconds: streaming stops after the chunk during which this much time has passed
            (the loop runs compiled, so the clock is read between chunks; generate() refuses it).
        stop_strings: a row stops once one of these ends inside its latest token (a str or a list; needs the
            model's tokenizer). Matched as bytes over the tokens, inside the compiled loop, as HF's
            StopStringCriteria: a string may span tokens or start inside one. Greedy, sampling,
            contrastive search.
        logits_processor: your own processors, applied after the built-in ones (as HF applies a user
            LogitsProcessorList): functions fn(sequences, valid, generated, logits) -> logits in
            TensorFlow ops, compiled into the loop (part of the compile key, by identity); see
            processors.custom for the shapes.
        renormalize_logits: log-softmax the processed scores (matters for beam scores; the choice of
            greedy, sampling and contrastive search does not change).
        eos_token_id: int or list of ints; None uses the model config's.
        pad_token_id: fills positions after a row's EOS; None uses the config's, else the first EOS id.
        penalty_alpha: contrastive search (with num_beams=1, do_sample=False and top_k > 1): each
            step picks among the top_k tokens the one maximising (1 - penalty_alpha) * probability
            - penalty_alpha * its largest cosine similarity with the row's earlier hidden states.
            None or 0 = off (greedy). A run-time value; top_k is then part of the compile key.
        seed: pair of ints for the stateless sampler; same seed, same output. None draws a fresh one.
        pad_to_multiple_of: prompts are left-padded to this bucket width so new lengths reuse compiles.
        prompt_lookup_num_tokens: speculative decoding with prompt lookup: candidates per verify step
            copied from the row's own earlier text (None = off).
        max_matching_ngram_size: prompt lookup matches the row's last n tokens, n from this down to 1.
        num_assistant_tokens: speculative decoding with `assistant_model=`: draft tokens per verify step.
        return_dict: return a GenerateOutput instead of a bare array (also implied by the output_* options).
        output_scores: as HF: GenerateOutput.scores, each step's processed scores (what the token was
            chosen from: log-probs after the processors for beam search), a tuple of max_new_tokens
            [rows, vocab] arrays; beam search adds sequences_scores and beam_indices.
            Costs rows x max_new_tokens x vocab x 4 bytes.
        output_logits: as HF: GenerateOutput.logits, each step's raw logits, same layout and cost.
        output_logprobs: GenerateOutput.logprobs [rows, max_new_tokens]: the log-prob of each chosen
            token under the distribution it was chosen from (0 after EOS); cheap (minigen's own
            option: HF users get it from compute_transition_scores(..., normalize_logits=True)).
    """

    max_new_tokens: int | None = None
    max_length: int | None = None
    min_new_tokens: int = 0
    min_length: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float | None = None
    typical_p: float = 1.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    min_tokens_to_keep: int = 1
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    sequence_bias: tuple = ()  # normalised by check() to ((ids, bias), ...)
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | list[int] | None = None
    exponential_decay_length_penalty: tuple | None = None
    remove_invalid_values: bool = False
    logits_processor: tuple = ()
    stop_strings: tuple[str, ...] = ()
    max_time: float | None = None
    renormalize_logits: bool = False
    penalty_alpha: float | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    seed: tuple[int, int] | None = None
    pad_to_multiple_of: int = 16
    prompt_lookup_num_tokens: int | None = None
    max_matching_ngram_size: int = 2
    num_assistant_tokens: int = 4
    return_dict: bool = False
    output_scores: bool = False
    output_logits: bool = False
    output_logprobs: bool = False

    @classmethod
    def from_options(cls, **options) -> "GenerationConfig":
        """Build from keyword options. The reference's aliases are accepted (ALIASES); an option of
        the reference that minigen lacks is refused as such (NOT_SUPPORTED, with what to do instead);
        any other unknown name is refused with the closest known one."""
        options = normalise_names(options)
        return cls(**options)

    @classmethod
    def from_transformers(cls, config, **options) -> "GenerationConfig":
        """From a `transformers.GenerationConfig`: the fields it sets (its `to_diff_dict()`), then
        `options` over them; a field minigen lacks is refused by name (see from_options)."""
        fields = {k: v for k, v in config.to_diff_dict().items() if k not in IGNORED}
        return cls.from_options(**{**fields, **options})

    def set_fields(self) -> dict:
        """The fields whose values differ from the defaults (what a generation_config.json sets)."""
        default = GenerationConfig()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    @classmethod
    def from_json_file(cls, path) -> tuple["GenerationConfig", list[str]]:
        """A model's defaults from its generation_config.json (HF's file): the fields minigen has,
        checked; returns (config, the names of the file's fields minigen does not use)."""
        import json  # noqa: PLC0415 - only load needs it

        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ValueError(f"{path} is not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        raw = {ALIASES.get(k, k): v for k, v in raw.items() if k not in IGNORED}
        raw = {k: v for k, v in raw.items() if k in known or v not in (None, False, 0, [], {})}  # off: nothing to use
        unused = sorted(k for k in raw if k not in known)
        try:
            config = cls(**{k: v for k, v in raw.items() if k in known}).check()
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return config, unused

    @property
    def strategy(self) -> str:
        """The reference's dispatch: beam search, sampling, contrastive search (penalty_alpha > 0
        and top_k > 1), else greedy search."""
        if self.num_beams > 1:
            return "beam"
        if self.do_sample:
            return "sample"
        return "contrastive" if self.penalty_alpha and self.top_k > 1 else "greedy"

    def check(self, model_config=None, *, streaming: bool = False, continuing: bool = False,
              assistant: bool = False) -> "GenerationConfig":
        """The one place options are checked, alone and together: ValueError naming the first bad
        option and its allowed values. Every caller (generate, stream, text, the CLI, export, batch)
        goes through here before any work. Returns self.

        model_config: the model's GPT2Config, for the checks that need it (None: skip those);
        streaming: tokens are streamed (stream / stream_tokens / --stream);
        continuing: cache= / return_state= (a generation continued later);
        assistant: an assistant_model drafts (speculative decoding).
        """
        self._check_values(model_config)
        speculative = assistant or self.prompt_lookup_num_tokens is not None
        if assistant and self.prompt_lookup_num_tokens is not None:
            raise ValueError("use either assistant_model or prompt_lookup_num_tokens, not both")
        if speculative:
            option = "assistant_model" if assistant else "prompt_lookup_num_tokens"
            if self.num_beams > 1:
                raise ValueError(f"{option} (speculative decoding) needs num_beams=1, got num_beams={self.num_beams}")
            for name, off in READS_ROW_TOKENS:
                if getattr(self, name) != off:
                    raise ValueError(f"{option} (speculative decoding) does not support {name}; leave it at {off}")
            for name in ("output_scores", "output_logits"):
                if getattr(self, name):
                    raise ValueError(f"{option} (speculative decoding) does not return {name}; use output_logprobs "
                                     "for the chosen tokens' log-probs")
        if self.penalty_alpha:
            if self.num_beams > 1 or self.do_sample:
                raise ValueError(f"penalty_alpha (contrastive search) needs num_beams=1 and do_sample=False, got "
                                 f"num_beams={self.num_beams}, do_sample={self.do_sample}; leave penalty_alpha=None "
                                 "for beam search or sampling")
            if speculative:
                raise ValueError("penalty_alpha (contrastive search) does not combine with speculative decoding "
                                 "(assistant_model / prompt_lookup_num_tokens)")
            if continuing and self.strategy == "contrastive":
                raise ValueError("cache/return_state (continuing a generation) support greedy search and sampling, "
                                 "not contrastive search (penalty_alpha)")
        if self.stop_strings and (self.num_beams > 1 or speculative):
            raise ValueError("stop_strings work with greedy search, sampling and contrastive search, not with "
                             "num_beams > 1 or speculative decoding")
        if self.max_time is not None and not streaming:
            raise ValueError("max_time is read between streamed chunks (the whole generate call runs as one "
                             "compiled loop): use stream / stream_tokens (minigen generate --stream), or leave "
                             "it None")
        if self.output_logprobs and self.num_beams > 1:
            raise ValueError("output_logprobs is for greedy search, sampling and contrastive search; with num_beams > 1 "
                             "use output_scores and compute_transition_scores(sequences, scores, beam_indices)")
        if streaming:
            for name in ("output_scores", "output_logits", "output_logprobs", "return_dict"):
                if getattr(self, name):
                    raise ValueError(f"streaming yields token ids only; {name} needs generate")
            if self.num_beams > 1:
                raise ValueError("streaming supports greedy search, sampling and contrastive search, not num_beams > 1")
            if speculative:
                raise ValueError("streaming does not support prompt_lookup_num_tokens or assistant_model; use generate")
        if continuing:
            if speculative:
                raise ValueError("cache/return_state (continuing a generation) do not combine with speculative decoding")
            if self.num_beams > 1:
                raise ValueError("cache/return_state (continuing a generation) support greedy search and sampling, "
                                 "not num_beams > 1")
            if self.num_return_sequences != 1:
                raise ValueError("cache/return_state need num_return_sequences=1: one continuation per row")
        return self

    def _check_int32_ids(self, model_config) -> None:
        """Token ids become int32 tensors: without the model's config (the command line's early check),
        at least that range; with it, the vocabulary's (checked in _check_values)."""
        if model_config is not None:
            return
        for name in ("forced_bos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 0 <= value <= INT32_MAX):
                raise ValueError(f"{name} must be a token id (an int in [0, 2**31 - 1]) or None, got {value!r}")
        for name in ("eos_token_id", "forced_eos_token_id"):
            value = getattr(self, name)
            ids = [value] if _is_int(value) else value if isinstance(value, (list, tuple)) else None
            if value is not None and (ids is None or not all(_is_int(t) and 0 <= t <= INT32_MAX for t in ids)):
                raise ValueError(f"{name} must be a token id, a list of them or None (ids in [0, 2**31 - 1]), "
                                 f"got {value!r}")
        for name, words in (("suppress_tokens", [self.suppress_tokens]), ("begin_suppress_tokens",
                            [self.begin_suppress_tokens]), ("bad_words_ids", self.bad_words_ids),
                            ("sequence_bias", [w for w, _ in self.sequence_bias])):
            if not all(0 <= t <= INT32_MAX for word in words for t in word):
                raise ValueError(f"{name} must be token ids in [0, 2**31 - 1], got {getattr(self, name)!r}")

    def _check_values(self, model_config=None) -> None:
        """Each option's type and range (and, given the model's config, the token ids and bucket)."""

        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if not _is_int(value) or not minimum <= value <= INT32_MAX:
                raise ValueError(f"{name} must be an integer >= {minimum} (at most 2**31 - 1), got {value!r}")

        def finite(name, allowed: str, ok=lambda v: True):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or not ok(value):
                raise ValueError(f"{name} must be {allowed}, got {value!r}")
            if not fits_float32(value):
                raise ValueError(f"{name} must be {allowed} that float32 can hold (0, or a magnitude between "
                                 f"{FLOAT32.tiny:.3g} and {FLOAT32.max:.3g}), got {value!r}")

        if self.max_new_tokens is not None:
            positive_int("max_new_tokens")
        if self.max_length is not None:
            positive_int("max_length")
        positive_int("min_new_tokens", 0)
        positive_int("min_length", 0)
        positive_int("num_beams")
        positive_int("num_return_sequences")
        positive_int("no_repeat_ngram_size", 0)
        positive_int("pad_to_multiple_of")
        positive_int("top_k", 0)
        positive_int("max_matching_ngram_size")
        positive_int("num_assistant_tokens")
        if self.prompt_lookup_num_tokens is not None:
            positive_int("prompt_lookup_num_tokens")
        for name in ("do_sample", "return_dict", "output_scores", "output_logits", "output_logprobs",
                     "remove_invalid_values", "renormalize_logits"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        finite("temperature", "a finite number > 0", lambda v: v > 0)
        finite("top_p", "in (0, 1]", lambda v: 0 < v <= 1)
        if self.min_p is not None:
            finite("min_p", "None or a number in [0, 1]", lambda v: 0 <= v <= 1)
        finite("typical_p", "in (0, 1] (1.0 = off)", lambda v: 0 < v <= 1)
        finite("epsilon_cutoff", "in [0, 1) (0 = off)", lambda v: 0 <= v < 1)
        finite("eta_cutoff", "in [0, 1) (0 = off)", lambda v: 0 <= v < 1)
        if not _is_int(self.min_tokens_to_keep) or not 1 <= self.min_tokens_to_keep <= 256:
            raise ValueError(f"min_tokens_to_keep must be an integer in [1, 256], got {self.min_tokens_to_keep!r}")
        if not self.do_sample:
            for name, off in SAMPLING_ONLY.items():
                if name == "top_k" and self.penalty_alpha is not None:
                    continue  # contrastive search's candidates
                if getattr(self, name) not in off:
                    raise ValueError(f"{name} is a sampling warper: set do_sample=True, or leave it at "
                                     f"{' or '.join(map(str, off))} "
                                     "(greedy and beam search take the most likely tokens"
                                     + (", contrastive search reads top_k with penalty_alpha)" if name == "top_k" else ")"))
        finite("repetition_penalty", "a finite number > 0 (1.0 = off)", lambda v: v > 0)
        finite("length_penalty", "a finite number")
        if self.max_time is not None:
            finite("max_time", "None or a number of seconds > 0", lambda v: v > 0)
        if self.penalty_alpha is not None:
            finite("penalty_alpha", "None or a number in [0, 1] (0 = off)", lambda v: 0 <= v <= 1)
        if self.early_stopping not in (True, False, "never") or not isinstance(self.early_stopping, (bool, str)):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if self.num_beams > 1 and self.do_sample:
            raise ValueError("do_sample=True with num_beams > 1 (beam sampling) is not supported; use one or the other")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams ({self.num_beams})"
            )
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences != 1:
            raise ValueError("num_return_sequences > 1 needs do_sample=True or num_beams >= num_return_sequences")
        for name in ("suppress_tokens", "begin_suppress_tokens"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(_is_int(t) for t in value):
                raise ValueError(f"{name} must be a list of token ids, got {value!r}")
            setattr(self, name, tuple(int(t) for t in value))
        words = self.bad_words_ids
        if not isinstance(words, (list, tuple)) or not all(
                isinstance(w, (list, tuple)) and w and all(_is_int(t) for t in w) for w in words):
            raise ValueError(f"bad_words_ids must be a list of non-empty lists of token ids, e.g. [[12], [7, 9]], "
                             f"got {words!r}")
        self.bad_words_ids = tuple(tuple(int(t) for t in w) for w in words)
        self.sequence_bias = _bias_pairs(self.sequence_bias)
        stops = (self.stop_strings,) if isinstance(self.stop_strings, str) else self.stop_strings
        if not isinstance(stops, (list, tuple)) or not all(isinstance(t, str) and t for t in stops):
            raise ValueError(f"stop_strings must be a non-empty string or a list of them, got {self.stop_strings!r}")
        for i, text in enumerate(stops):
            if not _is_text(text):
                raise ValueError(f"stop_strings[{i}] holds a lone surrogate, which is not valid Unicode text "
                                 f"(often an undecodable byte from the command line or a JSON \\ud800 escape): {text!r}")
        if len(stops) > MAX_STOP_STRINGS or sum(len(t.encode("utf-8")) for t in stops) > MAX_STOP_BYTES:
            raise ValueError(f"stop_strings: at most {MAX_STOP_STRINGS} strings of {MAX_STOP_BYTES} UTF-8 bytes in "
                             f"all, got {len(stops)} of {sum(len(t.encode('utf-8')) for t in stops)} bytes (each "
                             "string is a table checked inside the compiled loop)")
        self.stop_strings = tuple(stops)
        fns = self.logits_processor
        if not isinstance(fns, (list, tuple)) or not all(callable(f) for f in fns):
            raise ValueError(f"logits_processor must be a list of functions fn(sequences, valid, generated, logits) "
                             f"-> logits, got {fns!r}")
        self.logits_processor = tuple(f if isinstance(f, KeyedProcessor) else KeyedProcessor(f) for f in fns)
        decay = self.exponential_decay_length_penalty
        if decay is not None:
            if (not isinstance(decay, (list, tuple)) or len(decay) != 2 or not _is_int(decay[0])
                    or not 0 <= decay[0] <= INT32_MAX or not _is_number(decay[1]) or not math.isfinite(decay[1])
                    or decay[1] < 1 or not fits_float32(decay[1])):
                raise ValueError(f"exponential_decay_length_penalty must be (start, factor): an int >= 0 and a "
                                 f"finite number >= 1 (1 = off), the start at most 2**31 - 1, got {decay!r}")
            self.exponential_decay_length_penalty = (int(decay[0]), float(decay[1]))
        if self.forced_bos_token_id is not None and not _is_int(self.forced_bos_token_id):
            raise ValueError(f"forced_bos_token_id must be a token id or None, got {self.forced_bos_token_id!r}")
        forced = self.forced_eos_token_id
        if forced is not None:
            ids = [forced] if _is_int(forced) else forced
            if not isinstance(ids, (list, tuple)) or not ids or not all(_is_int(t) for t in ids):
                raise ValueError(f"forced_eos_token_id must be a token id, a non-empty list of them or None, got {forced!r}")
        self._check_int32_ids(model_config)
        if not all(fits_float32(bias) for _, bias in self.sequence_bias):
            raise ValueError(f"sequence_bias values must be numbers float32 can hold (0, or a magnitude between "
                             f"{FLOAT32.tiny:.3g} and {FLOAT32.max:.3g}), got {self.sequence_bias!r}")
        if len(self.bad_words_ids) > MAX_WORDS or len(self.sequence_bias) > MAX_WORDS:
            name = "bad_words_ids" if len(self.bad_words_ids) > MAX_WORDS else "sequence_bias"
            raise ValueError(f"{name}: at most {MAX_WORDS} entries (each step checks every one), got "
                             f"{len(getattr(self, name))}")
        if self.seed is not None:
            seed = tuple(self.seed) if isinstance(self.seed, (list, tuple)) else None
            if seed is None or len(seed) != 2 or not all(_is_int(s) and -(2**31) <= s < 2**31 for s in seed):
                raise ValueError(f"seed must be a pair of 32-bit ints, e.g. (0, 42), got {self.seed!r}")
        if model_config is not None:
            if self.pad_to_multiple_of > model_config.n_positions:
                raise ValueError(f"pad_to_multiple_of must be at most the model's n_positions "
                                 f"({model_config.n_positions}), got {self.pad_to_multiple_of}")
            vocab = model_config.vocab_size
            eos = self.eos_token_id
            for token in (eos if isinstance(eos, (list, tuple)) else [eos]) if eos is not None else []:
                if not _is_int(token) or not 0 <= token < vocab:
                    raise ValueError(f"eos_token_id must be token id(s) in [0, {vocab}), got {self.eos_token_id!r}")
            if self.forced_bos_token_id is not None and not 0 <= self.forced_bos_token_id < vocab:
                raise ValueError(f"forced_bos_token_id must be a token id in [0, {vocab}), got {self.forced_bos_token_id!r}")
            if self.forced_eos_token_id is not None and not all(0 <= t < vocab for t in self.forced_eos_ids):
                raise ValueError(f"forced_eos_token_id must be token id(s) in [0, {vocab}), got {self.forced_eos_token_id!r}")
            for name in ("suppress_tokens", "begin_suppress_tokens"):
                if not all(0 <= token < vocab for token in getattr(self, name)):
                    raise ValueError(f"{name} must be token ids in [0, {vocab}), got {getattr(self, name)!r}")
            if not all(0 <= token < vocab for word, _ in self.sequence_bias for token in word):
                raise ValueError(f"sequence_bias must hold token ids in [0, {vocab}), got {self.sequence_bias!r}")
            if not all(0 <= token < vocab for word in self.bad_words_ids for token in word):
                raise ValueError(f"bad_words_ids must hold token ids in [0, {vocab}), got {self.bad_words_ids!r}")
            if self.strategy == "contrastive" and self.top_k > vocab:
                raise ValueError(f"top_k (contrastive search's candidates) must be at most the vocabulary size "
                                 f"({vocab}), got {self.top_k}")
            pad = self.pad_token_id
            if pad is not None and (not _is_int(pad) or not 0 <= pad < vocab):
                raise ValueError(f"pad_token_id must be a token id in [0, {vocab}), got {pad!r}")

    # -- resolved values --

    def for_prompt(self, width: int) -> "GenerationConfig":
        """This config for prompts `width` tokens wide (padding included, as HF counts): the length
        options become max_new_tokens (given, else max_length - width, else 20) and min_new_tokens
        (the later of it and min_length - width); forced_bos_token_id is kept only for a 1-token
        prompt, the only case where HF's ForcedBOS fires (at length 1)."""
        max_new = self.max_new_tokens
        if max_new is None and self.max_length is not None:
            max_new = self.max_length - width
            if max_new < 1:
                raise ValueError(f"max_length ({self.max_length}) must exceed the prompt's width ({width} tokens, "
                                 "padding included); set max_new_tokens instead")
        return dataclasses.replace(
            self, max_new_tokens=20 if max_new is None else max_new,
            min_new_tokens=max(self.min_new_tokens, self.min_length - width),
            forced_bos_token_id=self.forced_bos_token_id if width == 1 else None)

    @property
    def forced_eos_ids(self) -> tuple[int, ...]:
        forced = self.forced_eos_token_id
        return () if forced is None else (int(forced),) if _is_int(forced) else tuple(int(t) for t in forced)

    @property
    def forced_eos(self) -> tuple:
        """The forced-EOS processor's setting: ((ids), the step it fires at) or () when off."""
        return (self.forced_eos_ids, self.max_new_tokens - 1) if self.forced_eos_ids else ()

    @property
    def begin_suppress(self) -> tuple:
        """The begin-suppress processor's setting: ((ids), the step it fires at; HF's begin index moves
        one on when a BOS is forced first) or () when off."""
        if not self.begin_suppress_tokens:
            return ()
        return (self.begin_suppress_tokens, 0 if self.forced_bos_token_id is None else 1)

    def eos_ids(self, model_config) -> tuple[int, ...]:
        """EOS ids in the vocabulary (a config default such as 50256 on a small vocab can never occur)."""
        eos = self.eos_token_id if self.eos_token_id is not None else model_config.eos_token_id
        if eos is None:
            return ()
        ids = (eos,) if _is_int(eos) else tuple(eos)
        return tuple(int(t) for t in ids if 0 <= t < model_config.vocab_size)

    def pad_id(self, model_config) -> int:
        """HF's rule: the pad id, else the model's pad id, else the first EOS id, else 0."""
        for candidate in (self.pad_token_id, model_config.pad_token_id):
            if candidate is not None:
                return int(candidate)
        eos = self.eos_ids(model_config)
        return int(eos[0]) if eos else 0
