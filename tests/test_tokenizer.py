"""minigen.Tokenizer against transformers' GPT-2 tokenizer, on the real GPT-2 vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED_DATA

GPT2_TOKENIZER = SHARED_DATA / "gpt2-tokenizer"
needs_vocab = pytest.mark.skipif(
    not (GPT2_TOKENIZER / "vocab.json").is_file(),
    reason=f"the GPT-2 tokenizer files are not at {GPT2_TOKENIZER} (../shared/data beside the repo)",
)

TEXTS = [
    "Hello world",
    " leading space and  double  spaces",
    "It's 2026; they'll've won 3,141 games!",
    "tabs\tand\nnewlines\n\n",
    "naïve café — “quotes” and ½ fractions",
    "日本語のテキスト and emoji 🙂👍🏽",
    "<|endoftext|> as text",
    "a",
]


@pytest.fixture(scope="module")
def both():
    import transformers

    import minigen

    ours = minigen.Tokenizer.from_dir(GPT2_TOKENIZER)
    # built from vocab.json + merges.txt (transformers 5 names: vocab=, merges=), independently of
    # the tokenizer.json minigen reads
    hf = transformers.GPT2Tokenizer(vocab=str(GPT2_TOKENIZER / "vocab.json"), merges=str(GPT2_TOKENIZER / "merges.txt"))
    assert hf("Hello world")["input_ids"] == [15496, 995]  # GPT-2's well-known ids: the reference loaded
    hf.pad_token = hf.eos_token
    hf.padding_side = "left"
    return ours, hf


@needs_vocab
def test_ids_equal_transformers(both):
    ours, hf = both
    assert ours.vocab_size == 50257 and ours.pad_id == ours.eos_id == 50256
    for text in TEXTS:
        assert ours.encode(text) == hf(text)["input_ids"], text


@needs_vocab
def test_vocab_and_merges_files_give_the_same_ids(both, tmp_path):
    import shutil

    import minigen

    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_TOKENIZER / name, tmp_path / name)
    from_files = minigen.Tokenizer.from_dir(tmp_path)
    for text in TEXTS[:-2]:  # the special token is only special in tokenizer.json
        assert from_files.encode(text) == both[0].encode(text), text


@needs_vocab
@pytest.mark.parametrize("multiple", [None, 8])
def test_left_padded_batch_equals_transformers(both, multiple):
    ours, hf = both
    ids, mask = ours.encode_batch(TEXTS, pad_to_multiple_of=multiple)
    ref = hf(TEXTS, padding=True, pad_to_multiple_of=multiple, return_tensors="np")
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
    assert ids.dtype == mask.dtype == np.int32


@needs_vocab
def test_decode_round_trips_and_skips_special_tokens(both):
    ours, _ = both
    for text in TEXTS:
        assert ours.decode(ours.encode(text), skip_special_tokens=False) == text
    assert ours.decode(ours.encode("end<|endoftext|>")) == "end"


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    import minigen

    with pytest.raises(minigen.TokenizerError, match="no tokenizer.json"):
        minigen.Tokenizer.from_dir(tmp_path)
