"""The TF GPT-2 against the reference (transformers GPT2LMHeadModel), and its static KV cache."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch

from conftest import left_padded_batch
from minigen import cache as kv


def reference_logits(hf, ids, mask):
    """HF logits with generate's position ids (a plain forward call does not derive them)."""
    positions = np.maximum(mask.cumsum(-1) - 1, 0)
    with torch.no_grad():
        out = hf(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions)
        )
    return out.logits.numpy()


@pytest.mark.parametrize("name", ["tiny", "odd", pytest.param("small", marks=pytest.mark.slow)])  # small: `make soak`
def test_logits_match_reference_on_left_padded_batch(hf_and_minigen, name):
    hf, _, model = hf_and_minigen(name)
    vocab = hf.config.vocab_size
    ids, mask = left_padded_batch(np.random.default_rng(1), vocab, [7, 1, 19, 12])
    ours = model.logits(ids, mask)
    ref = reference_logits(hf, ids, mask)
    assert ours.shape == ref.shape == (4, 19, vocab)
    assert ours.dtype == np.float32
    real = mask.astype(bool)
    assert np.abs(ours - ref)[real].max() < 1e-4


def test_long_prompts_take_the_prefill_paths_and_match_reference(hf_and_minigen):
    """Prompts past model.PLAIN_FROM tokens (the other matmul orientation) and model.CHUNK (causal
    attention chunks), left-padded: logits at every real position and greedy tokens equal the reference's,
    and continuing from a state (a second long segment: chunks after a prefix) equals one long prompt."""
    from minigen import model as network
    from helpers import PAD, hf_generate

    hf, _, model = hf_and_minigen("four")
    ids, mask = left_padded_batch(np.random.default_rng(3), 777, [200, 130], pad_id=PAD)
    assert ids.shape[1] >= network.PLAIN_FROM and ids.shape[1] > network.CHUNK
    real = mask.astype(bool)
    ours, theirs = model.logits(ids, mask), reference_logits(hf, ids, mask)
    # float32 rounding grows with the prompt: 2.5e-4 here, 1.9e-4 with the short-prompt paths forced
    assert np.abs(ours - theirs)[real].max() < 5e-4 and np.abs(theirs).max() > 1.0
    ref = hf_generate(hf, ids, mask, ids.shape[1] + 6, max_new_tokens=6, do_sample=False, eos_token_id=None)
    np.testing.assert_array_equal(model.generate(ids, mask, max_new_tokens=6, eos_token_id=[], pad_token_id=PAD), ref)
    first = model.generate(ids[:, :80], mask[:, :80], max_new_tokens=1, eos_token_id=[], return_state=True)
    second = model.generate(ids[:, 80:], mask[:, 80:], cache=first.state, max_new_tokens=6, eos_token_id=[],
                            pad_token_id=PAD)
    whole = np.concatenate([first.sequences, ids[:, 80:]], axis=1)  # the conversation: 80, 1 generated, 128
    whole_mask = np.concatenate([mask[:, :80], np.ones((2, 1), mask.dtype), mask[:, 80:]], axis=1)
    ref = hf_generate(hf, whole, whole_mask, whole.shape[1] + 6, max_new_tokens=6, do_sample=False, eos_token_id=None)
    np.testing.assert_array_equal(second[:, -6:], ref[:, -6:])


def test_padded_row_equals_prompt_alone(hf_and_minigen):
    _, _, model = hf_and_minigen("odd")
    ids, mask = left_padded_batch(np.random.default_rng(2), 1003, [3, 11])
    batch = model.logits(ids, mask)
    alone = model.logits(ids[:1, -3:])
    np.testing.assert_allclose(batch[0, -3:], alone[0], atol=1e-5)


def test_untied_head_and_inverse_layer_scaling(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny", tie_word_embeddings=False, scale_attn_by_inverse_layer_idx=True)
    assert not model.config.tie_word_embeddings
    ids, mask = left_padded_batch(np.random.default_rng(3), 512, [5, 9])
    diff = np.abs(model.logits(ids, mask) - reference_logits(hf, ids, mask))[mask.astype(bool)]
    assert diff.max() < 1e-4


def test_prefill_then_decode_through_cache_equals_full_forward(hf_and_minigen):
    """Prefill k tokens, then feed the rest one at a time through the cache: same logits (1e-5)."""
    _, _, model = hf_and_minigen("odd")
    rng = np.random.default_rng(4)
    prompt_ids, prompt_mask = left_padded_batch(rng, 1003, [6, 2, 9])  # width 9
    follow = rng.integers(0, 1003, size=(3, 5)).astype(np.int32)
    full_ids = np.concatenate([prompt_ids, follow], axis=1).astype(np.int32)
    full_mask = np.concatenate([prompt_mask, np.ones_like(follow)], axis=1).astype(np.int32)
    expected = model.logits(full_ids, full_mask)  # [3, 14, vocab]

    width, steps = prompt_ids.shape[1], follow.shape[1]

    net = model.network

    @tf.function(jit_compile=True)
    def run(prompt_ids, prompt_mask, follow):
        hidden, cache, key_mask = net.prefill(prompt_ids, prompt_mask, cache_len=width + steps + 3)
        first = net.lm_head(hidden[:, -1])
        positions = tf.reduce_sum(prompt_mask, axis=1)  # next position of each row
        out = []
        for t in range(steps):
            logits, cache = net.decode_one_token(follow[:, t], positions + t, cache, kv.View(key_mask, width + t))
            out.append(logits)
        return first, tf.stack(out, axis=1)

    first, stepped = run(prompt_ids.astype(np.int32), prompt_mask.astype(np.int32), follow)
    # With initializer_range 0.3 logits reach ~12, and float32 matmuls of different shapes (one
    # token per step vs the whole block) round differently: up to ~1.4e-5 absolute seen. A cache bug
    # (wrong slot, wrong mask) moves logits by O(1).
    np.testing.assert_allclose(first.numpy(), expected[:, width - 1], atol=3e-5, rtol=1e-5)
    np.testing.assert_allclose(stepped.numpy(), expected[:, width:], atol=3e-5, rtol=1e-5)


def test_cache_is_written_in_place_not_grown(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids = tf.constant([[1, 2, 3]], tf.int32)
    _, cache, _ = model.network.prefill(ids, tf.ones_like(ids), cache_len=10)
    assert len(cache.keys) == model.config.n_layer
    assert cache.keys[0].shape == (1 * model.config.n_head, 10, model.config.head_dim)
    # slots after the prompt are untouched zeros, the prompt's are filled
    assert np.all(cache.keys[0].numpy()[:, 3:] == 0)
    assert np.any(cache.keys[0].numpy()[:, :3] != 0)


def test_positions_from_mask():
    from minigen.model import positions_from_mask

    mask = tf.constant([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(
        positions_from_mask(mask).numpy(), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]
    )


@pytest.mark.parametrize("dtype, rel", [("bfloat16", 0.15), ("float16", 0.02)])
def test_reduced_precision_weights_stay_close(hf_and_minigen, tmp_path, dtype, rel):
    import minigen

    _, hf_dir, model = hf_and_minigen("odd")
    from weights_tools.convert import convert

    convert(str(hf_dir), str(tmp_path / "m"), quiet=True)
    low = minigen.load(tmp_path / "m", dtype=dtype)
    ids = np.random.default_rng(5).integers(0, 1003, size=(2, 8))
    ref, got = model.logits(ids), low.logits(ids)
    # bfloat16 keeps 8 bits of mantissa, float16 11: logits move, the ranking at the top mostly does not
    assert np.abs(ref - got).max() < rel * np.abs(ref).max()
    assert 0 < np.abs(ref - got).max()  # the weights really were rounded
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.8


def test_logits_rejects_bad_input(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits([[1, 2, 512]])
    with pytest.raises(ValueError, match="all padding"):
        model.logits([[1, 2]], [[0, 0]])
    with pytest.raises(ValueError, match="empty"):
        model.logits(np.zeros((1, 0), np.int32))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.logits([[1, 2]], [[1, 1, 1]])
    with pytest.raises(ValueError, match="n_positions"):
        model.logits(np.ones((1, 129), np.int32))
