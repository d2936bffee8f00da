"""GPT-2's byte-level BPE over the `tokenizers` library: batch encode with left padding, decode.

Left padding puts every prompt's last token in the last column, which is where generation
continues from; position ids come from the attention mask, so padding changes nothing else.
"""

from __future__ import annotations

import os

import numpy as np
from tokenizers import Tokenizer as _Tokenizer

from .generation.inputs import left_padded
from tokenizers import decoders, models, pre_tokenizers


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded, or text that cannot be encoded as asked."""


def check_text(text, name: str) -> None:
    """TokenizerError unless `text` is a str that UTF-8 can encode (a lone surrogate such as
    "\\ud800", e.g. from a JSON escape, cannot be: it is not text)."""
    if not isinstance(text, str):
        raise TokenizerError(f"{name} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(f"{name} holds a lone surrogate {text[e.start]!r} at index {e.start}, which is not "
                             "valid Unicode text") from None


class Tokenizer:
    """Encode text to GPT-2 ids and back.

    Args:
        backend: a `tokenizers.Tokenizer`.
        pad_id: id used for left padding; GPT-2 has no pad token, so by convention its EOS.
        eos_id: the end-of-text id, or None.
    """

    def __init__(self, backend: _Tokenizer, pad_id: int, eos_id: int | None = None):
        self.backend = backend
        self.pad_id = int(pad_id)
        self.eos_id = eos_id
        self.backend.no_padding()
        self.backend.no_truncation()

    @classmethod
    def from_dir(cls, path: str | os.PathLike, eos_id: int | None = None, pad_id: int | None = None) -> "Tokenizer":
        """Load `tokenizer.json`, or `vocab.json` + `merges.txt`, from a model directory.

        eos_id defaults to the id of "<|endoftext|>" when the vocabulary has it; pad_id to eos_id.
        """
        path = os.fspath(path)
        tokenizer_json = os.path.join(path, "tokenizer.json")
        vocab, merges = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
        if os.path.isfile(tokenizer_json):
            backend = _Tokenizer.from_file(tokenizer_json)
        elif os.path.isfile(vocab) and os.path.isfile(merges):
            backend = _Tokenizer(models.BPE.from_file(vocab, merges))
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            backend.decoder = decoders.ByteLevel()
        else:
            raise TokenizerError(f"{path!r} has no tokenizer.json (nor vocab.json + merges.txt)")
        if eos_id is None:
            eos_id = backend.token_to_id("<|endoftext|>")
        if pad_id is None:
            pad_id = eos_id
        if pad_id is None:
            raise TokenizerError(f"{path!r}: the vocabulary has no <|endoftext|>; pass pad_id")
        return cls(backend, pad_id, eos_id)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """The ids of one string (no special tokens added: GPT-2 uses none)."""
        check_text(text, "text")
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], pad_to_multiple_of: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded ids and attention mask, both int32 [batch, width].

        width is the longest prompt, rounded up to a multiple of `pad_to_multiple_of` when given.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, text in enumerate(texts):
            check_text(text, f"texts[{i}]")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int)
                                               or isinstance(pad_to_multiple_of, bool) or pad_to_multiple_of < 1):
            raise TokenizerError(f"pad_to_multiple_of must be an int >= 1 or None, got {pad_to_multiple_of!r}")
        rows = [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]
        width = max((len(r) for r in rows), default=0)
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        return left_padded(rows, self.pad_id, width)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of one id sequence; with skip_special_tokens, <|endoftext|> and the like are dropped."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def decode_batch(self, rows, skip_special_tokens: bool = True) -> list[str]:
        """Text of each id sequence (a row of generate's output, say)."""
        return [self.decode(r, skip_special_tokens) for r in rows]

    batch_decode = decode_batch  # transformers' name

    def __call__(self, text, pad_to_multiple_of: int | None = None, return_tensors: str | None = None) -> dict:
        """As a transformers tokenizer is called: {"input_ids", "attention_mask"}. One string gives
        lists of ids and 1s; a list of strings gives int32 arrays [batch, width], always left-padded
        (the side generation continues from; transformers pads on the right unless told otherwise).
        return_tensors: None or "np" (minigen works on NumPy arrays)."""
        if return_tensors not in (None, "np"):
            raise TokenizerError(f"return_tensors must be None or 'np' (minigen takes NumPy arrays), got "
                                 f"{return_tensors!r}")
        if isinstance(text, str) and return_tensors is None:
            ids = self.encode(text)
            return {"input_ids": ids, "attention_mask": [1] * len(ids)}
        ids, mask = self.encode_batch([text] if isinstance(text, str) else text, pad_to_multiple_of)
        return {"input_ids": ids, "attention_mask": mask}
