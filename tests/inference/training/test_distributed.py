"""Data-parallel SVI on two gloo processes against one process on the concatenated batch.

Construction: every datapoint carries its own reparameterization noise ``eps`` as a second
data tensor, and the guide places ``z = loc(x) + scale(x) * eps`` (a ``Delta`` whose log
density is that of ``N(loc, scale)`` at ``z``: the usual reparameterized Gaussian guide with
the noise fixed). A datapoint therefore gets the same draw whichever process scores it, and
the distributed step must reproduce the single-process step up to the order of float64
sums. This file is also the worker script: the test starts it twice with the variables
torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule, pyro_method
from torch.distributions import constraints

from inference.training.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[3]
NUM_DATA, DATA_DIM, LATENT_DIM = 11, 3, 2
FIT = dict(epochs=2, batch_size=5, lr=0.05, seed=3, progress=False)  # batches 5, 5, 1
# float64 sums taken in a different order differ by about 1e-16 relative; 1e-10 leaves room
# for the six Adam steps of two epochs and is far below the 1e-2 a mis-weighted shard moves.
TOLERANCE = 1e-10


class NoisePair(PyroModule):
    """Linear-Gaussian VAE whose guide noise is an input: ``x: [batch, 3]``, ``eps: [batch, 2]``.

    ``init`` sets both the networks (seeded) and the plain param-store parameter
    ``noise_scale``, so two processes can start from different values.
    """

    def __init__(self, init: int):
        super().__init__()
        self.init = init
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init)
            self.encoder = torch.nn.Linear(DATA_DIM, 2 * LATENT_DIM).double()
            self.decoder = torch.nn.Linear(LATENT_DIM, DATA_DIM).double()
        # never used: its zero float32 gradient joins the reduction (two dtypes, one of them
        # a parameter no step touches)
        self.unused = torch.nn.Parameter(torch.zeros(3))

    @pyro_method
    def model(self, x, eps):
        noise = pyro.param("noise_scale", torch.tensor(0.5 + self.init, dtype=x.dtype),
                           constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), noise).to_event(1), obs=x)

    @pyro_method
    def guide(self, x, eps):
        loc, log_scale = self.encoder(x).chunk(2, -1)
        z = loc + log_scale.exp() * eps
        log_q = dist.Normal(loc, log_scale.exp()).to_event(1).log_prob(z)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(z, log_density=log_q, event_dim=1))


class IndexedNoisePair(NoisePair):
    """``NoisePair`` whose ``"data"`` plate declares the whole data set and is given the
    minibatch's indices (``pyro.plate("data", N, subsample=idx)``): the model scales its
    minibatch by ``N / rows`` itself, and ``fit`` must not multiply again."""

    @pyro_method
    def model(self, x, eps, idx):
        noise = pyro.param("noise_scale", torch.tensor(0.5 + self.init, dtype=x.dtype),
                           constraint=constraints.positive)
        with pyro.plate("data", NUM_DATA, subsample=idx):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), noise).to_event(1), obs=x)

    @pyro_method
    def guide(self, x, eps, idx):
        loc, log_scale = self.encoder(x).chunk(2, -1)
        z = loc + log_scale.exp() * eps
        log_q = dist.Normal(loc, log_scale.exp()).to_event(1).log_prob(z)
        with pyro.plate("data", NUM_DATA, subsample=idx):
            pyro.sample("z", dist.Delta(z, log_density=log_q, event_dim=1))


def make_data():
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(NUM_DATA, DATA_DIM, generator=generator, dtype=torch.float64)
    eps = torch.randn(NUM_DATA, LATENT_DIM, generator=generator, dtype=torch.float64)
    return x, eps


def parameters() -> dict[str, torch.Tensor]:
    return {name: value.detach().clone()
            for name, value in pyro.get_param_store().named_parameters()}


def sgd_step(distributed: bool, init: int) -> tuple[float, dict]:
    """One SGD step on rows 0..6 of the data, scaled to the full-data objective."""
    from inference.training.distributed import DataParallel
    from inference.training.fit import OneProcess

    pyro.clear_param_store()
    pair, (x, eps) = NoisePair(init), make_data()
    parallel = DataParallel.from_env(torch.device("cpu")) if distributed else OneProcess()
    parallel.attach(SVI(pair.model, pair.guide, pyro.optim.SGD({"lr": 0.1}), Trace_ELBO()))
    parallel.prepare([pair], (x[:1], eps[:1]), None)
    index = parallel.shard(torch.arange(7))
    loss = parallel.step((x[index], eps[index]), NUM_DATA, 7)
    return loss, parameters()


def fit_run(distributed: bool, init: int, checkpoint: Path, indexed: bool = False,
            **changes) -> tuple[list, dict]:
    from inference import fit

    pyro.clear_param_store()
    pair, data = (IndexedNoisePair if indexed else NoisePair)(init), make_data()
    if indexed:
        data = (*data, torch.arange(NUM_DATA))
    history = fit(pair.model, pair.guide, data, valid_data=None if indexed else data,
                  checkpoint=checkpoint, distributed=distributed, **{**FIT, **changes})
    return history, parameters()


def leave_the_group() -> None:
    """Wait for every rank before tearing gloo down: a rank that destroyed its group while the
    other was still tearing its own down aborted once in CI ("terminate called without an
    active exception", SIGABRT)."""
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def worker(out: Path) -> None:
    """What each of the two processes runs; rank 1 starts from other initial values."""
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    init = 10 * rank  # rank 0's values must win the initial broadcast
    results = {"sgd": sgd_step(True, init),
               "fit": fit_run(True, init, out / "fit.pt"),
               "fixed": fit_run(True, init, out / "fixed.pt", shuffle=False),
               "indexed": fit_run(True, init, out / "indexed.pt", indexed=True)}
    fit_run(True, init, out / "resume.pt", epochs=1)
    results["resumed"] = fit_run(True, init, out / "resume.pt", resume=True)
    torch.save(results, out / f"rank{rank}.pt")
    leave_the_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_same(actual: dict, expected: dict, what: str) -> None:
    assert actual.keys() == expected.keys(), (what, actual.keys(), expected.keys())
    for name in expected:
        error = float((actual[name] - expected[name]).abs().max())
        assert error < TOLERANCE, f"{what}: parameter {name} differs by {error:.3g}"


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    port = free_port()
    processes = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        processes.append(subprocess.Popen(
            [sys.executable, __file__, str(out)], env=env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for rank, process in enumerate(processes):
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, f"rank {rank} failed:\n{output}"
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_one_distributed_step_equals_one_step_on_the_concatenated_batch(two_process_results):
    _, ranks = two_process_results
    loss, expected = sgd_step(False, init=0)
    initial = NoisePair(0)
    moved = float((expected["encoder$$$weight"] - initial.encoder.weight.detach()).abs().max())
    assert moved > 1e-3, "the reference step must move the parameters for the test to mean much"
    for rank, results in enumerate(ranks):
        distributed_loss, params = results["sgd"]
        # SGD keeps the gradient's scale: a missing average or weight would show here
        assert_same(params, expected, f"SGD step, rank {rank}")
        assert abs(distributed_loss - loss) < TOLERANCE * abs(loss), (distributed_loss, loss)


def test_distributed_fit_equals_single_process_fit(two_process_results, tmp_path):
    out, ranks = two_process_results
    history, expected = fit_run(False, init=0, checkpoint=tmp_path / "single.pt")
    for rank, results in enumerate(ranks):
        distributed_history, params = results["fit"]
        # the last minibatch holds one datapoint: rank 1's shard is empty there
        assert_same(params, expected, f"fit, rank {rank}")
        for ours, theirs in zip(distributed_history, history):
            for key in ("train_loss", "valid_elbo"):
                assert abs(ours[key] - theirs[key]) < TOLERANCE * abs(theirs[key]), (key, rank)
        # resuming the distributed run after one epoch gives the uninterrupted result
        assert_same(results["resumed"][1], params, f"resumed fit, rank {rank}")
    state = load_checkpoint(out / "fit.pt")
    assert state["rng"]["world_size"] == 2 and len(state["rng"]["ranks"]) == 2
    assert not list(out.glob("*.partial")), "checkpoints are written atomically"


def test_distributed_fit_in_a_fixed_order_equals_single_process_fit(two_process_results,
                                                                   tmp_path):
    """shuffle=False weighs every row by the number of steps (3), the last minibatch's one
    row too: the shards' weights must give the single process's steps."""
    _, ranks = two_process_results
    history, expected = fit_run(False, init=0, checkpoint=tmp_path / "fixed.pt", shuffle=False)
    for rank, results in enumerate(ranks):
        distributed_history, params = results["fixed"]
        assert_same(params, expected, f"fit(shuffle=False), rank {rank}")
        for ours, theirs in zip(distributed_history, history):
            assert abs(ours["train_loss"] - theirs["train_loss"]) < TOLERANCE * abs(
                theirs["train_loss"]), rank


def test_distributed_fit_of_a_model_that_scales_its_own_plate_equals_single_process_fit(
        two_process_results, tmp_path):
    """pyro.plate("data", N, subsample=idx) scales each shard by N / rows itself: fit's own
    factor for a shard must then make the rows weigh N / B, not N / B_r (a world size too
    much, which moved the parameters by about 1e-2 here)."""
    _, ranks = two_process_results
    history, expected = fit_run(False, init=0, checkpoint=tmp_path / "indexed.pt", indexed=True)
    for rank, results in enumerate(ranks):
        distributed_history, params = results["indexed"]
        assert_same(params, expected, f"fit of the indexed pair, rank {rank}")
        for ours, theirs in zip(distributed_history, history):
            assert abs(ours["train_loss"] - theirs["train_loss"]) < TOLERANCE * abs(
                theirs["train_loss"]), rank


def test_distributed_fit_without_a_process_group_says_how_to_launch(monkeypatch):
    from inference import fit

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    pair = NoisePair(0)
    with pytest.raises(ValueError, match="torchrun"):
        fit(pair.model, pair.guide, make_data(), distributed=True, progress=False)


def user_group_worker(out: Path, rank: int) -> None:
    """A rank of a group the user made (``init_process_group(rank=..., world_size=...)``,
    a shared file, none of torchrun's variables): fit with a checkpoint."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{out / 'group'}",
                                         rank=rank, world_size=2)
    torch.save(fit_run(True, 10 * rank, out / "user_group.pt"), out / f"user{rank}.pt")
    leave_the_group()


def test_distributed_fit_in_a_group_the_user_made_checkpoints_on_rank_0(tmp_path):
    """Without RANK in the environment every rank took the checkpoint's lock: one was refused
    as "another run is writing the checkpoint", the other died in gloo."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    processes = [subprocess.Popen([sys.executable, __file__, str(tmp_path), "--user-group",
                                   str(rank)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    for rank, process in enumerate(processes):
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, f"rank {rank} failed:\n{output}"
    _, expected = fit_run(False, init=0, checkpoint=tmp_path / "single.pt")
    for rank in range(2):
        _, params = torch.load(tmp_path / f"user{rank}.pt", weights_only=False)
        assert_same(params, expected, f"fit in a user's group, rank {rank}")
    assert load_checkpoint(tmp_path / "user_group.pt")["rng"]["world_size"] == 2


if __name__ == "__main__":
    if sys.argv[2:3] == ["--user-group"]:
        user_group_worker(Path(sys.argv[1]), int(sys.argv[3]))
    else:
        worker(Path(sys.argv[1]))
