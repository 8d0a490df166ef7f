"""Write your own model/guide pair: factor analysis gets every estimator of ``inference`` free.

Factor analysis (Ghahramani and Hinton 1996) with ``d`` factors for ``D``-dimensional data::

    z ~ N(0, I_d),    x | z ~ N(W z + mu, diag(psi)),    so  p(x) = N(x; mu, W W^T + diag(psi))

The guide is amortized and linear, ``q(z | x) = N(A x + b, diag(s^2))``. The exact posterior
is Gaussian with a mean linear in x but a full covariance, so the diagonal guide misses it by
a little: that is the gap between the ELBO and ``log p(x)`` which IWAE_K closes as K grows.
Nothing below is specific to factor analysis except the two methods ``model`` and ``guide``
(sharing one ``pyro.plate("data", ...)``) and the closed-form ``log_marginal`` used to check
the estimators.

Expected (defaults; a few seconds on 2 cores: 4-8 s measured on 2026-11-29): on 200
held-out points, ELBO -18.03 < IWAE_10 -17.63 < IWAE_100 -17.61 < IWAE_1000 -17.608, against
the closed form -17.608 and AIS -17.611 +- 0.003 nats; median
k-hat 0.32 and none above 0.7 (the weights are light-tailed); amortization gap 0.24 and
approximation gap 0.18 nats, which add up to the ELBO's 0.42 nats below log p(x).

    python examples/own_pair.py --out-dir runs/own_pair
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam, pyro_method
from torch.distributions import constraints

from inference import (ais_log_evidence, amortization_gap, bound_sweep, fit,
                       log_importance_weights, pareto_k)

# The examples' command-line scaffolding (run folder, flags, memory checks, the plot): not
# needed to write a pair; main() below uses it.
from inference.evidence.weight_diagnostics import MIN_PARETO_SAMPLES
from ppl_models.checks import check_memory
from scaffold.flags import (
    check_evaluation_memory,
    data_flags,
    evaluation_ks,
    evidence_flags,
    integer_in,
    numbers,
    objective_flags,
    positive_step_count,
    refused_as_usage,
    script_parser,
    training_flags,
)
from scaffold.plots import bounds_against_k
from scaffold.runs import finish_run, run_script, start_run


class FactorAnalysis(PyroModule):
    """Factor analysis with an amortized linear Gaussian guide; all methods take ``x: [batch, D]``.

    Args:
        data_dim: D.
        num_factors: d.
    """

    def __init__(self, data_dim: int, num_factors: int):
        super().__init__()
        self.data_dim, self.num_factors = data_dim, num_factors
        self.loading = torch.nn.Parameter(0.1 * torch.randn(data_dim, num_factors))  # W
        self.mean = torch.nn.Parameter(torch.zeros(data_dim))  # mu
        self.noise_variance = PyroParam(torch.ones(data_dim), constraints.positive)  # psi
        self.encoder = torch.nn.Linear(data_dim, num_factors)  # A, b
        self.guide_scale = PyroParam(torch.ones(num_factors), constraints.positive)  # s

    def _check(self, x: torch.Tensor) -> None:
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.data_dim:
            shape = list(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x must be [batch, {self.data_dim}], got {shape}")

    @pyro_method
    def model(self, x: torch.Tensor) -> None:
        """``x: [batch, D]``; ``z: [..., batch, d]`` ~ N(0, I), ``x | z ~ N(W z + mu, diag(psi))``,
        inside ``pyro.plate("data", batch)``."""
        self._check(x)
        zeros = x.new_zeros(self.num_factors)
        prior = dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)  # [..., batch, d]
            loc = z @ self.loading.T + self.mean  # [..., batch, D]
            pyro.sample("x", dist.Normal(loc, self.noise_variance.sqrt()).to_event(1), obs=x)

    @pyro_method
    def guide(self, x: torch.Tensor) -> None:
        """``q(z | x) = N(A x + b, diag(s^2))`` for ``x: [batch, D]``: ``z: [..., batch, d]`` inside
        ``pyro.plate("data", batch)``."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.encoder(x), self.guide_scale).to_event(1))

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form ``log p(x)``, ``[batch]`` in nats."""
        self._check(x)
        covariance = self.loading @ self.loading.T + torch.diag(self.noise_variance)
        return dist.MultivariateNormal(self.mean, covariance_matrix=covariance).log_prob(x)


def simulate(num_data: int, data_dim: int, num_factors: int, seed: int) -> torch.Tensor:
    """``[num_data, D]`` points from a random factor-analysis model fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    loading = torch.randn(data_dim, num_factors, generator=gen)
    noise_scale = 0.3 + torch.rand(data_dim, generator=gen)
    z = torch.randn(num_data, num_factors, generator=gen)
    return z @ loading.T + noise_scale * torch.randn(num_data, data_dim, generator=gen)


def estimate(pair: FactorAnalysis, test: torch.Tensor, ks: list[int], args):
    """Every estimator on the trained ``pair`` for ``test: [n, D]``, against the closed form:
    the bound table (IWAE_K for ``ks``) and the metrics (nats, means over the test points).

    Nothing here was written for factor analysis: each call takes the pair's two methods."""
    with torch.no_grad():
        exact = pair.log_marginal(test)  # [n]
    table = bound_sweep(pair.model, pair.guide, test, num_samples=ks, repeats=args.repeats)
    ais = ais_log_evidence(pair.model, pair.guide, test, num_chains=args.ais_chains,
                           num_steps=args.ais_steps)
    k_hat = pareto_k(log_importance_weights(pair.model, pair.guide, test,
                                            num_samples=ks[-1]))  # [n]
    gaps = amortization_gap(pair.model, pair.guide, test, log_evidence=exact,
                            num_steps=args.gap_steps)
    return table, {
        "units": "nats per datapoint, mean over test points",
        "exact_log_evidence": float(exact.mean()),
        "elbo": table.elbo(),
        "iwae": table.iwae(),
        "bounds": table.rows,
        "ais": float(ais.log_evidence.mean()),
        "ais_stderr": float(ais.stderr.pow(2).sum().sqrt() / test.shape[0]),
        "k_hat": k_hat.tolist(),
        "amortization_gap": float(gaps.amortization_gap.mean()),
        "approximation_gap": float(gaps.approximation_gap.mean()),
    }


def main(args: argparse.Namespace) -> dict:
    """Simulate, train the pair with :func:`inference.fit`, :func:`estimate`, print and save."""
    out, device, start = start_run(args)
    pyro.clear_param_store()

    rows, dim, factors = args.num_train + args.num_test, args.data_dim, args.num_factors
    with refused_as_usage("own_pair"):  # sizes the allocator alone would refuse, unnamed
        # the simulated factors, data and noise, the loadings (simulated, learned), the
        # encoder, and the closed form's D x D covariance with its Cholesky factor
        check_memory(rows * factors + 2 * rows * dim + 3 * dim * factors + 2 * dim * dim,
                     torch.get_default_dtype(),
                     f"--num-train + --num-test = {rows} rows of --data-dim {dim} with "
                     f"--num-factors {factors}: the data, the networks and the closed form's "
                     f"{dim} x {dim} covariance")
    data = simulate(rows, dim, factors, args.seed)
    train, test = data[:args.num_train], data[args.num_train:].to(device)
    check_evaluation_memory("own_pair", "--max-k", args.max_k, test)
    check_evaluation_memory("own_pair", "--ais-chains", args.ais_chains, test)
    pair = FactorAnalysis(args.data_dim, args.num_factors)
    with refused_as_usage("own_pair"):  # fit's refusals come before its first step
        history = fit(pair.model, pair.guide, train, loss=args.objective,
                      num_particles=args.num_particles, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device)

    table, results = estimate(pair, test, evaluation_ks(args.max_k), args)
    metrics = {**results, "history": history, "config": vars(args), "device": str(device)}
    bounds_against_k(table, out / "bounds_vs_k.png", reference=metrics["exact_log_evidence"],
                     reference_label="closed-form log p(x)")
    print(table)
    print(f"{'AIS':<12}{metrics['ais']:>14.4f}{metrics['ais_stderr']:>12.4f}")
    print(f"{'exact':<12}{metrics['exact_log_evidence']:>14.4f}   (closed form)")
    print(f"k-hat median {float(torch.tensor(metrics['k_hat']).median()):.2f}; gaps: amortization "
          f"{metrics['amortization_gap']:.3f}, approximation {metrics['approximation_gap']:.3f}")
    return finish_run(out, metrics, start, "metrics.json, bounds_vs_k.png")


def parse_args(argv=None) -> argparse.Namespace:
    parser = script_parser(__doc__, "runs/own_pair")
    numbers(parser, data_dim=10, num_factors=3)
    data_flags(parser, num_train=2000, num_test=200, simulated=True)
    objective_flags(parser, objective="iwae", num_particles=5)
    training_flags(parser, epochs=30, batch_size=200, lr=1e-2)
    evidence_flags(parser, max_k=1000, repeats=3)
    parser.add_argument("--ais-chains", type=integer_in(2), default=16,
                        help="AIS chains per test point (two at least, for a standard error)")
    parser.add_argument("--ais-steps", type=positive_step_count, default=100,
                        help="AIS intermediate densities")
    parser.add_argument("--gap-steps", type=positive_step_count, default=300,
                        help="optimization steps of the per-datapoint guides")
    args = parser.parse_args(argv)
    if args.max_k < MIN_PARETO_SAMPLES:
        parser.error(f"argument --max-k: k-hat needs at least {MIN_PARETO_SAMPLES} weights "
                     f"(it uses --max-k of them), got {args.max_k}")
    return args


if __name__ == "__main__":
    run_script("own_pair", main, parse_args())
