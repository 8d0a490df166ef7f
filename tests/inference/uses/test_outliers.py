"""Outlier scores: AUROC against its pairwise definition, evidence against closed forms."""

import itertools
import math

import pytest
import torch

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
    with pytest.raises(ValueError, match="non-finite"):
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
    with pytest.raises(ValueError, match="log_p holds 1 NaN or infinite"):
        typicality_scores(torch.tensor([-1.0, -math.inf]), good)
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
