"""`minigen.GPT2`, what `minigen.load` returns: the network (model.py), its tokenizer and its
compiled functions, with the entry points users call. The network knows nothing of this module;
generation, text and export are imported here, one way.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from . import engine as engines
from . import export as exporting
from . import scoring
from . import text
from .compile_cache import DEFAULT_SIZE, CompileCache
from .status import compile_notice
from .config import GPT2Config
from .generation import generate as generation
from .generation import outputs
from .generation.config import GenerationConfig
from .generation.inputs import prepare_logits_inputs
from .model import Transformer


@dataclasses.dataclass
class LogitsOutput:
    """What `GPT2.logits(..., output_hidden_states=True or output_attentions=True)` returns."""

    logits: np.ndarray  # [batch, seq, vocab]
    hidden_states: tuple | None = None  # n_layer + 1 x [batch, seq, d]
    attentions: tuple | None = None  # n_layer x [batch, heads, seq, seq]


class GPT2:
    """A GPT-2 ready to generate.

    Attributes:
        network: the `Transformer` (weights and forward phases).
        config: its GPT2Config.
        tokenizer: a `minigen.Tokenizer`, or None (set by `minigen.load` when the directory has one).
        generation_config: the defaults of `generate` (a GenerationConfig; `minigen.load` reads the
            directory's generation_config.json, as transformers does); options given to a call win.
        compile_cache: the compiled functions, least recently used evicted beyond
            `compile_cache.maxsize` (default 16; `minigen.load(..., compile_cache_size=)`);
            `compile_cache.clear()` drops them all.
        trace_count: how many times a function of this model was traced (each trace precedes a compile).
        dtype: what the weight matrices compute in (`minigen.load(..., dtype=)`).
    """

    def __init__(self, config: GPT2Config, params: dict[str, np.ndarray], dtype="float32",
                 compile_cache_size: int = DEFAULT_SIZE, tokenizer=None):
        self.network = Transformer(config, params, dtype)
        self.config = config
        self.tokenizer = tokenizer
        self.generation_config = GenerationConfig()
        self.compile_cache = CompileCache(compile_cache_size)

    @property
    def trace_count(self) -> int:
        return self.compile_cache.traces

    @property
    def dtype(self) -> str:
        """What the weight matrices are held and multiplied in: "float32", "bfloat16", "float16"
        (storage only) or "int8" (minigen/precision.py)."""
        return self.network.dtype

    def logits(self, input_ids, attention_mask=None, output_hidden_states: bool = False,
               output_attentions: bool = False):
        """Full-sequence logits, float32 [batch, seq, vocab]. Pads may be on either side; positions
        come from the mask, so each row gives the logits of that prompt alone at its real positions.

        output_hidden_states / output_attentions: return a LogitsOutput instead, with HF's
        hidden_states (n_layer + 1 arrays [batch, seq, d]: the embeddings, each block's output, the
        last after the final layer norm) and attentions (n_layer arrays [batch, heads, seq, seq] of
        attention probabilities; 0 for padded keys, rows of padded queries are meaningless).
        """
        for name, value in (("output_hidden_states", output_hidden_states), ("output_attentions", output_attentions)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        ids, mask, width = prepare_logits_inputs(self.config, input_ids, attention_mask)
        net = self.network
        layers = output_hidden_states or output_attentions

        def run(ids, mask):
            if not layers:
                hidden, _, _ = net.prefill(ids, mask, ids.shape[1])
                return net.lm_head(hidden)
            hidden, _, _, (states, probs) = net.prefill(ids, mask, ids.shape[1], keep_layers=True)
            return net.lm_head(hidden), states, probs

        key = ("logits", ids.shape, layers)
        fresh = key not in self.compile_cache
        fn = self.compile_cache.compiled(key, run)
        with compile_notice(f"logits for {ids.shape[0]} x {ids.shape[1]} tokens", fresh):
            result = fn(tf.constant(ids), tf.constant(mask))
        if not layers:
            return result.numpy()[:, :width]
        logits, states, probs = result
        return LogitsOutput(
            logits=logits.numpy()[:, :width],
            hidden_states=tuple(h.numpy()[:, :width] for h in states) if output_hidden_states else None,
            attentions=tuple(p.numpy()[:, :, :width, :width] for p in probs) if output_attentions else None)

    @staticmethod
    def compute_transition_scores(sequences, scores, beam_indices=None, normalize_logits: bool = False):
        """Each generated token's score from generate's output_scores, as HF's method of this name;
        see `minigen.generation.outputs.compute_transition_scores`."""
        return outputs.compute_transition_scores(sequences, scores, beam_indices, normalize_logits)

    def generate(self, input_ids=None, attention_mask=None, **options):
        """Generate continuations; see `minigen.generation.generate.generate` for the options
        (including cache=/return_state= to continue a conversation without recomputing it).
        `inputs=` (the reference's name) is accepted for input_ids."""
        if "inputs" in options:
            if input_ids is not None:
                raise ValueError("pass input_ids or inputs (the reference's name for it), not both")
            input_ids = options.pop("inputs")
        if input_ids is None:
            raise ValueError("generate needs input_ids: a [batch, length] array of token ids (GPT-2 has no BOS "
                             "to start from; encode a prompt with model.tokenizer)")
        return generation.generate(self, input_ids, attention_mask, **options)

    def stream_tokens(self, input_ids, attention_mask=None, chunk_size: int = 8, **options):
        """Yield new token ids [batch, n] chunk by chunk; see `minigen.generation.generate.stream`."""
        return generation.stream(self, input_ids, attention_mask, chunk_size=chunk_size, **options)

    def generate_text(self, prompts, return_full_text: bool = False, **options) -> list[str]:
        """Continue text prompts with this model's tokenizer; see `minigen.text.generate_text`."""
        return text.generate_text(self, prompts, return_full_text, **options)

    def stream(self, prompt: str, chunk_size: int = 8, **options):
        """Yield text pieces of one prompt's continuation as they are generated; see `minigen.text.stream_text`."""
        return text.stream_text(self, prompt, chunk_size, **options)

    def generate_many(self, requests, slots: int = 16, max_length: int | None = None, chunk_size: int = 16,
                      progress: bool | None = None, prefix_cache: int = 4) -> list:
        """Run many requests, each with its own prompt and options, over `slots` slots of one compiled
        loop (continuous batching); one Result per request, in input order. See `minigen.engine`."""
        return engines.generate_many(self, requests, slots, max_length, chunk_size, progress, prefix_cache)

    def engine(self, slots: int = 16, max_length: int | None = None, chunk_size: int = 16,
               prefix_cache: int = 4, top_logprobs: int = 0) -> "engines.Engine":
        """An incremental request engine (submit, cancel, iterate over results); see `minigen.engine`.
        top_logprobs: the most likely tokens kept per step, the most a request may ask for."""
        return engines.Engine(self, slots, max_length, chunk_size, prefix_cache, top_logprobs)

    def loglikelihood(self, requests, batch_size: int = 16, progress: bool | None = None) -> list[tuple[float, bool]]:
        """Per (context, continuation) request, text or ids: (the continuation's summed log-prob, whether
        it is the greedy continuation), by lm-evaluation-harness's rules; see `minigen.scoring`."""
        return scoring.loglikelihood(self, requests, batch_size, progress)

    def loglikelihood_rolling(self, texts, batch_size: int = 16, progress: bool | None = None) -> list[float]:
        """Per text (or ids): its summed log-prob, every token predicted once; see `minigen.scoring`."""
        return scoring.loglikelihood_rolling(self, texts, batch_size, progress)

    def perplexity(self, texts, batch_size: int = 16, progress: bool | None = None) -> list[float]:
        """Per text (or ids): exp(-loglikelihood_rolling / its tokens); see `minigen.scoring`."""
        return scoring.perplexity(self, texts, batch_size, progress)

    def export(self, out_dir: str, **options) -> str:
        """Write a TensorFlow SavedModel of the compiled generate; see `minigen.export.export`."""
        return exporting.export(self, out_dir, **options)
