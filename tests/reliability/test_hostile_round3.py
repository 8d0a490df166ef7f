"""Hostile inputs, round 3: each entry point computes the right thing or refuses by name.

- R1: ``iwae_from_weights`` and ``log_mean_exp`` of NaN log weights returned NaN.
- R2: ``bits_per_dim(nan, 3)`` returned NaN; ``bits_per_dim("10", 3)`` and
  ``nats_to_bits([1.0, 2.0])`` raised a raw ``TypeError``.
- R3: ``active_units`` of float32 means of +-1e21 returned infinite variances.
- R4: ``encode_images`` with a ``pixel_probs`` returning a list failed with an
  ``AttributeError`` deep inside; a ``pixel_probs`` that is not callable failed mid-way.
- R5: ``save_checkpoint`` accepted a list for ``state``, reported an unpicklable value
  without path or key, and turned a read-only checkpoint (0444) into 0644 on rewrite.
- R6: ``SVIStep(lean="no")`` was accepted.
- R7: ``load_words(valid_fraction=0, test_fraction=0)`` gave one valid and one test word.
- R8: ``read_wav`` of an empty or 20-byte file gave no reason.
"""

import math
import os
import stat
import wave

import pyro
import pytest
import torch

from inference import (
    SVIStep,
    active_units,
    bits_per_dim,
    bits_to_nats,
    decode_images,
    discrete_log_likelihood_bound,
    encode_images,
    iwae_from_weights,
    log_mean_exp,
    nats_to_bits,
    range_decode,
    range_encode,
    save_checkpoint,
)
from inference.training.checkpoints import load_checkpoint
from ppl_models import LinearGaussian, load_words, read_wav


# R1. NaN and +inf log weights --------------------------------------------------------------
def test_iwae_from_weights_refuses_nan_and_posinf_naming_the_datapoints():
    log_w = torch.zeros(4, 3)
    for value, what in ((math.nan, "NaN"), (math.inf, r"\+inf")):
        bad = log_w.index_put((torch.tensor(1), torch.tensor(2)), torch.tensor(value))
        with pytest.raises(ValueError, match=rf"log_w are {what} for datapoints \[2\]"):
            iwae_from_weights(bad, 2)
    with pytest.raises(ValueError, match=r"log_w are NaN for datapoints \[0\]"):
        iwae_from_weights(torch.tensor([[math.nan], [0.0]]), 1)
    # -inf is weight zero: the other particle of the group carries the estimate
    out = iwae_from_weights(torch.tensor([[-math.inf], [0.0]]), 2)
    assert float(out) == pytest.approx(-math.log(2.0))


def test_log_mean_exp_refuses_nan_and_posinf_while_validating():
    with pytest.raises(ValueError, match=r"log_w \(shape \[2\], dim 0\) are NaN"):
        log_mean_exp(torch.tensor([math.nan, 0.0]))
    with pytest.raises(ValueError, match=r"are \+inf for datapoints \[1\]"):
        log_mean_exp(torch.tensor([[0.0, 0.0], [0.0, math.inf]]))
    with pytest.raises(ValueError, match=r"dim 1\) are NaN for datapoints \[2\]"):
        log_mean_exp(torch.zeros(3, 4).index_put((torch.tensor(2), torch.tensor(0)),
                                                 torch.tensor(math.nan)), 1)
    assert float(log_mean_exp(torch.tensor([-math.inf, 0.0]))) == pytest.approx(-math.log(2))
    with pyro.validation_enabled(False):  # the training losses' later epochs: no check
        assert math.isnan(float(log_mean_exp(torch.tensor([math.nan, 0.0]))))


# R2. units ---------------------------------------------------------------------------------
def test_units_refuse_nan_and_non_numbers_by_name():
    with pytest.raises(ValueError, match="nats_per_datapoint is NaN"):
        bits_per_dim(math.nan, 3)
    with pytest.raises(ValueError, match="nats_per_datapoint is -inf"):
        bits_per_dim(-math.inf, 3)
    assert bits_per_dim(math.inf, 3) == math.inf  # probability zero
    with pytest.raises(TypeError, match="nats_per_datapoint must be a real number or a "
                                        "tensor, got str"):
        bits_per_dim("10", 3)
    with pytest.raises(TypeError, match="nats must be a real number or a tensor, got list"):
        nats_to_bits([1.0, 2.0])
    with pytest.raises(TypeError, match="bits must be a real number or a tensor, got bool"):
        bits_to_nats(True)
    with pytest.raises(ValueError, match=r"bits is NaN in 1 of 2 entries \(shape \[2\]\)"):
        bits_to_nats(torch.tensor([1.0, math.nan]))
    with pytest.raises(TypeError, match="nats must hold real numbers"):
        nats_to_bits(torch.tensor([True]))
    assert nats_to_bits(-math.inf) == -math.inf
    with pytest.raises(ValueError, match=r"log_density_nats is \+inf"):
        discrete_log_likelihood_bound(math.inf, 4)
    assert discrete_log_likelihood_bound(-math.inf, 4) == -math.inf  # density zero
    with pytest.raises(ValueError, match="num_dims must be a positive integer"):
        bits_per_dim(1.0, 2.5)
    torch.testing.assert_close(bits_per_dim(torch.tensor([3.0]), 1),
                               torch.tensor([3.0 / math.log(2)]))


# R3. active_units --------------------------------------------------------------------------
def test_active_units_of_huge_float32_means_keeps_finite_variances():
    means = torch.tensor([[1e21, 0.0], [-1e21, 1.0], [3e20, 0.5]])
    count, variance = active_units(means)
    assert count == 2
    assert variance.dtype == torch.float64 and bool(torch.isfinite(variance).all())
    torch.testing.assert_close(variance, means.double().var(0))
    means[:, 0] /= 1e20  # no overflow: the means' dtype
    count, variance = active_units(means)
    assert count == 2 and variance.dtype == torch.float32


# R4. range coding callbacks ----------------------------------------------------------------
def test_image_coding_names_a_pixel_probs_that_returns_no_tensor():
    symbols = torch.randint(0, 2, (2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"pixel_probs must return a tensor \[batch, C, H, W, "
                                         r"V\] for symbols \[2, 1, 2, 2\], got list"):
        encode_images(lambda s: [0.5, 0.5], symbols)
    good = encode_images(lambda s: torch.full((*s.shape, 2), 0.5), symbols)
    with pytest.raises(ValueError, match="pixel_probs must return a tensor .* got NoneType"):
        decode_images(lambda s: None, good, (1, 2, 2))
    with pytest.raises(TypeError, match="pixel_probs must be callable, got int"):
        encode_images(3, symbols)
    with pytest.raises(TypeError, match="pixel_probs must be callable, got int"):
        decode_images(3, good, (1, 2, 2))
    data = range_encode(torch.tensor([0, 1]), torch.full((2, 2), 0.5))
    with pytest.raises(TypeError, match="next_probs must be callable, got str"):
        range_decode(data, "tables")
    with pytest.raises(ValueError, match=r"next_probs must return \[m, V\] tables, got list"):
        range_decode(data, lambda chunks: [[0.5, 0.5]])


# R5. save_checkpoint -----------------------------------------------------------------------
def test_save_checkpoint_refuses_a_non_dict_and_names_the_unpicklable_key(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"v": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="state must be a dict, got list"):
        save_checkpoint(path, [1, 2])
    with pytest.raises(TypeError, match=rf"cannot write the checkpoint {path}: state\['f'\] "
                                        r"\(function\) cannot be pickled"):
        save_checkpoint(path, {"v": 2, "f": lambda: 1})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary file left


def test_save_checkpoint_keeps_the_replaced_files_permissions(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"v": 1})
    os.chmod(path, 0o444)
    save_checkpoint(path, {"v": 2})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert load_checkpoint(path)["v"] == 2


# R6. SVIStep flags -------------------------------------------------------------------------
def test_svi_step_refuses_a_non_bool_lean():
    model = LinearGaussian(data_dim=3, latent_dim=1, seed=0)
    for bad in ("no", 0, None):
        with pytest.raises(TypeError, match=f"lean must be True or False, got {bad!r}"):
            SVIStep(model.model, model.guide, lean=bad)


# R7. load_words fractions of 0 -------------------------------------------------------------
def test_load_words_gives_empty_splits_for_fractions_of_zero(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("\n".join(["ab", "ba", "abc", "cab", "bca"]) + "\n")
    data = load_words(path, valid_fraction=0, test_fraction=0)
    assert data.valid == [] and data.test == [] and sorted(data.train) == sorted(data.words)
    data = load_words(path, valid_fraction=0.0, test_fraction=0.01)
    assert data.valid == [] and len(data.test) == 1 and len(data.train) == 4


# R8. read_wav of a header-less file --------------------------------------------------------
def test_read_wav_says_why_a_short_file_cannot_be_read(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a readable PCM WAV file: empty file"):
        read_wav(empty)
    whole = tmp_path / "whole.wav"
    with wave.open(str(whole), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(b"\0\0" * 10)
    short = tmp_path / "short.wav"
    short.write_bytes(whole.read_bytes()[:20])
    with pytest.raises(ValueError, match="not a readable PCM WAV file: truncated header: the "
                                         "file ends after 20 bytes"):
        read_wav(short)
