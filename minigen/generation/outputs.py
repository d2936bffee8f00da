"""What `generate` returns beyond the token ids, on the host (numpy): GenerateOutput, the state to
continue a conversation from, the per-step scores in Hugging Face's layout, and
`compute_transition_scores`.

The compiled loops keep per-step scores step-major, [max_new, rows, vocab]; they stop once every row
has finished. minigen's `sequences` always hold max_new_tokens new columns (pad after EOS), so its
`scores` and `logits` always hold one entry per new column too: where the loop had stopped, the
entry says what the sequences hold there: pad with certainty (0 at pad_token_id, -inf elsewhere).
The reference (HF) returns only the steps it ran, with its sequences cut to match.
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np

from ..cache import KVCache


@dataclasses.dataclass
class GenerateOutput:
    """What `generate(..., return_dict=True)` (or any output_* option) returns.

    sequences: [batch * num_return_sequences, prompt_width + max_new_tokens] int32.
    scores: output_scores: a tuple of max_new_tokens arrays [rows, vocab] float32, one per new column,
        each step's processed scores: what the token was chosen from (greedy/sampling/contrastive: the
        logits after the processors and, sampling, the warpers; beam search: the log-probs after the
        processors, rows = batch * num_beams in the beams' order of that step). `np.stack(scores)`
        gives [max_new_tokens, rows, vocab].
    logits: output_logits: the raw logits, same layout.
    logprobs: output_logprobs: [rows, max_new_tokens] the log-prob of each chosen token (0 after EOS).
    top_logprobs, top_tokens: top_logprobs=k: [rows, max_new_tokens, k] float32 / int32, each step's k
        most likely tokens and their log-probs under the distribution the token was chosen from, best
        first (after EOS: log-probs 0, tokens -1).
    sequences_scores: beam search with output_scores: [rows] length-penalised hypothesis scores.
    beam_indices: beam search with output_scores: [rows, max_new_tokens] int32, the beam row (of
        `scores`' rows) each token was chosen in, -1 past the hypothesis' end.
    state: with return_state=True: pass as generate(..., cache=state).
    speculation: speculative decoding: verify_steps, mean_accepted_tokens (candidates accepted per row
        and verify step), tokens_per_step (mean_accepted_tokens + 1: the target adds one of its own),
        mean_proposed_tokens (candidates proposed per row and verify step: less than the block's width
        when the draft adapts, num_assistant_tokens_schedule / assistant_confidence_threshold).
    incomplete: structured output (regex / json_schema / choices): [rows] bool, the row's text is only a
        prefix of a match (max_new_tokens ran out first, or a stop string ended it).
    hidden_states: output_hidden_states: a tuple, one entry per generated token, of n_layer + 1 arrays
        (the embeddings, each block's output, the last after the final layer norm) from the forward
        pass that gave that token's logits: [rows, prompt width, d] for the first (the prompt's pass),
        [rows, 1, d] after, as the reference's. Padding positions hold what the model computed there.
    attentions: output_attentions: the same per token, n_layer arrays of attention probabilities
        [rows, heads, prompt width, prompt width] for the first, [rows, heads, 1, prompt width + i]
        for token i.
    """

    sequences: np.ndarray
    scores: tuple | None = None
    logits: tuple | None = None
    logprobs: np.ndarray | None = None
    top_logprobs: np.ndarray | None = None
    top_tokens: np.ndarray | None = None
    sequences_scores: np.ndarray | None = None
    beam_indices: np.ndarray | None = None
    state: "GenerationState | None" = None
    speculation: dict | None = None
    incomplete: np.ndarray | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None

    # as the reference's ModelOutput: out["sequences"], out[0] (the fields that are set, in order), keys()
    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, item):
        if isinstance(item, str):
            if item not in self.keys():
                raise KeyError(f"{item!r}: this output holds {', '.join(self.keys())}")
            return getattr(self, item)
        return getattr(self, self.keys()[item])

    def __contains__(self, item) -> bool:
        return item in self.keys()


@dataclasses.dataclass
class GenerationState:
    """What `generate(..., return_state=True)` returns in `.state`: pass it back as
    `generate(new_ids, cache=state)` to continue without recomputing what came before.

    sequences, mask: [rows, width], every slot so far: prompts (left padding has mask 0), generated
    tokens, and pads after a row's EOS (mask 0). The cache holds the keys/values of slots
    [0, width - 1); the last slot's token is run through the model by the next call.
    """

    cache: KVCache
    sequences: np.ndarray
    mask: np.ndarray
    model: "weakref.ref | None" = None  # the model that made it: a cache is only valid with its weights

    @property
    def width(self) -> int:
        return self.sequences.shape[1]


def generated_mask(new_tokens: np.ndarray, eos_ids: tuple) -> np.ndarray:
    """1 for generated tokens up to and including each row's first EOS, 0 for the pads after it."""
    if not eos_ids:
        return np.ones_like(new_tokens, np.int32)
    hit = np.isin(new_tokens, eos_ids)
    before = np.cumsum(hit, axis=1) - hit  # EOS seen strictly before this token
    return (before == 0).astype(np.int32)


def per_step(kept: np.ndarray, steps: int, pad_id: int) -> tuple:
    """A loop's step-major [max_new, rows, vocab] buffer as HF's tuple of [rows, vocab] arrays, the
    entries after `steps` (the loop had stopped: every row was finished) a certainty of pad."""
    kept = np.array(kept)
    kept[steps:] = -np.inf
    kept[steps:, :, pad_id] = 0.0
    return tuple(kept)


def compute_transition_scores(sequences, scores, beam_indices=None, normalize_logits: bool = False) -> np.ndarray:
    """Each generated token's score at the step it was chosen, as HF's `compute_transition_scores`.

    sequences: [rows, width] whose last len(scores) columns are the generated tokens (minigen's
        `sequences` always end with max_new_tokens of them, as many as `scores` has entries).
    scores: generate's `scores` (or `logits`): len(scores) arrays [beam rows, vocab].
    beam_indices: beam search's [rows, len(scores)] (-1 past a hypothesis' end, scored 0); None
        for greedy search and sampling (row i's tokens were chosen in row i).
    normalize_logits: log-softmax each step's scores first (log-probs from raw logits or sampling's
        warped scores).
    Returns float32 [rows, len(scores)]; summed over a beam hypothesis and divided by its length **
    length_penalty it gives sequences_scores (with normalize_logits=False).
    """
    if not isinstance(scores, (tuple, list)) or not scores:
        raise ValueError(f"scores must be generate's scores (or logits): a non-empty tuple of [rows, vocab] arrays, "
                         f"as generate(..., output_scores=True) returns; got {type(scores).__name__}")
    try:
        stacked = np.stack([np.asarray(s, np.float32) for s in scores])  # [steps, beam rows, vocab]
    except (ValueError, TypeError) as e:
        raise ValueError(f"scores must be a tuple of [rows, vocab] float arrays of one shape: {e}") from None
    if stacked.ndim != 3:
        raise ValueError(f"scores must be a tuple of [rows, vocab] arrays, got arrays of shape {stacked.shape[1:]}")
    steps, vocab = stacked.shape[0], stacked.shape[2]
    sequences = np.asarray(sequences)
    if sequences.ndim != 2 or sequences.shape[1] < steps:
        raise ValueError(f"sequences must be [rows, width] with at least len(scores) = {steps} columns, "
                         f"got shape {sequences.shape}")
    if not np.issubdtype(sequences.dtype, np.integer):
        raise ValueError(f"sequences must hold integer token ids, got dtype {sequences.dtype}")
    generated = sequences[:, -steps:]
    if ((generated < 0) | (generated >= vocab)).any():
        bad = generated[(generated < 0) | (generated >= vocab)][0]
        raise ValueError(f"sequences holds token id {int(bad)} outside the scores' vocabulary [0, {vocab})")
    if normalize_logits:
        top = np.max(stacked, axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            stacked = stacked - top - np.log(np.sum(np.exp(stacked - top), axis=-1, keepdims=True))
    tokens = sequences[:, -steps:]  # [rows, steps]
    if beam_indices is None:
        if stacked.shape[1] != len(sequences):
            raise ValueError(f"scores have {stacked.shape[1]} rows but sequences {len(sequences)}: pass "
                             "beam_indices for beam search")
        beams = np.broadcast_to(np.arange(len(sequences))[:, None], tokens.shape)
    else:
        beams = np.asarray(beam_indices)
        if beams.ndim != 2 or not np.issubdtype(beams.dtype, np.integer):
            raise ValueError(f"beam_indices must be an integer array [rows, len(scores)], got "
                             f"{beams.dtype} {list(beams.shape)}")
        beams = beams[:, :steps]
        if beams.shape != tokens.shape:
            raise ValueError(f"beam_indices must be [rows, len(scores)] = {list(tokens.shape)}, got {list(beams.shape)}")
        if ((beams < -1) | (beams >= stacked.shape[1])).any():
            raise ValueError(f"beam_indices must be beam rows of scores in [0, {stacked.shape[1]}) or -1 (past a "
                             f"hypothesis' end), got {int(beams[(beams < -1) | (beams >= stacked.shape[1])][0])}")
    ended = beams < 0
    picked = stacked[np.arange(steps)[None, :], np.where(ended, 0, beams), tokens]  # [rows, steps]
    return np.where(ended, 0.0, picked).astype(np.float32)
