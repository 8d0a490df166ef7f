"""GRU language model: causality, normalization, masking, Pyro pair, learning, input checks."""

import itertools
import math
import random

import pytest
import torch

from inference import elbo, fit
from ppl_models.neural_lm import GRULanguageModel
from ppl_models.ngram import NGramModel
from ppl_models.text import Vocabulary


def small_lm(alphabet="abc", **kwargs) -> GRULanguageModel:
    torch.manual_seed(0)
    return GRULanguageModel(Vocabulary(alphabet), **{"embedding": 8, "hidden": 16, **kwargs})


def test_logits_are_causal():
    lm = small_lm()
    x = lm.vocab.encode(["abcabcab", "ccba"])
    targets, _ = lm.prepare(x)
    e = lm.embed(targets).detach().requires_grad_()  # [2, 9, embedding]
    logits = lm.logits_from_embedding(e)
    for t in range(targets.shape[1]):
        (grad,) = torch.autograd.grad(logits[:, t].sum(), e, retain_graph=True)
        reach = grad.abs().sum((0, 2))  # [9]: influence of s_u on the logits of step t
        # exactly zero, not merely small: the future never enters the computation
        assert (reach[t:] == 0).all(), f"step {t} sees s_u for u >= t: {reach[t:]}"
        assert (reach[:t] > 0).all(), f"step {t} misses part of its prefix"


def test_probabilities_of_all_words_plus_longer_prefixes_sum_to_one():
    # as for the n-gram: words of at most L characters and prefixes of L + 1 characters
    # partition all symbol streams, so their probabilities add up to one
    lm = small_lm("ab").double()
    max_length = 7
    words = ["".join(w) for m in range(max_length + 2) for w in itertools.product("ab", repeat=m)]
    with torch.no_grad():
        x = lm.vocab.encode(words)
        targets, mask = lm.prepare(x)
        log_p = lm.logits(targets).log_softmax(-1).gather(-1, targets[..., None])[..., 0]
        word_log_p = torch.where(mask, log_p, 0.0).sum(1)  # [words]
        prefix_log_p = log_p[:, :max_length + 1].sum(1)  # characters only, no end symbol
    lengths = torch.tensor([len(w) for w in words])
    total = word_log_p[lengths <= max_length].exp().sum()
    remaining = prefix_log_p[lengths == max_length + 1].exp().sum()
    assert torch.allclose(word_log_p, lm.log_prob(x).detach())
    # float64 softmax and 767 terms: rounding well below 1e-12; the tail is not negligible
    assert remaining > 1e-2
    assert abs(float(total + remaining) - 1) < 1e-12, (float(total), float(remaining))


def test_padding_does_not_change_log_prob():
    lm = small_lm().eval()
    words = ["a", "abcabcabcabc", "cab"]
    with torch.no_grad():
        together = lm.log_prob(lm.vocab.encode(words))
        alone = torch.cat([lm.log_prob(lm.vocab.encode([w])) for w in words])
        wider = lm.log_prob(lm.vocab.encode(words, max_len=30))
    # batched and single GRU runs differ only by float32 rounding
    assert torch.allclose(together, alone, atol=1e-5) and torch.allclose(together, wider)


def test_elbo_with_the_empty_guide_is_log_prob():
    lm = small_lm().eval()
    x = lm.vocab.encode(["abc", "", "ccccccab", "ba"])
    with torch.no_grad():
        expected = lm.log_prob(x)
    # no latent variables: the single log weight is log p(x) exactly (float32 rounding)
    assert torch.allclose(elbo(lm.model, lm.guide, x), expected, rtol=1e-6, atol=1e-5)


def syllable_words(num: int, seed: int) -> list[str]:
    """One random consonant-vowel syllable repeated 1 to 4 times ("kiki", "bababa")."""
    rng = random.Random(seed)
    return [(rng.choice("bdgkmnpst") + rng.choice("aeiou")) * rng.randint(1, 4)
            for _ in range(num)]


def test_maximum_likelihood_training_beats_the_unigram():
    vocab = Vocabulary("abdegikmnopstu")
    train, test = vocab.encode(syllable_words(2000, 0)), vocab.encode(syllable_words(500, 1))
    lm = GRULanguageModel(vocab, embedding=16, hidden=64)
    fit(lm.model, lm.guide, train, epochs=8, batch_size=50, lr=1e-2, seed=0, progress=False)
    unigram = NGramModel(1, vocab).fit_counts(train)
    unigram.fit_concentration()
    symbols = float(vocab.lengths(test).sum())
    with torch.no_grad():
        lm_bits = float(-lm.eval().log_prob(test).sum() / symbols / math.log(2))
    unigram_bits = float(-unigram.log_prob(test).sum() / symbols / math.log(2))
    # the source has log2(45 * 4) / 6 = 1.25 bits per symbol; measured over three seeds the
    # GRU reaches 1.32 to 1.34 against 3.77 for the unigram, so 2 bits of margin is safe
    assert lm_bits < unigram_bits - 2, (lm_bits, unigram_bits)
    samples = lm.sample(20, torch.Generator().manual_seed(0))
    language = {(c + v) * k for c in "bdgkmnpst" for v in "aeiou" for k in range(1, 5)}
    # measured over three seeds, 92 to 96% of 1000 samples are words of the language;
    # 15 of 20 fails with probability below 1% at 92%
    assert sum(s in language for s in samples) >= 15, samples


def test_samples_use_the_vocabulary_and_the_generator():
    lm = small_lm()
    first = lm.sample(30, torch.Generator().manual_seed(3))
    assert first == lm.sample(30, torch.Generator().manual_seed(3))
    assert all(set(w) <= set("abc") for w in first)
    assert all(len(w) <= 3 for w in lm.sample(100, torch.Generator(), max_length=3))


def test_input_errors_are_clear():
    lm = small_lm()
    x = lm.vocab.encode(["ab", "c"])
    with pytest.raises(ValueError, match="int64"):
        lm.log_prob(x.float())
    with pytest.raises(ValueError, match="0..5"):
        lm.log_prob(x + 6)
    with pytest.raises(ValueError, match=r"\[batch, max_len\]"):
        lm.log_prob(x[0])
    with pytest.raises(ValueError, match="end symbol"):
        lm.model(torch.tensor([[1, 2, 3]]))


def test_compiled_path_gives_the_eager_values_and_gradients():
    # compile=True used to be refused: prepare trimmed the padding columns with
    # int(lengths.max()), a value read from the data. Under the tracer the columns stay,
    # masked: the traced step's loss and gradients are the eager step's (which trims).
    import copy

    import pyro

    from inference import log_importance_weights
    from inference.training.compiled_step import CompiledSVIStep
    from inference.training.svi_step import SVIStep

    torch.manual_seed(0)
    vocab = Vocabulary("abc")
    # padded to 9 columns, the longest word here has 5 + end: the trace keeps 3 more
    x = vocab.encode(["a", "abcab", "bb", "c", "cab", "abca"], max_len=9)
    lm = GRULanguageModel(vocab, embedding=3, hidden=5).double()
    eager, compiled = copy.deepcopy(lm), copy.deepcopy(lm)
    store = pyro.get_param_store()
    with store.scope():
        step = SVIStep(eager.model, eager.guide)
        step.loss_and_grads(eager.model, eager.guide, x)  # first call: checks
        eager.zero_grad(set_to_none=True)
        eager_loss = step.loss_and_grads(eager.model, eager.guide, x)
    with store.scope():
        compiled_loss = CompiledSVIStep(compiled.model, compiled.guide,
                                        backend="eager").loss_and_grads(x)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-12)
    assert eager_loss == pytest.approx(-float(lm.log_prob(x).detach().sum()), rel=1e-12)
    for p, q in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-10, atol=1e-12)
    weights = log_importance_weights(lm.model, lm.guide, x, num_samples=1, compile="eager",
                                     progress=False)
    torch.testing.assert_close(weights.reshape(-1), lm.log_prob(x).detach(), rtol=1e-12,
                               atol=1e-12)
    history = fit(lm.model, lm.guide, x, epochs=2, batch_size=3, compile="eager",
                  progress=False)
    assert len(history) == 2


def test_validation_words_encoded_on_their_own_width_are_named_with_the_remedy():
    # Vocabulary.encode pads each set to its own longest word: fit refused valid_data
    # "[[4]], the training data [[9]]" without saying how to encode it
    vocab = Vocabulary("abc")
    x = vocab.encode(["a", "abcabcab", "bb", "c", "cab"])
    model = GRULanguageModel(vocab, embedding=3, hidden=5)
    with pytest.raises(ValueError, match=r"encode valid_data to the training width, e\.g\. "
                                         rf"Vocabulary\.encode\(words, max_len={x.shape[1]}\)"):
        fit(model.model, model.guide, x, valid_data=vocab.encode(["abc", "a"]), epochs=1,
            batch_size=5, progress=False)
    history = fit(model.model, model.guide, x, epochs=1, batch_size=5, progress=False,
                  valid_data=vocab.encode(["abc", "a"], max_len=x.shape[1]))
    assert math.isfinite(history[0]["valid_elbo"])
