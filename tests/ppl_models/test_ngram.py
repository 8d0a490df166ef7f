"""Dirichlet-smoothed n-grams: normalization, exact evidence, empirical Bayes, Pyro pair."""

import itertools
import math
import random
import time
from collections import Counter

import pytest
import torch

from inference import elbo
from ppl_models.ngram import NGramModel
from ppl_models.text import BUNDLED_PATH, Vocabulary, load_words

TINY = ["ab", "a", "abba", "bab", "b", "aab", "ba"]


def fitted(order, words=TINY, alphabet="ab", concentration=0.5, backoff=False):
    vocab = Vocabulary(alphabet)
    return NGramModel(order, vocab, concentration, backoff).fit_counts(vocab.encode(words))


def all_words(alphabet, max_length):
    return ["".join(w) for m in range(max_length + 1)
            for w in itertools.product(alphabet, repeat=m)]


def test_posterior_predictive_is_additive_smoothing_by_hand():
    # bigram, alpha = 0.5, V = 3 (end, a, b) on "ab", "a": after BOS: a twice;
    # after a: b once, end once; after b: end once
    ng = fitted(2, ["ab", "a"])
    log_p = ng.log_prob(ng.vocab.encode(["ab", "b"]))
    expected_ab = (2.5 / 3.5) * (1.5 / 3.5) * (1.5 / 2.5)
    expected_b = (0.5 / 3.5) * (1.5 / 2.5)  # b after BOS is unseen, end after b is seen
    assert torch.allclose(log_p, torch.tensor([expected_ab, expected_b], dtype=torch.float64).log(),
                          rtol=0, atol=1e-12)


@pytest.mark.parametrize("backoff", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_conditionals_sum_to_one_for_every_seen_and_unseen_context(order, backoff):
    ng = fitted(order, backoff=backoff)
    # every context over all ids that may precede a symbol (end, a, b and BOS)
    contexts = list(itertools.product(range(ng.vocab.bos + 1), repeat=order - 1))
    contexts = torch.tensor(contexts, dtype=torch.long).reshape(len(contexts), order - 1)
    probs = ng.conditional(contexts)  # [contexts, V]
    assert probs.shape == (len(contexts), 3) and (probs > 0).all()
    # float64 sum of three ratios: exact to a few ulps
    assert torch.allclose(probs.sum(-1), torch.ones(len(contexts), dtype=torch.float64),
                          rtol=0, atol=1e-14), probs.sum(-1)
    totals = [float(ng.conditional(c[None])[0].sum()) for c in contexts[:3]]
    assert all(abs(t - 1) < 1e-14 for t in totals)
    if order > 1 and not backoff:  # both kinds occur: seen contexts and unseen ones (1/V)
        seen = (probs - 1 / 3).abs().max(-1).values > 1e-9
        assert seen.any() and (~seen).any()


@pytest.mark.parametrize("backoff", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_of_all_words_plus_longer_prefixes_sum_to_one(order, backoff):
    # Every infinite symbol stream either ends within max_length characters or starts with
    # one of the 2^(max_length + 1) prefixes of max_length + 1 characters, so
    #   sum_{|w| <= L} p(w) + sum_{|u| = L + 1} p(u is a prefix) = 1   exactly.
    ng = fitted(order, backoff=backoff)
    max_length = 8
    words = all_words("ab", max_length)
    total = ng.log_prob(ng.vocab.encode(words)).exp().sum()
    prefixes = all_words("ab", max_length + 1)[-2 ** (max_length + 1):]
    x = ng.vocab.encode(prefixes)
    # p(u is a prefix) = p(u, end) / p(end | last n - 1 symbols of u)
    _, contexts, _ = ng.contexts(x)
    p_end = ng.conditional(contexts[:, max_length + 1])[:, ng.vocab.EOS]
    remaining = (ng.log_prob(x).exp() / p_end).sum()
    # 1023 float64 terms: rounding stays below 1e-13; the remaining mass is not negligible
    assert remaining > 1e-3
    assert abs(float(total + remaining) - 1) < 1e-12, (float(total), float(remaining))


def sequential_log_evidence(words, order, alphabet, alpha):
    """Brute force: the product of posterior predictives, updating counts one symbol at a time."""
    counts, totals = Counter(), Counter()
    size = len(alphabet) + 1
    log_p = 0.0
    for word in words:
        symbols = ["<s>"] * (order - 1) + list(word) + ["</s>"]
        for t in range(order - 1, len(symbols)):
            context, symbol = tuple(symbols[t - order + 1:t]), symbols[t]
            log_p += math.log((counts[context, symbol] + alpha) / (totals[context] + alpha * size))
            counts[context, symbol] += 1
            totals[context] += 1
    return log_p


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("alpha", [0.01, 0.3, 2.0])
def test_log_evidence_equals_the_sequential_predictive_probabilities(order, alpha):
    ng = fitted(order, alphabet="abc", words=TINY + ["cab", "abc", "ccc", "a"])
    expected = sequential_log_evidence(TINY + ["cab", "abc", "ccc", "a"], order, "abc", alpha)
    # float64 lgamma against a float64 sum of about 50 logs: agreement to 1e-10 nats
    assert abs(ng.log_evidence(alpha) - expected) < 1e-10, (ng.log_evidence(alpha), expected)


@pytest.mark.parametrize("backoff", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_evidence_chosen_concentration_is_a_maximum(order, backoff):
    rng = random.Random(0)
    words = ["".join(rng.choice("aab" if i % 2 else "abbc") for i in range(rng.randint(1, 6)))
             for _ in range(300)]
    ng = fitted(order, words, alphabet="abc", backoff=backoff)
    alpha = ng.fit_concentration()
    assert ng.concentration == alpha and 1e-4 < alpha < 1e5
    best = ng.log_evidence(alpha)
    # the search stops within 1e-6 in log alpha, far inside these 1% steps
    for neighbour in (alpha * 0.99, alpha * 1.01):
        assert ng.log_evidence(neighbour) < best, (neighbour, alpha)
    grid = [10 ** k for k in torch.linspace(-4, 3, 71).tolist()]
    assert max(ng.log_evidence(a) for a in grid) <= best + 1e-9


def test_elbo_with_the_empty_guide_is_log_prob():
    ng = fitted(3)
    x = ng.vocab.encode(["ab", "bbbbab", "", "a"])
    expected = ng.log_prob(x)
    # Categorical renormalizes the probabilities it is given: float64 rounding only
    assert torch.allclose(elbo(ng.model, ng.guide, x), expected, rtol=0, atol=1e-10)


def test_samples_follow_the_counts_and_the_generator():
    ng = fitted(3, ["abc"] * 200, alphabet="abc", concentration=1e-3)
    samples = ng.sample(50, torch.Generator().manual_seed(0))
    assert len(samples) == 50 and all(set(s) <= set("abc") for s in samples)
    # p("abc") = (200 / 200.003)^4 ~ 0.99994 per sample
    assert samples.count("abc") >= 49
    uniform = NGramModel(2, Vocabulary("ab"))  # no counts: the prior predictive
    assert uniform.sample(20, torch.Generator().manual_seed(1)) == \
        uniform.sample(20, torch.Generator().manual_seed(1))
    assert all(len(w) <= 4 for w in uniform.sample(200, torch.Generator(), max_length=4))


def test_counting_a_hundred_thousand_words_takes_seconds():
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(1, 20)))
             for _ in range(100_000)]
    vocab = Vocabulary()
    x = vocab.encode(words)
    start = time.perf_counter()
    ng = NGramModel(6, vocab).fit_counts(x)
    seconds = time.perf_counter() - start
    assert ng.pair_counts.sum() == vocab.lengths(x).sum()
    # measured about 0.5 s on 2 CPU cores; 10 s leaves room for a loaded machine
    assert seconds < 10, seconds


def test_input_errors_are_clear():
    vocab = Vocabulary("ab")
    with pytest.raises(ValueError, match="order"):
        NGramModel(0, vocab)
    with pytest.raises(ValueError, match="concentration"):
        NGramModel(2, vocab, concentration=0.0)
    with pytest.raises(ValueError, match="overflows"):
        NGramModel(40, vocab)
    ng = NGramModel(2, vocab)
    with pytest.raises(ValueError, match="fit_counts"):
        ng.fit_concentration()
    with pytest.raises(ValueError, match="int64"):
        ng.log_prob(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="0..4"):
        ng.log_prob(torch.tensor([[7, 0]]))
    with pytest.raises(ValueError, match=r"contexts must be int64 \[\.\.\., 1\]"):
        ng.conditional(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="context ids"):
        ng.conditional(torch.tensor([[5]]))
    with pytest.raises(ValueError, match="concentration"):
        ng.log_evidence(-1.0)


def sequential_backoff_log_evidence(ng, words):
    """Brute force for the hierarchical prior: ``(N_hc + alpha m_c(h')) / (N_h + alpha)`` with
    the counts of the symbols before, the prior means read off the (fixed) lower order."""
    counts, totals = Counter(), Counter()
    log_p = 0.0
    for word in ng.vocab.encode(words):
        targets, contexts, mask = ng.contexts(word[None])
        for t in range(int(mask.sum())):
            context, symbol = tuple(contexts[0, t].tolist()), int(targets[0, t])
            mean = float(ng.lower.conditional(contexts[0, t, 1:][None])[0, symbol]) \
                if ng.lower is not None else 1 / ng.num_outputs
            log_p += math.log((counts[context, symbol] + ng.concentration * mean)
                              / (totals[context] + ng.concentration))
            counts[context, symbol] += 1
            totals[context] += 1
    return log_p


@pytest.mark.parametrize("order", [1, 2, 4])
def test_backoff_log_evidence_equals_the_sequential_predictive_probabilities(order):
    words = TINY + ["cab", "abc", "ccc", "a"]
    ng = fitted(order, words, alphabet="abc", concentration=0.7, backoff=True)
    assert abs(ng.log_evidence() - sequential_backoff_log_evidence(ng, words)) < 1e-10


def test_backoff_falls_back_to_the_lower_order_in_unseen_contexts():
    # "ba" never precedes a symbol in these words: the trigram's predictive after it is the
    # bigram's after "a"; a seen context mixes its counts with that mean.
    ng = fitted(3, ["abb", "ab", "aab"], concentration=2.0, backoff=True)
    encode = ng.vocab.encode
    b, a = int(encode(["b"])[0, 0]), int(encode(["a"])[0, 0])
    unseen = torch.tensor([[b, a]])
    torch.testing.assert_close(ng.conditional(unseen), ng.lower.conditional(unseen[:, 1:]),
                               rtol=0, atol=1e-15)
    bos = ng.vocab.bos
    seen = torch.tensor([[bos, a]])  # "a" at the start: followed by b twice, a once
    mean = ng.lower.conditional(seen[:, 1:])[0]
    expected = (torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64) + 2.0 * mean) / (3 + 2.0)
    torch.testing.assert_close(ng.conditional(seen)[0], expected, rtol=0, atol=1e-15)


def test_backoff_beats_additive_smoothing_at_high_order_on_english_words():
    # The bundled 5,429 words, the example's split: the symmetric 6-gram overfits (held-out
    # bits per character rise past n = 4, docs/language-models.md), the hierarchical one falls
    # back on lower orders where contexts are rare. Every order gets its own alpha.
    data = load_words(BUNDLED_PATH, seed=0)
    vocab = Vocabulary.from_words(data.words)
    train, test = vocab.encode(data.train), vocab.encode(data.test)
    symbols = int(vocab.lengths(test).sum())
    bits = {}
    for backoff in (False, True):
        ng = NGramModel(6, vocab, backoff=backoff).fit_counts(train)
        ng.fit_concentration()
        bits[backoff] = -float(ng.log_prob(test).sum()) / symbols / math.log(2)
    alphas, level = [], ng
    while level is not None:
        alphas.append(level.concentration)
        level = level.lower
    assert len(alphas) == 6 and all(a != 1.0 for a in alphas)  # each moved from its start
    # measured: 3.66 symmetric against about 3.1 hierarchical; a margin of 0.3 bits
    assert bits[True] < bits[False] - 0.3, bits


@pytest.mark.parametrize("call, message", [
    (lambda v: NGramModel(2.5, v), "order must be a positive integer, got 2.5"),
    (lambda v: NGramModel(True, v), "order must be a positive integer, got True"),
    (lambda v: NGramModel(2, v, concentration=float("inf")),
     "concentration must be a finite number, got inf"),
    (lambda v: NGramModel(2, v, concentration=float("nan")),
     "concentration must be a finite number, got nan"),
    (lambda v: NGramModel(2, v, concentration=1e308),
     r"concentration must be > 0 and <= 1e\+06, got 1e\+308"),
    (lambda v: NGramModel(2, v, concentration=True), "concentration must be a finite number"),
    (lambda v: NGramModel(2, v, backoff="yes"), "backoff must be True or False"),
    (lambda v: NGramModel(2, "ab"), "vocab must be a Vocabulary, got str"),
    (lambda v: NGramModel(2, v).sample(-1), "num must be a positive integer, got -1"),
    (lambda v: NGramModel(2, v).sample(0), "num must be a positive integer, got 0"),
    (lambda v: NGramModel(2, v).sample(2, max_length=0),
     "max_length must be a positive integer, got 0"),
    (lambda v: NGramModel(2, v).sample(2, max_length=2.0),
     "max_length must be a positive integer, got 2.0"),
    (lambda v: fitted(2).log_evidence(float("inf")),
     r"alpha \(the concentration\) must be a finite number, got inf"),
    (lambda v: fitted(2).fit_concentration(bounds=(-1, 2)), r"bounds\[0\] must be > 0"),
    (lambda v: fitted(2).fit_concentration(bounds=(1, float("inf"))),
     r"bounds\[1\] must be a finite number"),
    (lambda v: fitted(2).fit_concentration(bounds=(2, 1)), r"low < high, got \(2, 1\)"),
    (lambda v: fitted(2).fit_concentration(bounds=(1,)), r"a pair \(low, high\)"),
    (lambda v: fitted(2, backoff=True).fit_concentration(bounds=(0.0, 1.0)),
     r"bounds\[0\] must be > 0"),
])
def test_bad_arguments_are_named_before_any_work(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(Vocabulary("ab"))


@pytest.mark.parametrize("backoff", [False, True])
def test_the_largest_concentration_is_the_uniform_or_lower_order_limit_without_nan(backoff):
    # concentration=inf or 1e308 used to give NaN (alpha * V overflows); the largest one
    # allowed must give finite numbers at their limit: a prior that swamps the 19 counts
    vocab = Vocabulary("ab")
    x = vocab.encode(TINY)
    big = NGramModel(2, vocab, concentration=1e6, backoff=backoff).fit_counts(x)
    log_p = big.log_prob(x)
    symbols = vocab.lengths(x).double()
    if backoff:  # the prior mean is the unigram's predictive, which big.lower holds
        limit = big.lower.log_prob(x)
    else:
        limit = -symbols * math.log(vocab.num_outputs)
    assert torch.isfinite(log_p).all()
    assert torch.allclose(log_p, limit, atol=1e-4)
    # the evidence of the symmetric prior tends to the uniform model's log-likelihood
    if not backoff:
        assert big.log_evidence() == pytest.approx(float(limit.sum()), abs=1e-3)
    # fitting inside the largest allowed bounds stays finite
    assert 0 < big.fit_concentration(bounds=(1e-3, 1e6)) <= 1e6


def test_a_huge_order_is_refused_at_once():
    # base ** (order - 1) was computed as an exact integer first: order 10**8 took seconds,
    # 10**12 never finished (this test would not either)
    vocab = Vocabulary.from_words(["cat", "dog"])
    for order in (10**8, 10**12):
        with pytest.raises(ValueError, match=f"order {order} with .* overflows the int64"):
            NGramModel(order, vocab)
