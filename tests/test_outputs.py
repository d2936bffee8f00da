"""What generate and logits return beyond token ids, each compared with the reference run in the same
test: output_scores / output_logits in Hugging Face's layout, beam_indices, compute_transition_scores,
and the hidden states and attention probabilities of `logits`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import left_padded_batch
from helpers import PAD, hf_generate


def assert_scores_equal(ours, theirs, atol=1e-4, msg=""):
    """Same -inf entries, the finite ones within atol: [rows, vocab]."""
    theirs = np.asarray(theirs)
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs), err_msg=f"{msg}: -inf entries differ")
    finite = ~np.isneginf(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], atol=atol, err_msg=msg)


def stopping_eos(hf, ids, mask, max_new, at=(2, 5, 8)):
    """EOS ids that end every row, at different steps: row r's own greedy token at step at[r]."""
    free = hf_generate(hf, ids, mask, max_new_tokens=max_new, do_sample=False, eos_token_id=None)[:, ids.shape[1]:]
    return sorted({int(row[step]) for row, step in zip(free, at)} - {PAD})


def test_greedy_scores_and_logits_match_reference(hf_and_minigen):
    """A left-padded batch whose rows all stop, at different steps, so the reference returns fewer
    steps than max_new_tokens: the steps it ran are equal; minigen's later ones are pad with certainty."""
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(60), 512, [4, 9, 2], pad_id=PAD)
    max_new = 14
    eos = stopping_eos(hf, ids, mask, max_new)
    # processors that do not read the row's tokens: HF counts left padding as text there, minigen does not
    options = dict(max_new_tokens=max_new, eos_token_id=eos, min_new_tokens=3, suppress_tokens=[7, 11, 300])
    seq, ref = hf_generate(hf, ids, mask, ids.shape[1] + max_new, output_scores=True, output_logits=True,
                           return_dict_in_generate=True, **options)
    ours = model.generate(ids, mask, pad_token_id=PAD, output_scores=True, output_logits=True, **options)
    np.testing.assert_array_equal(ours.sequences, seq)
    ran = len(ref.scores)
    ends = [np.isin(row[ids.shape[1]:], eos).argmax() for row in seq]
    assert ran < max_new and len(set(ends)) > 1, (ran, ends)  # all rows stopped, at different steps
    assert len(ours.scores) == len(ours.logits) == max_new
    for step in range(ran):
        assert_scores_equal(ours.scores[step], ref.scores[step].numpy(), msg=f"scores, step {step}")
        np.testing.assert_allclose(ours.logits[step], ref.logits[step].numpy(), atol=1e-4, err_msg=f"step {step}")
    assert not np.allclose(ours.scores[1], ours.logits[1])  # the processors changed them
    for step in range(ran, max_new):  # the loop had stopped: the sequences hold pad there
        assert (ours.scores[step][:, PAD] == 0).all() and np.isneginf(np.delete(ours.scores[step], PAD, 1)).all()
    for normalize in (False, True):
        theirs = hf.compute_transition_scores(ref.sequences, ref.scores, normalize_logits=normalize).numpy()
        mine = model.compute_transition_scores(ours.sequences, ours.scores, normalize_logits=normalize)
        assert mine.shape == (3, max_new)
        np.testing.assert_allclose(mine[:, :ran], theirs, atol=1e-4)
        np.testing.assert_array_equal(mine[:, ran:], 0.0)


@pytest.mark.slow
def test_sampling_scores_are_warped_then_renormalized(hf_and_minigen):
    """Sampling's scores are what the token is drawn from: processors, temperature, top-k, top-p, then
    renormalize_logits last (before the warpers, the temperature would scale log-probs instead).
    Two RNGs never draw alike, so the reference is compared on the first step, which no draw precedes."""
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(61), 512, [6, 3], pad_id=PAD)
    options = dict(do_sample=True, temperature=0.7, top_k=40, top_p=0.9, suppress_tokens=[3, 5],
                   renormalize_logits=True, eos_token_id=None)
    _, ref = hf_generate(hf, ids, mask, max_new_tokens=1, output_scores=True, return_dict_in_generate=True, **options)
    ours = model.generate(ids, mask, pad_token_id=PAD, max_new_tokens=6, output_scores=True, output_logprobs=True,
                          seed=(3, 4), **{**options, "eos_token_id": []})
    assert_scores_equal(ours.scores[0], ref.scores[0].numpy(), atol=1e-5)
    assert np.isneginf(ours.scores[0]).any()  # top-k and top-p cut
    # the chosen tokens' log-probs are the transition scores of the full scores, at every step
    transition = model.compute_transition_scores(ours.sequences, ours.scores, normalize_logits=True)
    np.testing.assert_allclose(transition, ours.logprobs, atol=1e-5)


def test_beam_scores_indices_and_transition_scores_match_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(62), 512, [3, 8, 5], pad_id=PAD)
    max_new, width, lp = 10, ids.shape[1] + 10, 1.3
    options = dict(max_new_tokens=max_new, num_beams=3, num_return_sequences=2, length_penalty=lp, suppress_tokens=[2, 9])
    probe = hf_generate(hf, ids, mask, width, eos_token_id=None, **options)
    for eos in np.argsort(-np.bincount(probe[:, ids.shape[1]:].ravel()))[:8].tolist():  # frequent tokens first
        options["eos_token_id"] = eos
        seq, ref = hf_generate(hf, ids, mask, width, output_scores=True, output_logits=True,
                               return_dict_in_generate=True, **options)
        if len(set((ref.beam_indices.numpy() >= 0).sum(axis=1).tolist())) > 1:
            break  # an EOS that ends the returned hypotheses at different lengths
    ours = model.generate(ids, mask, pad_token_id=PAD, output_scores=True, output_logits=True, **options)
    np.testing.assert_array_equal(ours.sequences, seq)
    np.testing.assert_allclose(ours.sequences_scores, ref.sequences_scores.numpy(), atol=1e-4)
    for step in range(len(ref.scores)):
        assert_scores_equal(ours.scores[step], ref.scores[step].numpy(), msg=f"beam scores, step {step}")
        np.testing.assert_allclose(ours.logits[step], ref.logits[step].numpy(), atol=1e-4)
    longest = ref.beam_indices.shape[1]
    np.testing.assert_array_equal(ours.beam_indices[:, :longest], ref.beam_indices.numpy())
    assert (ours.beam_indices[:, longest:] == -1).all()
    lengths = (ours.beam_indices >= 0).sum(axis=1)
    assert len(set(lengths.tolist())) > 1  # hypotheses of different lengths
    mine = model.compute_transition_scores(ours.sequences, ours.scores, ours.beam_indices)
    theirs = hf.compute_transition_scores(ref.sequences, ref.scores, ref.beam_indices).numpy()
    np.testing.assert_allclose(mine[:, :longest], theirs, atol=1e-4)
    # the reference's recipe: summed transition scores over length ** length_penalty are the sequence scores
    np.testing.assert_allclose(mine.sum(axis=1) / lengths ** lp, ours.sequences_scores, atol=1e-4)


@pytest.mark.slow
def test_contrastive_scores_give_the_chosen_logprobs(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(63), 512, [5, 2], pad_id=PAD)
    out = model.generate(ids, mask, max_new_tokens=6, penalty_alpha=0.6, top_k=4, eos_token_id=[], pad_token_id=PAD,
                         output_scores=True, output_logprobs=True, no_repeat_ngram_size=2)
    transition = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    np.testing.assert_allclose(transition, out.logprobs, atol=1e-5)


def test_logits_hidden_states_and_attentions_match_reference(hf_and_minigen):
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(64), 512, [7, 3, 5], pad_id=PAD)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    hf.set_attn_implementation("eager")  # the reference returns attention probabilities only from eager attention
    try:
        with torch.no_grad():
            ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions),
                     output_hidden_states=True, output_attentions=True)
    finally:
        hf.set_attn_implementation("sdpa")
    ours = model.logits(ids, mask, output_hidden_states=True, output_attentions=True)
    real = mask.astype(bool)
    np.testing.assert_allclose(ours.logits[real], ref.logits.numpy()[real], atol=1e-4)
    assert len(ours.hidden_states) == len(ref.hidden_states) == 3
    for mine, theirs in zip(ours.hidden_states, ref.hidden_states):
        np.testing.assert_allclose(mine[real], theirs.numpy()[real], atol=1e-4)
    assert len(ours.attentions) == 2
    for mine, theirs in zip(ours.attentions, ref.attentions):
        assert mine.shape == (3, 4, ids.shape[1], ids.shape[1])
        rows = real[:, None, :, None] & np.ones(mine.shape, bool)  # rows of real queries
        np.testing.assert_allclose(mine[rows], theirs.numpy()[rows], atol=1e-5)
    np.testing.assert_array_equal(model.logits(ids, mask), ours.logits)


@pytest.mark.parametrize("options, message", [
    (dict(prompt_lookup_num_tokens=2, output_scores=True), "does not return output_scores; use output_logprobs"),
    (dict(num_beams=2, output_logprobs=True), "output_logprobs is for greedy.*compute_transition_scores"),
    (dict(output_logits=1), "output_logits must be True or False"),
], ids=["speculative-scores", "beam-logprobs", "logits-type"])
def test_output_options_errors(hf_and_minigen, options, message):
    _, _, model = hf_and_minigen("tiny")
    with pytest.raises(ValueError, match=message):
        model.generate([[1, 2, 3]], max_new_tokens=2, **options)
    with pytest.raises(ValueError, match="streaming yields token ids only; output_scores needs generate"):
        next(model.stream_tokens([[1, 2, 3]], max_new_tokens=2, output_scores=True))


def test_top_logprobs_equal_the_reference_scores_top_k(hf_and_minigen):
    """top_logprobs=k: each step's k best tokens and log-probs equal top-k of log-softmax of the
    reference's output_scores (greedy, a left-padded batch whose rows stop at different steps; after a
    row's EOS: tokens -1, log-probs 0); sampling: top-k of log-softmax of the warped scores minigen
    drew from, -inf where a warper left fewer than k; contrastive search too; refused with beams."""
    hf, _, model = hf_and_minigen("tiny")
    ids, mask = left_padded_batch(np.random.default_rng(62), 512, [4, 9, 2], pad_id=PAD)
    max_new, k = 12, 5
    eos = stopping_eos(hf, ids, mask, max_new)
    options = dict(max_new_tokens=max_new, eos_token_id=eos, suppress_tokens=[7, 11])
    seq, ref = hf_generate(hf, ids, mask, ids.shape[1] + max_new, output_scores=True, return_dict_in_generate=True,
                           **options)
    ours = model.generate(ids, mask, pad_token_id=PAD, top_logprobs=k, output_logprobs=True, **options)
    np.testing.assert_array_equal(ours.sequences, seq)
    assert ours.top_tokens.shape == ours.top_logprobs.shape == (3, max_new, k)
    ends = [int(np.isin(row[ids.shape[1]:], eos).argmax()) for row in seq]
    for step in range(len(ref.scores)):
        values, index = torch.log_softmax(ref.scores[step], -1).topk(k)
        for r in range(3):
            if step > ends[r]:
                continue
            np.testing.assert_array_equal(ours.top_tokens[r, step], index[r].numpy(), err_msg=f"row {r} step {step}")
            np.testing.assert_allclose(ours.top_logprobs[r, step], values[r].numpy(), atol=1e-5)
    for r in range(3):
        assert (ours.top_tokens[r, ends[r] + 1:] == -1).all() and (ours.top_logprobs[r, ends[r] + 1:] == 0).all()
        # greedy's token is the best, and its log-prob is output_logprobs'
        np.testing.assert_array_equal(ours.top_tokens[r, :ends[r] + 1, 0], seq[r, ids.shape[1]:][:ends[r] + 1])
        np.testing.assert_allclose(ours.top_logprobs[r, :ends[r] + 1, 0], ours.logprobs[r, :ends[r] + 1], atol=1e-6)

    sampled = model.generate(ids, mask, pad_token_id=PAD, max_new_tokens=6, eos_token_id=[], do_sample=True, top_k=3,
                             seed=(5, 6), top_logprobs=k, output_scores=True)
    for step in range(6):
        values, index = torch.log_softmax(torch.tensor(sampled.scores[step]), -1).topk(k)
        np.testing.assert_allclose(sampled.top_logprobs[:, step], values.numpy(), rtol=1e-6)
        assert np.isneginf(sampled.top_logprobs[:, step, 3:]).all()  # top_k=3 left three
        np.testing.assert_array_equal(sampled.top_tokens[:, step, :3], index[:, :3].numpy())
    contrastive = model.generate(ids, mask, pad_token_id=PAD, max_new_tokens=4, penalty_alpha=0.6, top_k=4,
                                 top_logprobs=2, eos_token_id=[])
    assert contrastive.top_tokens.shape == (3, 4, 2) and (contrastive.top_logprobs[..., 0] <= 0).all()
    with pytest.raises(ValueError, match="top_logprobs"):
        model.generate(ids, mask, max_new_tokens=2, num_beams=2, top_logprobs=2)
    with pytest.raises(ValueError, match="top_logprobs"):
        model.generate(ids, mask, max_new_tokens=2, top_logprobs=300)
