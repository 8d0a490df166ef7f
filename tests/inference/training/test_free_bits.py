"""The free-bits ELBO: the floor, its zero gradient, lambda = 0 is the ELBO, scaling, fit."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from inference import fit, make_loss, scale_data_plate, scale_latents
from inference.pair_check import PairError, trace_pair
from inference.training.free_bits import FreeBitsELBO, free_bits_terms

LOC = torch.tensor([0.1, 2.0, -1.0])
LOG_SCALE = torch.tensor([0.0, 0.0, -0.5])


def kl_closed_form(loc, log_scale):
    """KL(N(loc, s^2) || N(0, 1)) per dimension."""
    return 0.5 * (loc ** 2 + torch.exp(2 * log_scale) - 1) - log_scale


def model(x):  # x: [batch, 3]
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)


def guide(x):
    loc = pyro.param("loc", LOC.clone())
    log_scale = pyro.param("log_scale", LOG_SCALE.clone())
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc + 0.1 * x, log_scale.exp()).to_event(1))


def traces(x):
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return model_trace, guide_trace


def test_floor_is_active_below_lambda_and_its_gradient_is_zero():
    x = torch.zeros(4, 3)  # the guide's loc is the same for every datapoint
    model_trace, guide_trace = traces(x)
    kl = kl_closed_form(LOC, LOG_SCALE)  # [0.005, 2.0, 0.5 * (1 + e^-1 - 1) + 0.5 = 0.684]
    terms = free_bits_terms(model_trace, guide_trace, free_bits=0.6)
    assert torch.allclose(terms.kl["z"], kl, atol=1e-6)
    # dimension 0 sits below the floor: it costs exactly lambda; the others their KL
    expected = 4 * (0.6 + kl[1] + kl[2])
    assert torch.allclose(terms.penalty, expected, atol=1e-5), float(terms.penalty)
    store = pyro.get_param_store()
    loc, log_scale = store["loc"], store["log_scale"]
    grad_loc, grad_scale = torch.autograd.grad(terms.penalty, [loc, log_scale])
    # exactly zero below the floor (clamp passes no gradient); d KL / d loc = loc above it
    assert grad_loc[0] == 0 and grad_scale[0] == 0
    assert torch.allclose(grad_loc[1:], 4 * LOC[1:], atol=1e-5)
    assert torch.allclose(grad_scale[1:], 4 * (torch.exp(2 * LOG_SCALE[1:]) - 1), atol=1e-5)


def test_site_group_floors_the_total():
    model_trace, guide_trace = traces(torch.zeros(4, 3))
    total = float(kl_closed_form(LOC, LOG_SCALE).sum())  # 2.689
    below = free_bits_terms(model_trace, guide_trace, free_bits=3.0, group="site")
    above = free_bits_terms(model_trace, guide_trace, free_bits=1.0, group="site")
    assert abs(below.penalty.detach().item() - 4 * 3.0) < 1e-5
    assert abs(above.penalty.detach().item() - 4 * total) < 1e-5


@pytest.mark.parametrize("factor", [1.0, 7.5])
def test_lambda_zero_is_the_analytic_kl_elbo_with_its_gradients(factor):
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    results = []
    for objective in (FreeBitsELBO(0.0), TraceMeanField_ELBO()):
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        with scale_data_plate(factor):  # as fit scales a minibatch
            loss = objective.loss_and_grads(model, guide, x)
        store = pyro.get_param_store()
        results.append((loss, store["loc"].unconstrained().grad.clone()))
    (fb_loss, fb_grad), (mf_loss, mf_grad) = results
    # same draw of z, same closed-form KL: equal up to float32 rounding
    assert abs(fb_loss - mf_loss) < 1e-4 * abs(mf_loss), (fb_loss, mf_loss)
    assert torch.allclose(fb_grad, mf_grad, rtol=1e-5, atol=1e-5)


def test_warmup_scales_the_floored_penalty():
    x = torch.zeros(4, 3)
    with scale_latents(0.25):
        model_trace, guide_trace = traces(x)
    full = free_bits_terms(*traces(x), free_bits=0.6).penalty
    scaled = free_bits_terms(model_trace, guide_trace, free_bits=0.6).penalty
    assert torch.allclose(scaled, 0.25 * full, atol=1e-6)


def test_make_loss_and_fit_accept_free_bits():
    assert make_loss("elbo-free-bits", free_bits=0.5).free_bits == 0.5
    objective = FreeBitsELBO(0.5)
    assert make_loss(objective) is objective
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0)) * 1.5
    history = fit(model, guide, x, loss=objective, epochs=30, batch_size=16, lr=0.05,
                  progress=False)
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    # 120 Adam steps on a 3-d linear-Gaussian pair: the loss falls by several nats
    assert last < first - 1.0, (first, last)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="free_bits"):
        FreeBitsELBO(-1.0)
    with pytest.raises(ValueError, match="group"):
        FreeBitsELBO(0.1, group="layer")
    for value in (True, float("inf"), float("nan"), "0.1"):
        with pytest.raises(ValueError, match="free_bits must be a finite number"):
            FreeBitsELBO(value)
    for value in (2.5, 0, True):
        with pytest.raises(ValueError, match="num_particles must be a positive integer"):
            FreeBitsELBO(0.1, num_particles=value)

    def discrete_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(x.shape[0], 3)).to_event(1))

    with pytest.raises(NotImplementedError, match="reparameterized"):
        FreeBitsELBO(0.1).loss(model, discrete_guide, torch.zeros(2, 3))


def test_a_full_covariance_guide_against_a_diagonal_prior_is_compared_per_site():
    # a MultivariateNormal guide and a Normal(...).to_event(1) prior: their elements do not
    # line up, so the KL is one single-sample term per datapoint (it used to broadcast the
    # two log densities to [batch, batch]); group="dimension" is refused (it used to floor
    # the site's total at lambda silently), group="site" says so
    def mvn_guide(x):
        loc = pyro.param("loc", LOC.clone())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc + 0.1 * x, scale_tril=torch.eye(3)))

    pyro.clear_param_store()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    guide_trace = poutine.trace(mvn_guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    z = guide_trace.nodes["z"]["value"]
    expected = (dist.MultivariateNormal(LOC + 0.1 * x, scale_tril=torch.eye(3)).log_prob(z)
                - dist.Normal(0.0, 1.0).log_prob(z).sum(-1)).mean()
    with pytest.raises(ValueError, match=r"MultivariateNormal at latent site 'z'.*group='site'"):
        free_bits_terms(model_trace, guide_trace, 1.0)
    for group in ("site", "dimension"):  # lambda = 0 floors nothing: no groups to refuse
        terms = free_bits_terms(model_trace, guide_trace, 0.0, group=group)
        assert terms.kl["z"].shape == ()
        torch.testing.assert_close(terms.kl["z"], expected)
    terms = free_bits_terms(model_trace, guide_trace, 1.0, group="site")
    torch.testing.assert_close(terms.kl["z"], expected)


def top_down_pair_and_images(num_images=8):
    """TwoLayerVAE: model p(z2) p(z1 | z2), guide q(z1 | x) q(z2 | z1), networks scaled up so
    that z2 depends strongly on z1 (the closed-form KL of z1 is then far off)."""
    from ppl_models import TwoLayerVAE

    torch.manual_seed(0)
    pair = TwoLayerVAE((1, 3, 3), latent_dim=2, top_latent_dim=2, hidden=(8,), top_hidden=(8,))
    with torch.no_grad():
        for p in [*pair.top_encoder.parameters(), *pair.top_decoder.parameters()]:
            p.mul_(3.0)
    x = torch.bernoulli(torch.full((num_images, 1, 3, 3), 0.4),
                        generator=torch.Generator().manual_seed(1))
    return pair, x


def test_lambda_zero_is_the_elbo_when_the_guide_samples_a_parent_after_its_child():
    # the closed-form KL(q(z1 | x) || p(z1 | z2)) at a z2 drawn from z1 is not the
    # expectation of log q(z1 | x) - log p(z1 | z2): z1 is scored as sampled instead.
    # Reference: inference.elbo with 20000 draws; L_0 from 20000 particles in a plate (L_0
    # is linear in the draws at lambda = 0). The summed log weight over the 8 images has a
    # per-draw sd of 12.7 (measured), so each estimate has a standard error of 0.09 nats and
    # their difference 0.13; tolerance 0.6 nats (4.7 standard errors). The closed-form KL
    # put L_0 35 nats below the ELBO here (-153.8 against -118.4).
    from inference import elbo

    pair, x = top_down_pair_and_images()
    num = 20_000

    def in_plate(fn):
        def run(x):
            with pyro.plate("particles", num, dim=-2):
                fn(x)
        return run

    pyro.set_rng_seed(0)
    with torch.no_grad():
        reference = float(elbo(pair.model, pair.guide, x, num_samples=num,
                               progress=False).sum())
        model_trace, guide_trace = trace_pair(in_plate(pair.model), in_plate(pair.guide),
                                              (x,), {})
        terms = free_bits_terms(model_trace, guide_trace, 0.0)
    assert float(terms.objective) / num == pytest.approx(reference, abs=0.6)


def test_meanfield_refuses_a_guide_that_samples_a_parent_after_its_child():
    pair, x = top_down_pair_and_images(4)
    message = r"latent 'z1'.*latent 'z2'.*guide samples 'z2' after 'z1'.*loss='elbo'"
    with pytest.raises(ValueError, match=message):
        fit(pair.model, pair.guide, x, loss="meanfield", epochs=1, progress=False)
    with pytest.raises(ValueError, match=message):
        fit(pair.model, pair.guide, x, loss=TraceMeanField_ELBO(), epochs=1, progress=False)
    with pytest.raises(ValueError, match=message):
        make_loss("meanfield").loss(pair.model, pair.guide, x)
    # the ELBO itself trains it
    assert len(fit(pair.model, pair.guide, x, loss="elbo", epochs=1, progress=False)) == 1


def test_an_iaf_guide_is_floored_per_dimension():
    # FlowVAE's guide is an IAF (a TransformedDistribution of event shape [d] over a Normal
    # base of event shape [d], against a Normal(0, 1).to_event(1) prior): its per-coordinate
    # terms log N(z0_i) - sum_t log s_{t,i} give d groups. They used to be one group, the
    # site's total floored at lambda (a penalty of B * lambda, not B * d * lambda).
    from ppl_models import FlowVAE

    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((6, 1, 3, 3), 0.4), generator=torch.Generator().manual_seed(1))
    vae = FlowVAE((1, 3, 3), latent_dim=4, hidden=(8,), num_flows=2)
    model_trace, guide_trace = trace_pair(vae.model, vae.guide, (x,), {})
    z = guide_trace.nodes["z"]["value"]
    site_kl = (guide_trace.nodes["z"]["fn"].log_prob(z)
               - model_trace.nodes["z"]["fn"].log_prob(z)).mean()
    low = free_bits_terms(model_trace, guide_trace, 0.0)
    assert low.kl["z"].shape == (4,)
    torch.testing.assert_close(low.kl["z"].sum(), site_kl)
    high = free_bits_terms(model_trace, guide_trace, 100.0)
    torch.testing.assert_close(high.penalty, torch.tensor(6 * 4 * 100.0))
    # through fit: -log p(x | z) >= 0 for binary pixels, so train_loss >= d * lambda
    history = fit(vae.model, vae.guide, x, loss=FreeBitsELBO(100.0), lr=0.0, epochs=1,
                  progress=False)
    assert history[-1]["train_loss"] >= 400.0


def test_iaf_terms_per_dimension_have_the_closed_form_kl_without_flow_steps():
    # with T = 0 steps the IAF guide is N(mu, sigma^2): the per-dimension terms are unbiased
    # for the closed-form KL of each coordinate. 40000 copies of one image; the terms' sd is
    # below 1.5, so the standard error is below 0.0075; tolerance 0.04.
    from ppl_models import FlowVAE

    torch.manual_seed(0)
    vae = FlowVAE((1, 3, 3), latent_dim=3, hidden=(8,), num_flows=0)
    x = torch.bernoulli(torch.full((1, 1, 3, 3), 0.5),
                        generator=torch.Generator().manual_seed(2)).expand(40_000, 1, 3, 3)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        model_trace, guide_trace = trace_pair(vae.model, vae.guide, (x,), {})
        terms = free_bits_terms(model_trace, guide_trace, 0.5)
        q = guide_trace.nodes["z"]["fn"]
        closed = kl_closed_form(q.loc[0], q.scale[0].log())
    torch.testing.assert_close(terms.kl["z"], closed, atol=0.04, rtol=0)
    assert closed.max() > 0.05  # not trivially zero


def test_lambda_zero_leaves_a_sampled_kl_unfloored():
    # a StudentT guide has no closed-form KL against the Normal prior: KL_j is the sampled
    # log q - log p, negative for many draws of a guide close to the prior. A floor at 0
    # raised it there (L_0 below the ELBO by the mean of the clipped parts); without a
    # floor L_0 is the sampled ELBO, draw by draw.
    def t_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.StudentT(30.0, 0.05 * x, 1.0).to_event(1))

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(0)

    def in_plate(fn):
        def run(x):
            with pyro.plate("particles", 2000, dim=-2):
                fn(x)
        return run

    model_trace, guide_trace = trace_pair(in_plate(model), in_plate(t_guide), (x,), {})
    terms = free_bits_terms(model_trace, guide_trace, 0.0)
    sampled = (model_trace.log_prob_sum() - guide_trace.log_prob_sum()).detach()
    assert bool((terms.kl["z"] < 0).any())  # the case at issue
    torch.testing.assert_close(terms.objective.detach(), sampled, rtol=1e-6, atol=1e-3)


def test_meanfield_takes_independent_latents_sampled_in_another_order():
    # the refusal goes by the guide's dependence, not only the order: z_b drawn before z_a
    # in the guide, but from x alone, keeps KL(q(z_a) || p(z_a)) unbiased. Model: z_a, z_b
    # ~ N(0, 1) independent, x ~ N(z_a + z_b, 1): the analytic-KL loss at a fixed guide has
    # the expectation of Trace_ELBO's, 20000 particles each
    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            b = pyro.sample("b", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

    def guide(x):
        slope = pyro.param("slope", torch.tensor([0.3, 0.4]))
        with pyro.plate("data", len(x)):
            pyro.sample("b", dist.Normal(slope[0] * x, 0.8))
            pyro.sample("a", dist.Normal(slope[1] * x, 0.7))

    pyro.clear_param_store()
    x = torch.tensor([0.5, -1.0, 2.0])
    history = fit(model, guide, x, loss="meanfield", lr=0.0, epochs=1, progress=False)
    assert len(history) == 1
    torch.manual_seed(0)
    closed = make_loss("meanfield", 20000).loss(model, guide, x)
    sampled = pyro.infer.Trace_ELBO(num_particles=20000, vectorize_particles=True,
                                    max_plate_nesting=1).loss(model, guide, x)
    assert abs(closed - sampled) < 0.05, (closed, sampled)


def _independent_priors_model(x):
    # p(mu) p(sigma) independent, x ~ N(mu, sigma)
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, sigma), obs=x)


def _structured_guide(x):
    # q(sigma) q(mu | sigma): mu is sampled after sigma and drawn from it
    from torch.distributions import constraints
    s = pyro.sample("sigma", dist.LogNormal(
        pyro.param("ls", torch.tensor(0.5)),
        pyro.param("ss", torch.tensor(0.2), constraint=constraints.positive)))
    pyro.sample("mu", dist.Normal(pyro.param("m", torch.tensor(0.0)), s / len(x) ** 0.5))


def test_meanfield_takes_a_structured_guide_for_independent_priors():
    # the guide draws mu from sigma after sigma, but the model's p(sigma) does not read mu:
    # KL(q(sigma) || p(sigma)) and KL(q(mu | sigma) || p(mu)) at the drawn sigma are
    # unbiased. It was refused by order ("'sigma' is sampled after latent 'mu'"). The
    # analytic-KL loss at a fixed guide has the expectation of Trace_ELBO's (20000
    # particles each; the per-particle sd of the difference is about 4: 0.04 standard error)
    x = torch.randn(20, generator=torch.Generator().manual_seed(0)) * 2 + 1
    pyro.clear_param_store()
    history = fit(_independent_priors_model, _structured_guide, x, loss="meanfield",
                  lr=0.0, epochs=1, progress=False)
    assert len(history) == 1
    torch.manual_seed(0)
    closed = make_loss("meanfield", 20000).loss(_independent_priors_model, _structured_guide, x)
    sampled = pyro.infer.Trace_ELBO(num_particles=20000, vectorize_particles=True,
                                    max_plate_nesting=1).loss(_independent_priors_model,
                                                              _structured_guide, x)
    assert abs(closed - sampled) < 0.25, (closed, sampled)


def test_meanfield_refuses_a_model_reading_the_late_parent():
    # the same guide for p(mu) p(sigma | mu): the closed form of sigma's KL is biased now
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
        sigma = pyro.sample("sigma", dist.LogNormal(0.1 * mu, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, sigma), obs=x)

    x = torch.randn(20, generator=torch.Generator().manual_seed(0)) * 2 + 1
    pyro.clear_param_store()
    with pytest.raises(PairError, match=r"latent 'sigma'.*latent 'mu'"):
        fit(model, _structured_guide, x, loss="meanfield", epochs=1, progress=False)
    with pytest.raises(PairError, match=r"latent 'sigma'.*latent 'mu'"):
        make_loss("meanfield").loss(model, _structured_guide, x)


def _two_latents_model(y):
    with pyro.plate("data", y.shape[0]):
        za = pyro.sample("za", dist.Normal(0.0, 1.0))
        zb = pyro.sample("zb", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(torch.stack([za, zb], -1), 0.5).to_event(1), obs=y)


def _reversed_guide(y):  # zb before za, each from its own parameters
    loc = pyro.param("rloc", torch.tensor([0.3, 0.2]))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("zb", dist.Normal(loc[1], 0.2))
        pyro.sample("za", dist.Normal(loc[0], 0.2))


def test_free_bits_keeps_the_closed_form_of_independent_latents_in_another_order():
    # za and zb independent in model and guide, the guide samples zb first: the floored
    # penalty is max(1, KL_a) + max(1, KL_b) with the closed forms (2.3239), as in the
    # model's order; the sampled KL of za gave E[max(1, KL^)] = 2.504 instead
    y = torch.randn(1, 2, generator=torch.Generator().manual_seed(1))
    pyro.clear_param_store()
    expected = float(sum(torch.distributions.kl_divergence(
        dist.Normal(m, 0.2), dist.Normal(0.0, 1.0)).clamp(min=1.0) for m in (0.3, 0.2)))
    for _ in range(5):  # the step's own graph (guide parameters require gradients)
        model_trace, guide_trace = trace_pair(_two_latents_model, _reversed_guide, (y,), {})
        terms = free_bits_terms(model_trace, guide_trace, 1.0)
        assert float(terms.penalty) == pytest.approx(expected, abs=1e-5)
    objective = FreeBitsELBO(1.0)
    for _ in range(5):  # loss() runs under no_grad: the pair is rerun with draws as leaves
        with torch.no_grad():
            terms = objective.terms(_two_latents_model, _reversed_guide, y)
        assert float(terms.penalty) == pytest.approx(expected, abs=1e-5)
    with torch.no_grad():  # no graph and no rerun: conservative, za scored as sampled
        penalties = {round(float(free_bits_terms(*trace_pair(
            _two_latents_model, _reversed_guide, (y,), {}), 1.0).penalty), 4)
            for _ in range(20)}
    assert len(penalties) > 1


def test_free_bits_still_scores_a_dependent_late_site_as_sampled():
    # the guide draws za from zb and the model reads zb in p(za | zb): sampled KL kept
    def model(y):
        with pyro.plate("data", y.shape[0]):
            zb = pyro.sample("zb", dist.Normal(0.0, 1.0))
            za = pyro.sample("za", dist.Normal(0.5 * zb, 1.0))
            pyro.sample("y", dist.Normal(torch.stack([za, zb], -1), 0.5).to_event(1), obs=y)

    def guide(y):
        loc = pyro.param("dloc", torch.tensor([0.3, 0.2]))
        with pyro.plate("data", y.shape[0]):
            za = pyro.sample("za", dist.Normal(loc[0], 0.2))
            pyro.sample("zb", dist.Normal(loc[1] + za, 0.2))

    y = torch.randn(1, 2, generator=torch.Generator().manual_seed(1))
    pyro.clear_param_store()
    penalties = {round(float(free_bits_terms(*trace_pair(model, guide, (y,), {}), 0.0).penalty),
                       4) for _ in range(10)}
    assert len(penalties) > 1  # za's KL is the single-sample estimate, not a constant


def _mvn_pair_traces(prior, q, batch=4):
    y = torch.randn(batch, 3, generator=torch.Generator().manual_seed(0))

    def pair_model(y):
        with pyro.plate("data", batch):
            z = pyro.sample("z", prior)
            pyro.sample("y", dist.Normal(z, 1.0).to_event(1), obs=y)

    def pair_guide(y):
        with pyro.plate("data", batch):
            pyro.sample("z", q)

    guide_trace = poutine.trace(pair_guide).get_trace(y)
    model_trace = poutine.trace(poutine.replay(pair_model, trace=guide_trace)).get_trace(y)
    return model_trace, guide_trace


def test_dimension_floor_with_a_multivariate_normal():
    # a diagonal Normal guide against MVN(0, I) factorizes per dimension: floored per
    # dimension, B * d * lambda = 6 (it was refused); a MultivariateNormal guide against
    # MVN(0, I) has no per-dimension terms: refused under group="dimension" (it was floored
    # once per site, 2.0 against 6.0 for the same density), floored per site with "site"
    d, batch, lam = 3, 4, 0.5
    normal_prior = dist.Normal(torch.zeros(d), 1.0).to_event(1)
    mvn_prior = dist.MultivariateNormal(torch.zeros(d), torch.eye(d))
    diag_q = dist.Normal(torch.full((batch, d), 0.05), 0.9 ** 0.5).to_event(1)
    mvn_q = dist.MultivariateNormal(torch.full((batch, d), 0.05), 0.9 * torch.eye(d))
    reference = free_bits_terms(*_mvn_pair_traces(normal_prior, diag_q), lam)
    terms = free_bits_terms(*_mvn_pair_traces(mvn_prior, diag_q), lam)
    assert float(terms.penalty) == pytest.approx(batch * d * lam)
    torch.testing.assert_close(terms.kl["z"], reference.kl["z"])
    assert terms.kl["z"].shape == (d,)
    with pytest.raises(ValueError, match=r"MultivariateNormal at latent site 'z'.*group='site'"):
        free_bits_terms(*_mvn_pair_traces(mvn_prior, mvn_q), lam)
    site = free_bits_terms(*_mvn_pair_traces(mvn_prior, mvn_q), lam, group="site")
    assert float(site.penalty) == pytest.approx(batch * lam)
    torch.testing.assert_close(site.kl["z"], reference.kl["z"].sum())
    full = dist.MultivariateNormal(torch.zeros(d), torch.eye(d) + 0.5)
    with pytest.raises(ValueError, match=r"Independent at latent site 'z'.*group='site'"):
        free_bits_terms(*_mvn_pair_traces(full, diag_q), lam)
    dirichlet = dist.Dirichlet(torch.ones(d))
    with pytest.raises(ValueError, match=r"Dirichlet at latent site 'z'.*group='site'"):
        free_bits_terms(*_mvn_pair_traces(dirichlet, dist.Dirichlet(torch.ones(batch, d) * 2)),
                        lam)


def test_late_parent_dependence_is_transitive_in_the_guide_and_direct_in_the_model():
    # model p(b) p(c) p(a | b); guide q(a) q(c | a) q(b | c): b is drawn from a through c,
    # and p(a | b) reads b, so the closed form of a is biased (kept, with draws as leaves
    # in a rerun as in a step's graph); with p(a) not reading b it is not
    from inference.pair_check.latents import dependent_late_parents
    from inference.pair_check.sites import (latent_dependencies_of_pair,
                                            latent_dependencies_of_traces)

    def make_model(weight):
        def model(x):
            b = pyro.sample("b", dist.Normal(0.0, 1.0))
            pyro.sample("c", dist.Normal(0.0, 1.0))
            a = pyro.sample("a", dist.Normal(weight * b if weight else 0.0, 1.0))
            pyro.sample("x", dist.Normal(a, 1.0), obs=x)
        return model

    def guide(x):
        loc = pyro.param("tloc", torch.tensor(0.1))
        a = pyro.sample("a", dist.Normal(loc, 1.0))
        c = pyro.sample("c", dist.Normal(a, 1.0))
        pyro.sample("b", dist.Normal(c, 1.0))

    x = torch.tensor(0.3)
    pyro.clear_param_store()
    for weight, expected in ((0.5, (("a", "b"),)), (0.0, ())):
        model = make_model(weight)
        model_trace, guide_trace = trace_pair(model, guide, (x,), {})
        sites = list(model_trace.nodes.values())
        sites = [s for s in sites if s["type"] == "sample"]
        latents = [s for s in guide_trace.nodes.values() if s["type"] == "sample"]
        for dependencies in (latent_dependencies_of_traces(model_trace, guide_trace),
                             latent_dependencies_of_pair(model, guide, (x,), {})):
            assert dependent_late_parents(sites, latents, *dependencies) == expected
        with torch.no_grad():
            model_trace, guide_trace = trace_pair(model, guide, (x,), {})
        assert latent_dependencies_of_traces(model_trace, guide_trace) is None
        for context in (torch.enable_grad, torch.no_grad):  # the step's graph, a rerun
            with context():
                if expected:
                    with pytest.raises(PairError, match=r"latent 'a'.*latent 'b'"):
                        make_loss("meanfield").loss(model, guide, x)
                else:
                    make_loss("meanfield").loss(model, guide, x)
