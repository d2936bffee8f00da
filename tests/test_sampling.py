"""Sampling: warpers equal the reference's, seeds are reproducible, draws follow the distribution."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from conftest import grid
from helpers import chi_square_upper
from minigen.generation import processors as P


def hf_warp(logits, temperature, top_k, top_p):
    scores = torch.tensor(logits)
    ids = torch.zeros((logits.shape[0], 1), dtype=torch.long)
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(ids, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(ids, scores)
    return scores.numpy()


@tf.function(jit_compile=True, autograph=False)
def our_warp(logits, temperature, top_k, top_p):
    return P.top_k_top_p(logits / temperature, top_k, top_p)


# every path (top-k only, the 256-candidate cut, bisection, the full sort) in the default run; the
# other mixes under `make soak`
WARP_GRID = [(1.0, 50, 1.0), (0.7, 10, 1.0), (1.0, 0, 0.9), (1.3, 40, 0.8), (1.0, 0, 0.5), (0.5, 300, 0.95),
             (1.0, 300, 1.0), (2.0, 0, 0.99), (1.0, 1, 1.0), (1.0, 1000, 0.3)]


@pytest.mark.parametrize("temperature, top_k, top_p", grid(
    WARP_GRID, default=[(1.0, 50, 1.0), (1.0, 0, 0.9), (1.3, 40, 0.8), (1.0, 300, 1.0), (1.0, 1, 1.0)]))
@pytest.mark.parametrize("spread", [1.0, 4.0], ids=["flat", "peaked"])
def test_warpers_equal_reference(temperature, top_k, top_p, spread):
    # a 5000-token vocabulary: flat rows put the top-p cut beyond the 256 candidates (full-sort path)
    logits = (np.random.default_rng(20).standard_normal((8, 5000)) * spread).astype(np.float32)
    ref = hf_warp(logits, temperature, top_k, top_p)
    ours = our_warp(logits, tf.constant(temperature), tf.constant(top_k), tf.constant(top_p)).numpy()
    differ = np.isfinite(ours) != np.isfinite(ref)
    # Float32 cumulative sums in another order can flip a token whose cumulative mass sits on the
    # top-p cut itself; that is the only disagreement allowed, and it must be rare.
    if differ.any():
        top_k_only = hf_warp(logits, temperature, top_k, 1.0).astype(np.float64)
        probs = np.exp(top_k_only - top_k_only.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        for row, col in zip(*np.nonzero(differ)):
            above = probs[row][probs[row] > probs[row, col]].sum()  # mass strictly above the token
            assert abs(above - top_p) < 1e-5, (row, col, above)
        assert differ.sum() <= 2
    both = np.isfinite(ours) & np.isfinite(ref)
    np.testing.assert_allclose(ours[both], ref[both], rtol=1e-6)


@pytest.mark.slow
def test_same_seed_same_output_different_seed_differs(hf_and_minigen):
    _, _, model = hf_and_minigen("tiny", initializer_range=0.05)  # flatter: samples vary
    ids = [[5, 6, 7, 8]]
    run = lambda seed: model.generate(ids, max_new_tokens=20, do_sample=True, top_k=0, seed=seed)
    np.testing.assert_array_equal(run((1, 2)), run((1, 2)))
    assert not np.array_equal(run((1, 2)), run((1, 3)))


@pytest.mark.slow
def test_top_k_one_sampling_equals_greedy(hf_and_minigen):
    _, _, model = hf_and_minigen("odd")
    ids = np.random.default_rng(21).integers(0, 1003, size=(3, 6))
    greedy = model.generate(ids, max_new_tokens=15)
    sampled = model.generate(ids, max_new_tokens=15, do_sample=True, top_k=1, temperature=0.6, seed=(0, 9))
    np.testing.assert_array_equal(sampled, greedy)


def test_sampled_tokens_follow_processed_softmax(hf_and_minigen):
    """Chi-square: first-step draws over many seeds vs softmax of the reference's warped logits."""
    hf, _, model = hf_and_minigen("tiny", initializer_range=0.05)
    prompt = np.array([[3, 1, 4, 1, 5]])
    temperature, top_k = 0.8, 12
    with torch.no_grad():
        logits = hf(torch.tensor(prompt)).logits[:, -1].numpy()
    warped = hf_warp(logits, temperature, top_k, 1.0)[0]
    probs = np.exp(warped - warped.max())
    probs /= probs.sum()
    counts = np.zeros(512)
    draws_per_call, calls = 500, 8
    for seed in range(calls):
        out = model.generate(prompt, max_new_tokens=1, do_sample=True, temperature=temperature, top_k=top_k,
                             num_return_sequences=draws_per_call, seed=(seed, 77))
        counts += np.bincount(out[:, -1], minlength=512)
    n = counts.sum()
    assert counts[probs == 0].sum() == 0  # nothing outside the top-k
    support = probs > 0
    expected = probs[support] * n
    chi2 = ((counts[support] - expected) ** 2 / expected).sum()
    assert chi2 < chi_square_upper(int(support.sum()) - 1), chi2


@pytest.mark.slow
def test_a_sampled_row_depends_on_seed_and_index_not_on_other_rows(hf_and_minigen):
    """What the README promises for seeded sampling in a batch (greedy/beam: batch == alone)."""
    _, _, model = hf_and_minigen("tiny")
    target = [7, 8, 9, 10]
    options = dict(do_sample=True, seed=(3, 9), max_new_tokens=8, top_k=0, pad_token_id=0)
    a = model.generate([[1, 2, 3, 4], target], **options)
    b = model.generate([[400, 300, 200, 100], target], **options)
    np.testing.assert_array_equal(a[1], b[1])  # other rows' contents do not matter
    c = model.generate([[5, 6, 7, 8], [5, 6, 7, 8]], **options)
    assert (c[0, 4:] != c[1, 4:]).any()  # the same prompt at two indices: two independent draws


# each warper on flat and on peaked rows, with min_tokens_to_keep 1 and above (one of each warper in
# the default run, all under `make soak`)
WARPER_CASES = [("min_p", 0.1, 1, 1.0), ("min_p", 0.5, 3, 4.0), ("typical_p", 0.9, 1, 4.0), ("typical_p", 0.3, 5, 1.0),
                ("epsilon_cutoff", 3e-4, 1, 1.0), ("epsilon_cutoff", 0.05, 4, 4.0), ("eta_cutoff", 3e-4, 1, 4.0),
                ("eta_cutoff", 0.02, 8, 1.0)]


@pytest.mark.parametrize("option, value, keep, spread", grid(WARPER_CASES, default=WARPER_CASES[1::2]))
def test_more_warpers_equal_reference(option, value, keep, spread):
    """min_p / typical_p / epsilon / eta (each with min_tokens_to_keep) keep exactly the tokens HF's
    warper keeps, after temperature, top-k and top-p as in HF's order; kept scores unchanged."""
    from transformers.generation import logits_process as L

    reference = {"min_p": lambda: L.MinPLogitsWarper(value, min_tokens_to_keep=keep),
                 "typical_p": lambda: L.TypicalLogitsWarper(value, min_tokens_to_keep=keep),
                 "epsilon_cutoff": lambda: L.EpsilonLogitsWarper(value, min_tokens_to_keep=keep),
                 "eta_cutoff": lambda: L.EtaLogitsWarper(value, min_tokens_to_keep=keep, device="cpu")}[option]()
    logits = (np.random.default_rng(30).standard_normal((8, 5000)) * spread).astype(np.float32)
    ids = torch.zeros((8, 1), dtype=torch.long)
    scores = TopPLogitsWarper(0.95, min_tokens_to_keep=keep)(ids, TemperatureLogitsWarper(0.9)(ids, torch.tensor(logits)))
    ref = reference(ids, scores).numpy()
    on = ((option, True), ("min_tokens_to_keep", keep))
    ours = tf.function(lambda x: P.warp(x, tf.constant(0.9), tf.constant(0), tf.constant(0.95), on,
                                        {option: tf.constant(value)}), jit_compile=True)(logits).numpy()
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref))
    np.testing.assert_allclose(ours[np.isfinite(ours)], ref[np.isfinite(ref)], rtol=1e-6)
    kept = np.isfinite(ref).sum(1)
    assert (kept >= keep).all() and (kept < 5000).any()  # the warper removed tokens, never below keep


def test_min_p_sampling_follows_reference_distribution(hf_and_minigen):
    """Through generate: first-step draws follow softmax of HF's min_p-warped logits (chi-square),
    and nothing min_p removes is ever drawn."""
    from transformers.generation.logits_process import MinPLogitsWarper

    hf, _, model = hf_and_minigen("tiny", initializer_range=0.05)
    prompt = np.array([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        logits = hf(torch.tensor(prompt)).logits[:, -1]
    warped = MinPLogitsWarper(0.3)(None, TemperatureLogitsWarper(0.7)(None, logits)).numpy()[0]
    probs = np.exp(warped - warped.max())
    probs /= probs.sum()
    counts = np.zeros(512)
    for seed in range(4):
        out = model.generate(prompt, max_new_tokens=1, do_sample=True, temperature=0.7, top_k=0, min_p=0.3,
                             num_return_sequences=500, seed=(seed, 5))
        counts += np.bincount(out[:, -1], minlength=512)
    support = probs > 0
    assert counts[~support].sum() == 0 and 1 < support.sum() < 512
    expected = probs[support] * counts.sum()
    chi2 = ((counts[support] - expected) ** 2 / expected).sum()
    assert chi2 < chi_square_upper(int(support.sum()) - 1), chi2


@pytest.mark.parametrize("options, message", [
    (dict(do_sample=True, min_p=1.5), r"min_p must be None or a number in \[0, 1\]"),
    (dict(do_sample=True, typical_p=0.0), r"typical_p must be in \(0, 1\]"),
    (dict(do_sample=True, epsilon_cutoff=1.0), r"epsilon_cutoff must be in \[0, 1\)"),
    (dict(do_sample=True, eta_cutoff=-0.1), r"eta_cutoff must be in \[0, 1\)"),
    (dict(do_sample=True, min_tokens_to_keep=0), r"min_tokens_to_keep must be an integer in \[1, 256\]"),
    (dict(min_p=0.1), "min_p is a sampling warper: set do_sample=True"),
])
def test_warper_options_are_checked(hf_and_minigen, options, message):
    _, _, model = hf_and_minigen("tiny")
    with pytest.raises(ValueError, match=message):
        model.generate([[1, 2, 3]], max_new_tokens=2, **options)


@pytest.mark.parametrize("value, spread", [(0.4, 1.0), pytest.param(0.9, 4.0, marks=pytest.mark.slow)])
def test_top_h_equals_reference(hf_and_minigen, value, spread):
    """top_h keeps exactly the tokens HF's TopHLogitsWarper keeps, after temperature and before top-p
    (HF's order), on flat and peaked rows; and through generate, the first step's sampled-from scores
    equal HF's generate with the same options."""
    from transformers.generation.logits_process import TopHLogitsWarper

    logits = (np.random.default_rng(31).standard_normal((8, 5000)) * spread).astype(np.float32)
    ids = torch.zeros((8, 1), dtype=torch.long)
    ref = TopPLogitsWarper(0.95)(ids, TopHLogitsWarper(value)(ids, TemperatureLogitsWarper(0.9)(ids, torch.tensor(logits))))
    ref = ref.numpy()
    on = (("top_h", True), ("min_tokens_to_keep", 1))
    ours = tf.function(lambda x: P.warp(x, tf.constant(0.9), tf.constant(0), tf.constant(0.95), on,
                                        {"top_h": tf.constant(value)}), jit_compile=True)(logits).numpy()
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref))
    np.testing.assert_allclose(ours[np.isfinite(ours)], ref[np.isfinite(ref)], rtol=1e-6)
    kept = np.isfinite(ref).sum(1)
    assert (kept <= 100).all() and (kept > 1).any()  # among the 100 best; more than the best alone

    hf, _, model = hf_and_minigen("tiny", initializer_range=0.05)
    prompt = np.array([[3, 7, 4, 8, 5], [9, 2, 6, 5, 3]])  # no pad id (1): HF would read it as padding
    options = dict(max_new_tokens=1, do_sample=True, temperature=0.8, top_k=0, top_h=value)
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                             pad_token_id=1, output_scores=True, return_dict_in_generate=True, **options).scores[0].numpy()
    mine = model.generate(prompt, pad_token_id=1, output_scores=True, seed=(0, 1), **options).scores[0]
    np.testing.assert_array_equal(np.isfinite(mine), np.isfinite(theirs))
    np.testing.assert_allclose(mine[np.isfinite(mine)], theirs[np.isfinite(theirs)], rtol=1e-4, atol=1e-5)


@tf.function(jit_compile=True, autograph=False)
def our_lookup(logits, uniform):
    return P.inverse_cdf(logits, uniform)


def test_the_draw_is_the_inverse_cdf_of_the_softmax_alone_or_in_a_batch():
    """sample_token's lookup against NumPy's float64 softmax: the token where each uniform falls in the
    cumulative distribution (away from a boundary by more than the integer weights' rounding), never a
    -inf entry, the same token for a row alone as in a batch, and token 0 for a row of -inf."""
    rng = np.random.default_rng(5)
    vocab = 1000  # not a multiple of the lookup's block
    logits = rng.normal(0, 3, [4, vocab]).astype(np.float32)
    logits[1, rng.choice(vocab, 900, replace=False)] = -np.inf
    logits[2, :] = -np.inf
    logits[2, [17, 999]] = [0.0, 2.0]
    uniform = np.concatenate([[0.0, 1 - 1e-12], rng.uniform(size=2000)])
    for row in (0, 1, 2):
        p = np.exp(logits[row].astype(np.float64) - logits[row].max())
        cumulative = np.cumsum(p / p.sum())
        expected = np.minimum(np.searchsorted(cumulative, uniform, side="right"), vocab - 1)
        got = our_lookup(np.repeat(logits[row:row + 1], len(uniform), 0), uniform).numpy()
        clear = np.abs(cumulative[expected] - uniform) > 1e-6  # not at a boundary
        clear &= np.abs(np.concatenate([[0], cumulative])[expected] - uniform) > 1e-6
        np.testing.assert_array_equal(got[clear], expected[clear])
        assert np.isfinite(logits[row, got]).all()
    alone = [our_lookup(logits[r:r + 1], uniform[5 + r:6 + r]).numpy()[0] for r in range(4)]
    np.testing.assert_array_equal(our_lookup(logits, uniform[5:9]).numpy(), alone)
    assert our_lookup(np.full([1, vocab], -np.inf, np.float32), np.array([0.3])).numpy()[0] == 0


def numpy_top_n_sigma(logits, n, keep):
    """Top-nσ as published (keep logits >= max - n * std, std over the finite logits), with the warpers'
    min_tokens_to_keep."""
    out = logits.copy()
    for row in out:
        finite = row[np.isfinite(row)]
        cut = finite.max() - n * finite.std()
        best = np.sort(row)[::-1][keep - 1]
        row[(row < cut) & (row < best)] = -np.inf
    return out


# one case in the default run (a tight cut with min_tokens_to_keep above it), all under `make soak`
@pytest.mark.parametrize("n, keep", [pytest.param(0.5, 1, marks=pytest.mark.slow), pytest.param(1.5, 1, marks=pytest.mark.slow), (0.1, 4),
                                     pytest.param(3.0, 1, marks=pytest.mark.slow)])
def test_top_n_sigma_follows_its_definition(hf_and_minigen, n, keep):
    """top_n_sigma against the NumPy definition above on random rows (some entries already -inf), and
    through generate: the first step's sampled-from scores are the definition applied to its logits
    divided by the temperature."""
    rng = np.random.default_rng(43)
    logits = (rng.standard_normal((6, 3000)) * rng.uniform(0.5, 4, (6, 1))).astype(np.float32)
    logits[:, rng.choice(3000, 500, replace=False)] = -np.inf
    on = (("top_n_sigma", True), ("min_tokens_to_keep", keep))
    ours = tf.function(lambda x: P.warp(x, tf.constant(1.0), tf.constant(0), tf.constant(1.0), on,
                                        {"top_n_sigma": tf.constant(n)}), jit_compile=True)(logits).numpy()
    expected = numpy_top_n_sigma(logits, n, keep)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(expected))
    np.testing.assert_array_equal(ours[np.isfinite(ours)], expected[np.isfinite(expected)])
    assert (np.isfinite(ours).sum(1) < np.isfinite(logits).sum(1)).all()

    _, _, model = hf_and_minigen("tiny", initializer_range=0.05)
    out = model.generate([[3, 7, 4, 8, 5], [9, 2, 6, 5, 3]], max_new_tokens=1, do_sample=True, temperature=0.8,
                         top_k=0, top_n_sigma=n, min_tokens_to_keep=keep, seed=(0, 1), output_scores=True,
                         output_logits=True)
    expected = numpy_top_n_sigma(out.logits[0] / np.float32(0.8), n, keep)
    np.testing.assert_array_equal(np.isfinite(out.scores[0]), np.isfinite(expected))
    np.testing.assert_allclose(out.scores[0][np.isfinite(expected)], expected[np.isfinite(expected)], rtol=1e-6)
    with pytest.raises(ValueError, match="top_n_sigma"):
        model.generate([[1, 2, 3]], max_new_tokens=2, top_n_sigma=0.0, do_sample=True)
