"""GenerationConfig: the options of `generate`, one field per row of options.OPTIONS (Hugging Face's
names and defaults), and the one place they are checked."""

from __future__ import annotations

import dataclasses
import difflib
import typing

from .options import DRAFT_ONLY, dola_candidates
from .options import (ALIASES, BY_NAME, CONSTRAINT_OPTIONS, CONTINUE, GENERATE, IGNORED, INT32_MAX, NOT_SUPPORTED,
                      OPTIONS, STREAM, _is_int,
                      check_combination, check_value, doc_lines)

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
    known = list(BY_NAME)
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


class _Methods:
    """GenerationConfig's methods (its fields come from options.OPTIONS)."""

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
        known = set(BY_NAME)
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
        """The reference's dispatch: beam search (diverse with num_beam_groups, beam sampling with do_sample), sampling, contrastive search (penalty_alpha > 0
        and top_k > 1), else greedy search."""
        if self.num_beams > 1:
            return "group_beam" if self.num_beam_groups > 1 else "beam_sample" if self.do_sample else "beam"
        if self.do_sample:
            return "sample"
        return "contrastive" if self.penalty_alpha and self.top_k > 1 else "greedy"

    def check(self, model_config=None, *, streaming: bool = False, continuing: bool = False,
              assistant: bool = False) -> "GenerationConfig":
        """The one place options are checked, alone and together: ValueError naming the first bad
        option and its allowed values. Every caller (generate, stream, text, the CLI, export, batch)
        goes through here before any work. Returns self, its values in the form the code reads.

        Each option by its row's rule (options.OPTIONS), then the values that bound each other, then
        (given the model's GPT2Config) the token ids and sizes, then the strategy x option x mode
        matrix (options.check_combination). streaming: tokens are streamed (stream / stream_tokens /
        --stream); continuing: cache= / return_state= (a generation continued later); assistant: an
        assistant_model drafts (speculative decoding).
        """
        for option in OPTIONS:
            setattr(self, option.name, check_value(option, getattr(self, option.name)))
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams ({self.num_beams})")
        if self.num_beams > 1 and self.num_beam_groups > 1:
            if self.num_beams % self.num_beam_groups:
                raise ValueError(f"num_beams ({self.num_beams}) must be a multiple of num_beam_groups "
                                 f"({self.num_beam_groups}): each group has num_beams / num_beam_groups beams")
            if not self.diversity_penalty:
                raise ValueError("diversity_penalty must be > 0 with num_beam_groups > 1 (diverse beam search): at 0 "
                                 "every group is the same beam search")
        given = [name for name in CONSTRAINT_OPTIONS if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of regex, json_schema and choices, got {' and '.join(given)}")
        self._check_ids(model_config)
        if model_config is not None:
            self._check_model(model_config)
        if assistant and self.prompt_lookup_num_tokens is not None:
            raise ValueError("use either assistant_model or prompt_lookup_num_tokens, not both")
        for name in DRAFT_ONLY:
            if not assistant and not BY_NAME[name].is_off(getattr(self, name)):
                raise ValueError(f"{name} is for speculative decoding with assistant_model (a draft model); leave "
                                 f"it at {BY_NAME[name].default}")
        speculation = "assistant_model" if assistant else \
            "prompt_lookup_num_tokens" if self.prompt_lookup_num_tokens is not None else ""
        modes = {STREAM if streaming else GENERATE} | ({CONTINUE} if continuing else set())
        check_combination(self, speculation, frozenset(modes))
        return self

    def _check_ids(self, model_config) -> None:
        """Token ids (the rows with `ids`) in the model's vocabulary; without its config (the command
        line's early check) at least in int32's range, as they become int32 tensors."""
        limit, shown = (model_config.vocab_size, model_config.vocab_size) if model_config is not None else \
            (INT32_MAX + 1, "2**31 - 1]")
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.ids is not None and not all(0 <= t < limit for t in option.ids(value)):
                what = "a token id" if _is_int(value) else "token ids"
                close = ")" if model_config is not None else ""
                raise ValueError(f"{option.name} must be {what} in [0, {shown}{close}, got {value!r}")

    def _check_model(self, model_config) -> None:
        """The checks that need the model: sizes within its context and vocabulary."""
        if self.pad_to_multiple_of > model_config.n_positions:
            raise ValueError(f"pad_to_multiple_of must be at most the model's n_positions "
                             f"({model_config.n_positions}), got {self.pad_to_multiple_of}")
        vocab = model_config.vocab_size
        if self.dola_layers is not None and not dola_candidates(self.dola_layers, model_config.n_layer,
                                                                model_config.tie_word_embeddings):
            raise ValueError(f"dola_layers={self.dola_layers!r} selects no premature layer of this "
                             f"{model_config.n_layer}-layer model (layers are 0 to {model_config.n_layer - 1}; "
                             "'low' and 'high' follow transformers' rule)")
        if self.strategy == "contrastive" and self.top_k > vocab:
            raise ValueError(f"top_k (contrastive search's candidates) must be at most the vocabulary size "
                             f"({vocab}), got {self.top_k}")

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
    def constraint(self) -> tuple | None:
        """Structured output's (option, value): ("regex" | "json_schema" | "choices", value), or None."""
        for name in CONSTRAINT_OPTIONS:
            if getattr(self, name) is not None:
                return name, getattr(self, name)
        return None

    @property
    def constrained(self) -> bool:
        """Whether the structured-output mask is in the graph (its table travels as tensors)."""
        return self.constraint is not None

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


GenerationConfig = dataclasses.make_dataclass(
    "GenerationConfig", [(o.name, typing.Any, dataclasses.field(default=o.default)) for o in OPTIONS],
    bases=(_Methods,))
GenerationConfig.__module__ = __name__  # make_dataclass's own `module=` needs Python 3.12
GenerationConfig.__doc__ = f"""Options for `generate`. Names and defaults follow Hugging Face's `GenerationConfig`;
one field per row of minigen.generation.options.OPTIONS, whose rows also give each option's check,
the strategies and modes that take it, its command-line flag and whether a SavedModel takes it.

Attributes:
{doc_lines()}
"""
