"""Token healing (`token_healing=True`, the reference's `GenerationMixin.heal_tokens`), on the host.

A prompt that ends mid-word ends in a token the model rarely saw there: "... a th" is " th", while
the text it learned had " that" or " the". Healing replaces that last token before generating: the
model picks the next token after the trimmed prompt with +10 on every vocabulary token that starts
with the trimmed token's string (+11 on the trimmed token itself, so it wins ties of taste), so the
prompt ends in a token the model would have chosen. A bias, as the reference's, not a rule: a token
that does not extend the prompt can still win by more than 10 logits.

As the reference, each prompt is first decoded, stripped of surrounding whitespace and encoded again,
and a prompt of one token, or whose last token no other token extends, is left as it is. Where
minigen differs (docs/generation.md): a row is healed as it would be alone (the reference's batched
healing re-pads on the tokenizer's side and attends to the padding), and a token's string is its
vocabulary string ("Ġth" for " th"), where the reference maps a space through the tokenizer's
token for " ", which GPT-2's vocabulary lacks, so it never heals a token that starts with a space.
"""

from __future__ import annotations

import bisect
import functools

import numpy as np

from .inputs import left_padded

EXTENSION_BIAS = 10.0  # added to every token that extends the trimmed one (the reference's value)
KEEP_BIAS = 1.0  # added once more to the trimmed token itself


@functools.lru_cache(maxsize=4)
def sorted_vocabulary(tokenizer) -> tuple[list[str], list[int]]:
    """The tokenizer's vocabulary strings in sorted order, and their ids: a prefix's extensions are
    one contiguous run of it."""
    pairs = sorted(tokenizer.backend.get_vocab().items())
    return [text for text, _ in pairs], [i for _, i in pairs]


def extensions(tokenizer, token: int) -> list[int]:
    """The ids of every vocabulary token whose string starts with `token`'s (itself included)."""
    texts, ids = sorted_vocabulary(tokenizer)
    prefix = tokenizer.backend.id_to_token(int(token))
    found, at = [], bisect.bisect_left(texts, prefix)
    while at < len(texts) and texts[at].startswith(prefix):
        found.append(ids[at])
        at += 1
    return found


def heal(model, ids: np.ndarray, mask: np.ndarray, pad_id: int, pad_to_multiple_of: int = 16):
    """The healed prompts of a left-padded batch ids, mask [batch, width] (already checked):
    (ids, mask) [batch, new width] int32, left-padded with pad_id. One forward pass over the trimmed
    prompts that have something to heal."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError("token_healing needs the model's tokenizer: load a model directory that holds "
                         "tokenizer.json (or vocab.json + merges.txt)")
    rows = []
    for row, keep in zip(ids, mask.astype(bool)):
        text = tokenizer.decode(row[keep], skip_special_tokens=True).strip()
        rows.append(tokenizer.encode(text) if text else [int(t) for t in row[keep]])
    todo = [(i, extensions(tokenizer, r[-1])) for i, r in enumerate(rows) if len(r) > 1]
    todo = [(i, alternatives) for i, alternatives in todo if len(alternatives) > 1]
    if todo:
        trimmed, trimmed_mask = left_padded([rows[i][:-1] for i, _ in todo], pad_id)
        out = model.generate(trimmed, trimmed_mask, max_new_tokens=1, eos_token_id=[], pad_token_id=pad_id,
                             output_logits=True, pad_to_multiple_of=pad_to_multiple_of)
        logits = out.logits[0]  # [len(todo), vocab]: the raw next-token logits after each trimmed prompt
        for (i, alternatives), scores in zip(todo, logits):
            scores = scores.copy()
            scores[alternatives] += EXTENSION_BIAS
            scores[rows[i][-1]] += KEEP_BIAS
            rows[i] = rows[i][:-1] + [int(np.argmax(scores))]
    return left_padded(rows, pad_id)
