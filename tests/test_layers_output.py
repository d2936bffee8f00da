"""output_hidden_states / output_attentions from generate against the reference's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from conftest import left_padded_batch
from helpers import PAD, early_eos, hf_generate


def test_hidden_states_and_attentions_equal_the_reference(hf_and_minigen):
    """Greedy search on a left-padded batch where EOS ends rows at different steps: every step's hidden
    states and attention probabilities within 1e-4 of the reference's (eager attention), at the real
    (not padding) query positions, over every key, as many steps as the reference ran."""
    _, path, model = hf_and_minigen("tiny")
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    ids, mask = left_padded_batch(np.random.default_rng(8), 512, [3, 9, 6])
    max_new = 8
    eos = early_eos(hf, ids, mask, max_new)
    options = dict(max_new_tokens=max_new, eos_token_id=eos)
    ref_ids, ref = hf_generate(hf, ids, mask, ids.shape[1] + max_new, output_hidden_states=True,
                               output_attentions=True, return_dict_in_generate=True, **options)
    ours = model.generate(ids, mask, pad_token_id=PAD, output_hidden_states=True, output_attentions=True,
                          **options)
    np.testing.assert_array_equal(ours.sequences, ref_ids)
    assert len(ours.hidden_states) == len(ref.hidden_states) == len(ours.attentions) <= max_new
    real = mask.astype(bool)
    for step, (ours_h, ref_h, ours_a, ref_a) in enumerate(zip(ours.hidden_states, ref.hidden_states, ours.attentions,
                                                              ref.attentions)):
        assert len(ours_h) == model.config.n_layer + 1 and len(ours_a) == model.config.n_layer
        for a, b in zip(ours_h, ref_h):
            assert a.shape == tuple(b.shape), step
            a, b = (a[real], b.numpy()[real]) if step == 0 else (a, b.numpy())
            np.testing.assert_allclose(a, b, atol=1e-4, err_msg=f"hidden state, step {step}")
        for a, b in zip(ours_a, ref_a):
            assert a.shape == tuple(b.shape), step
            b = b.numpy()
            if step == 0:  # the real query rows of each prompt
                a, b = a.transpose(0, 2, 1, 3)[real], b.transpose(0, 2, 1, 3)[real]
            np.testing.assert_allclose(a, b, atol=1e-4, err_msg=f"attentions, step {step}")


@pytest.mark.slow
def test_sampled_hidden_states_give_the_sampled_logits(hf_and_minigen):
    """Sampling with num_return_sequences: the last hidden state of each step, through the LM head,
    is that step's raw logits (output_logits), for every row, and every row attends to its own past."""
    _, _, model = hf_and_minigen("odd")
    ids, mask = left_padded_batch(np.random.default_rng(2), 1003, [4, 7])
    out = model.generate(ids, mask, max_new_tokens=5, do_sample=True, num_return_sequences=2, seed=(3, 1),
                         eos_token_id=[], output_hidden_states=True, output_attentions=True, output_logits=True)
    head = model.network.lm_head_weight.values.numpy()  # [vocab, d], tied to the embeddings
    for step, hidden in enumerate(out.hidden_states):
        last = hidden[-1][:, -1]  # [rows, d]
        np.testing.assert_allclose(last @ head.T, out.logits[step], atol=2e-4, rtol=1e-4)
        for probs in out.attentions[step]:
            assert probs.shape[:2] == (4, model.config.n_head)
            if step == 0:  # a padding query's probabilities are spread over the bucket's padding too
                probs = probs.transpose(0, 2, 1, 3)[np.repeat(mask, 2, axis=0).astype(bool)]
            np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_refused_where_they_are_not_kept(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids = np.array([[5, 6, 7]])
    with pytest.raises(ValueError, match="output_hidden_states is kept by greedy search and sampling"):
        model.generate(ids, max_new_tokens=2, num_beams=2, output_hidden_states=True)
    with pytest.raises(ValueError, match="output_attentions is kept by greedy search and sampling"):
        model.generate(ids, max_new_tokens=2, prompt_lookup_num_tokens=2, output_attentions=True)
    with pytest.raises(ValueError, match="streaming yields token ids only; output_attentions needs generate"):
        next(iter(model.stream_tokens(ids, max_new_tokens=2, output_attentions=True)))
    with pytest.raises(ValueError, match="output_hidden_states is kept for a whole generate call"):
        model.generate(ids, max_new_tokens=2, output_hidden_states=True, return_state=True)
