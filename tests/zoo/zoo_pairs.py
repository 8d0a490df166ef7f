"""A zoo of Pyro model/guide pairs written the way Pyro users write them, each with its truth.

Every pair comes with the data it is scored on, its exact per-datapoint ``log p(x)`` (closed
form, enumeration, a Kalman filter or quadrature, computed here by hand, never by the library)
where per-datapoint evidence is defined, and the outcome expected of each entry point:
``WORKS`` or a regular expression the refusal's message must match. ``tests/zoo/test_zoo.py``
runs every pair through every entry point; ``docs/own-pair.md``'s support table is checked
against :data:`FEATURES` and the outcomes.

All tensors are float64; pairs are tiny (a handful of datapoints, one or two latent
dimensions) so that the whole zoo runs in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoDiagonalNormal, AutoIAFNormal, AutoNormal, init_to_value
from pyro.nn import PyroModule, PyroParam, pyro_method

WORKS = "works"
ENTRY_POINTS = ("elbo", "iwae_bound", "bound_sweep", "log_importance_weights",
                "ais_log_evidence", "weight_diagnostics", "amortization_gap",
                "fit:elbo", "fit:meanfield", "fit:iwae", "fit:dreg")
EVIDENCE_ENTRIES = ENTRY_POINTS[:7]
GLOBAL = r"lies outside pyro.plate\('data'\)"
N = 6
DTYPE = torch.float64


@dataclass
class Pair:
    name: str
    model: Callable
    guide: Callable
    args: tuple
    truth: torch.Tensor | None  # [N] exact log p(x) per datapoint, None where undefined
    refusals: dict = field(default_factory=dict)  # entry point -> regex of the refusal
    tolerance: float = 0.08  # nats, |IWAE_K - truth| per datapoint
    fit_kwargs: dict = field(default_factory=dict)
    subsample_of: torch.Tensor | None = None  # truth of all N when the model subsamples
    num_samples: int = 2000  # K for the IWAE checks (fewer for pairs looped per particle)
    ais_steps: int = 25  # annealing steps of the AIS check

    def expected(self, entry: str) -> str:
        return self.refusals.get(entry, WORKS)


def _data(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def normal_evidence(x: torch.Tensor, prior_scale: float, noise: float) -> torch.Tensor:
    """log N(x; 0, prior^2 + noise^2) elementwise (z ~ N(0, prior^2), x | z ~ N(z, noise^2))."""
    var = prior_scale ** 2 + noise ** 2
    return -0.5 * (x ** 2 / var + math.log(2 * math.pi * var))


def normal_posterior(x, prior_scale, noise):
    """Mean and sd of z | x for the model of :func:`normal_evidence`."""
    precision = 1 / prior_scale ** 2 + 1 / noise ** 2
    return x / noise ** 2 / precision, precision ** -0.5


def quadrature_1d(log_joint: Callable, low=-8.0, high=8.0, n=4001) -> torch.Tensor:
    """log integral exp(log_joint(z)) dz by the trapezoid rule; log_joint maps [n, 1] -> [n, N]."""
    z = torch.linspace(low, high, n, dtype=DTYPE)[:, None]
    values = log_joint(z)
    weights = torch.full((n, 1), (high - low) / (n - 1), dtype=DTYPE)
    weights[0] = weights[-1] = weights[0] / 2
    return torch.logsumexp(values + weights.log(), 0)


# 1. conjugate Normal-Normal, amortized linear guide with a constrained pyro.param ---------
def normal_normal() -> Pair:
    x, noise = _data(1, N), 0.7

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, noise), obs=x)

    def guide(x):
        slope = pyro.param("slope", torch.tensor(0.6, dtype=DTYPE))
        scale = pyro.param("scale", torch.tensor(0.7, dtype=DTYPE),
                           constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(slope * x, scale))

    return Pair("normal_normal", model, guide, (x,), normal_evidence(x, 1.0, noise))


# 2. Beta-Bernoulli: a Beta guide per datapoint (rows of trials), constrained params ------
def beta_bernoulli() -> Pair:
    trials = 5
    x = (torch.rand(N, trials, generator=torch.Generator().manual_seed(2)) <
         torch.linspace(0.1, 0.9, N)[:, None]).to(DTYPE)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            p = pyro.sample("p", dist.Beta(x.new_tensor(2.0), x.new_tensor(2.0)))
            pyro.sample("x", dist.Bernoulli(p.unsqueeze(-1)).to_event(1), obs=x)

    def guide(x):
        extra = pyro.param("extra", torch.tensor(0.9, dtype=DTYPE),
                           constraint=constraints.interval(0.5, 1.5))
        with pyro.plate("data", x.shape[0]):
            k = x.sum(-1)
            pyro.sample("p", dist.Beta(2.0 + extra * k, 2.0 + extra * (trials - k)))

    k = x.sum(-1)
    log_beta = lambda a, b: torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)  # noqa: E731
    two = torch.tensor(2.0, dtype=DTYPE)
    truth = log_beta(2 + k, 2 + trials - k) - log_beta(two, two)
    return Pair("beta_bernoulli", model, guide, (x,), truth, refusals={
        "amortization_gap": "site 'p' is a Beta"})


# 3. Poisson-Gamma with an inner plate of counts -----------------------------------------
def poisson_gamma() -> Pair:
    counts, a, b = 4, 3.0, 1.0
    x = torch.poisson(torch.full((N, counts), 3.0), generator=torch.Generator().manual_seed(3)
                      ).to(DTYPE)

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            rate = pyro.sample("rate", dist.Gamma(x.new_tensor(a), x.new_tensor(b)))
            with pyro.plate("counts", counts, dim=-1):
                pyro.sample("x", dist.Poisson(rate), obs=x)

    def guide(x):
        shrink = pyro.param("shrink", torch.tensor(0.9, dtype=DTYPE))
        with pyro.plate("data", x.shape[0], dim=-2):
            total = x.sum(-1, keepdim=True)
            pyro.sample("rate", dist.Gamma(a + shrink * total, b + counts))

    total = x.sum(-1)
    truth = (a * math.log(b) - math.lgamma(a) + torch.lgamma(a + total)
             - (a + total) * math.log(b + counts) - torch.lgamma(x + 1).sum(-1))
    return Pair("poisson_gamma", model, guide, (x,), truth,
                refusals={"amortization_gap": "site 'rate' is a Gamma"})


# 4. Gaussian mixture with a discrete (Categorical) guide site ------------------------------
# the components' locations, weights and noise of the two mixtures
MIXTURE = (torch.tensor([-2.0, 0.0, 2.5], dtype=DTYPE), torch.tensor([0.3, 0.3, 0.4], dtype=DTYPE),
           0.8)


def gaussian_mixture() -> Pair:
    locs, weights, noise = MIXTURE
    x = _data(4, N) * 2

    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(locs[c], noise), obs=x)

    def guide(x):
        sharpness = pyro.param("sharpness", torch.tensor(0.5, dtype=DTYPE))
        with pyro.plate("data", x.shape[0]):
            logits = -sharpness * (x[:, None] - locs) ** 2
            pyro.sample("c", dist.Categorical(logits=logits))

    truth = torch.logsumexp(weights.log() + dist.Normal(locs, noise).log_prob(x[:, None]), -1)
    not_reparam = r"guide site 'c' \(Categorical\) is not reparameterized"
    return Pair("gaussian_mixture", model, guide, (x,), truth, refusals={
        "ais_log_evidence": "discrete", "amortization_gap": "site 'c' is a Categorical",
        "fit:iwae": not_reparam, "fit:dreg": not_reparam, "fit:meanfield": not_reparam})


# 5. tiny semi-supervised VAE (unlabelled data): discrete label y, continuous z ------------
class TinySSVAE(torch.nn.Module):
    """Pyro's ss-VAE M2 in miniature; like the original, its guide concatenates x with y,
    which does not broadcast over a leading particle dim (sequential fallback)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.classify = torch.nn.Linear(2, 2).double()
        self.encode = torch.nn.Linear(4, 2).double()
        self.decode = torch.nn.Linear(3, 2).double()
        self.noise = 0.6

    def decoder_mean(self, z, y):
        return self.decode(torch.cat([z, y], -1))

    def model(self, x):
        pyro.module("ssvae", self)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.OneHotCategorical(x.new_ones(x.shape[0], 2) / 2))
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder_mean(z, y), self.noise).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("ssvae", self)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.OneHotCategorical(logits=self.classify(x)))
            loc, log_scale = self.encode(torch.cat([x, y], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp() + 0.5).to_event(1))


def ssvae() -> Pair:
    net = TinySSVAE()
    x = _data(5, N, 2)
    with torch.no_grad():
        parts = []
        for label in range(2):
            y = torch.nn.functional.one_hot(torch.tensor(label), 2).to(DTYPE)

            def log_joint(z, y=y):
                mean = net.decode(torch.cat([z, y.expand(z.shape[0], 2)], -1))  # [n, 2]
                log_lik = dist.Normal(mean[:, None], net.noise).log_prob(x).sum(-1)
                return dist.Normal(0.0, 1.0).log_prob(z) + log_lik
            parts.append(quadrature_1d(log_joint) + math.log(0.5))
        truth = torch.logsumexp(torch.stack(parts), 0)
    not_reparam = r"guide site 'y' \(OneHotCategorical\) is not reparameterized"
    return Pair("ssvae", net.model, net.guide, (x,), truth, refusals={
        "ais_log_evidence": "discrete", "amortization_gap": "site 'y' is a OneHotCategorical",
        "fit:iwae": not_reparam, "fit:dreg": not_reparam, "fit:meanfield": not_reparam},
        tolerance=0.3, num_samples=200)


# 6. linear-Gaussian state-space model, truth by a Kalman filter ----------------------------
STEPS, TRANSITION, PROCESS, EMISSION = 4, 0.8, 0.6, 0.5


def lgssm() -> Pair:
    y = _data(6, N, STEPS)

    def model(y):
        with pyro.plate("data", y.shape[0]):
            z = y.new_zeros(y.shape[0])
            for t in pyro.markov(range(STEPS)):
                scale = 1.0 if t == 0 else PROCESS
                z = pyro.sample(f"z_{t}", dist.Normal(TRANSITION * z if t else z, scale))
                pyro.sample(f"y_{t}", dist.Normal(z, EMISSION), obs=y[:, t])

    def guide(y):
        gain = pyro.param("gain", torch.tensor(0.7, dtype=DTYPE))
        with pyro.plate("data", y.shape[0]):
            for t in range(STEPS):
                pyro.sample(f"z_{t}", dist.Normal(gain * y[:, t], 0.5))

    return Pair("lgssm", model, guide, (y,), kalman_log_evidence(y), tolerance=0.15)


def kalman_log_evidence(y: torch.Tensor) -> torch.Tensor:
    """log p(y_1..T) per row by the Kalman filter's prediction-error decomposition."""
    mean, var = torch.zeros(y.shape[0], dtype=DTYPE), torch.ones(y.shape[0], dtype=DTYPE)
    total = torch.zeros(y.shape[0], dtype=DTYPE)
    for t in range(STEPS):
        if t:
            mean, var = TRANSITION * mean, TRANSITION ** 2 * var + PROCESS ** 2
        s = var + EMISSION ** 2
        total += -0.5 * ((y[:, t] - mean) ** 2 / s + torch.log(2 * math.pi * s))
        gain = var / s
        mean, var = mean + gain * (y[:, t] - mean), (1 - gain) * var
    return total


# 7/8. nested plates in both orders -----------------------------------------------------------
def nested(data_outer: bool) -> Pair:
    features, noise = 3, 0.8
    x = _data(7, N, features)
    data_dim, feature_dim = (-2, -1) if data_outer else (-1, -2)
    xt = x if data_outer else x.T  # [features, N] when the data plate is the inner one

    def model(x):
        xx = x if data_outer else x.T
        with pyro.plate("data", x.shape[0], dim=data_dim), \
                pyro.plate("features", features, dim=feature_dim):
            z = pyro.sample("z", dist.Normal(xx.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, noise), obs=xx)

    def guide(x):
        xx = x if data_outer else x.T
        loc, sd = normal_posterior(xx, 1.0, noise)
        shrink = pyro.param("shrink", torch.tensor(0.9, dtype=DTYPE))
        with pyro.plate("features", features, dim=feature_dim), \
                pyro.plate("data", x.shape[0], dim=data_dim):
            pyro.sample("z", dist.Normal(shrink * loc, sd * 1.2))

    del xt
    truth = normal_evidence(x, 1.0, noise).sum(-1)
    name = "nested_data_outer" if data_outer else "nested_data_inner"
    return Pair(name, model, guide, (x,), truth)


# 9. in-model subsampling (Pyro's SVI tutorial part II idiom, with local latents) -----------
def subsampled() -> Pair:
    total, batch, noise = 10, 4, 0.7
    x = _data(9, total)

    def model(x):
        with pyro.plate("data", len(x), subsample_size=batch) as idx:
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, noise), obs=x[idx])

    def guide(x):
        with pyro.plate("data", len(x), subsample_size=batch) as idx:
            loc, sd = normal_posterior(x[idx], 1.0, noise)
            widen = pyro.param("widen", torch.tensor(1.3, dtype=DTYPE))
            pyro.sample("z", dist.Normal(loc, sd * widen))

    return Pair("subsampled", model, guide, (x,), None,
                subsample_of=normal_evidence(x, 1.0, noise))


# 10. sizeless data plate (size from the tensors, Pyro's mixture/ss-VAE idiom) --------------
def sizeless() -> Pair:
    noise = 0.7
    x = _data(10, N)

    def model(x):
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, noise), obs=x)

    def guide(x):
        loc, sd = normal_posterior(x, 1.0, noise)
        stretch = pyro.param("stretch", torch.tensor(1.1, dtype=DTYPE))
        with pyro.plate("data"):
            pyro.sample("z", dist.Normal(loc * stretch, sd * 1.2))

    return Pair("sizeless", model, guide, (x,), normal_evidence(x, 1.0, noise))


# 11-13. AutoGuides on a local-latent model --------------------------------------------------
def _local_model(noise):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z, noise), obs=x)
    return model


POSITIONAL = "keeps parameters for each datapoint"


def auto_normal() -> Pair:
    noise = 0.7
    x = _data(11, N)
    model = _local_model(noise)
    guide = AutoNormal(model, init_loc_fn=init_to_value(values={"z": torch.zeros(N, dtype=DTYPE)}),
                       init_scale=1.0)
    return Pair("auto_normal", model, guide, (x,), normal_evidence(x, 1.0, noise), refusals={
        "amortization_gap": "site 'z_unconstrained'|site 'z' is a Delta",
        "fit:elbo": POSITIONAL, "fit:meanfield": POSITIONAL, "fit:iwae": POSITIONAL,
        "fit:dreg": POSITIONAL}, tolerance=0.1)


def _joint_autoguide(cls, name) -> Pair:
    noise = 0.7
    x = _data(12, N)
    model = _local_model(noise)
    guide = cls(model)
    site = f"_{cls.__name__}_latent"
    refusals = {entry: f"site '{site}' {GLOBAL}" for entry in EVIDENCE_ENTRIES}
    refusals.update({f"fit:{loss}": POSITIONAL for loss in ("elbo", "meanfield")})
    refusals.update({f"fit:{loss}": f"site '{site}' {GLOBAL}" for loss in ("iwae", "dreg")})
    return Pair(name, model, guide, (x,), None, refusals=refusals)


def auto_diagonal_normal() -> Pair:
    return _joint_autoguide(AutoDiagonalNormal, "auto_diagonal_normal")


def auto_iaf_normal() -> Pair:
    return _joint_autoguide(AutoIAFNormal, "auto_iaf_normal")


# 14. amortized VAE with pyro.module --------------------------------------------------------
def vae_module() -> Pair:
    torch.manual_seed(14)
    decoder = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(),
                                  torch.nn.Linear(8, 3)).double()
    encoder = torch.nn.Linear(3, 2).double()
    noise = 0.5
    x = _data(14, N, 3)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), noise).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, 0.5 + log_scale.exp()).to_event(1))

    with torch.no_grad():
        truth = quadrature_1d(lambda z: dist.Normal(0.0, 1.0).log_prob(z)
                              + dist.Normal(decoder(z)[:, None], noise).log_prob(x).sum(-1))
    return Pair("vae_module", model, guide, (x,), truth, tolerance=0.1, ais_steps=60)


# 15. a PyroModule pair: PyroParam with a constraint, pyro_method model and guide ------------
class ScaledNormal(PyroModule):
    """z ~ N(0, 1), x ~ N(weight z, noise): evidence N(x; 0, weight^2 + noise^2)."""

    def __init__(self):
        super().__init__()
        self.weight = PyroParam(torch.tensor(1.5, dtype=DTYPE))
        self.noise = PyroParam(torch.tensor(0.6, dtype=DTYPE), constraint=constraints.positive)
        self.guide_scale = PyroParam(torch.tensor(0.5, dtype=DTYPE),
                                     constraint=constraints.positive)

    @pyro_method
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(self.weight * z, self.noise), obs=x)

    @pyro_method
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x, self.guide_scale))


def pyro_module_pair() -> Pair:
    module = ScaledNormal()
    x = _data(15, N)
    truth = normal_evidence(x / 1.5, 1.0, 0.6 / 1.5) - math.log(1.5)
    return Pair("pyro_module", module.model, module.guide, (x,), truth)


# 16. a global latent (Pyro's SVI tutorial coin, subsampled data plate) ----------------------
def coin() -> Pair:
    flips = (torch.rand(N * 2, generator=torch.Generator().manual_seed(16)) < 0.7).to(DTYPE)

    def model(x):
        f = pyro.sample("fairness", dist.Beta(x.new_tensor(10.0), x.new_tensor(10.0)))
        with pyro.plate("data", len(x), subsample_size=4) as idx:
            pyro.sample("obs", dist.Bernoulli(f), obs=x[idx])

    def guide(x):
        a = pyro.param("alpha_q", torch.tensor(15.0, dtype=DTYPE), constraint=constraints.positive)
        b = pyro.param("beta_q", torch.tensor(15.0, dtype=DTYPE), constraint=constraints.positive)
        pyro.sample("fairness", dist.Beta(a, b))

    refusals = {entry: f"site 'fairness' {GLOBAL}" for entry in EVIDENCE_ENTRIES}
    refusals.update({f"fit:{loss}": f"site 'fairness' {GLOBAL}" for loss in ("iwae", "dreg")})
    return Pair("coin_global", model, guide, (flips,), None, refusals=refusals)


# 17/18. guides whose site set differs from the model's -------------------------------------
def guide_extra_site() -> Pair:
    x = _data(17, N)
    model = _local_model(0.7)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            w = pyro.sample("w", dist.Normal(x, 1.0))
            pyro.sample("z", dist.Normal(w, 1.0))

    message = "the guide samples 'w', which the model does not have"
    return Pair("guide_extra_site", model, guide, (x,), None,
                refusals={entry: message for entry in ENTRY_POINTS})


def guide_missing_site() -> Pair:
    x = _data(18, N)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            z2 = pyro.sample("z2", dist.Normal(z, 1.0))
            pyro.sample("x", dist.Normal(z2, 0.7), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x, 1.0))

    message = "latent site\\(s\\) 'z2' are not sampled by the guide"
    return Pair("guide_missing_site", model, guide, (x,), None,
                refusals={entry: message for entry in ENTRY_POINTS})


def enumerated_mixture() -> Pair:
    """A mixture whose component the model sums out (the guide samples only ``z``)."""
    locs, weights, noise = MIXTURE
    x = _data(19, N) * 2

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            c = pyro.sample("c", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(z + locs[c], noise), obs=x)

    def guide(x):
        shrink = pyro.param("shrink", torch.tensor(0.25, dtype=DTYPE))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(shrink * x, 1.2))

    # x | c ~ N(locs_c, 1 + noise^2)
    spread = math.sqrt(1.0 + noise ** 2)
    truth = torch.logsumexp(weights.log() + dist.Normal(locs, spread).log_prob(x[:, None]), -1)
    message = r"site\(s\) 'c' are marked for enumeration"
    return Pair("enumerated_mixture", model, guide, (x,), truth, refusals={
        entry: message for entry in ("ais_log_evidence", "amortization_gap", "fit:elbo",
                                     "fit:meanfield", "fit:iwae", "fit:dreg")})


PAIRS = {
    "normal_normal": normal_normal, "beta_bernoulli": beta_bernoulli,
    "poisson_gamma": poisson_gamma, "gaussian_mixture": gaussian_mixture, "ssvae": ssvae,
    "lgssm": lgssm, "nested_data_outer": lambda: nested(True),
    "nested_data_inner": lambda: nested(False), "subsampled": subsampled,
    "sizeless": sizeless, "auto_normal": auto_normal,
    "auto_diagonal_normal": auto_diagonal_normal, "auto_iaf_normal": auto_iaf_normal,
    "vae_module": vae_module, "pyro_module": pyro_module_pair, "coin_global": coin,
    "guide_extra_site": guide_extra_site, "guide_missing_site": guide_missing_site,
    "enumerated_mixture": enumerated_mixture,
}

# Which pair exercises which feature (rows of the support table in docs/own-pair.md).
FEATURES = {
    "conjugate pair, constrained pyro.param": "normal_normal",
    "Beta guide (reparameterized, non-Normal)": "beta_bernoulli",
    "Poisson-Gamma, inner plate": "poisson_gamma",
    "discrete guide site (Categorical)": "gaussian_mixture",
    "semi-supervised VAE: discrete label, no particle broadcasting": "ssvae",
    "state-space model (pyro.markov)": "lgssm",
    "nested plates, data outer": "nested_data_outer",
    "nested plates, data inner": "nested_data_inner",
    "in-model subsampling": "subsampled",
    "sizeless pyro.plate('data')": "sizeless",
    "AutoNormal": "auto_normal",
    "AutoDiagonalNormal": "auto_diagonal_normal",
    "AutoIAFNormal": "auto_iaf_normal",
    "amortized VAE with pyro.module": "vae_module",
    "PyroModule pair (PyroParam)": "pyro_module",
    "global latent outside the data plate": "coin_global",
    "guide samples a site the model lacks": "guide_extra_site",
    "guide misses a model latent": "guide_missing_site",
    "discrete latent the model sums out (config_enumerate)": "enumerated_mixture",
}
