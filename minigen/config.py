"""GPT2Config: the model's hyper-parameters, read from a Hugging Face `config.json`."""

from __future__ import annotations

import dataclasses
import json
import math
import os

# Activations GPT-2 checkpoints in the wild declare, and whether we implement them.
# "gelu_new", "gelu_fast" and "gelu_pytorch_tanh" are the same tanh approximation.
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu", "relu", "silu", "swish", "quick_gelu")


class ConfigError(ValueError):
    """A config.json that does not describe a GPT-2 minigen can run."""


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """GPT-2 hyper-parameters, with Hugging Face's field names and defaults."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None

    def __post_init__(self):
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def validate(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {value!r}")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ConfigError(f"config field 'n_inner' must be a positive integer or null, got {self.n_inner!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) to split attention heads"
            )
        if self.activation_function not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"activation_function {self.activation_function!r} is not implemented; "
                f"supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        eps = self.layer_norm_epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"layer_norm_epsilon must be a finite positive number, got {eps!r}")
        for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field {name!r} must be true or false, got {getattr(self, name)!r}")
        self._check_token_id("bos_token_id", self.bos_token_id)
        eos = self.eos_token_id
        if isinstance(eos, list):
            for token in eos:
                self._check_token_id("eos_token_id", token)
        elif eos is not None:
            self._check_token_id("eos_token_id", eos)
        self._check_token_id("pad_token_id", self.pad_token_id)
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            # unlike bos/eos (below), a pad id is written into outputs: it must be a real token
            raise ConfigError(f"config field 'pad_token_id' is {self.pad_token_id}, outside the vocabulary "
                              f"[0, {self.vocab_size})")

    def _check_token_id(self, name, value):
        if value is None:
            return
        # HF's GPT2Config defaults bos/eos to 50256 even for small vocabularies; such an id can never
        # be generated, so it is accepted here and simply never matches (see GenerationConfig.eos_ids).
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            what = "a non-negative token id" + (" or a list of them" if name == "eos_token_id" else "")
            raise ConfigError(f"config field {name!r} must be {what}, got {value!r}")

    # ---- reading and writing -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: dict) -> "GPT2Config":
        """Build a config from a Hugging Face GPT-2 config dictionary."""
        model_type = raw.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ConfigError(f"model_type is {model_type!r}; minigen runs GPT-2 checkpoints (model_type 'gpt2')")
        if raw.get("add_cross_attention"):
            raise ConfigError("add_cross_attention=true (encoder-decoder GPT-2) is not supported")
        values = dict(raw)
        if "n_positions" not in values and "n_ctx" in values:  # old checkpoints name the context n_ctx
            values["n_positions"] = values["n_ctx"]
        required = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
        missing = [name for name in required if name not in values]
        if missing:
            raise ConfigError(f"config.json is missing required field(s): {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "GPT2Config":
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {os.fspath(path)}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{os.fspath(path)} is not valid JSON: {e}") from None
        except RecursionError:
            raise ConfigError(f"{os.fspath(path)} is nested too deeply to be a config.json") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{os.fspath(path)} must hold a JSON object")
        return cls.from_dict(raw)
