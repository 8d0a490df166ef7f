"""Checkpoint files under real faults: read-only folder, full disk, SIGKILL, concurrent runs.

Before issue 14: a read-only folder or a full disk failed after an epoch of training with
torch's ``enforce fail`` message and no path, leaving ``.partial`` behind; two runs on one
path shared the temporary name ``<path>.partial`` and one crashed.
"""

import multiprocessing
import os
import signal
import time

import pytest
import torch

from inference.training.checkpoints import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

from .conftest import small_tmpfs, unmount

# Children start from a fresh server process, not a fork of this one: a fork of a process
# whose earlier tests compiled graphs inherits locks held by inductor's worker threads and
# hung before its first step (the test then saw no run start within a minute).
CHILDREN = multiprocessing.get_context("forkserver")

TRAIN = """
import pyro, torch
from inference import fit
from ppl_models import LinearGaussian

def train(path, epochs, resume=False, callback=None):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    x = LinearGaussian(data_dim=3, latent_dim=1, seed=9).simulate(96, seed=1).detach()
    fit(model.model, model.guide, x, epochs=epochs, batch_size=32, seed=4, checkpoint=path,
        resume=resume, progress=False, callback=callback)
    return model
"""


def _train(path, epochs, resume=False, callback=None):
    namespace = {}
    exec(TRAIN, namespace)
    return namespace["train"](path, epochs, resume, callback)


def _partials(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def test_read_only_folder_refused_before_training(tmp_path):
    folder = tmp_path / "ro"
    if not small_tmpfs(folder, "1m", read_only=True):
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        epochs = []
        with pytest.raises(CheckpointError, match=rf"cannot write the checkpoint {folder}/run.pt"):
            _train(folder / "run.pt", 2, callback=epochs.append)
        assert epochs == [], "no epoch may be trained before the folder is found read-only"
    finally:
        unmount(folder)


def test_checkpoint_path_that_is_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        _train(tmp_path, 1)


@pytest.mark.parametrize("layout, named", [
    ("trailing", "ends in a separator"),  # used to write a file named like the folder
    ("lock", r"run\.pt\.lock for its lock file, but that is a folder"),  # IsADirectoryError
    ("previous", r"run\.pt\.previous for the copy of an earlier run"),  # failed after epoch 1
])
def test_checkpoint_paths_that_name_folders_are_refused_before_training(tmp_path, layout,
                                                                        named):
    path = tmp_path / "run.pt"
    if layout == "trailing":
        path = str(tmp_path / "new") + os.sep
    else:
        _train(path, 1)
        (tmp_path / f"run.pt.{layout}").unlink(missing_ok=True)  # the lock file stays
        (tmp_path / f"run.pt.{layout}").mkdir()
    with pytest.raises(CheckpointError, match=named):
        _train(path, 2)
    assert not (tmp_path / "new").exists()


def test_full_disk_keeps_the_old_checkpoint(tmp_path):
    folder = tmp_path / "small"
    if not small_tmpfs(folder, "256k"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        path = folder / "run.pt"
        _train(path, 1)
        old = path.read_bytes()
        # fill the disk, then free two pages: the writability probe fits, a checkpoint not
        filler = folder / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        os.truncate(filler, max(0, filler.stat().st_size - 8192))
        epochs = []
        with pytest.raises(OSError, match=rf"could not write the checkpoint {path}.*unchanged"):
            _train(path, 3, resume=True, callback=epochs.append)
        assert len(epochs) == 0  # the first resumed epoch's save failed, before its callback
        assert path.read_bytes() == old and len(load_checkpoint(path)["history"]) == 1
        assert _partials(folder) == []
    finally:
        unmount(folder)


def _one_thread_then(target, *args):
    torch.set_num_threads(1)  # the children share two cores with the test
    target(*args)


def _in_child(target, *args):
    """Run ``target(*args)`` in a child process; returns the process."""
    child = CHILDREN.Process(target=_one_thread_then, args=(target, *args))
    child.start()
    return child


def _save_many(path, seed):
    torch.manual_seed(seed)
    for i in range(60):
        save_checkpoint(path, {"w": torch.randn(100000), "i": i})


def test_concurrent_saves_use_unique_temporary_names(tmp_path):
    # Two processes writing one checkpoint path 60 times each: with a shared temporary name
    # one process's rename fails or a file mixes both; with unique names both finish and the
    # file is always one complete checkpoint.
    path = tmp_path / "shared.pt"
    children = [_in_child(_save_many, path, seed) for seed in (1, 2)]
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    assert load_checkpoint(path)["i"] == 59
    assert _partials(tmp_path) == []


def _train_and_hold(path, ready):
    def hold(record):
        ready.set()
        time.sleep(60)

    _train(path, 5, callback=hold)


def test_second_run_on_one_checkpoint_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    ready = CHILDREN.Event()
    child = _in_child(_train_and_hold, path, ready)
    try:
        assert ready.wait(60), "the first run did not start"
        with pytest.raises(CheckpointError, match=rf"another run \(pid {child.pid}\) is writing"):
            _train(path, 5)
        assert len(load_checkpoint(path)["history"]) == 1  # the other run's work is intact
    finally:
        child.kill()
        child.join()
    _train(path, 2, resume=True)  # the kernel dropped the lock with the killed process


def _train_stalling_in_second_write(path, writing):
    real_fsync, calls = os.fsync, []

    def slow_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            writing.set()
            time.sleep(60)
        real_fsync(fd)

    os.fsync = slow_fsync
    _train(path, 3)


def test_sigkill_during_checkpoint_write(tmp_path):
    # The child is killed while writing the checkpoint of epoch 2 (its temporary file is
    # complete but not yet renamed): epoch 1's checkpoint stays intact, the resumed run
    # removes the dead run's temporary file and ends bit-identical to an uninterrupted run.
    path = tmp_path / "run.pt"
    writing = CHILDREN.Event()
    child = _in_child(_train_stalling_in_second_write, path, writing)
    try:
        assert writing.wait(60), "the child never reached its second checkpoint"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join()
    assert child.exitcode == -signal.SIGKILL
    assert len(_partials(tmp_path)) == 1
    assert len(load_checkpoint(path)["history"]) == 1
    resumed = _train(path, 3, resume=True)
    assert _partials(tmp_path) == []
    straight = _train(tmp_path / "straight.pt", 3)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_save_failure_removes_its_temporary_file(tmp_path, monkeypatch):
    # a writer failing mid-way (patched fsync: EIO) leaves neither a partial nor a changed file
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"v": 1})

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match=rf"could not write the checkpoint {path}"):
        save_checkpoint(path, {"v": 2})
    monkeypatch.undo()
    assert load_checkpoint(path) == {"v": 1} and _partials(tmp_path) == []


def test_a_name_too_long_for_the_temporary_file_is_refused_before_training(tmp_path):
    # a 240-character name (legal) failed after an epoch with "File name too long": its
    # temporary name <name>.<pid>.<8 hex>.partial has up to 25 characters more
    path = tmp_path / ("c" * 237 + ".pt")
    path.touch()
    path.unlink()
    epochs = []
    with pytest.raises(CheckpointError, match=r"file name has 240 bytes.*temporary file.*up to "
                                              r"265.*at most 230 bytes"):
        _train(path, 1, callback=epochs.append)
    assert epochs == []
    with pytest.raises(CheckpointError, match="at most 230 bytes"):
        save_checkpoint(path, {"a": 1})
    assert not list(tmp_path.iterdir())
    save_checkpoint(tmp_path / ("c" * 227 + ".pt"), {"a": 1})  # 230 bytes fit


def test_a_path_that_is_no_path_is_named():
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        save_checkpoint(5, {"a": 1})


def test_save_checkpoint_never_replaces_another_programs_file(tmp_path):
    """``save_checkpoint`` replaced any regular file atomically (a user's notes at the
    checkpoint's path were gone, with no copy), while ``fit`` refused the same path. It
    refuses before writing now; a checkpoint or an empty file is replaced as before."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my results")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        save_checkpoint(notes, {"a": 1})
    assert notes.read_text() == "my results"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    ours, empty = tmp_path / "ours.pt", tmp_path / "empty.pt"
    empty.touch()
    for path in (ours, ours, empty):
        save_checkpoint(path, {"a": 2})
        assert load_checkpoint(path)["a"] == 2


def test_a_checkpoint_name_too_long_for_the_file_system_is_named(tmp_path):
    # fit reached pathlib's raw "File name too long" before its first epoch
    from inference import fit
    from ppl_models import LinearGaussian

    lg = LinearGaussian(3, 2)
    with pytest.raises(CheckpointError, match=r"file name \(303 characters\) or path is longer "
                                              r"than the file system takes"):
        fit(lg.model, lg.guide, lg.simulate(6), epochs=1, progress=False,
            checkpoint=tmp_path / ("x" * 300 + ".pt"))
