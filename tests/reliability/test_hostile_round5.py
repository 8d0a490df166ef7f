"""Hostile inputs, round 5: each entry point computes the right thing or refuses by name.

- R1: floats finite in Python but ``inf`` (1e39) or 0 (1e-46) in float32 were accepted by
  ``FreeBitsELBO``, ``scale_latents``, ``scale_data_plate``, ``Adam``, ``fit``, AIS's
  ``step_size``, ``fit_local_guide``/``amortization_gap`` (``lr``) and ``Autoencoder``
  (``sparsity``), then failed inside torch or "diverged" blaming ``lr``.
- R2: numpy and tensor counts (``np.int64(2**61)``) overflowed int64 in the memory check and
  failed in torch ("Storage size calculation overflowed").
- R3: ``torch.tensor(784)`` as ``num_dims`` was "beyond any tensor's size" (int64 wrap).
- R4: ``super_resolve_gibbs`` whose ``log_prob`` returns an integer or bool tensor.
- R5: ``read_wav`` of a WAV with an odd-sized chunk missing its pad byte (bare
  ``RuntimeError``), and of a folder ("no WAV file").
- R6: ``expected_log_likelihood`` with a ``pyro.factor`` that is NaN at some draws.
- R7: ``PixelCNN.log_prob(x, h=h)`` with NaN in ``h``.
"""

import math
import struct

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import inference
from inference.checks import check_number, check_weights_memory
from inference.training import scale_data_plate, scale_latents
from inference.training.free_bits import FreeBitsELBO
from ppl_models import VAE, Autoencoder, PixelCNN, read_wav


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 2, math.sqrt(0.5)))


X = torch.tensor([0.5, -1.0, 2.0, 1.0])
BEYOND = r"1e\+39 is beyond the range of torch.float32"


# R1. floats beyond float32 ------------------------------------------------------------------
@pytest.mark.parametrize("call, name", [
    (lambda: FreeBitsELBO(1e39), "free_bits"),
    (lambda: inference.make_loss("elbo-free-bits", free_bits=1e39), "free_bits"),
    (lambda: scale_latents(1e39), "scale_latents beta"),
    (lambda: scale_data_plate(1e39), "scale_data_plate factor"),
    (lambda: inference.Adam(1e39), "lr"),
    (lambda: inference.fit(model, guide, X, epochs=1, lr=1e39, progress=False), "lr"),
    (lambda: inference.ais_log_evidence(model, guide, X, num_chains=2, num_steps=2,
                                        step_size=1e39, progress=False), "step_size"),
    (lambda: inference.ais_log_evidence(model, guide, X, num_chains=2, num_steps=2,
                                        adapt_rate=1e39, progress=False), "adapt_rate"),
    (lambda: Autoencoder((1, 2, 2), sparsity=1e39), "sparsity"),
])
def test_a_float_that_overflows_float32_is_refused_by_name(call, name):
    # FreeBitsELBO(1e39) failed at fit's first step in torch's clamp ("value cannot be
    # converted to type float without overflow"); the others failed or diverged later
    with pytest.raises(ValueError, match=f"{name}={BEYOND}"):
        call()


def test_a_positive_float_that_rounds_to_zero_in_float32_is_refused():
    with pytest.raises(ValueError, match=r"factor=1e-46 is below the range of torch.float32"):
        scale_data_plate(1e-46)
    check_number(1e-46, "x", dtype=torch.float64)  # float64 holds it
    check_number(0.0, "x", dtype=torch.float32)  # 0 is 0 in any dtype
    check_number(-3e38, "x", dtype=torch.float32)


@pytest.mark.parametrize("entry", ["fit_local_guide", "amortization_gap"])
def test_the_local_guides_lr_beyond_float32_is_refused_before_any_step(entry):
    # torch's Adam failed with "value cannot be converted to type float without overflow"
    # where map_complete named the same lr
    x = (torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    vae = VAE(image_shape=(1, 4, 4), latent_dim=2, hidden=(8,)).eval()
    with pytest.raises(ValueError, match=f"lr={BEYOND}"):
        if entry == "fit_local_guide":
            inference.fit_local_guide(vae.model, inference.LocalGaussianGuide(vae.guide, x), x,
                                      num_steps=2, lr=1e39, progress=False)
        else:
            inference.amortization_gap(vae.model, vae.guide, x, num_steps=2, lr=1e39,
                                       progress=False)


# R2. numpy and tensor counts in the memory checks -------------------------------------------
@pytest.mark.parametrize("count", [np.int64(2**61), torch.tensor(2**61), np.int64(2**63 - 1)])
def test_a_huge_numpy_or_tensor_count_is_refused_by_the_memory_check(count):
    with pytest.raises(ValueError, match=r"num_chains=\d+ particles for 4 datapoints"):
        inference.ais_log_evidence(model, guide, X, num_chains=count, num_steps=2,
                                   progress=False)
    with pytest.raises(ValueError, match=r"num_samples=\d+ particles for 4 datapoints"):
        inference.expected_log_likelihood(model, guide, X, num_samples=count)
    with pytest.raises(ValueError, match="more than this machine's"):
        check_weights_memory(count, np.int64(4), np.int64(4))


def test_numpy_and_tensor_counts_compute_as_python_ints():
    # the same value as np.int64 or a 0-dim tensor gives the same estimate as a Python int
    torch.manual_seed(0)
    plain = inference.expected_log_likelihood(model, guide, X, num_samples=3)
    for count in (np.int64(3), torch.tensor(3)):
        torch.manual_seed(0)
        assert torch.equal(inference.expected_log_likelihood(model, guide, X,
                                                             num_samples=count), plain)


# R3. a 0-dim integer tensor as num_dims -----------------------------------------------------
def test_a_0_dim_integer_tensor_is_a_count_of_dimensions():
    # torch.tensor(784) >= 2**63 is tensor(True) through int64 wrap: "beyond any tensor's size"
    nats = torch.tensor([100.0, 120.0])
    for num_dims, levels in ((torch.tensor(784), 256), (784, torch.tensor(256)),
                             (np.int64(784), np.int64(256))):
        assert torch.allclose(inference.bits_per_dim(nats, num_dims),
                              inference.bits_per_dim(nats, 784))
        assert inference.dequantization_correction_nats(num_dims, levels) == \
            pytest.approx(784 * math.log(256))
        assert torch.allclose(inference.discrete_log_likelihood_bound(-nats, num_dims, levels),
                              -nats - 784 * math.log(256))
    with pytest.raises(ValueError, match="beyond any tensor's size"):
        inference.bits_per_dim(nats, 2**63)


# R4. super_resolve_gibbs' log_prob of an integer dtype --------------------------------------
@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool])
def test_gibbs_refuses_a_log_prob_of_an_integer_or_bool_dtype(dtype):
    # torch: NotImplementedError "check_uniform_bounds" not implemented for 'Long'
    y = inference.average_pool((torch.rand(3, 1, 4, 4) > 0.5).float(), 2)
    with pytest.raises(ValueError, match=f"log_prob must return floating log probabilities "
                                         rf"\[n\], got dtype {dtype}"):
        inference.super_resolve_gibbs(lambda x: torch.zeros(x.shape[0], dtype=dtype), y, 2,
                                      num_sweeps=2)


# R5. read_wav ------------------------------------------------------------------------------
def test_read_wav_names_an_odd_chunk_without_its_pad_byte(tmp_path):
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    data = b"\x00\x01" * 10
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"junk" + struct.pack("<I", 3) + b"abc"  # odd size, no pad byte
            + b"data" + struct.pack("<I", len(data)) + data)
    path = tmp_path / "odd.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(ValueError, match=r"odd.wav is not a readable PCM WAV file: its 'junk' "
                                         r"chunk of 3 bytes at byte 36 has an odd size but no "
                                         "pad byte"):
        read_wav(path)
    padded = body.replace(b"abc", b"abc\x00")  # the same file, padded: read
    path.write_bytes(b"RIFF" + struct.pack("<I", len(padded)) + padded)
    signal, rate = read_wav(path)
    assert rate == 8000 and signal.shape == (10,)


def test_read_wav_of_a_folder_says_it_is_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        read_wav(tmp_path)


# R6. expected_log_likelihood with a NaN factor ----------------------------------------------
def test_expected_log_likelihood_names_the_datapoints_of_a_nan_factor():
    # failed in torch: "Expected parameter log_factor ... Unit ... invalid values"
    def nan_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)
            pyro.factor("f", torch.where(z > 2.0, torch.tensor(float("nan")), torch.zeros(())))

    pyro.enable_validation(True)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"log p\(x \| z\) is NaN for datapoints \[\d"):
        inference.expected_log_likelihood(nan_model, guide, X, num_samples=200)


# R7. PixelCNN's conditioning vector ---------------------------------------------------------
@pytest.mark.parametrize("validate", [True, False])
def test_pixelcnn_log_prob_names_nan_in_h(validate):
    # validation on: torch's "Expected parameter logits"; off: a NaN row, silently
    torch.manual_seed(0)
    pc = PixelCNN(image_shape=(1, 4, 4), channels=4, num_blocks=1, kernel_size=3,
                  first_kernel_size=3, cond_dim=2).eval()
    x = (torch.rand(5, 1, 4, 4) > 0.5).float()
    h = torch.randn(5, 2)
    h[2] = float("nan")
    with pyro.validation_enabled(validate):
        with pytest.raises(ValueError, match=r"h holds 2 NaN value\(s\) of 10"):
            pc.log_prob(x, h=h)
        h[2] = float("inf")
        with pytest.raises(ValueError, match=r"h holds 2 infinite value\(s\) of 10"):
            pc.log_prob(x, h=h)
        assert torch.isfinite(pc.log_prob(x, h=torch.randn(5, 2))).all()
