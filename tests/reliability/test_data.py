"""IDX data files: mismatched, corrupt or truncated files are refused, naming the file.

Before issue 14 train and test files of different image sizes loaded without complaint.
"""

import gzip
import tracemalloc

import numpy as np
import pytest

from ppl_models import load_images
from ppl_models.data import IDX_FILES, read_idx, write_idx


def _write_set(folder, train_hw=(4, 4), test_hw=(4, 4), labels_max=9, n_train=12, n_test=6):
    rng = np.random.default_rng(0)
    write_idx(folder / IDX_FILES["train_images"],
              rng.integers(0, 256, (n_train, *train_hw), dtype=np.uint8))
    write_idx(folder / IDX_FILES["train_labels"], rng.integers(0, labels_max + 1, n_train))
    write_idx(folder / IDX_FILES["test_images"],
              rng.integers(0, 256, (n_test, *test_hw), dtype=np.uint8))
    write_idx(folder / IDX_FILES["test_labels"], rng.integers(0, labels_max + 1, n_test))


def test_consistent_set_loads(tmp_path):
    _write_set(tmp_path)
    data = load_images("fashion-mnist", root=tmp_path)
    assert data.image_shape == (1, 4, 4) and len(data.test) == 6


def test_train_and_test_of_different_sizes(tmp_path):
    _write_set(tmp_path, test_hw=(5, 5))
    with pytest.raises(ValueError, match=r"train images are \[4, 4\] but test images \[5, 5\]"):
        load_images("fashion-mnist", root=tmp_path)


def test_labels_out_of_range(tmp_path):
    _write_set(tmp_path, labels_max=200)
    with pytest.raises(ValueError, match=r"labels must lie in 0..9.*train-labels"):
        load_images("fashion-mnist", root=tmp_path)


def test_empty_image_file(tmp_path):
    _write_set(tmp_path, n_test=0)
    with pytest.raises(ValueError, match="t10k images have shape"):
        load_images("fashion-mnist", root=tmp_path)


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[:-7], "truncated: header says"),
    (lambda b: b + b"\0", "trailing bytes"),
    (lambda b: b"\x01" + b[1:], "bad magic number"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "type 0x0d is not supported"),
    (lambda b: b[:6], "truncated or invalid header"),
    (lambda b: b"", "empty file"),
    (lambda b: b[:4] + (2**31).to_bytes(4, "big") * 3 + b[16:], "truncated: header says"),
])
def test_corrupt_idx_is_named(tmp_path, damage, match):
    _write_set(tmp_path)
    path = tmp_path / IDX_FILES["train_images"]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=match) as error:
        load_images("fashion-mnist", root=tmp_path)
    assert str(path) in str(error.value)


def test_corrupt_gzip_is_named(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    write_idx(path, np.arange(10))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=str(path)):
        read_idx(path)
    path.write_bytes(gzip.compress(b"\0\0\x08\x01" + (5).to_bytes(4, "big") + b"abc"))
    with pytest.raises(ValueError, match=rf"{path}: truncated"):
        read_idx(path)


def test_gzip_bomb_is_refused_without_decompressing_it(tmp_path):
    # a valid header for one value, then 50 MB of zeros: the whole file used to be decompressed
    # before its size was compared with the header (2 GiB took 4.8 GB and 21 s)
    path = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\0\0\x08\x01" + (1).to_bytes(4, "big"))
        for _ in range(50):
            f.write(bytes(2**20))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"{path}: has trailing bytes: header says shape "
                                             r"\[1\] \(9 bytes\)"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"read_idx held {peak:,} bytes at its peak"


@pytest.mark.parametrize("name", ["labels", "labels.gz"])
def test_write_idx_failing_half_way_keeps_the_old_file(tmp_path, monkeypatch, name):
    # write_idx opened the file for writing in place: a full disk left a truncated file
    import ppl_models.data as data_module

    path = tmp_path / name
    write_idx(path, np.arange(10, dtype=np.uint8))
    before = path.read_bytes()

    def full_disk(array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_module.np, "ascontiguousarray", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_idx(path, np.arange(20, dtype=np.uint8))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left
    assert read_idx(path).tolist() == list(range(10))
