"""Token healing (token_healing=True) against the reference's GenerationMixin.heal_tokens."""

from __future__ import annotations

import numpy as np
import pytest

from minigen.generation import healing

# prompts whose encoding is stable under the reference's decode-strip-encode; the last tokens are
# " th", " no" (space-led), "it", "ve" (not), and " qu", " fox", which nothing extends
PROMPTS = ["A journey of a th", "To be or no", "The qu", "All that glit", "Go ove", "The quick brown fox"]


def reference(path, prompt: str, fix_space: bool, max_new: int):
    """transformers' generate(token_healing=True) on one prompt (its healing is defined for one
    unpadded prompt). fix_space: map " " to GPT-2's "Ġ" in the reference's tail lookup; its own maps
    it through the tokenizer's token for " ", which a byte-level vocabulary lacks, so it never heals a
    tail that starts with a space."""
    import torch
    import transformers

    hf = transformers.GPT2LMHeadModel.from_pretrained(path.parent / "hf").eval()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), bos_token="<|endoftext|>",
                                               eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if fix_space:
        own = tok.convert_tokens_to_ids
        tok.convert_tokens_to_ids = lambda t: own("Ġ") if t == " " else own(t)
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, token_healing=True,
                          tokenizer=tok, pad_token_id=tok.pad_token_id, do_sample=False)
    return out[0].tolist()


def test_token_healing_matches_the_reference(text_model_dir):
    """A left-padded batch with token_healing gives, row by row, the reference's healed prompt and
    greedy continuation of that prompt alone: space-led tails with the reference's space lookup fixed,
    the others with the reference as it is; a tail nothing extends is left alone."""
    path, model = text_model_dir
    tok, max_new = model.tokenizer, 6
    ids, mask = tok.encode_batch(PROMPTS)
    ours = model.generate(ids, mask, max_new_tokens=max_new, token_healing=True, pad_token_id=tok.pad_id)
    plain = model.generate(ids, mask, max_new_tokens=max_new, pad_token_id=tok.pad_id)
    assert ours.shape == plain.shape  # these prompts keep their length
    changed = 0
    for row, prompt in enumerate(PROMPTS):
        space_led = tok.backend.id_to_token(int(ids[row, -1])).startswith("Ġ")
        expected = reference(path, prompt, fix_space=space_led, max_new=max_new)
        got = ours[row, mask[row].argmax():].tolist()
        assert got[:len(expected)] == expected, prompt
        changed += got[mask[row].sum() - 1] != ids[row, -1]
    assert changed >= 3  # healing really replaced tokens here (and " fox" stayed)
    assert ours[-1, -max_new - 1] == ids[-1, -1] and (ours[-1] == plain[-1]).all()


def test_extensions_are_the_vocabulary_tokens_the_tail_prefixes(text_model_dir):
    _, model = text_model_dir
    tok = model.tokenizer
    vocab = tok.backend.get_vocab()
    for text in ("Ġth", "ve", "it", "er"):
        expected = sorted(i for t, i in vocab.items() if t.startswith(text))
        assert sorted(healing.extensions(tok, vocab[text])) == expected and len(expected) > 1


@pytest.mark.slow
def test_text_api_continues_the_prompt_text_with_the_healed_token(text_model_dir):
    _, model = text_model_dir
    full = model.generate_text(PROMPTS[:3], max_new_tokens=6, token_healing=True, return_full_text=True)
    cont = model.generate_text(PROMPTS[:3], max_new_tokens=6, token_healing=True)
    for prompt, whole, new in zip(PROMPTS, full, cont):
        assert whole == prompt + new  # the healed token's added text starts the continuation
    assert any(not c.startswith(" ") for c in cont)  # e.g. " th" became " that": "at" comes first
    assert "".join(model.stream(PROMPTS[0], max_new_tokens=6, token_healing=True)) == cont[0]


def test_token_healing_refusals(text_model_dir, hf_and_minigen):
    _, model = text_model_dir
    ids, mask = model.tokenizer.encode_batch(PROMPTS[:2])
    with pytest.raises(ValueError, match="token_healing rewrites the prompt; it does not combine with cache"):
        model.generate(ids, mask, max_new_tokens=2, token_healing=True, return_state=True)
    with pytest.raises(ValueError, match="token_healing must be True or False"):
        model.generate(ids, mask, max_new_tokens=2, token_healing="yes")
    _, _, bare = hf_and_minigen("tiny")
    with pytest.raises(ValueError, match="token_healing needs the model's tokenizer"):
        bare.generate(np.array([[5, 6, 7]]), max_new_tokens=2, token_healing=True)
