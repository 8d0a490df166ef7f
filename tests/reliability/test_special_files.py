"""Paths that name devices, named pipes or files standing where a folder should be.

Before the night of 2026-11-28 (a probing helper): as root, ``fit(checkpoint=<device>)`` and
``write_wav(<device>)`` replaced the device node with a regular file (``/dev/null`` given as
"no checkpoint" would have been replaced); ``load_checkpoint("/dev/zero")`` read until
memory ran out; a named pipe as a checkpoint or an IDX file blocked for ever. Each is now
refused by name before anything is opened or trained.
"""

import os
import stat
import subprocess
import sys

import pytest
import torch

from inference import fit, save_checkpoint
from inference.training.checkpoints import CheckpointError
from ppl_models import LinearGaussian
from ppl_models.audio import write_wav


def _train(path, **kwargs):
    model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    x = model.simulate(40, seed=1).detach()
    epochs = []
    fit(model.model, model.guide, x, epochs=2, batch_size=20, checkpoint=path, progress=False,
        callback=epochs.append, **kwargs)
    return epochs


def _blocking_call_refused(code, timeout=120):
    """Run ``code`` in a child with a time limit (a regression would block on the pipe)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_a_named_pipe_as_checkpoint_is_refused_before_training(fifo):
    for resume in (False, True):
        with pytest.raises(CheckpointError, match=rf"checkpoint {fifo} is a named pipe, not a "
                                                  r"regular file"):
            _train(fifo, resume=resume)
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("call, message", [
    ("from inference.training.checkpoints import load_checkpoint; load_checkpoint({path!r})",
     "CheckpointError: checkpoint {path} is a named pipe, not a checkpoint file"),
    ("from ppl_models import read_idx; read_idx({path!r})",
     "ValueError: cannot read {path}: it is a named pipe, not a regular file"),
])
def test_reading_a_named_pipe_is_refused_without_blocking(fifo, call, message):
    code, output = _blocking_call_refused(call.format(path=str(fifo)))
    assert code == 1 and message.format(path=fifo) in output


def test_a_file_where_the_checkpoint_folder_should_be_is_named(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(CheckpointError, match=r"afile is a file, not a folder"):
        _train(tmp_path / "afile" / "run.pt")


def test_a_checkpoint_header_announcing_more_than_the_file_holds_is_not_read(tmp_path):
    import struct
    import zlib

    from inference.training import checkpoints
    path = tmp_path / "run.pt"
    path.write_bytes(struct.pack("<8sQI", checkpoints.MAGIC, 1 << 40, zlib.crc32(b"")) + b"x")
    with pytest.raises(CheckpointError, match=r"header says 1099511627776 bytes of payload, "
                                              r"the file has 1"):
        checkpoints.load_checkpoint(path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="making a device node needs root")
def test_a_device_node_is_never_replaced(tmp_path):
    """A private node of /dev/null's kind (character device 1, 3) stands in for it."""
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with pytest.raises(CheckpointError, match="is a character device, not a regular file"):
        _train(device)
    with pytest.raises(CheckpointError, match="is a character device, which the checkpoint"):
        save_checkpoint(device, {"v": 1})
    with pytest.raises(ValueError, match="is a character device, not a regular file"):
        write_wav(device, torch.zeros(10), 8000)
    code, output = _blocking_call_refused(
        "from inference.training.checkpoints import load_checkpoint; "
        f"load_checkpoint({str(device)!r})")
    assert code == 1 and "is a character device, not a checkpoint file" in output
    assert stat.S_ISCHR(os.stat(device).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


@pytest.mark.parametrize("resume", [False, True])
def test_a_file_that_is_not_a_checkpoint_is_never_replaced(tmp_path, resume):
    # results.csv as the checkpoint was moved to results.csv.previous with a warning, and a
    # second run replaced that copy: the user's file was gone
    path = tmp_path / "results.csv"
    path.write_text("precious,results\n1,2\n")
    for _ in range(2):
        with pytest.raises(CheckpointError, match=rf"checkpoint {path} is a file that is not a "
                                                  r"checkpoint.*pass another checkpoint path"):
            assert _train(path, resume=resume) == []
    assert path.read_text() == "precious,results\n1,2\n"
    assert not (tmp_path / "results.csv.previous").exists()


def test_a_previous_copy_that_is_not_a_checkpoint_is_never_replaced(tmp_path):
    path, previous = tmp_path / "run.pt", tmp_path / "run.pt.previous"
    _train(path)
    previous.write_text("notes")
    with pytest.raises(CheckpointError, match=rf"{previous}, but that is a file that is not"):
        _train(path)
    assert previous.read_text() == "notes"


@pytest.mark.parametrize("layout", ["symlink", "file"])
def test_a_lock_path_that_is_no_lock_is_refused_before_training(tmp_path, layout):
    # the lock was opened "a+" and truncated: the notes a symlink pointed at were replaced
    # by a process id
    notes, lock = tmp_path / "notes.txt", tmp_path / "run.pt.lock"
    notes.write_text("a week of notes\n")
    if layout == "symlink":
        lock.symlink_to(notes)
        named = rf"lock file {lock} of the checkpoint .* is a symlink"
    else:
        lock.write_text("a week of notes\n")
        named = rf"lock file {lock} of the checkpoint .* holds 16 bytes that are no process id"
    with pytest.raises(CheckpointError, match=named):
        assert _train(tmp_path / "run.pt") == []
    assert notes.read_text() == "a week of notes\n"
    assert layout == "symlink" or lock.read_text() == "a week of notes\n"


def test_a_symlink_loop_is_refused_before_training(tmp_path):
    # the loop went unnoticed until the first save, after an epoch was trained
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path / 'a'} is a loop of "
                                              r"symlinks"):
        assert _train(tmp_path / "a") == []
