"""Text in, text out: `generate_text` over a model that carries its tokenizer."""

from __future__ import annotations

from .generation import healing
from .generation.generate import stream
from .generation.options import ALIASES, OPTIONS, OUTPUTS
from .tokenizer import Tokenizer, check_text


def _tokenizer_of(model) -> Tokenizer:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("this model has no tokenizer: load a directory holding tokenizer.json "
                         "(or vocab.json + merges.txt), or set model.tokenizer")
    return tokenizer


# generate's options whose result is not text (the outputs streaming cannot return either: modes within
# options.OUTPUTS),
# the reference's alias and generate's state arguments: the text API returns strings, so it refuses them
TOKEN_OUTPUTS = (*(o.name for o in OPTIONS if o.modes <= OUTPUTS), *ALIASES, "return_state", "cache")


def refuse_token_outputs(options: dict, api: str) -> None:
    """ValueError, before anything compiles, for an option whose result `api` (strings) cannot carry."""
    asked = [name for name in TOKEN_OUTPUTS if options.get(name) not in (None, False)]
    if asked:
        raise ValueError(f"{api} returns text; {asked[0]} is for model.generate(ids, mask, ...), which returns "
                         "token ids with it (ids, mask = model.tokenizer.encode_batch(prompts); decode with "
                         "model.tokenizer.batch_decode)")


def as_prompt_list(prompts) -> list[str]:
    """A string or a list/tuple of strings as a list; ValueError naming what is wrong otherwise."""
    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, (bytes, bytearray)):
        raise ValueError("prompts must be text (str), got bytes: decode it first, e.g. data.decode('utf-8')")
    elif not isinstance(prompts, (list, tuple)):
        raise ValueError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise ValueError("prompts is empty: pass a string or a list of strings")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompts[{i}] must be a string, got {type(p).__name__}")
        if not p:
            raise ValueError(f"prompts[{i}] is empty: every prompt needs at least one token")
        check_text(p, f"prompts[{i}]")
    return list(prompts)


class Healed:
    """A prompt after token healing: its continuation's text is decode(prompt + new)[cut:], where
    cut is where the stripped prompt's text ends (or, if the healed token does not extend it - healing
    is a bias - where the trimmed prompt's text ends), so the healed token's extra text comes first."""

    def __init__(self, tokenizer, prompt: str, ids):
        self.ids = [int(t) for t in ids]
        text, stripped = tokenizer.decode(self.ids), prompt.strip()
        self.cut = len(stripped) if text.startswith(stripped) else len(tokenizer.decode(self.ids[:-1]))

    def continuation(self, tokenizer, new) -> str:
        return tokenizer.decode(self.ids + [int(t) for t in new])[self.cut:]


def heal_prompts(model, tokenizer, prompts: list[str], ids, mask, options: dict):
    """With options["token_healing"] True: (ids, mask, [Healed per prompt]) healed on the host, the
    option taken out of `options`; else (ids, mask, None)."""
    if options.get("token_healing") is not True:
        return ids, mask, None
    options.pop("token_healing")
    ids, mask = healing.heal(model, ids, mask, options["pad_token_id"], options.get("pad_to_multiple_of", 16))
    return ids, mask, [Healed(tokenizer, p, row[m.astype(bool)]) for p, row, m in zip(prompts, ids, mask)]


def generate_text(model, prompts, return_full_text: bool = False, **options) -> list[str]:
    """Continue each prompt; returns one string per prompt and return sequence, in input order.

    Args:
        model: a `minigen.GPT2` loaded from a directory with a tokenizer (`model.tokenizer`).
        prompts: a string or a list of strings (none empty).
        return_full_text: prepend the prompt to its continuation.
        **options: `generate`'s options (max_new_tokens, do_sample, temperature, top_k, top_p,
            num_beams, num_return_sequences, seed, pad_to_multiple_of, ...). With token_healing=True
            the continuation starts where the prompt's (stripped) text ends, so it begins with what the
            healed token adds ("a th" healed to "a that": "at ..."), and the full text is the healed one.
    """
    refuse_token_outputs(options, "generate_text")
    tokenizer = _tokenizer_of(model)
    prompts = as_prompt_list(prompts)
    ids, mask = tokenizer.encode_batch(prompts)
    options.setdefault("pad_token_id", tokenizer.pad_id)
    ids, mask, healed = heal_prompts(model, tokenizer, prompts, ids, mask, options)
    sequences = model.generate(ids, mask, **options)
    width = ids.shape[1]
    repeat = len(sequences) // len(prompts)  # num_return_sequences
    texts = []
    for row, seq in enumerate(sequences):
        prompt = prompts[row // repeat]
        if healed is None:
            text = tokenizer.decode(seq[width:])
            texts.append(prompt + text if return_full_text else text)
        else:
            h = healed[row // repeat]
            texts.append(tokenizer.decode(h.ids + list(seq[width:])) if return_full_text else
                         h.continuation(tokenizer, seq[width:]))
    return texts


def stream_text(model, prompt: str, chunk_size: int = 8, **options):
    """Yield the continuation of one prompt in pieces as the compiled loop produces tokens.

    Joined, the pieces equal `generate_text(model, prompt, **options)[0]`. A piece is held back
    while it ends inside a multi-byte character (decoding would show U+FFFD). The generator returns
    (StopIteration.value) "max_time" when max_time cut the continuation short, else None.
    """
    refuse_token_outputs(options, "stream")
    tokenizer = _tokenizer_of(model)
    if not isinstance(prompt, str):
        raise ValueError(f"stream takes one prompt (a string), got {type(prompt).__name__}")
    as_prompt_list(prompt)
    ids, mask = tokenizer.encode_batch([prompt])
    options.setdefault("pad_token_id", tokenizer.pad_id)
    if options.get("num_return_sequences", 1) != 1:
        raise ValueError("stream returns one continuation: num_return_sequences must be 1")
    ids, mask, healed = heal_prompts(model, tokenizer, [prompt], ids, mask, options)
    text_of = tokenizer.decode if healed is None else lambda new: healed[0].continuation(tokenizer, new)
    new_ids: list[int] = []
    shown = ""
    chunks = stream(model, ids, mask, chunk_size=chunk_size, **options)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration as stop:
            stopped = stop.value
            break
        new_ids.extend(int(t) for t in chunk[0])
        text = text_of(new_ids)
        if text.endswith("\ufffd"):
            continue
        if len(text) > len(shown):
            yield text[len(shown):]
        shown = text
    text = text_of(new_ids)
    if len(text) > len(shown):
        yield text[len(shown):]
    return stopped
