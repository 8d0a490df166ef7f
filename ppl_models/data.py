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
A ``seed`` is an integer in ``[0, 2**63)`` (numpy integers accepted; outside it torch fails to
unpack it or wraps a negative seed onto another one); a ``generator`` is a ``torch.Generator``
or None (torch's default generator).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checks import (as_bool, as_int, as_path, as_seed, atomic_file, check_bytes,
                     check_generator, check_not_meta, check_not_special, check_values)

# Largest distance, in levels, of 255 x from an integer that still counts as level k / 255.
# float32 stores k / 255 to ~1.5e-5 levels; dequantized data miss it by up to 0.5 levels.
LEVEL_TOLERANCE = 1e-3

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
_READ_CHUNK = 2**20  # IDX payloads are read in pieces of this many bytes
IDX_READ_FACTOR = 2  # read_idx holds the pieces and their join: bytes per payload byte


@dataclass(frozen=True)
class Split:
    """One split: ``images`` float ``[n, 1, H, W]`` in [0, 1], ``labels`` int64 ``[n]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        """``TypeError``/``ValueError`` unless ``images`` is a tensor ``[n, ...]`` and
        ``labels`` an integer tensor ``[n]`` (3 images with 2 labels were accepted)."""
        for name, value in (("images", self.images), ("labels", self.labels)):
            if not torch.is_tensor(value):
                raise TypeError(f"Split: {name} must be a tensor, got {type(value).__name__}")
        if self.images.dim() < 1:
            raise ValueError("Split: images must be a tensor [n, 1, H, W], got a 0-dim tensor")
        if self.labels.dim() != 1 or self.labels.is_floating_point() or self.labels.is_complex():
            raise ValueError(f"Split: labels must be an integer tensor [n], got "
                             f"{self.labels.dtype} {list(self.labels.shape)}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"Split: {len(self.images)} images but {len(self.labels)} labels; "
                             "give one label per image")

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

    def __post_init__(self) -> None:
        """``ValueError`` unless ``num_classes`` is a positive integer and every split's labels
        lie in ``0..num_classes - 1`` (a label 2 of 2 classes was accepted)."""
        object.__setattr__(self, "num_classes", as_int(self.num_classes, "num_classes"))
        for part in ("train", "valid", "test"):
            split = getattr(self, part)
            if not isinstance(split, Split):
                raise TypeError(f"ImageData: {part} must be a Split, got {type(split).__name__}")
            labels = split.labels
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"ImageData: the {part} labels must lie in "
                                 f"0..{self.num_classes - 1} (num_classes={self.num_classes}), "
                                 f"got range [{int(labels.min())}, {int(labels.max())}]")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.train.images.shape[1:])

    def binarized(self, seed: int = 0) -> ImageData:
        """The same data with every split binarized by :func:`binarize_static`.

        Each split gets its own seed derived from ``seed`` (an integer in ``[0, 2**63)``)
        with ``numpy.random.SeedSequence``, so the binarized test set is fixed by ``seed``
        alone; the result is named ``<name>-binarized-<seed>``.
        """
        seed = as_seed(seed)
        seeds = np.random.SeedSequence(seed).generate_state(3)
        train, valid, test = (
            Split(binarize_static(s.images, int(k)), s.labels)
            for s, k in zip((self.train, self.valid, self.test), seeds)
        )
        return ImageData(f"{self.name}-binarized-{seed}", train, valid, test, self.num_classes)


def load_images(name: str, root: str | Path | None = None, download: bool = False) -> ImageData:
    """Load data set ``name`` (one of :data:`DATASETS`) with its fixed split.

    ``root`` is the folder of the IDX files (ignored for ``"digits"``); ``download`` lets
    torchvision fetch MNIST into ``root`` (only used for ``"mnist"``). ``TypeError`` unless
    ``root`` is None, a str or an ``os.PathLike`` and ``download`` is True or False (a truthy
    ``"no"`` downloaded).
    """
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (a str or os.PathLike) or None, got "
                        f"{type(root).__name__}")
    download = as_bool(download, "download")
    if name == "digits":
        return _load_digits()
    if name == "fashion-mnist":
        folder = _check_folder(Path(root if root is not None else FASHION_MNIST_ROOT), name)
        return _load_mnist_style(name, _find_idx_files(folder, name))
    if name == "mnist":
        folder = _check_folder(Path(root if root is not None else MNIST_ROOT), name)
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


def _check_folder(folder: Path, name: str) -> Path:
    """``folder`` with ``~`` expanded; ``NotADirectoryError`` when it exists but is a file (or
    a device, a pipe), where the folder of the IDX files is expected."""
    folder = folder.expanduser()
    if folder.exists() and not folder.is_dir():
        what = "a file" if folder.is_file() else "not a folder"
        raise NotADirectoryError(f"{name}: root {folder} is {what}; pass the folder that holds "
                                 f"the four IDX files")
    return folder


def _find_idx_files(folder: Path, name: str) -> dict[str, Path]:
    """Paths of the four IDX files in ``folder`` (plain preferred over ``.gz``); a folder, a
    device or a pipe under a name with no file is refused naming it (``ValueError``)."""
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            for candidate in candidates:  # there, but not a file: say what it is
                check_not_special(candidate, f"read {name}'s IDX file")
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
                f".gz) into a folder and pass it as root= (in the examples: --data-root, or "
                f"--fashion-root in similarity.py and elbo_vs_iwae.py).")
    return (f"Either pass download=True (needs internet; examples/vae.py and "
            f"examples/pixelcnn.py take it as --download) or copy "
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
    if n < MNIST_VALID_DIVISOR:
        raise ValueError(f"{name}: the training file holds {n} images "
                         f"({files['train_images']}); the validation split takes 1/"
                         f"{MNIST_VALID_DIVISOR} of them, so at least {MNIST_VALID_DIVISOR} "
                         "are needed")
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
    does not match the header (truncated or trailing bytes). The header is read first and then
    at most the payload it announces plus one byte, so a gzip bomb is refused after
    decompressing that much, not all of it; a payload that would not fit in physical memory
    (:data:`IDX_READ_FACTOR` times its bytes) is refused before reading any of it.
    """
    path = as_path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass an IDX file in it")
    check_not_special(path, "read")
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            return _read_idx_stream(f, path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: not a readable gzip file ({error})") from error


def _read_at_most(f, size: int) -> bytes:
    """Up to ``size`` bytes of ``f``, fewer at its end; read in pieces, so an absurd ``size``
    from a header allocates no more than the file holds."""
    pieces, left = [], size
    while left > 0:
        piece = f.read(min(left, _READ_CHUNK))
        if not piece:
            break
        pieces.append(piece)
        left -= len(piece)
    return b"".join(pieces)


def _read_idx_stream(f, path: Path) -> np.ndarray:
    start = _read_at_most(f, 4)
    if len(start) < 4 or start[0] != 0 or start[1] != 0:
        raise ValueError(f"{path}: bad magic number {start.hex() or '(empty file)'}; "
                         f"an IDX file starts with 00 00 <type> <ndim>")
    if start[2] != 0x08:
        raise ValueError(f"{path}: IDX type 0x{start[2]:02x} is not supported, only uint8 (0x08)")
    ndim = start[3]
    header = 4 + 4 * ndim
    dims = _read_at_most(f, 4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated or invalid header ({4 + len(dims)} bytes, "
                         f"{ndim} dims)")
    shape = tuple(int.from_bytes(dims[4 * i: 4 + 4 * i], "big") for i in range(ndim))
    payload = math.prod(shape)  # exact: no int64 overflow for absurd headers
    expected = header + payload
    if not isinstance(f, gzip.GzipFile) and os.fstat(f.fileno()).st_size < expected:
        raise ValueError(f"{path}: truncated: header says shape {list(shape)} ({expected} "
                         f"bytes), file has {os.fstat(f.fileno()).st_size} bytes")
    # read in pieces and then joined: twice the payload at the peak
    check_bytes(IDX_READ_FACTOR * payload,
                f"{path}: header announces shape {list(shape)} ({payload:,} bytes of pixels "
                f"or labels, read with {IDX_READ_FACTOR}x that at the peak); not an IDX file "
                f"of this data set, or a corrupt header")
    data = _read_at_most(f, payload + 1)  # one byte more tells trailing bytes apart
    if len(data) != payload:
        if len(data) < payload:
            raise ValueError(f"{path}: truncated: header says shape {list(shape)} ({expected} "
                             f"bytes), file has {header + len(data)} bytes")
        size = ("more" if isinstance(f, gzip.GzipFile)
                else f"{os.fstat(f.fileno()).st_size} bytes")
        raise ValueError(f"{path}: has trailing bytes: header says shape {list(shape)} "
                         f"({expected} bytes), file has {size}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def write_idx(path: str | Path, array) -> None:
    """Write a uint8 IDX file, gzip-compressed if ``path`` ends in ``.gz`` (for tests, tiny data).

    ``array``: integers in 0..255, e.g. images ``[n, H, W]`` (magic 2051) or labels ``[n]`` (2049).
    ``TypeError`` unless ``path`` is a str or an ``os.PathLike`` (bytes, an int: named, as in
    :func:`read_idx`); ``ValueError`` for a NUL byte in it, or for a tensor on the ``meta``
    device (no values to write).
    """
    path = as_path(path)
    if torch.is_tensor(array):
        check_not_meta(array, "array")
        array = array.detach().cpu()
    array = np.asarray(array)
    if array.dtype != np.uint8:
        if array.dtype.kind not in "iu":
            raise ValueError(f"write_idx needs integers in 0..255, got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"write_idx needs integers in 0..255, got values in "
                             f"[{array.min()}, {array.max()}]")
        array = array.astype(np.uint8)
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx needs 1 to 255 dimensions, got {array.ndim}")
    if max(array.shape) > 2**32 - 1:  # the header holds each size in 32 bits
        raise ValueError(f"write_idx holds sizes below 2**32, got shape {list(array.shape)}")
    check_not_special(path, "write")
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; pass a file name")
    with atomic_file(path) as file:  # a failure half-way keeps the old file
        if path.suffix == ".gz":
            with gzip.GzipFile(filename=path.name, fileobj=file, mode="wb") as f:
                f.write(header + np.ascontiguousarray(array).tobytes())
        else:
            file.write(header + np.ascontiguousarray(array).tobytes())


def _check_unit(images: torch.Tensor) -> None:
    """``TypeError``/``ValueError`` unless ``images`` is a float tensor in [0, 1] (NaN refused)."""
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise TypeError("images must be a floating-point torch.Tensor with values in [0, 1]")
    check_values(images, "images", 0, 1)


def binarize_static(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Fixed Bernoulli sample: ``images`` ``[...]`` in [0, 1] -> 0/1 tensor ``[...]``, same dtype.

    The uniforms are drawn in float32 on the CPU from ``torch.Generator().manual_seed(seed)``,
    so the same ``seed`` (an integer in ``[0, 2**63)``) and shape give the same result on any
    device and under any default dtype.
    """
    _check_unit(images)
    seed = as_seed(seed)
    u = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed),
                   dtype=torch.float32)
    return (u.to(images.device) < images).to(images.dtype)


def binarize_dynamic(images: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh Bernoulli sample on every call (dynamic binarization, e.g. once per batch).

    ``images`` ``[...]`` in [0, 1] -> 0/1 tensor ``[...]``; ``generator`` must be on the
    images' device (None: torch's default generator).
    """
    _check_unit(images)
    check_generator(generator, images.device)
    return torch.bernoulli(images, generator=generator)


def off_level_grid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(off, distance, tolerance)`` for ``images`` ``[...]``: ``off`` (bool, same shape) marks
    the values farther than ``LEVEL_TOLERANCE`` levels from every level ``k / 255`` (in float16
    and bfloat16, which store ``k / 255`` a tenth of a level to a whole level off: the values
    that are not a level exactly as the dtype stores it), ``distance`` is each value's distance
    to the nearest level, in levels, and ``tolerance`` the rule applied, in words."""
    scaled = images.to(torch.promote_types(images.dtype, torch.float32)) * 255
    distance = (scaled - scaled.round()).abs()
    if torch.finfo(images.dtype).eps > 1e-4:  # a half-precision dtype
        stored = (scaled.round().clamp(0, 255).double() / 255).to(images.dtype)
        return images != stored, distance, f"the rounding of {images.dtype}"
    return distance > LEVEL_TOLERANCE, distance, f"{LEVEL_TOLERANCE}"


def _check_on_grid(images: torch.Tensor) -> None:
    """``ValueError`` unless every value of ``images`` ``[...]`` lies on the 8-bit grid
    (:func:`off_level_grid`)."""
    off, distance, tolerance = off_level_grid(images)
    if bool(off.any()):  # the example: the farthest of the values refused
        worst = float(images.flatten()[int(distance.masked_fill(~off, -1).flatten().argmax())])
        raise ValueError(f"images must hold 8-bit levels k / 255 (within {tolerance} of a "
                         f"level): {int(off.sum())} of {images.numel()} values do not, e.g. "
                         f"{worst!r}; quantize them first (torch.round(images * 255) / 255) "
                         f"if rounding is what you mean")


def to_levels(images: torch.Tensor) -> torch.Tensor:
    """``images`` ``[...]`` in [0, 1] (levels ``k / 255``) -> int64 levels ``k`` in 0..255.

    Values off the grid (resized or dequantized images) are refused, not rounded.
    """
    _check_unit(images)
    _check_on_grid(images)
    return torch.round(images * 255).long()


def uniform_dequantize(images: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` ``[...]`` (levels ``k / 255``) -> ``(k + u) / 256``, ``u ~ U[0, 1)``, same shape.

    Every value lies in ``[k / 256, (k + 1) / 256)``, so for a density ``p`` on ``[0, 1]^D``,
    ``log P(k) >= E_u[log p((k + u) / 256)] - D log 256`` (a lower bound on the discrete
    log-likelihood in nats). The result has the images' floating dtype, float32 or float64:
    float16 and bfloat16 are refused, since they resolve the noise ``u`` near 1 only in 8 and 1
    steps. Values off the grid (images dequantized already, or resized) are refused.
    ``generator`` must be a ``torch.Generator`` on the images' device (None: torch's default
    generator).
    """
    _check_unit(images)
    check_generator(generator, images.device)
    steps = 2.0**-8 / (torch.finfo(images.dtype).eps / 2)  # values of u in the top bin
    if steps < 2**16:
        raise ValueError(f"uniform_dequantize needs images of dtype float32 or float64: dtype "
                         f"{images.dtype} resolves the noise of width 1/256 near 1 in only "
                         f"{steps:g} step(s); pass images.float()")
    _check_on_grid(images)
    k = torch.round(images * 255)  # the levels, in the images' dtype (exact: 0..255)
    u = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    upper = (k + 1) / 256  # exact in floating point
    # (k + u) / 256 can round up to (k + 1) / 256 when u is within an ulp of 1: keep it below.
    return torch.minimum((k + u) / 256, torch.nextafter(upper, torch.zeros_like(upper)))
