"""The measurements of the one-command GPU check (driven by ``benchmarks/gpu_check.sh``).

Each *part* measures one thing and merges its results into ``<out-dir>/gpu_check.json`` as it
goes (``status`` "running" until it ends "ok" or "failed"), so that whatever finished survives
a later failure or the shell's time box (which then marks the part "timeout"):

- ``device``: torch, CUDA and Pyro versions, the GPU's name, memory and capability.
- ``svi_step``: one SVI step of the 784-400-50 Bernoulli VAE (Fashion-MNIST, data plate scaled
  by 60000 / batch) at batch 256 and 4096, ms/step of seven sides: ``ours``
  (:class:`inference.SVIStep`, what ``fit`` runs), ``ours_compiled``
  (:class:`inference.CompiledSVIStep`, what ``fit(compile=True)`` runs), ``ours_cudagraphs``
  (the same compiled with Inductor's CUDA graphs, what ``mode="reduce-overhead"`` sets),
  ``hand_eager``, ``hand_compiled`` and ``hand_cudagraphs`` (the same loss written in plain
  PyTorch, eager / ``torch.compile`` / ``mode="reduce-overhead"``, all three with the fused
  Adam that ours uses), and ``pyro_svi`` (stock ``pyro.infer.SVI`` with ``pyro.optim.Adam``).
  Sides alternate in blocks of steps; reported are medians over blocks, the ratios to
  ``hand_eager`` and ``hand_compiled``, and the host synchronizations per step
  (``torch.cuda.set_sync_debug_mode("warn")`` over a few extra steps).
- ``epoch``: ``fit`` over the 60000 training images (train + validation files) at batch 256,
  eager and ``compile=True``, three epochs each: the first warms up (validation, compilation),
  the second is timed, the third counts host synchronizations.
- ``iwae``: ``iwae_bound`` with K = 5000 over the 10000 test images (the compiled VAE of
  ``epoch`` when it finished, else an untrained one): seconds, peak GPU memory, the mean bound
  and the single-sample ELBO beside it (which it must exceed).
- ``pixelcnn``: the 8-block 28x28 Bernoulli PixelCNN (32 channels, depth from
  :func:`ppl_models.pixelcnn.default_depth`): ms per training step at batch 64 and 256, and
  100 images drawn by the cached sampler and by the naive one (same seed: same images).
- ``mixed_precision``: ``fit(mixed_precision=True)`` against float32 from the same seed, two
  epochs: seconds per epoch and the difference of their test IWAE_100 bounds.

``--dry-run`` runs every part on the CPU with tiny sizes and random binary images, with
``torch.compile`` switched off (the compiled sides then replay their traced graphs), so that
the whole check runs in seconds in the test suite and cannot rot between uses of a GPU.

    python benchmarks/gpu_check.py --part device svi_step --out-dir runs/gpu_check [--dry-run]
    python benchmarks/gpu_check.py --summary --out-dir runs/gpu_check
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

RESULTS = "gpu_check.json"
MEASUREMENTS = ("svi_step", "epoch", "iwae", "pixelcnn", "mixed_precision")
PARTS = ("device", *MEASUREMENTS)
TEST_PARTS = ("tests_cuda", "tests_short")  # pytest runs, recorded by the shell script
NUM_TRAIN = 60000  # the data plate's N: Fashion-MNIST's training file
HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)

# Targets of issue 16 on one H100 (absolute times hold only on a GPU).
TARGETS = {
    "iwae_seconds": 10.0,            # iwae_bound K=5000 over the 10000 test images
    "epoch_eager_seconds": 0.5,      # one epoch of 60000 images at batch 256
    "epoch_compiled_seconds": 0.1,
    "compiled_over_hand_compiled": 1.1,  # batch 256
}

FULL = {
    "batch_sizes": (256, 4096), "cudagraph_batches": (256,), "hidden": 400, "latent_dim": 50,
    "steps": 40, "blocks": 5, "warmup": 5, "sync_steps": 5, "num_train": NUM_TRAIN,
    "num_test": 10000, "epoch_batch": 256, "iwae_k": 5000, "iwae_chunk": 1000,
    "iwae_images_per_call": 250,
    "pixel_shape": (1, 28, 28), "pixel_channels": 32, "pixel_batches": (64, 256),
    "pixel_steps": 20, "pixel_samples": 100, "mp_epochs": 2, "mp_k": 100,
}
DRY = {
    "batch_sizes": (16, 64), "cudagraph_batches": (16,), "hidden": 400, "latent_dim": 50,
    "steps": 2, "blocks": 2, "warmup": 2, "sync_steps": 2, "num_train": 512, "num_test": 64,
    "epoch_batch": 128, "iwae_k": 50, "iwae_chunk": 20, "iwae_images_per_call": 32,
    "pixel_shape": (1, 8, 8), "pixel_channels": 8, "pixel_batches": (4, 8),
    "pixel_steps": 2, "pixel_samples": 4, "mp_epochs": 1, "mp_k": 5,
}


# ------------------------------------------------------------------------ results file
class Results:
    """``<out_dir>/gpu_check.json``: one dict per part, rewritten atomically on every update."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / RESULTS
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def reset(self, part: str, **values) -> None:
        """Start the record of ``part`` afresh (a rerun keeps nothing of an earlier one)."""
        data = self.load()
        data.pop(part, None)
        self._write(data)
        self.update(part, **values)

    def update(self, part: str, **values) -> None:
        """Merge ``values`` into the record of ``part`` and write the file."""
        data = self.load()
        data.setdefault(part, {}).update(values)
        self._write(data)

    def _write(self, data: dict) -> None:
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(data, indent=2, default=_jsonable))
        os.replace(partial, self.path)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ------------------------------------------------------------------------------ helpers
class Clock:
    """The part's soft deadline: work that would not finish is skipped and said so."""

    def __init__(self, seconds: float | None):
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return math.inf if self.end is None else self.end - time.monotonic()


def _setup(args):
    """Import torch, pick the device, apply the dry run's settings; returns (torch, device)."""
    import torch

    if args.dry_run:
        import torch._dynamo

        # torch.compile becomes a no-op: compiled sides replay their traced graphs eagerly.
        torch._dynamo.config.disable = True
        torch.set_num_threads(1)
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible to torch (use --dry-run on a CPU)")
        device = torch.device("cuda")
    return torch, device


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def count_syncs(device):
    """Count the host synchronizations torch reports inside the block (CUDA only; 0 on CPU).

    Yields a dict whose ``"count"`` is set on exit.
    """
    import torch

    box = {"count": 0}
    cuda = device.type == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield box
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    box["count"] = sum("synchroniz" in str(w.message).lower() for w in caught)


def save_cache(path: Path, state: dict) -> None:
    """Write ``state`` to the work folder's file ``path`` atomically, with a length and CRC
    header (:func:`inference.training.checkpoints.save_checkpoint`): a part killed while
    writing leaves the old file or none, never half of one that later parts would read. A
    failed write (full disk) is said, naming the file, and the part goes on: the file is
    only a cache."""
    from inference.training.checkpoints import save_checkpoint

    try:
        save_checkpoint(path, state)
    except OSError as error:
        print(f"cannot cache {path}: {error}", flush=True)


def load_cache(path: Path, check, instead: str) -> dict | None:
    """What :func:`save_cache` wrote at ``path``; None when there is no file or when it
    cannot be used: unreadable, truncated, altered (the CRC), of an older format, or refused
    by ``check(state)`` (raising ``KeyError``, ``ValueError``, ``RuntimeError``, ... for a
    state of another shape). The latter is said, naming the file and what the caller does
    ``instead`` (rebuild it), and the file removed."""
    from inference.training.checkpoints import CheckpointError, load_checkpoint

    if not path.exists():
        return None
    try:
        state = load_checkpoint(path, map_location="cpu")
        check(state)
    except (CheckpointError, KeyError, TypeError, ValueError, AttributeError,
            RuntimeError) as error:
        print(f"cannot use the cached file {path} ({error}); {instead}", flush=True)
        path.unlink()  # (save_checkpoint replaces no file of another format: this is ours)
        return None
    return state


def _check_images(state: dict) -> None:
    """A cached ``{"train", "test": uint8 [n, 1, 28, 28], "source": str}``."""
    if not isinstance(state["source"], str):
        raise TypeError(f"its source is a {type(state['source']).__name__}, not a string")
    for key in ("train", "test"):
        images = state[key]
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28) or not len(images):
            raise ValueError(f"its {key} images have shape {list(images.shape)}, not "
                             f"[n, 1, 28, 28]")


def load_data(args, torch, device) -> dict:
    """Binarized images ``train: [n_train, 1, 28, 28]``, ``test: [n_test, 1, 28, 28]``.

    Fashion-MNIST (training file = train + validation splits of :func:`ppl_models.load_images`,
    binarized with seed 0) from ``args.data_root`` when that folder holds the IDX files,
    cached as uint8 under ``args.work_dir`` (written atomically; a corrupt cache is said,
    named and rebuilt); otherwise (and always in a dry run) random Bernoulli(0.3) pixels, so
    timings still mean something and the source is recorded.
    """
    sizes = FULL if not args.dry_run else DRY
    cache = Path(args.work_dir) / "fashion_mnist_binarized.pt"
    source = "random Bernoulli(0.3) pixels"
    from_root = bool(args.data_root) and Path(args.data_root).is_dir()
    images = None if args.dry_run else load_cache(
        cache, _check_images, f"rebuilding it from {args.data_root}" if from_root
        else "using random images (no --data-root folder to rebuild it from)")
    if images is not None:
        source = images.pop("source")
    elif not args.dry_run and from_root:
        try:
            images = fashion_mnist_binarized(args.data_root)
            source = f"Fashion-MNIST binarized (seed 0) from {args.data_root}"
            save_cache(cache, {**images, "source": source})
        except FileNotFoundError as error:
            print(f"no Fashion-MNIST ({error}); using random images", flush=True)
            images = None
    if images is None:
        generator = torch.Generator().manual_seed(args.seed)
        images = {key: (torch.rand(n, 1, 28, 28, generator=generator) < 0.3).to(torch.uint8)
                  for key, n in (("train", sizes["num_train"]), ("test", sizes["num_test"]))}
    return {"train": images["train"][:sizes["num_train"]].float().to(device),
            "test": images["test"][:sizes["num_test"]].float().to(device), "source": source}


def fashion_mnist_binarized(root) -> dict:
    """``{"train": uint8 [60000, 1, 28, 28], "test": uint8 [10000, 1, 28, 28]}`` in {0, 1}:
    the training file (train + validation splits) and the test file, binarized with seed 0."""
    import torch
    from ppl_models import load_images

    data = load_images("fashion-mnist", root=root).binarized(0)
    train = torch.cat([data.train.images, data.valid.images])
    return {"train": train.to(torch.uint8), "test": data.test.images.to(torch.uint8)}


def make_vae(sizes: dict, seed: int):
    """The Bernoulli MLP VAE, 784-``sizes["hidden"]``-``sizes["latent_dim"]`` (784-400-50 in
    both the full check and the dry run), its weights drawn from ``seed``."""
    import torch
    from ppl_models import VAE

    torch.manual_seed(seed)
    return VAE((1, 28, 28), latent_dim=sizes["latent_dim"], likelihood="bernoulli",
               hidden=(sizes["hidden"],))


def hand_written_loss(encoder, decoder, x, eps, scale: float):
    """``-scale * sum_b ELBO_b`` (Trace_ELBO's single-sample estimate) in plain PyTorch.

    Args:
        encoder, decoder: the networks of a Bernoulli :class:`ppl_models.VAE`
            (``x -> (loc, scale)``, ``z -> [batch, 1, 1, 28, 28]`` logits).
        x: ``[batch, 1, 28, 28]`` binary images.
        eps: ``[batch, latent_dim]`` standard normal draws (None: drawn here).
        scale: the data plate's factor ``N / batch``.

    Returns:
        a 0-dim tensor with the graph to the networks' parameters.
    """
    import torch
    from torch.nn import functional as F

    loc, sigma = encoder(x)  # [batch, d] each
    if eps is None:
        eps = torch.randn_like(loc)
    z = loc + sigma * eps
    logits = decoder(z).flatten(1)  # [batch, 784]
    target = x.flatten(1)
    log_lik = (target * logits - F.softplus(logits)).sum(1)
    log_prior = (-0.5 * z.square() - HALF_LOG_TWO_PI).sum(1)
    log_q = (-0.5 * eps.square() - sigma.log() - HALF_LOG_TWO_PI).sum(1)
    return -scale * (log_lik + log_prior - log_q).sum()


def compare_with_hand_written(vae, x, scale: float, seed: int, hand_vae=None) -> dict:
    """Ours (:class:`inference.SVIStep`'s lean path) against :func:`hand_written_loss` on
    the same draws (the same seed: both draw the guide's noise first, from torch's generator).

    Args:
        vae: a Bernoulli MLP :class:`ppl_models.VAE` (left untouched: copies are scored).
        x: ``[batch, 1, 28, 28]`` binary images.
        hand_vae: the networks the hand-written loss uses (default: a copy of ``vae``;
            another one shows that the comparison can fail).

    Returns:
        ``{"rel_loss_diff", "rel_grad_diff"}``: ``|ours - hand| / |hand|`` of the loss, and
        the largest over parameters of ``max |g_ours - g_hand| / max |g_hand|``.
    """
    import pyro

    from inference import SVIStep, scale_data_plate

    ours, hand = copy.deepcopy(vae), copy.deepcopy(vae if hand_vae is None else hand_vae)
    step = SVIStep(ours.model, ours.guide)
    store = pyro.get_param_store()
    with store.scope(), scale_data_plate(scale), pyro.validation_enabled(False):
        step.loss_and_grads(ours.model, ours.guide, x)  # the first step picks the lean path
        if not step.lean:
            raise RuntimeError("the VAE should take SVIStep's lean path")
        ours.zero_grad(set_to_none=True)
        pyro.set_rng_seed(seed)
        ours_loss = step.loss_and_grads(ours.model, ours.guide, x)
    pyro.set_rng_seed(seed)
    hand_loss = hand_written_loss(hand.encoder, hand.decoder, x, None, scale)
    hand_loss.backward()
    hand_loss = hand_loss.item()
    pairs = list(zip(ours.parameters(), hand.parameters()))
    if not pairs or any(p.grad is None for pair in pairs for p in pair):
        raise RuntimeError("every parameter of both copies should have a gradient")
    worst = 0.0
    for p_ours, p_hand in pairs:
        worst = max(worst, float((p_ours.grad - p_hand.grad).abs().max()
                                 / p_hand.grad.abs().max()))
    return {"rel_loss_diff": abs(ours_loss - hand_loss) / abs(hand_loss),
            "rel_grad_diff": worst}


class Side:
    """One contender of the step comparison: its own copy of the VAE and ``step(x)``, which
    returns the loss as a tensor (stock Pyro's SVI returns a float: that is its cost)."""

    def __init__(self, name: str, vae, scale: float, lr: float):
        import pyro
        import torch
        from pyro.infer import SVI, Trace_ELBO

        from inference import Adam, CompiledSVIStep, SVIStep

        self.name, self.vae, self.scale = name, copy.deepcopy(vae), scale
        self.store_state = None  # this side's own Pyro param store (copies share names)
        if name == "ours":
            self.stepper = SVIStep(self.vae.model, self.vae.guide, Adam(lr))
        elif name in ("ours_compiled", "ours_cudagraphs"):
            self.stepper = CompiledSVIStep(self.vae.model, self.vae.guide, Adam(lr))
        elif name == "pyro_svi":
            self.stepper = SVI(self.vae.model, self.vae.guide, pyro.optim.Adam({"lr": lr}),
                               loss=Trace_ELBO())
        else:
            self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=lr, fused=True)
            # the plain nn.Modules inside the PyroModule: what a hand-written step would hold
            encoder, decoder = self.vae.encoder, self.vae.decoder

            def loss(x, eps):
                return hand_written_loss(encoder, decoder, x, eps, scale)

            if name == "hand_compiled":
                loss = torch.compile(loss)
            elif name == "hand_cudagraphs":
                loss = torch.compile(loss, mode="reduce-overhead")
            self.loss = loss

    def step(self, x):
        import pyro
        import torch

        from inference import scale_data_plate

        if self.name.startswith("hand"):
            eps = None if self.name == "hand_eager" else torch.randn(
                x.shape[0], self.vae.latent_dim, device=x.device)
            loss = self.loss(x, eps)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            return loss.detach()
        with scale_data_plate(self.scale), pyro.validation_enabled(False):
            if self.name == "ours_cudagraphs":
                import torch._inductor.config as inductor_config

                # what torch.compile(mode="reduce-overhead") sets; read when compiling
                with inductor_config.patch({"triton.cudagraphs": True}):
                    return self.stepper.tensor_step(x)
            if self.name == "pyro_svi":
                return self.stepper.step(x)
            return self.stepper.tensor_step(x)


def _cudagraph_skips() -> int | None:
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:  # private counters: absent in some versions
        return None


# -------------------------------------------------------------------------------- parts
def part_device(args, results: Results, clock: Clock) -> None:
    torch, device = _setup(args)
    import pyro

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "pyro": pyro.__version__, "pyro_file": pyro.__file__, "cuda_build": torch.version.cuda,
            "dry_run": args.dry_run, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "host": platform.node(), "device": str(device),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count,
                    bf16_supported=torch.cuda.is_bf16_supported(),
                    cudnn=torch.backends.cudnn.version())
        x = torch.randn(4096, 4096, device=device)
        x @ x  # warm-up: cuBLAS handle and kernel selection
        _sync(device)
        start = time.perf_counter()
        for _ in range(10):
            x @ x
        _sync(device)
        info["matmul_4096_fp32_tflops"] = round(10 * 2 * 4096**3 / (time.perf_counter() - start)
                                                / 1e12, 1)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    results.update("device", **info)
    for key, value in info.items():
        print(f"  {key}: {value}")


def part_svi_step(args, results: Results, clock: Clock) -> None:
    torch, device = _setup(args)
    import pyro

    sizes = DRY if args.dry_run else FULL
    data = load_data(args, torch, device)
    results.update("svi_step", data=data["source"], sizes={k: sizes[k] for k in (
        "hidden", "latent_dim", "steps", "blocks", "warmup")}, batches={})
    names = ["hand_eager", "ours", "pyro_svi", "hand_compiled", "ours_compiled",
             "hand_cudagraphs", "ours_cudagraphs"]
    store = pyro.get_param_store()
    vae = make_vae(sizes, args.seed).to(device)
    check = compare_with_hand_written(vae, data["train"][:sizes["batch_sizes"][0]],
                                      NUM_TRAIN / sizes["batch_sizes"][0], args.seed)
    results.update("svi_step", same_as_hand_written=check)
    print(f"  ours vs hand-written on the same draws: rel. loss diff "
          f"{check['rel_loss_diff']:.1e}, rel. grad diff {check['rel_grad_diff']:.1e}",
          flush=True)
    for batch_size in sizes["batch_sizes"]:
        record = {"warmup_seconds": {}, "errors": {}}
        count = min(8, max(1, data["train"].shape[0] // batch_size))
        batches = [data["train"][i * batch_size:(i + 1) * batch_size] for i in range(count)]
        if batches[0].shape[0] < batch_size:  # tiny data: repeat rows up to the batch
            reps = -(-batch_size // batches[0].shape[0])
            batches = [b.repeat(reps, 1, 1, 1)[:batch_size] for b in batches]
        sides = []

        def save():  # what is known so far about this batch size
            known = results.load().get("svi_step", {}).get("batches", {})
            known[str(batch_size)] = record
            results.update("svi_step", batches=known)

        for name in names:
            if name.endswith("cudagraphs") and batch_size not in sizes["cudagraph_batches"]:
                continue  # launch overhead matters at the small batch; compiling costs time
            if clock.left() < (10 if args.dry_run else 45):
                record["errors"][name] = "skipped: out of the part's time"
                continue
            side = Side(name, vae, NUM_TRAIN / batch_size, args.lr)
            start = time.perf_counter()
            try:
                with store.scope(side.store_state) as side.store_state:
                    for i in range(sizes["warmup"]):
                        side.step(batches[i % count])
                _sync(device)
            except Exception as error:  # e.g. CUDA graphs refused: the others go on
                record["errors"][name] = f"{type(error).__name__}: {error}"[:500]
                print(f"  batch {batch_size}: {name} failed: {record['errors'][name]}",
                      flush=True)
                save()
                continue
            record["warmup_seconds"][name] = time.perf_counter() - start
            save()
            sides.append(side)
            print(f"  batch {batch_size}: {name} warm ({record['warmup_seconds'][name]:.1f} s)",
                  flush=True)
        seconds = {side.name: [] for side in sides}
        for block in range(sizes["blocks"]):
            shift = block % len(sides)
            for side in sides[shift:] + sides[:shift]:
                with store.scope(side.store_state) as side.store_state:
                    _sync(device)
                    start = time.perf_counter()
                    for i in range(sizes["steps"]):
                        side.step(batches[i % count])
                    _sync(device)
                seconds[side.name].append((time.perf_counter() - start) / sizes["steps"])
        record["ms_per_step"] = {n: 1000 * statistics.median(s) for n, s in seconds.items()}
        for reference in ("hand_eager", "hand_compiled"):
            if reference in seconds:
                record[f"ratio_to_{reference}"] = {
                    n: statistics.median(a / b for a, b in zip(s, seconds[reference]))
                    for n, s in seconds.items()}
        record["syncs_per_step"] = {}
        for side in sides:
            with store.scope(side.store_state) as side.store_state, count_syncs(device) as box:
                for i in range(sizes["sync_steps"]):
                    side.step(batches[i % count])
            record["syncs_per_step"][side.name] = box["count"] / sizes["sync_steps"]
        record["cudagraph_skips"] = _cudagraph_skips()
        save()
        for name, ms in record["ms_per_step"].items():
            ratio = record.get("ratio_to_hand_eager", {}).get(name, float("nan"))
            print(f"  batch {batch_size:>5} {name:<16} {ms:9.3f} ms/step  "
                  f"{ratio:6.3f} x hand_eager  syncs/step {record['syncs_per_step'][name]:.1f}",
                  flush=True)


def part_epoch(args, results: Results, clock: Clock) -> None:
    torch, device = _setup(args)
    import pyro

    from inference import fit

    sizes = DRY if args.dry_run else FULL
    data = load_data(args, torch, device)
    results.update("epoch", data=data["source"], images=int(data["train"].shape[0]),
                   batch_size=sizes["epoch_batch"])
    for name, compile_ in (("eager", False), ("compiled", True)):
        pyro.clear_param_store()
        vae = make_vae(sizes, args.seed)
        marks = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            def callback(record):
                if record["epoch"] == 2:  # the third epoch counts synchronizations
                    marks["syncs_from"] = len(caught)
                    if device.type == "cuda":
                        torch.cuda.set_sync_debug_mode("warn")

            try:
                history = fit(vae.model, vae.guide, data["train"], epochs=3,
                              batch_size=sizes["epoch_batch"], seed=args.seed, device=device,
                              progress=False, compile=compile_, callback=callback)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message).lower()
                    for w in caught[marks.get("syncs_from", len(caught)):])
        steps = -(-data["train"].shape[0] // sizes["epoch_batch"])
        results.update("epoch", **{name: {
            "seconds_per_epoch": [r["seconds"] for r in history],
            "timed_epoch_seconds": history[1]["seconds"],
            "train_loss": [r["train_loss"] for r in history],
            "steps_per_epoch": steps, "syncs_in_third_epoch": syncs}})
        print(f"  {name}: epochs {[round(r['seconds'], 3) for r in history]} s, "
              f"loss {history[-1]['train_loss']:.2f}, syncs in epoch 3: {syncs} "
              f"({steps} steps)", flush=True)
        if compile_:
            save_cache(Path(args.work_dir) / "vae_state.pt", {"state": vae.state_dict()})


def part_iwae(args, results: Results, clock: Clock) -> None:
    torch, device = _setup(args)
    from inference import elbo, iwae_bound

    sizes = DRY if args.dry_run else FULL
    data = load_data(args, torch, device)
    vae = make_vae(sizes, args.seed)
    # the epoch part's VAE; a file it could not use is said and named (the next run of the
    # epoch part writes it afresh), and the bound is then that of an untrained VAE
    saved = load_cache(Path(args.work_dir) / "vae_state.pt",
                       lambda state: vae.load_state_dict(state["state"]),
                       "using an untrained VAE (the epoch part writes the file afresh)")
    trained = saved is not None
    if not trained:
        vae = make_vae(sizes, args.seed)  # a failed load_state_dict may have copied some
    vae.to(device)
    x = data["test"]
    k, chunk, per_call = sizes["iwae_k"], sizes["iwae_chunk"], sizes["iwae_images_per_call"]
    results.update("iwae", data=data["source"], images=int(x.shape[0]), K=k, chunk_size=chunk,
                   images_per_call=per_call,
                   model="trained 3 epochs (part epoch, compiled)" if trained else "untrained")
    iwae_bound(vae.model, vae.guide, x[:2], num_samples=10)  # warm-up: handles, kernels
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    _sync(device)
    start = time.perf_counter()
    bounds = torch.cat([iwae_bound(vae.model, vae.guide, xb, num_samples=k, chunk_size=chunk)
                        for xb in x.split(per_call)])
    _sync(device)
    seconds = time.perf_counter() - start
    record = {"seconds": seconds, "mean": float(bounds.mean()),
              "stderr": float(bounds.std() / math.sqrt(bounds.numel()))}
    if device.type == "cuda":
        record["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        record["peak_mib_above_start"] = record["peak_mib"] - before / 2**20
    flops = 2 * k * x.shape[0] * (sizes["latent_dim"] * sizes["hidden"]
                                  + sizes["hidden"] * 784)
    record["decoder_tflop_per_s"] = flops / seconds / 1e12
    single = torch.cat([elbo(vae.model, vae.guide, xb) for xb in x.split(per_call)])
    record["elbo_mean"] = float(single.mean())
    results.update("iwae", **record)
    print(f"  IWAE_{k} over {x.shape[0]} images: {seconds:.2f} s, mean {record['mean']:.3f} "
          f"(ELBO {record['elbo_mean']:.3f}), peak {record.get('peak_mib', float('nan')):.0f} "
          f"MiB", flush=True)


def part_pixelcnn(args, results: Results, clock: Clock) -> None:
    torch, device = _setup(args)
    import pyro

    from inference import Adam, SVIStep, scale_data_plate
    from ppl_models import PixelCNN
    from ppl_models.pixelcnn import default_depth

    sizes = DRY if args.dry_run else FULL
    shape = sizes["pixel_shape"]
    blocks, first = default_depth(shape)
    torch.manual_seed(args.seed)
    m = PixelCNN(shape, "bernoulli", channels=sizes["pixel_channels"], num_blocks=blocks,
                 first_kernel_size=first).to(device)
    results.update("pixelcnn", image_shape=list(shape), channels=sizes["pixel_channels"],
                   num_blocks=blocks, first_kernel_size=first, ms_per_step={},
                   syncs_per_step={})
    generator = torch.Generator().manual_seed(args.seed)
    step = SVIStep(m.model, m.guide, Adam(2e-3))
    for batch in sizes["pixel_batches"]:
        x = (torch.rand(4, batch, *shape, generator=generator) < 0.3).float().to(device)
        with scale_data_plate(NUM_TRAIN / batch), pyro.validation_enabled(False):
            for i in range(3):
                step.tensor_step(x[i % 4])
            _sync(device)
            start = time.perf_counter()
            for i in range(sizes["pixel_steps"]):
                step.tensor_step(x[i % 4])
            _sync(device)
            ms = 1000 * (time.perf_counter() - start) / sizes["pixel_steps"]
            with count_syncs(device) as box:
                for i in range(3):
                    step.tensor_step(x[i % 4])
        record = results.load()["pixelcnn"]
        record["ms_per_step"][str(batch)] = ms
        record["syncs_per_step"][str(batch)] = box["count"] / 3
        results.update("pixelcnn", **record)
        print(f"  training step, batch {batch}: {ms:.2f} ms", flush=True)
    num = sizes["pixel_samples"]
    m.sample_fast(2, seed=1)  # warm-up
    _sync(device)
    start = time.perf_counter()
    fast = m.sample_fast(num, seed=0)
    _sync(device)
    results.update("pixelcnn", samples=num, sample_fast_seconds=time.perf_counter() - start)
    print(f"  sample_fast({num}): {time.perf_counter() - start:.2f} s", flush=True)
    if clock.left() < 30 and not args.dry_run:
        results.update("pixelcnn", sample_naive="skipped: out of the part's time")
        return
    start = time.perf_counter()
    naive = m.sample(num, seed=0)
    _sync(device)
    agree = float((fast == naive).float().mean())
    results.update("pixelcnn", sample_naive_seconds=time.perf_counter() - start,
                   fast_equals_naive=agree)
    print(f"  sample({num}) naive: {time.perf_counter() - start:.2f} s; pixels equal to the "
          f"cached sampler's: {agree:.4f}", flush=True)


def part_mixed_precision(args, results: Results, clock: Clock) -> None:
    torch, device = _setup(args)
    import pyro

    from inference import fit, iwae_bound

    sizes = DRY if args.dry_run else FULL
    data = load_data(args, torch, device)
    results.update("mixed_precision", data=data["source"], epochs=sizes["mp_epochs"],
                   batch_size=sizes["epoch_batch"], K=sizes["mp_k"])
    bounds = {}
    for name, mixed in (("float32", False), ("bfloat16", True)):
        pyro.clear_param_store()
        vae = make_vae(sizes, args.seed)
        history = fit(vae.model, vae.guide, data["train"], epochs=sizes["mp_epochs"],
                      batch_size=sizes["epoch_batch"], seed=args.seed, device=device,
                      progress=False, mixed_precision=mixed)
        pyro.set_rng_seed(args.seed)
        bound = torch.cat([iwae_bound(vae.model, vae.guide, xb, num_samples=sizes["mp_k"])
                           for xb in data["test"].split(1000)])
        bounds[name] = bound
        results.update("mixed_precision", **{name: {
            "seconds_per_epoch": [r["seconds"] for r in history],
            "train_loss": [r["train_loss"] for r in history],
            "test_iwae": float(bound.mean())}})
        print(f"  {name}: epochs {[round(r['seconds'], 3) for r in history]} s, "
              f"test IWAE_{sizes['mp_k']} {float(bound.mean()):.3f}", flush=True)
    diff = bounds["bfloat16"] - bounds["float32"]
    results.update("mixed_precision", bound_difference=float(diff.mean()),
                   bound_difference_stderr=float(diff.std() / math.sqrt(diff.numel())))


PART_FUNCTIONS = {"device": part_device, "svi_step": part_svi_step, "epoch": part_epoch,
                  "iwae": part_iwae, "pixelcnn": part_pixelcnn,
                  "mixed_precision": part_mixed_precision}


def run_parts(args) -> int:
    """Run ``args.part`` in order, each recorded ok/failed; the exit status counts failures."""
    results = Results(args.out_dir)
    failures = 0
    for part in args.part:
        clock = Clock(args.deadline)
        print(f"== {part}{' (dry run)' if args.dry_run else ''}", flush=True)
        results.reset(part, status="running", dry_run=args.dry_run)
        start = time.perf_counter()
        try:
            PART_FUNCTIONS[part](args, results, clock)
        except Exception as error:
            failures += 1
            traceback.print_exc()
            results.update(part, status="failed", error=f"{type(error).__name__}: {error}"[:2000],
                           part_seconds=time.perf_counter() - start)
            continue
        results.update(part, status="ok", part_seconds=time.perf_counter() - start)
    return failures


# ------------------------------------------------------------------------------ summary
def record_status(args) -> None:
    """After the shell's time box ran out or the process died: mark unfinished parts."""
    results = Results(args.out_dir)
    data = results.load()
    for part in args.part:
        if data.get(part, {}).get("status") not in ("ok", "failed"):
            results.update(part, status=args.record_status, **({"error": args.message}
                                                              if args.message else {}))


def record_tests(args) -> None:
    """Record a pytest run as part ``args.part[0]``: its exit status and the counts of its
    closing summary line (``5 passed, 2 skipped in 3.1s``)."""
    import re

    status = {0: "ok", 124: "timeout", 137: "timeout"}.get(args.record_tests, "failed")
    record = {"status": status, "exit_status": args.record_tests}
    if args.log and Path(args.log).exists():
        lines = [line for line in Path(args.log).read_text().splitlines() if line.strip()]
        closing = next((line for line in reversed(lines)
                        if re.search(r"\b(passed|failed|skipped|error|deselected)\b", line)), "")
        record["summary"] = closing.strip("= ")
        record["counts"] = {word: int(n) for n, word in re.findall(
            r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", closing)}
    if args.message:
        record["note"] = args.message
    Results(args.out_dir).update(args.part[0], **record)


def judge(data: dict) -> dict:
    """Each target of the issue: ``{"value", "target", "met"}``; None where not measured."""
    dry = any(record.get("dry_run", False) for record in data.values()) or not data
    svi = data.get("svi_step", {}).get("batches", {})
    epoch, iwae = data.get("epoch", {}), data.get("iwae", {})
    first = svi.get(min(svi, key=int)) if svi else {}
    rows = {
        "iwae_seconds": iwae.get("seconds"),
        "epoch_eager_seconds": epoch.get("eager", {}).get("timed_epoch_seconds"),
        "epoch_compiled_seconds": epoch.get("compiled", {}).get("timed_epoch_seconds"),
        "compiled_over_hand_compiled": first.get("ratio_to_hand_compiled", {}).get(
            "ours_compiled"),
    }
    verdict = {}
    for key, value in rows.items():
        met = None if value is None or dry else value <= TARGETS[key]
        verdict[key] = {"value": value, "target": TARGETS[key], "met": met}
    syncs = [first.get("syncs_per_step", {}).get(n) for n in ("ours", "ours_compiled")]
    syncs += [epoch.get(n, {}).get("syncs_in_third_epoch") for n in ("eager", "compiled")]
    # per epoch fit reads the loss sum once and copies the shuffled order to the device
    ok = (None if dry or None in syncs else
          syncs[0] == 0 and syncs[1] == 0 and max(syncs[2:]) <= 3)
    verdict["no_sync_per_step"] = {"value": syncs, "target": "0 per step; <= 3 per epoch",
                                   "met": ok}
    return verdict


def summary(args) -> int:
    results = Results(args.out_dir)
    data = results.load()
    verdict = judge(data)
    results.update("summary", targets=verdict, statuses={p: data.get(p, {}).get("status")
                                                         for p in data if p != "summary"})
    dry = any(record.get("dry_run", False) for record in data.values())
    print("== summary" + (" (dry run: targets not judged)" if dry else ""))
    for part, record in results.load().items():
        if part != "summary":
            print(f"  {part:<16} {record.get('status')}  {record.get('error', '')[:150]}")
    for key, row in verdict.items():
        value = row["value"]
        shown = (f"{value:.3f}" if isinstance(value, float) else str(value))
        print(f"  target {key:<28} {shown:>22}  (target {row['target']})  met: {row['met']}")
    return 0 if all(record.get("status") == "ok" for part, record in data.items()
                    if part != "summary") else 1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", nargs="+", choices=(*PARTS, *TEST_PARTS), default=list(PARTS))
    parser.add_argument("--out-dir", default=os.environ.get("OUT", "runs/gpu_check"))
    parser.add_argument("--work-dir", default=None,
                        help="scratch space shared by the parts (default: <out-dir>/../work)")
    parser.add_argument("--data-root", default=None, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds each part may take before it skips what is left")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--summary", action="store_true", help="judge the targets and print")
    parser.add_argument("--record-status", default=None,
                        help="mark the parts that did not finish with this status")
    parser.add_argument("--message", default=None, help="error text for --record-status")
    parser.add_argument("--record-tests", type=int, default=None, metavar="EXIT_STATUS",
                        help="record a pytest run (its exit status) as part --part")
    parser.add_argument("--log", default=None, help="the pytest log for --record-tests")
    args = parser.parse_args(argv)
    if args.work_dir is None:
        args.work_dir = str(Path(args.out_dir).resolve().parent / "gpu_check_work")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary:
        return summary(args)
    if args.record_tests is not None:
        record_tests(args)
        return 0
    if args.record_status:
        record_status(args)
        return 0
    return 1 if run_parts(args) else 0


if __name__ == "__main__":
    sys.exit(main())
