"""Image data sets with a fixed train/validation/test split, and the usual pixel representations.

``load_images(name)`` returns an :class:`ImageData` whose splits hold

* ``images``: float32 ``[n, 1, H, W]`` on the 256-level grid ``k / 255``, ``k`` in 0..255;
* ``labels``: int64 ``[n]``.

Data sets (see :data:`DATASETS`):

* ``"digits"``: scikit-learn's 8x8 digits, shipped inside scikit-learn (the embedded default).
  Raw values ``v`` in 0..16 become ``round(v * 255 / 16) / 255``. 1797 images, split with a
  fixed permutation (``numpy.random.RandomState(0)``, not stratified) into 1297/200/300.
* ``"fashion-mnist"``: the four IDX files (plain or ``.gz``) from ``root``, by default
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
* ``"mnist"``: the same four IDX file names, plain or ``.gz``, in ``root`` (default
  ``~/.cache/ppl_models/mnist``) or in torchvision's layout ``root/MNIST/raw``; with
  ``download=True`` torchvision fetches them there.

For both MNIST-style sets the official 60000 training images are split with a fixed
permutation (``RandomState(0)``) into 50000 train / 10000 validation (the last sixth of the
permutation, also for smaller files); test is the official 10000.

Representations: :func:`binarize_static` (fixed seed, e.g. a stored binarized test set),
:func:`binarize_dynamic` (resampled every call), :func:`to_levels` and :func:`uniform_dequantize`.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checks import as_int, check_values

SPLIT_SEED = 0
DIGITS_SPLIT = (1297, 200, 300)  # train, valid, test
MNIST_VALID_DIVISOR = 6  # validation = 1/6 of the training file: 10000 of 60000
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
MNIST_ROOT = Path("~/.cache/ppl_models/mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DATASETS = ("digits", "fashion-mnist", "mnist")


@dataclass(frozen=True)
class Split:
    """One split: ``images`` float ``[n, 1, H, W]`` in [0, 1], ``labels`` int64 ``[n]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass(frozen=True)
class ImageData:
    """A data set with fixed ``train``/``valid``/``test`` splits; ``image_shape``: ``(1, H, W)``."""

    name: str
    train: Split
    valid: Split
    test: Split
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def binarized(self, seed: int = 0) -> ImageData:
        """The same data with every split binarized by :func:`binarize_static`.

        Each split gets its own seed derived from ``seed`` (``numpy.random.SeedSequence``), so
        the binarized test set is fixed by ``seed`` alone.
        """
        seeds = np.random.SeedSequence(seed).generate_state(3)
        train, valid, test = (
            Split(binarize_static(s.images, int(k)), s.labels)
            for s, k in zip((self.train, self.valid, self.test), seeds)
        )
        return ImageData(f"{self.name}-binarized-{seed}", train, valid, test, self.num_classes)


def load_images(name: str, root: str | Path | None = None, download: bool = False) -> ImageData:
    """Load data set ``name`` (one of :data:`DATASETS`) with its fixed split.

    ``root`` is the folder of the IDX files (ignored for ``"digits"``); ``download`` lets
    torchvision fetch MNIST into ``root`` (only used for ``"mnist"``).
    """
    if name == "digits":
        return _load_digits()
    if name == "fashion-mnist":
        folder = Path(root if root is not None else FASHION_MNIST_ROOT).expanduser()
        return _load_mnist_style(name, _find_idx_files(folder, name))
    if name == "mnist":
        folder = Path(root if root is not None else MNIST_ROOT).expanduser()
        return _load_mnist_style(name, _mnist_files(folder, download))
    raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")


def _load_digits() -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    levels = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # [1797, 8, 8]
    order = np.random.RandomState(SPLIT_SEED).permutation(len(levels))
    parts = np.split(order, np.cumsum(DIGITS_SPLIT)[:-1])
    train, valid, test = (_split(levels[i], digits.target[i]) for i in parts)
    return ImageData("digits", train, valid, test, num_classes=10)


def _find_idx_files(folder: Path, name: str) -> dict[str, Path]:
    """Paths of the four IDX files in ``folder`` (plain preferred over ``.gz``)."""
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(f"{stem}[.gz]")
        else:
            found[key] = path
    if missing:
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)} in {folder}. {_fix_hint(name, folder)}")
    return found


def _fix_hint(name: str, folder: Path) -> str:
    files = ", ".join(IDX_FILES.values())
    if name == "fashion-mnist":
        return (f"Install them with `make data` (apt-get install dataset-fashion-mnist, which puts "
                f"them in {FASHION_MNIST_ROOT}) or copy the four IDX files ({files}, plain or "
                f".gz) into {folder} and pass root=.")
    return (f"Either pass download=True (the examples' --download flag; needs internet) or copy "
            f"the four IDX files ({files}, plain or .gz) into {folder} or "
            f"{folder / 'MNIST' / 'raw'}.")


def _mnist_files(folder: Path, download: bool) -> dict[str, Path]:
    """MNIST files from ``folder`` or ``folder/MNIST/raw``; downloads there only if asked."""
    raw = folder / "MNIST" / "raw"
    for candidate in (folder, raw):
        try:
            return _find_idx_files(candidate, "mnist")
        except FileNotFoundError:
            pass
    if download:
        from torchvision.datasets import MNIST

        try:
            MNIST(str(folder), train=True, download=True)
        except (OSError, RuntimeError) as error:
            raise FileNotFoundError(
                f"mnist: download into {raw} failed ({error}). {_fix_hint('mnist', folder)}"
            ) from error
        return _find_idx_files(raw, "mnist")
    raise FileNotFoundError(
        f"mnist: the four IDX files are not in {folder} nor in {raw}. {_fix_hint('mnist', folder)}")


def _load_mnist_style(name: str, files: dict[str, Path]) -> ImageData:
    train_images = _read_checked(files["train_images"], "images")  # [60000, 28, 28]
    train_labels = _read_checked(files["train_labels"], "labels")  # [60000]
    test_images = _read_checked(files["test_images"], "images")  # [10000, 28, 28]
    test_labels = _read_checked(files["test_labels"], "labels")  # [10000]
    for images, labels, split in ((train_images, train_labels, "train"),
                                  (test_images, test_labels, "t10k")):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: {split} has {images.shape[0]} images but "
                             f"{labels.shape[0]} labels")
        if labels.size and labels.max() >= 10:
            raise ValueError(f"{name}: {split} labels must lie in 0..9, found {int(labels.max())} "
                             f"({files[split.replace('t10k', 'test') + '_labels']})")
        if images.shape[0] == 0 or 0 in images.shape[1:]:
            raise ValueError(f"{name}: {split} images have shape {list(images.shape)}: empty "
                             f"({files[split.replace('t10k', 'test') + '_images']})")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(f"{name}: train images are {list(train_images.shape[1:])} but test "
                         f"images {list(test_images.shape[1:])} ({files['train_images']}, "
                         f"{files['test_images']}); all four files must come from one data set")
    n = train_images.shape[0]
    n_valid = n // MNIST_VALID_DIVISOR  # 10000 of the official 60000
    order = np.random.RandomState(SPLIT_SEED).permutation(n)
    train_idx, valid_idx = order[: n - n_valid], order[n - n_valid:]
    train = _split(train_images[train_idx], train_labels[train_idx])
    valid = _split(train_images[valid_idx], train_labels[valid_idx])
    return ImageData(name, train, valid, _split(test_images, test_labels), num_classes=10)


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    """``images`` uint8 levels ``[n, H, W]``, ``labels`` integers ``[n]`` -> :class:`Split`."""
    x = torch.from_numpy(images.astype(np.float32) / 255).unsqueeze(1)
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def _read_checked(path: Path, kind: str) -> np.ndarray:
    """Read ``path`` and check it holds ``kind``: "images" ``[n, H, W]`` or "labels" ``[n]``."""
    array = read_idx(path)
    ndim, magic = {"images": (3, 2051), "labels": (1, 2049)}[kind]
    if array.ndim != ndim:
        raise ValueError(f"{path}: expected {kind} (magic {magic}, {ndim} dimensions), "
                         f"got {array.ndim} dimensions")
    return array


def read_idx(path: str | Path) -> np.ndarray:
    """Read a uint8 IDX file (plain, or gzip if the name ends in ``.gz``) -> uint8 array.

    Raises ``ValueError`` naming the file for a bad magic number, a non-uint8 type or a size that
    does not match the header (truncated or trailing bytes).
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: not a readable gzip file ({error})") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: bad magic number {data[:4].hex() or '(empty file)'}; "
                         f"an IDX file starts with 00 00 <type> <ndim>")
    if data[2] != 0x08:
        raise ValueError(f"{path}: IDX type 0x{data[2]:02x} is not supported, only uint8 (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: truncated or invalid header ({len(data)} bytes, {ndim} dims)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)  # exact: no int64 overflow for absurd headers
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{path}: {problem}: header says shape {list(shape)} ({expected} bytes), "
                         f"file has {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | Path, array) -> None:
    """Write a uint8 IDX file, gzip-compressed if ``path`` ends in ``.gz`` (for tests, tiny data).

    ``array``: integers in 0..255, e.g. images ``[n, H, W]`` (magic 2051) or labels ``[n]`` (2049).
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        if array.dtype.kind not in "iu" or array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"write_idx needs integers in 0..255, got dtype {array.dtype}")
        array = array.astype(np.uint8)
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    path = Path(path)
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as f:
        f.write(header + np.ascontiguousarray(array).tobytes())


def _check_unit(images: torch.Tensor) -> None:
    """``TypeError``/``ValueError`` unless ``images`` is a float tensor in [0, 1] (NaN refused)."""
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise TypeError("images must be a floating-point torch.Tensor with values in [0, 1]")
    check_values(images, "images", 0, 1)


def binarize_static(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Fixed Bernoulli sample: ``images`` ``[...]`` in [0, 1] -> 0/1 tensor ``[...]``, same dtype.

    The uniforms are drawn on the CPU from ``torch.Generator().manual_seed(seed)``, so the same
    ``seed`` and shape give the same result on any device.
    """
    _check_unit(images)
    seed = as_int(seed, "seed", minimum=None)
    u = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))
    return (u.to(images.device) < images).to(images.dtype)


def binarize_dynamic(images: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh Bernoulli sample on every call (dynamic binarization, e.g. once per batch).

    ``images`` ``[...]`` in [0, 1] -> 0/1 tensor ``[...]``; ``generator`` must be on the
    images' device.
    """
    _check_unit(images)
    return torch.bernoulli(images, generator=generator)


def to_levels(images: torch.Tensor) -> torch.Tensor:
    """``images`` ``[...]`` in [0, 1] (levels ``k / 255``) -> int64 levels ``k`` in 0..255."""
    _check_unit(images)
    return torch.round(images * 255).long()


def uniform_dequantize(images: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` ``[...]`` (levels ``k / 255``) -> ``(k + u) / 256``, ``u ~ U[0, 1)``, same shape.

    Every value lies in ``[k / 256, (k + 1) / 256)``, so for a density ``p`` on ``[0, 1]^D``,
    ``log P(k) >= E_u[log p((k + u) / 256)] - D log 256`` (a lower bound on the discrete
    log-likelihood in nats). The result has the images' floating dtype; ``generator`` must be on
    the images' device.
    """
    k = to_levels(images).to(images.dtype)
    u = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    upper = (k + 1) / 256  # exact in floating point
    # (k + u) / 256 can round up to (k + 1) / 256 when u is within an ulp of 1: keep it below.
    return torch.minimum((k + u) / 256, torch.nextafter(upper, torch.zeros_like(upper)))
