"""Outlier scores: AUROC against its pairwise definition, evidence against closed forms."""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from inference import (
    auroc,
    likelihood_ratio_scores,
    log_evidence,
    nll_scores,
    typicality_scores,
)
from ppl_models import LinearGaussian
from ppl_models.ngram import NGramModel
from ppl_models.text import Vocabulary


def test_auroc_is_the_pairwise_win_rate():
    generator = torch.Generator().manual_seed(0)
    inliers = torch.randn(40, generator=generator).round(decimals=1)  # rounding makes ties
    outliers = (torch.randn(30, generator=generator) + 0.7).round(decimals=1)
    wins = sum(float(o > i) + 0.5 * float(o == i)
               for i, o in itertools.product(inliers.tolist(), outliers.tolist()))
    assert auroc(inliers, outliers) == pytest.approx(wins / (40 * 30), abs=1e-12)
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 0.0


def test_auroc_rejects_bad_scores():
    with pytest.raises(ValueError, match="non-empty"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match=r"inlier_scores holds 1 NaN score\(s\) \(first at "
                                         r"index 1\)"):
        auroc([0.0, float("nan")], [1.0])


def test_scores_by_hand():
    log_p = torch.tensor([-1.0, -3.0, -10.0, -2.0])
    background = torch.tensor([-2.0, -1.0, -10.0, -2.0])
    assert torch.equal(nll_scores(log_p), -log_p)
    assert torch.equal(likelihood_ratio_scores(log_p, background),
                       torch.tensor([-1.0, 2.0, 0.0, 0.0]))
    reference = torch.tensor([-2.0, -4.0])  # entropy estimate H = 3
    assert torch.allclose(typicality_scores(log_p, reference), torch.tensor([2.0, 0.0, 7.0, 1.0]))
    # groups of two: mean -log p of (1, 3) is 2, of (10, 2) is 6
    assert torch.allclose(typicality_scores(log_p, reference, group_size=2),
                          torch.tensor([1.0, 3.0]))
    with pytest.raises(ValueError, match="same shape"):
        likelihood_ratio_scores(log_p, background[:2])
    with pytest.raises(ValueError, match="group_size"):
        typicality_scores(log_p, reference, group_size=5)
    for bad in (0, 1.5, 2.0, True, "2"):
        with pytest.raises(ValueError, match="group_size must be a positive integer"):
            typicality_scores(log_p, reference, group_size=bad)


def test_scores_refuse_nan_and_non_tensors_by_name():
    good = torch.tensor([-1.0, -2.0, -3.0])
    nan = torch.tensor([-1.0, float("nan"), -3.0])
    with pytest.raises(ValueError, match=r"log_p holds 1 NaN .*index 1"):
        nll_scores(nan)
    with pytest.raises(ValueError, match="background_log_p holds 1 NaN"):
        likelihood_ratio_scores(good, nan)
    with pytest.raises(ValueError, match="reference_log_p holds 1 NaN"):
        typicality_scores(good, nan)
    with pytest.raises(ValueError, match="reference_log_p holds 1 NaN or infinite"):
        typicality_scores(good, torch.tensor([-1.0, -math.inf]))
    with pytest.raises(ValueError, match="log_p holds 1 NaN or \\+inf"):
        typicality_scores(torch.tensor([-1.0, math.inf]), good)
    with pytest.raises(TypeError, match="log_p must be a tensor"):
        nll_scores([-1.0, -2.0])
    # a model that gives an input density zero scores it as infinitely unusual
    assert nll_scores(torch.tensor([-1.0, -math.inf])).tolist() == [1.0, math.inf]


def test_log_evidence_is_exact_for_a_fully_observed_model():
    vocab = Vocabulary("abc")
    words = ["ab", "abc", "cab", "a", "bca", "cc"]
    lm = NGramModel(2, vocab).fit_counts(vocab.encode(words))
    x = vocab.encode(words + ["bb", "aaa"])
    scored = log_evidence(lm.model, lm.guide, x, batch_size=3)
    assert torch.allclose(scored.double(), lm.log_prob(x), atol=1e-5)


def test_log_evidence_is_exact_with_the_exact_posterior():
    model = LinearGaussian(data_dim=4, latent_dim=2, noise_scale=0.6, seed=1).double()
    x = model.simulate(20, seed=2)
    exact = model.log_marginal(x)
    # with the exact posterior as guide every weight equals p(x): the bound is exact
    assert torch.allclose(log_evidence(model.model, model.exact_guide, x, num_samples=3,
                                       batch_size=7), exact, atol=1e-8)


def test_log_evidence_checks_input():
    model = LinearGaussian(data_dim=4, latent_dim=2)
    with pytest.raises(ValueError, match="n >= 1"):
        log_evidence(model.model, model.guide, torch.zeros(0, 4))
    with pytest.raises(ValueError, match="batch_size"):
        log_evidence(model.model, model.guide, torch.zeros(3, 4), batch_size=0)


def pairwise_win_rate(inliers, outliers):
    """The AUROC by its definition, comparing Python numbers (exact for ints of any size)."""
    wins = sum((o > i) + 0.5 * (o == i) for i, o in itertools.product(inliers, outliers))
    return wins / (len(inliers) * len(outliers))


def test_auroc_compares_large_integers_exactly():
    # float64 rounds all of these to 2**62 (or 2**63) and would report chance, 0.5
    big = 2**62
    assert auroc(torch.tensor([big, big + 1]), torch.tensor([big + 2])) == 1.0
    assert auroc(torch.tensor([big + 1]), torch.tensor([big])) == 0.0
    assert auroc(torch.tensor([big + 1]), torch.tensor([big + 1])) == 0.5
    # int64 against uint64 (no common integer dtype) is compared exactly as well
    assert auroc(np.array([2**63 - 1]), np.array([2**63 + 1], dtype=np.uint64)) == 1.0
    generator = torch.Generator().manual_seed(1)
    inliers = big + torch.randint(0, 6, (7,), generator=generator)
    outliers = big + torch.randint(2, 8, (5,), generator=generator)
    assert auroc(inliers, outliers) == pairwise_win_rate(inliers.tolist(), outliers.tolist())
    # mixed float widths and ints against floats: the pairwise rate of the values themselves
    halves = torch.tensor([0.5, 1.5, 3.0], dtype=torch.float16)
    assert auroc(halves, [1, 2, 3]) == pairwise_win_rate([0.5, 1.5, 3.0], [1, 2, 3])


def test_infinite_scores_rank_and_density_zero_scores_plus_inf():
    # probe C finding 4: auroc refused nll_scores' own +inf (an input of density zero, the
    # clearest outlier); likelihood_ratio_scores and typicality_scores refused log_p = -inf
    inliers = nll_scores(torch.tensor([-3.0, -4.0, -5.0]))
    outliers = nll_scores(torch.tensor([-math.inf, -10.0]))
    assert outliers.tolist() == [math.inf, 10.0]
    assert auroc(inliers, outliers) == 1.0
    assert auroc([math.inf, 1.0], [math.inf, -math.inf]) == 0.375  # inf vs inf ties
    generator = np.random.default_rng(0)
    for _ in range(50):  # against sklearn, infinities mapped to +-1e300 (ties kept)
        inl = generator.integers(-3, 4, size=generator.integers(1, 12)).astype(float)
        out = generator.integers(-3, 4, size=generator.integers(1, 12)).astype(float)
        for values in (inl, out):
            values[values == 3] = math.inf
            values[values == -3] = -math.inf
        labels = np.r_[np.zeros(len(inl)), np.ones(len(out))]
        if len(set(labels)) < 2:
            continue
        finite = np.nan_to_num(np.r_[inl, out], posinf=1e300, neginf=-1e300)
        assert auroc(inl, out) == pytest.approx(roc_auc_score(labels, finite), abs=1e-12)
        assert auroc(torch.tensor(inl), out.tolist()) == auroc(inl, out)
    log_p = torch.tensor([-1.0, -math.inf, -2.0])
    background = torch.tensor([-2.0, -3.0, -math.inf])
    assert likelihood_ratio_scores(log_p, background).tolist() == [-1.0, math.inf, -math.inf]
    with pytest.raises(ValueError, match=r"both -inf at 1 input\(s\) \(first at index 1\)"):
        likelihood_ratio_scores(log_p, torch.tensor([-2.0, -math.inf, -1.0]))
    with pytest.raises(ValueError, match="background_log_p holds 1 NaN or \\+inf"):
        likelihood_ratio_scores(log_p, torch.tensor([-2.0, math.inf, -1.0]))
    reference = torch.tensor([-2.0, -4.0])  # H = 3
    assert typicality_scores(log_p, reference).tolist() == [2.0, math.inf, 1.0]
    assert typicality_scores(torch.tensor([-1.0, -math.inf, -2.0, -4.0]), reference,
                             group_size=2).tolist() == [math.inf, 0.0]


def test_auroc_refuses_complex_bool_and_text_by_name():
    for bad in (torch.tensor([1 + 5j]), torch.tensor([True]), np.array([1 + 0j]), ["a"]):
        with pytest.raises(TypeError, match="outlier_scores must hold real scores"):
            auroc([0.0], bad)
    with pytest.raises(TypeError, match="inlier_scores must hold real scores, got dtype "
                                        "torch.complex64"):
        auroc(torch.tensor([1 + 5j]), [2.0])


def test_typicality_refuses_an_empty_reference_and_empty_scores():
    log_p = torch.tensor([-1.0, -2.0])
    with pytest.raises(ValueError, match="reference_log_p is empty"):
        typicality_scores(log_p, torch.tensor([]))
    with pytest.raises(ValueError, match=r"n >= group_size >= 1, got \[0\]"):
        typicality_scores(torch.tensor([]), log_p)


def test_scores_accept_integer_log_densities():
    log_p = torch.tensor([-1, -3, -10, -2])
    reference = torch.tensor([-2, -4])  # H = 3
    typical = typicality_scores(log_p, reference)
    assert typical.dtype == torch.get_default_dtype()
    assert typical.tolist() == [2.0, 0.0, 7.0, 1.0]
    assert typicality_scores(log_p, reference, group_size=2).tolist() == [1.0, 3.0]
    assert nll_scores(log_p).tolist() == [1.0, 3.0, 10.0, 2.0]
    assert nll_scores(log_p).dtype == torch.get_default_dtype()
    assert likelihood_ratio_scores(log_p, torch.tensor([-2, -1, -10, -2])).tolist() == \
        [-1.0, 2.0, 0.0, 0.0]
    # two finite float16 log densities whose difference float16 cannot hold: it was inf
    half = likelihood_ratio_scores(torch.tensor([60000.0], dtype=torch.float16),
                                   torch.tensor([-60000.0], dtype=torch.float16))
    assert half.dtype == torch.float32 and half.tolist() == [-120000.0]
    with pytest.raises(TypeError, match="reference_log_p must hold real log densities, got "
                                        "dtype torch.bool"):
        typicality_scores(log_p.float(), torch.tensor([True]))
    with pytest.raises(TypeError, match="log_p must hold real log densities"):
        nll_scores(torch.tensor([-1 + 1j]))


def test_typicality_of_finite_float32_log_densities_is_never_nan():
    # the float32 means of -3e38 overflowed: inf - inf = NaN
    huge = torch.tensor([-3e38, -3e38])
    assert typicality_scores(huge, huge, group_size=2).tolist() == [0.0]
    assert typicality_scores(huge, torch.tensor([-1.0, -2.0]), group_size=2).tolist() == [
        pytest.approx(3e38, rel=1e-6)]
    # a score beyond float32's range is inf, as the float32 of that number; NaN never
    assert typicality_scores(huge, -huge).tolist() == [math.inf, math.inf]
    # float64 means are sums of value / count: no finite input overflows them
    top = torch.tensor([-1.7e308, -1.7e308], dtype=torch.float64)
    scores = typicality_scores(top, top, group_size=2)
    assert scores.dtype == torch.float64 and scores.tolist() == [0.0]


def test_auroc_compares_integers_exactly_against_floats_and_beyond_64_bits():
    # float64 rounded 2**53 + 1 to 2**53 and called the pair a tie (0.5); Python ints beyond
    # int64 were refused as "dtype object"
    assert auroc(np.array([2**53 + 1]), np.array([2.0**53])) == 0.0
    assert auroc(torch.tensor([2**53 + 1]), torch.tensor([2.0**53], dtype=torch.float64)) == 0.0
    assert auroc([2.0**53], [2**53 + 1]) == 1.0
    assert auroc([2**70], [2**70 + 1]) == 1.0
    assert auroc([2**63, -1], [2**63 + 1]) == 1.0  # numpy made this list float64
    assert auroc([2**70, 1.5], [2.0**70]) == 0.75  # a tie and a win
    assert auroc([10**400], [1.0]) == 0.0
    inliers, outliers = [2**64 + k for k in (0, 3, 5)], [2**64 + k for k in (1, 3, 9)]
    assert auroc(inliers, outliers) == pairwise_win_rate(inliers, outliers)
    for bad in ([None], [True, 2**70], [2**70, "a"]):
        with pytest.raises(TypeError, match="outlier_scores must hold real scores"):
            auroc([1], bad)
    with pytest.raises(ValueError, match=r"outlier_scores holds 1 NaN score\(s\)"):
        auroc([1], [2**70, math.nan])
    assert auroc([2**70, math.inf], [math.inf]) == 0.75  # beyond 64 bits, beside infinities
