"""A careless user's inputs that a probe of 2026-11-29 (ninth session) found failing raw or
losing work; each test fails on the code before its fix.

- A fitted ``NGramModel`` did not load from its own ``state_dict`` (torch's size mismatch:
  its count buffers have as many entries as the pairs a fit saw), and a fitted concentration
  was not in the state at all (a restored model would have scored with alpha = 1).
- Super-resolution refused ``factor=np.int64(2)`` where every other count accepts numpy
  integers; ``FlowVAE(num_flows=np.int64(1))`` passed its own check, then ``ConditionalIAF``
  refused it.
- ``IAFNormal.log_prob`` of a value that broadcasts against the batch (one code under every
  image's posterior) failed inside Pyro's autoregressive inverse.
- ``VAE(likelihood=["bernoulli"])`` and ``likelihood_options=[...]`` failed with Python's
  "unhashable type" and "argument after ** must be a mapping".
- ``sample_images(..., mean=False)`` drew the pixels from the global generator: the same
  seeded generator gave other images on every call.
- ``NGramModel`` at a concentration whose pseudo-counts round to 0 (5e-324) scored an unseen
  pair ``-inf`` (exact: -748); one set by attribute to -1 gave NaN.
- ``LinearGaussian.log_marginal``, the closed form the estimators are checked against, lost
  0.05-1.7 nats in float32 for noise scales of 3e-3 to 3e-4 and failed in torch's Cholesky
  below.
- ``GRULanguageModel(dropout=0.5)`` in training mode was refused as a dependence between
  datapoints (the rows check's replay left the GRU's dropout between layers on).
- ``Autoencoder``'s reconstruction score p(x | z = encoder(x)) came out of ``log_evidence``
  as "evidences" summing to 15 over all 2x2 binary images.
- ``posterior_means`` of a ``VonMises`` or ``ProjectedNormal`` site returned circular means.
- ``bits_back_encode`` coded a ``FlowVAE`` with its flow's base Gaussian as q (15% above the
  model's -ELBO, silently).
- Bits-back coding, completion and super-resolution ran a VAE with dropout left in training
  mode: bytes no decoder could read back, chains targeting a randomly masked density.
- A loss object's numpy-integer ``num_particles`` skipped fit's particle survey (counted as
  1); the seeded binarization and ``ToyManifold.sample`` changed with the default dtype.
- A UTF-16 word list got the hint to convert from latin1; ``WordData("cat", ...)`` failed with
  Python's "can only concatenate str".
"""

import io
import math

import numpy as np
import pytest
import torch

from inference.uses import average_pool, super_resolve_map
from ppl_models import NGramModel, Vocabulary
from ppl_models.vae import VAE

WORDS = ["ab", "abc", "cab", "ba", "a", "cc"]


def _saved_and_loaded(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("order, backoff", [(1, False), (2, False), (3, True)])
def test_a_fitted_ngram_model_loads_from_its_state_dict_with_its_concentration(order, backoff):
    vocab = Vocabulary("abc")
    x = vocab.encode(WORDS)
    fitted = NGramModel(order, vocab, backoff=backoff).fit_counts(x)
    alpha = fitted.fit_concentration()
    assert alpha != 1.0
    restored = NGramModel(order, vocab, backoff=backoff)
    restored.load_state_dict(_saved_and_loaded(fitted.state_dict()))
    assert restored.concentration == alpha
    if backoff:
        assert restored.lower.concentration == fitted.lower.concentration
    assert torch.equal(restored.log_prob(x), fitted.log_prob(x))


@pytest.mark.parametrize("edit, problem", [
    (lambda s: s.__setitem__("pair_counts", s["pair_counts"] * 0.5), "not whole numbers"),
    (lambda s: s.__setitem__("pair_codes", s["pair_codes"].flip(0)), "not distinct, sorted"),
    (lambda s: s.__setitem__("context_counts", s["context_counts"] + 1), "context codes or "
                                                                         "totals"),
    (lambda s: s.__setitem__("_extra_state", {"concentration": -1.0}), "concentration"),
])
def test_an_edited_ngram_state_is_refused_naming_the_problem(edit, problem):
    vocab = Vocabulary("abc")
    state = NGramModel(2, vocab).fit_counts(vocab.encode(WORDS)).state_dict()
    edit(state)
    with pytest.raises((RuntimeError, ValueError), match=problem):
        NGramModel(2, vocab).load_state_dict(state)


def test_super_resolution_takes_a_numpy_or_tensor_integer_factor():
    x = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    expected = average_pool(x, 2)
    for factor in (np.int64(2), torch.tensor(2)):
        assert torch.equal(average_pool(x, factor), expected)
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(3,))
    result = super_resolve_map(vae, expected, np.int64(2), steps=2)
    assert result.mean.shape == (2, 1, 4, 4)
    for bad in (True, 2.0, 1, np.int64(1)):
        with pytest.raises(ValueError, match="factor must be an integer >= 2"):
            average_pool(x, bad)


def _flow_vae_and_posterior():
    from ppl_models import FlowVAE

    torch.manual_seed(0)
    flow_vae = FlowVAE((1, 8, 8), 3, hidden=(16,), num_flows=2)
    with torch.no_grad():  # a flow away from the identity
        for parameter in flow_vae.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    x = (torch.rand(4, 1, 8, 8) < 0.5).float()
    return flow_vae, flow_vae.posterior(x)


def test_an_iaf_posterior_scores_values_that_broadcast_against_its_batch():
    # a code scored under every image's posterior, as torch's distributions allow
    _, posterior = _flow_vae_and_posterior()
    z = torch.randn(5, 4, 3)
    for value, full in ((z[0, 0], z[0, 0].expand(4, 3)), (z[0, :1], z[0, :1].expand(4, 3)),
                        (z[:, :1], z[:, :1].expand(5, 4, 3))):
        torch.testing.assert_close(posterior.log_prob(value), posterior.log_prob(full.clone()))
        torch.testing.assert_close(posterior.log_prob_elements(value),
                                   posterior.log_prob_elements(full.clone()))
    with pytest.raises(ValueError, match=r"value of shape \[3, 3\] does not broadcast with the "
                                         r"batch shape \[4\]"):
        posterior.log_prob(torch.zeros(3, 3))


def test_flow_sizes_take_numpy_and_tensor_integers():
    from ppl_models import FlowVAE
    from ppl_models.flow_guide import ConditionalIAF

    torch.manual_seed(0)
    plain = FlowVAE((1, 4, 4), 2, hidden=(3,), num_flows=1)
    torch.manual_seed(0)
    numpy_sized = FlowVAE((1, 4, 4), 2, hidden=(3,), num_flows=np.int64(1))
    assert numpy_sized.flow.num_flows == 1 and type(numpy_sized.flow.num_flows) is int
    for (name, a), b in zip(plain.state_dict().items(), numpy_sized.state_dict().values()):
        assert torch.equal(a, b), name
    flow = ConditionalIAF(np.int64(3), torch.tensor(2), np.int32(0), np.int64(5))
    assert (flow.latent_dim, flow.context_dim, flow.num_flows, flow.hidden) == (3, 2, 0, 5)
    with pytest.raises(ValueError, match="num_flows must be an integer >= 0"):
        ConditionalIAF(3, 2, -1, 5)


def test_a_likelihood_of_the_wrong_type_is_named():
    from ppl_models import VAE as ImageVAE

    with pytest.raises(ValueError, match=r"unknown likelihood \['bernoulli'\]; choose one of "
                                         r"bernoulli"):
        ImageVAE((1, 4, 4), 2, likelihood=["bernoulli"])
    with pytest.raises(TypeError, match="likelihood_options must be a dict"):
        ImageVAE((1, 4, 4), 2, likelihood="gaussian-fixed",
                 likelihood_options=[("scale", 0.1)])


@pytest.mark.parametrize("make", [
    lambda: __import__("ppl_models").VAE((1, 8, 8), 3, hidden=(8,)),
    lambda: __import__("ppl_models").VAE((1, 8, 8), 3, hidden=(8,),
                                         likelihood="logistic-mixture"),
    lambda: __import__("ppl_models").TwoLayerVAE((1, 8, 8), 4, 2, hidden=(8,),
                                                 top_hidden=(8,)),
], ids=["bernoulli", "logistic-mixture", "two-layer"])
def test_sampled_images_come_from_the_generator_and_leave_the_global_state(make):
    torch.manual_seed(0)
    model = make()
    state = torch.get_rng_state()
    first = model.sample_images(6, generator=torch.Generator().manual_seed(5), mean=False)
    assert torch.equal(torch.get_rng_state(), state), "the global generator was drawn from"
    again = model.sample_images(6, generator=torch.Generator().manual_seed(5), mean=False)
    other = model.sample_images(6, generator=torch.Generator().manual_seed(6), mean=False)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_an_ngram_concentration_whose_pseudo_counts_underflow_is_named():
    vocab = Vocabulary("abc")
    train, test = vocab.encode(["ab", "abc", "cab"]), vocab.encode(["cc", "ab"])
    model = NGramModel(2, vocab, concentration=1e-300).fit_counts(train)
    exact = model.log_prob(test)  # an unseen pair: log(1e-300 / V) and the like, finite
    assert torch.isfinite(exact).all() and exact[0] < -690
    model.concentration = 5e-324  # alpha / V rounds to 0 in float64 (it gave -inf)
    with pytest.raises(FloatingPointError, match=r"NGramModel.log_prob: a predictive "
                                                 r"probability of an unseen symbol rounds to 0"):
        model.log_prob(test)
    with pytest.raises(ValueError, match="concentration must be"):
        model.concentration = -1.0  # it gave NaN log probabilities
    with pytest.raises(ValueError, match="concentration must be"):
        model.concentration = 0.0


def test_the_linear_gaussian_closed_form_stays_exact_for_a_small_noise_scale():
    from ppl_models import LinearGaussian

    # float32 parameters, truth from the same values in float64; C = W W^T + s^2 I with
    # s^2 below float32's rounding of W W^T lost 0.7 nats at s = 1e-3, then failed
    for noise, (data_dim, latent_dim) in [(1e-3, (6, 2)), (3e-4, (6, 2)), (1e-4, (6, 2)),
                                           (1e-4, (3, 5)), (0.5, (4, 4))]:
        model = LinearGaussian(data_dim, latent_dim, noise_scale=noise)
        x = model.simulate(50)
        weight, bias = model.weight.detach().double(), model.bias.detach().double()
        covariance = weight @ weight.T + model.noise_scale.detach().double() ** 2 * torch.eye(
            data_dim, dtype=torch.float64)
        truth = torch.distributions.MultivariateNormal(bias, covariance).log_prob(x.double())
        estimate = model.log_marginal(x)
        assert estimate.dtype == torch.float32
        error = float((estimate.detach().double() - truth).abs().max())
        assert error < 1e-5 * float(truth.abs().max()) + 1e-5, (noise, error)


def test_a_gru_with_dropout_in_training_mode_is_warned_about_not_refused():
    # the rows check replays with dropout off; a GRU's dropout between layers was left on,
    # and its masks, drawn per batch, were taken for a dependence between datapoints
    from inference import elbo
    from ppl_models import GRULanguageModel

    vocab = Vocabulary("abc")
    torch.manual_seed(0)
    language_model = GRULanguageModel(vocab, embedding=8, hidden=16, layers=2, dropout=0.5)
    x = vocab.encode(["ab", "abc", "ca", "b"])
    with pytest.warns(UserWarning, match=r"training mode with GRU\(dropout=0.5\)"):
        result = elbo(language_model.model, language_model.guide, x, progress=False)
    assert result.shape == (4,) and torch.isfinite(result).all()
    assert language_model.training


def test_the_estimators_refuse_an_autoencoders_reconstruction_score():
    # p(x | z = encoder(x)) reads x to score x: its exp summed to 15 over all 2x2 binary images
    from inference import PairError, bound_sweep, elbo, fit, iwae_bound, log_evidence
    from ppl_models import Autoencoder

    torch.manual_seed(0)
    autoencoder = Autoencoder((1, 2, 2), 2, hidden=(8,))
    images = (torch.rand(8, 1, 2, 2) < 0.5).float()
    for estimate in (lambda: log_evidence(autoencoder.model, autoencoder.guide, images),
                     lambda: iwae_bound(autoencoder.model, autoencoder.guide, images,
                                        num_samples=2),
                     lambda: bound_sweep(autoencoder.model, autoencoder.guide, images,
                                         num_samples=(1, 2))):
        with pytest.raises(PairError, match=r"observed site\(s\) 'x' as no density of the data"):
            estimate()
    # training, and its objective on validation data (fit's valid_elbo), stay
    history = fit(autoencoder.model, autoencoder.guide, images, valid_data=images, epochs=1,
                  progress=False)
    assert math.isfinite(history[-1]["valid_elbo"])
    assert torch.isfinite(elbo(autoencoder.model, autoencoder.guide, images)).all()


@pytest.mark.parametrize("family, draw", [
    ("VonMises", lambda n: __import__("pyro").distributions.VonMises(
        torch.tensor([0.0, 2.5, 3.0, -3.1])[:n], torch.tensor(1.0))),
    ("ProjectedNormal", lambda n: __import__("pyro").distributions.ProjectedNormal(
        torch.tensor([[1.0, 1.0]]).expand(n, 2))),
])
def test_posterior_means_refuses_circular_means(family, draw):
    # VonMises(2.5, 1).mean is 2.5 where its draws average 0.64: a circular mean, not E[z]
    import pyro

    from inference.uses import posterior_means

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", draw(x.shape[0]))

    with pytest.raises(NotImplementedError, match=rf"site 'z' is a {family}, whose \.mean is "
                                                  r"a circular mean"):
        posterior_means(guide, torch.zeros(4))


def test_bits_back_refuses_a_flow_vae_whose_encoder_is_not_its_guide():
    # FlowVAE.encode is the base Gaussian of its IAF posterior: bits-back coded with it at
    # 40.5 bits per image against the model's -ELBO of 35.2, silently
    pytest.importorskip("constriction")
    from inference.coding.bits_back import bits_back_encode
    from ppl_models import FlowVAE

    torch.manual_seed(0)
    flow_vae = FlowVAE((1, 4, 4), 2, hidden=(8,), num_flows=1)
    images = (torch.rand(3, 1, 4, 4) < 0.5).float()
    with pytest.raises(TypeError, match=r"vae: FlowVAE's q\(z \| x\) is an IAF flow of the "
                                        r"Gaussian encode\(x\) gives, but bits-back coding"):
        bits_back_encode(flow_vae, images)
    assert bits_back_encode(VAE((1, 4, 4), 2, hidden=(8,)), images)  # a VAE's is
    # decoding stays open: N(encode(x)) decodes what it coded, bytes of the code before too
    from inference.coding.bits_back import bits_back_decode
    with pytest.raises(ValueError, match="bits-back images"):  # not a refusal of the model
        bits_back_decode(flow_vae, bits_back_encode(VAE((1, 4, 4), 2, hidden=(8,)), images))


def test_a_utf16_word_list_gets_the_right_conversion_hint(tmp_path):
    from ppl_models.text import load_words

    path = tmp_path / "words.txt"
    path.write_bytes("cat\ndog\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"not UTF-8 text: byte 0xff at offset 0.*iconv -f "
                                         r"utf-16 -t utf-8"):
        load_words(path)


def test_word_data_checks_its_fields():
    from ppl_models.text import WordData

    with pytest.raises(TypeError, match="WordData: train must be a list of str, got str"):
        WordData("cat", ["dog"], ["eel"], "file:x")
    with pytest.raises(TypeError, match="WordData: source must be a str"):
        WordData(["cat"], ["dog"], ["eel"], None)
    assert WordData(["cat"], [], ["eel"], "file:x").words == ["cat", "eel"]
    assert WordData(("cat",), (), ("eel",), "file:x").words == ["cat", "eel"]  # sequences


class _DropoutVAE(VAE):
    """A VAE with dropout on its decoder's output, left in training mode (as fit leaves it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop = torch.nn.Dropout(0.3)

    def decode(self, z):
        return self.pixel_distribution(self.drop(self.decoder(z)))


def test_bits_back_codes_a_training_mode_vae_in_evaluation_mode():
    # each pass drew its own dropout masks: the bytes could not be decoded, in either mode
    pytest.importorskip("constriction")
    from inference.coding.bits_back import bits_back_decode, bits_back_encode

    torch.manual_seed(0)
    vae = _DropoutVAE((1, 4, 4), 4, hidden=(16,))
    images = (torch.rand(10, 1, 4, 4) < 0.5).float()
    data = bits_back_encode(vae, images)
    assert vae.training and vae.drop.training  # put back
    decoded, _ = bits_back_decode(vae, data)
    assert torch.equal(decoded, images)
    assert data == bits_back_encode(vae.eval(), images)


def test_super_resolution_and_completion_use_the_evaluation_mode_density():
    # the chains targeted a randomly masked density (pixel posteriors 0.13 off)
    from inference.uses import metropolis_within_gibbs, observed_channel, super_resolve_mh

    torch.manual_seed(0)
    vae = _DropoutVAE((1, 4, 4), 2, hidden=(8,))
    images = (torch.rand(2, 1, 4, 4) < 0.5).float()
    low = average_pool(images, 2)
    missing = torch.zeros_like(images, dtype=torch.bool)
    missing[..., :2, :] = True
    channel = observed_channel(images, missing)
    runs = []
    for mode in ("train", "eval"):
        getattr(vae, mode)()
        runs.append((
            super_resolve_mh(vae, low, 2, num_steps=40,
                             generator=torch.Generator().manual_seed(1)).mean,
            metropolis_within_gibbs(vae, channel, num_steps=20,
                                    generator=torch.Generator().manual_seed(1))[0]))
    for trained, evaluated in zip(*runs):
        assert torch.equal(trained, evaluated)


def test_a_numpy_particle_count_in_a_loss_object_is_surveyed_as_an_int():
    # np.int64(4) was counted as 1 particle, not vectorized: the pair that cannot take a
    # particle dim failed inside Pyro at the first step instead of being refused by name
    import pyro
    import pyro.distributions as dist
    from pyro.infer import Trace_ELBO

    from inference import PairError, fit

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(torch.cat([z, x], -1).sum(-1), 1.0), obs=x[:, 0])

    def guide(x):
        loc = pyro.param("loc", torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc.expand(x.shape[0], 2), 1.0).to_event(1))

    x = torch.randn(16, 2)
    for count in (4, np.int64(4)):
        pyro.clear_param_store()
        with pytest.raises(PairError, match=r"num_particles=4, vectorize_particles=True.*"
                                            r"the pair fails with particles"):
            fit(model, guide, x, loss=Trace_ELBO(num_particles=count, vectorize_particles=True),
                epochs=1, progress=False)
    pyro.clear_param_store()


def test_seeded_data_do_not_depend_on_the_default_dtype():
    # under a float64 default 2673 of 19200 binarized test pixels of digits differed
    from ppl_models import ToyManifold
    from ppl_models.data import binarize_static

    images = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    first, data = binarize_static(images, 3), ToyManifold().sample(20, seed=4)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert torch.equal(binarize_static(images, 3), first)
        x, z = ToyManifold().sample(20, seed=4)
        assert x.dtype == torch.float64
        torch.testing.assert_close(x.float(), data[0])
        torch.testing.assert_close(z.float(), data[1])
    finally:
        torch.set_default_dtype(previous)


def test_the_linear_gaussian_closed_form_has_gradients_at_a_rank_deficient_weight():
    # a first rewrite through W's QR factors gave NaN gradients at W = 0 or a zero column
    from ppl_models import LinearGaussian

    torch.manual_seed(0)
    model = LinearGaussian(4, 2).double()
    x = model.simulate(10).detach()
    for weight in (torch.zeros(4, 2), torch.cat([torch.randn(4, 1), torch.zeros(4, 1)], 1)):
        with torch.no_grad():
            model.weight.copy_(weight)
        model.zero_grad()
        model.log_marginal(x).sum().backward()
        w = model.weight.detach().clone().requires_grad_()
        covariance = w @ w.T + model.noise_scale.detach() ** 2 * torch.eye(4, dtype=torch.float64)
        torch.distributions.MultivariateNormal(model.bias.detach(), covariance).log_prob(
            x).sum().backward()
        torch.testing.assert_close(model.weight.grad, w.grad)


def test_an_ngram_model_saved_before_its_concentration_was_kept_still_loads():
    import pickle
    import warnings

    vocab = Vocabulary("abc")
    x = vocab.encode(WORDS)
    fitted = NGramModel(2, vocab, concentration=0.5).fit_counts(x)
    state = fitted.state_dict()
    del state["_extra_state"]  # the format before
    restored = NGramModel(2, vocab, concentration=0.5)
    with pytest.warns(UserWarning, match="the state holds no concentration"):
        restored.load_state_dict(state)
    assert torch.equal(restored.log_prob(x), fitted.log_prob(x))
    # a whole module pickled before concentration became a property
    old = pickle.loads(pickle.dumps(fitted))
    old.__dict__["concentration"] = old.__dict__.pop("_concentration")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert old.concentration == 0.5
    assert torch.equal(old.log_prob(x), fitted.log_prob(x))


def test_a_damaged_ngram_state_leaves_the_model_as_it_was():
    vocab = Vocabulary("abc")
    x = vocab.encode(WORDS)
    fitted = NGramModel(2, vocab).fit_counts(x)
    before = fitted.log_prob(x)
    for edit in (lambda s: s.__setitem__("pair_counts", s["pair_counts"] * 0.5),
                 lambda s: s.__setitem__("pair_codes", s["pair_codes"].double()),
                 lambda s: s.__setitem__("_extra_state", {"concentration": float("nan")})):
        state = NGramModel(2, vocab).fit_counts(vocab.encode(["cab", "cc"])).state_dict()
        edit(state)
        with pytest.raises((RuntimeError, ValueError)):
            fitted.load_state_dict(state)
        assert torch.equal(fitted.log_prob(x), before)


def test_fit_checkpoints_a_pair_that_holds_an_ngram_model(tmp_path):
    # its extra state (a dict) broke the checkpoint's fingerprint after the first epoch
    import pyro
    import pyro.distributions as dist
    from pyro.nn import PyroModule, PyroParam, pyro_method

    from inference import fit

    vocab = Vocabulary("abc")
    words = vocab.encode(WORDS)

    class Pair(PyroModule):
        def __init__(self):
            super().__init__()
            self.ngram = NGramModel(2, vocab).fit_counts(words)
            self.weight = PyroParam(torch.tensor(0.5))

        @pyro_method
        def model(self, x):
            baseline = self.ngram.log_prob(x).float()
            with pyro.plate("data", len(x)):
                pyro.sample("y", dist.Normal(self.weight * baseline, 1.0),
                            obs=torch.zeros(len(x)))

        @pyro_method
        def guide(self, x):
            pass

    pyro.clear_param_store()
    pair = Pair()
    checkpoint = tmp_path / "run.pt"
    fit(pair.model, pair.guide, words, epochs=2, checkpoint=checkpoint, progress=False)
    history = fit(pair.model, pair.guide, words, epochs=3, checkpoint=checkpoint, resume=True,
                  progress=False)
    assert [record["epoch"] for record in history] == [1, 2, 3]
    pyro.clear_param_store()


def test_ngram_states_of_another_order_or_cast_to_float_are_told_apart():
    vocab = Vocabulary("abc")
    x = vocab.encode(WORDS)
    trigram = NGramModel(3, vocab).fit_counts(x)
    with pytest.raises(RuntimeError, match="the state is an n-gram of order 3, the model's "
                                           "order is 2"):
        NGramModel(2, vocab).load_state_dict(trigram.state_dict())
    bigram = NGramModel(2, vocab).fit_counts(x)
    cast = NGramModel(2, vocab).fit_counts(x).float()  # float32 counts, exact
    restored = NGramModel(2, vocab)
    restored.load_state_dict(cast.state_dict())
    assert torch.equal(restored.log_prob(x), bigram.log_prob(x))


def test_a_backoff_ngram_refuses_a_state_damaged_in_a_lower_order_without_loading_any():
    # the check ran per order: the top orders were replaced before the lowest was refused
    vocab = Vocabulary("abc")
    x = vocab.encode(WORDS)
    fitted = NGramModel(3, vocab, backoff=True).fit_counts(x)
    before = fitted.log_prob(x)
    state = NGramModel(3, vocab, backoff=True).fit_counts(vocab.encode(["cab", "cc"])).state_dict()
    state["lower.lower.pair_counts"] = state["lower.lower.pair_counts"] * 0.5
    with pytest.raises(RuntimeError, match=r"the counts of lower.lower. are not"):
        fitted.load_state_dict(state)
    assert torch.equal(fitted.log_prob(x), before)
    assert not any("_load_verdict" in m.__dict__ for m in fitted.modules())
    good = NGramModel(3, vocab, backoff=True).fit_counts(vocab.encode(["cab", "cc"]))
    fitted.load_state_dict(good.state_dict())  # and a sound state loads afterwards
    assert torch.equal(fitted.log_prob(x), good.log_prob(x))


def test_overlapping_uses_in_threads_put_the_training_flags_back_once():
    # two threads' completion chains on one VAE left it in evaluation mode for good
    import threading

    from inference.uses import metropolis_within_gibbs, observed_channel

    torch.manual_seed(0)
    vae = _DropoutVAE((1, 4, 4), 2, hidden=(8,))
    images = (torch.rand(2, 1, 4, 4) < 0.5).float()
    missing = torch.zeros_like(images, dtype=torch.bool)
    missing[..., :2, :] = True
    channel = observed_channel(images, missing)
    errors = []

    def chain():
        try:
            metropolis_within_gibbs(vae, channel, num_steps=30, progress=False)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=chain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and vae.training and vae.drop.training


def test_an_ngram_state_of_another_vocabulary_is_named():
    # the counts hold character ids: an "abc" state loaded into an "xyz" model silently
    fitted = NGramModel(2, Vocabulary("abc")).fit_counts(Vocabulary("abc").encode(WORDS))
    for other in ("xyz", "abcd"):
        with pytest.raises(RuntimeError, match=r"the state counts words over the characters "
                                               rf"'abc', the model's vocabulary is '{other}'"):
            NGramModel(2, Vocabulary(other)).load_state_dict(fitted.state_dict())


def test_an_ngram_state_with_or_without_backoff_is_told_apart_before_loading():
    # torch's missing-key refusal came after the top order's counts were copied in
    vocab = Vocabulary("abc")
    x = vocab.encode(WORDS)
    for target, source in ((True, False), (False, True)):
        fitted = NGramModel(3, vocab, backoff=target).fit_counts(x)
        before = fitted.log_prob(x)
        state = NGramModel(3, vocab, backoff=source).fit_counts(vocab.encode(["cab"])).state_dict()
        for strict in (True, False):
            with pytest.raises(RuntimeError, match="the state is an n-gram with"):
                fitted.load_state_dict(state, strict=strict)
            assert torch.equal(fitted.log_prob(x), before)


def test_overlapping_uses_on_nested_networks_put_each_flag_back():
    # one thread's chain on the VAE, another's on its decoder alone: the decoder stayed in
    # evaluation mode for good (the count was kept per network, not per layer)
    import threading

    from inference.uses import super_resolve_gibbs

    torch.manual_seed(0)
    vae = _DropoutVAE((1, 4, 4), 2, hidden=(8,))
    images = (torch.rand(2, 1, 4, 4) < 0.5).float()
    low = average_pool(images, 2)
    z = torch.zeros(2, 2)
    decoder, drop = vae.decoder, vae.drop  # parts of the VAE, reached alone

    def log_prob(x):
        logits = drop(decoder(z[:1].expand(x.shape[0], 2))).reshape(x.shape)
        return -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x, reduction="none").flatten(1).sum(1)

    errors = []

    def run(call):
        try:
            call()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    calls = [lambda: super_resolve_mh_call(vae, low), lambda: super_resolve_gibbs(
        log_prob, low, 2, num_sweeps=6, progress=False)] * 2
    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert all(module.training for module in vae.modules())


def super_resolve_mh_call(vae, low):
    from inference.uses import super_resolve_mh

    return super_resolve_mh(vae, low, 2, num_steps=30)
