"""Hostile inputs, round 6: each entry point computes the right thing or refuses by name.

- K1: ``read_wav`` refused 24-bit PCM ("unsupported sample width of 3 bytes") and
  WAVE_FORMAT_EXTENSIBLE files with the PCM sub-format ("unknown format: 65534"); it reads
  both now (24-bit scaled by 2**23), and refuses IEEE-float and other non-PCM files naming the
  format and a conversion command.
- P1: ``speech_signal`` with an empty text blamed a missing WAV file, with a folder as output
  path said "cannot read"; ``load_signal("speech", rate=10)`` was accepted where the
  synthetic source refuses rates below 20. Each is now refused by name before espeak-ng runs.
- L1: ``DiscretizedLogisticMixture`` with every logit of a mixture ``-inf`` (or one ``+inf``)
  returned NaN log-probabilities; it refuses them naming ``logit_weights`` and the first
  such mixture. ``manifold_mean`` passed a NaN ``z`` through; it refuses it naming ``z``.
- B1: ``range_encode``/``information_bits``/``encode_images`` refused uint8, int8 and int16
  symbols ("must be integers"); they take them as int64 and name the dtypes they take.
- A1: ``encode_images`` with NaN tables blamed dropout (two NaN tables compare unequal); the
  table values are checked first and the NaN row named.
- F1: ``posterior_means(guide)`` without data was Pyro's "missing 1 required positional
  argument"; it names the guide's signature and says to pass the data.
- M1: a model with NaN weights: ``VAE.reconstruct`` said "z holds NaN", ``VAE.encode`` gave
  NaN codes, ``posterior_means`` and ``PixelCNN.log_prob`` raised torch's validation error;
  each names the parameters holding NaN or infinite values.
- I1: ``load_images(download="no")`` downloaded, ``root=5`` was pathlib's TypeError, and the
  missing-MNIST hint offered a ``--download`` flag most examples lack; ``Split`` took 3 images
  with 2 labels and ``ImageData`` labels beyond ``num_classes``. Each is refused by name.
- O1: ``write_idx``/``write_wav`` refused a legal 251-byte file name ("File name too long":
  the temporary file's name was longer); the temporary name is cut to fit.
- H1: ``TwoLayerVAE.sample_images(mean=0)`` was accepted (``VAE`` refuses it);
  ``PixelCNN(num_mixtures=-5)`` with a likelihood without mixtures was ignored;
  ``Vocabulary.decode`` read rows with ``PAD`` inside a word or without an end symbol that
  ``log_prob`` refuses. Each is refused by name; ``draw_words`` pads the words it cuts.
"""

import math
import struct
import wave

import numpy as np
import pytest
import torch

import inference
from ppl_models import (VAE, DiscretizedLogisticMixture, ImageData, PixelCNN, Split,
                        TwoLayerVAE, Vocabulary, load_images, load_signal, manifold_mean,
                        read_idx, read_wav, speech_signal, write_idx, write_wav)
from ppl_models.text import draw_words

PCM_GUID = bytes.fromhex("0100000000001000800000aa00389b71")
FLOAT_GUID = bytes.fromhex("0300000000001000800000aa00389b71")


def extensible_wav(path, samples, guid=PCM_GUID, width=2, valid_bits=None):
    """A mono WAV with the WAVE_FORMAT_EXTENSIBLE header (as ffmpeg, sox and Windows write)."""
    fmt = (struct.pack("<HHIIHH", 0xFFFE, 1, 8000, 8000 * width, width, 8 * width)
           + struct.pack("<HHI", 22, valid_bits or 8 * width, 4) + guid)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    chunks += struct.pack("<I", len(samples)) + samples
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return path


# K1. 24-bit and EXTENSIBLE WAV files --------------------------------------------------------
def test_read_wav_reads_24_bit_pcm(tmp_path):
    values = np.array([0, 1, -1, 2**23 - 1, -2**23, 12345, -54321])
    with wave.open(str(tmp_path / "a.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(3)
        f.setframerate(8000)
        f.writeframes(b"".join(int(v).to_bytes(3, "little", signed=True) for v in values))
    signal, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and signal.dtype == torch.float32
    assert torch.equal(signal, torch.from_numpy(values / 2**23).float())


def test_read_wav_reads_24_bit_stereo_as_mono(tmp_path):
    with wave.open(str(tmp_path / "a.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(3)
        f.setframerate(8000)
        f.writeframes(b"".join(int(v).to_bytes(3, "little", signed=True)
                               for v in [2**22, 0, -2**22, -2**22]))
    assert read_wav(tmp_path / "a.wav")[0].tolist() == [0.25, -0.5]


@pytest.mark.parametrize("width, dtype", [(2, "<i2"), (4, "<i4")])
def test_read_wav_reads_extensible_pcm(tmp_path, width, dtype):
    values = np.array([0, 1000, -1000, 2 ** (8 * width - 1) - 1], dtype=dtype)
    path = extensible_wav(tmp_path / "ext.wav", values.tobytes(), width=width)
    signal, rate = read_wav(path)
    assert rate == 8000
    assert torch.equal(signal, torch.from_numpy(values / 2.0 ** (8 * width - 1)).float())


def test_read_wav_reads_extensible_24_bits_in_32(tmp_path):
    values = np.array([0, 2**8, -2**31], dtype="<i4")  # 24 valid bits, left-justified
    path = extensible_wav(tmp_path / "ext.wav", values.tobytes(), width=4, valid_bits=24)
    assert read_wav(path)[0].tolist() == [0.0, 2**8 / 2**31, -1.0]


def test_read_wav_refuses_float_wav_naming_the_format(tmp_path):
    data = np.array([0.0, 0.5], dtype="<f4").tobytes()
    path = extensible_wav(tmp_path / "float.wav", data, guid=FLOAT_GUID, width=4)
    with pytest.raises(ValueError, match=r"0x0003 \(IEEE floating point\) in a "
                       r"WAVE_FORMAT_EXTENSIBLE header.*sox in.wav -b 16"):
        read_wav(path)
    plain = bytearray((tmp_path / "float.wav").read_bytes())
    plain[20:22] = (3).to_bytes(2, "little")  # the plain IEEE float format tag
    (tmp_path / "plain.wav").write_bytes(bytes(plain))
    with pytest.raises(ValueError, match=r"holds format 0x0003 \(IEEE floating point\); only "
                       r"integer PCM WAV files are read: convert it"):
        read_wav(tmp_path / "plain.wav")


def test_read_wav_still_reads_8_16_32_bit_exactly(tmp_path):
    for width, values in [(1, [0, 128, 255]), (2, [0, -32768, 32767]),
                          (4, [0, -2**31, 2**31 - 1])]:
        dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}[width]
        with wave.open(str(tmp_path / "a.wav"), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(width)
            f.setframerate(8000)
            f.writeframes(np.array(values, dtype=dtype).tobytes())
        expected = (np.array(values, dtype=np.float64) - (128 if width == 1 else 0))
        expected /= {1: 128.0, 2: 32768.0, 4: 2.0**31}[width]
        assert torch.equal(read_wav(tmp_path / "a.wav")[0], torch.from_numpy(expected).float())


# P1. speech_signal / load_signal arguments ---------------------------------------------------
@pytest.mark.parametrize("call, error, message", [
    (lambda tmp: speech_signal("", tmp / "a.wav"), ValueError,
     "text must hold at least one word to speak, got ''"),
    (lambda tmp: speech_signal("  \n", tmp / "a.wav"), ValueError, "text must hold at least"),
    (lambda tmp: load_signal("speech", text=""), ValueError, "text must hold at least"),
    (lambda tmp: speech_signal(5, tmp / "a.wav"), TypeError, "text must be a string, got int"),
    (lambda tmp: speech_signal("hello", tmp), IsADirectoryError,
     "is a folder; pass the WAV file to write"),
    (lambda tmp: load_signal("speech", rate=10), ValueError,
     "rate must be an integer >= 20, got 10"),
    (lambda tmp: load_signal("synthetic", rate=10), ValueError,
     "rate must be an integer >= 20, got 10"),
])
def test_speech_arguments_are_named(tmp_path, call, error, message):
    with pytest.raises(error, match=message):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


# L1. silent NaN: mixtures without weight, manifold_mean of NaN ------------------------------
def test_logistic_mixture_refuses_rows_without_weight():
    K = 3
    with pytest.raises(ValueError, match=r"logit_weights is -inf for all 3 components in 1 of "
                       r"2 mixture\(s\) \(the first at index \[1\]\)"):
        DiscretizedLogisticMixture(torch.tensor([[0.0, -math.inf, 1.0], [-math.inf] * K]),
                                   torch.zeros(2, K), torch.zeros(2, K))
    with pytest.raises(ValueError, match=r"logit_weights holds 1 \+inf value\(s\) of 6"):
        DiscretizedLogisticMixture(torch.tensor([[0.0, math.inf, 1.0], [0.0] * K]),
                                   torch.zeros(2, K), torch.zeros(2, K))


def test_logistic_mixture_with_a_masked_component_is_the_other_components():
    # -inf masks a component: the mixture is the rest, renormalized (a valid neighbour)
    x = torch.tensor([0.0, 128 / 255, 1.0])
    masked = DiscretizedLogisticMixture(torch.tensor([[0.0, -math.inf]] * 3),
                                        torch.tensor([[0.2, -0.7]] * 3), torch.full((3, 2), -2.0))
    alone = DiscretizedLogisticMixture(torch.zeros(3, 1), torch.full((3, 1), 0.2),
                                       torch.full((3, 1), -2.0))
    assert torch.allclose(masked.log_prob(x), alone.log_prob(x))
    assert torch.isfinite(masked.log_prob(x)).all()


@pytest.mark.parametrize("z, error, message", [
    (torch.full((2, 2), math.nan), ValueError, r"z holds 4 NaN value\(s\) of 4"),
    (torch.tensor([0.0, math.inf]), ValueError, r"z holds 1 infinite value\(s\) of 2"),
    (torch.tensor([1, 2]), TypeError, "z must be a floating-point tensor, got torch.int64"),
    ([0.5], TypeError, "z must be a floating-point tensor, got list"),
])
def test_manifold_mean_refuses_non_finite_z(z, error, message):
    with pytest.raises(error, match=message):
        manifold_mean(z)


def test_manifold_mean_of_finite_z():
    out = manifold_mean(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert out.shape == (2, 16) and out.dtype == torch.float64
    expected = 0.5 + 0.4 * torch.sin(math.pi * torch.arange(4.0, dtype=torch.float64) / 2)
    assert torch.allclose(out[0, :4], expected)


# B1/A1. range coding: small integer symbols, NaN tables named -------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_range_coding_takes_small_integer_symbols(dtype):
    symbols = torch.tensor([1, 0, 2, 2])
    probs = torch.tensor([[0.2, 0.5, 0.3]] * 4)
    small = symbols.to(dtype)
    assert inference.range_encode(small, probs) == inference.range_encode(symbols, probs)
    assert inference.information_bits(small, probs) == inference.information_bits(symbols, probs)
    decoded = inference.range_decode(inference.range_encode(small, probs),
                                     lambda chunks: None if chunks else probs)
    assert decoded.tolist() == symbols.tolist()


def test_range_coding_names_the_dtypes_it_takes():
    with pytest.raises(ValueError, match=r"symbols must be integers \(uint8, int8, int16, int32, "
                       r"int64\), got torch.float32"):
        inference.range_encode(torch.tensor([1.0]), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"symbols must lie in 0..2, got range \[-1, -1\]"):
        inference.range_encode(torch.tensor([-1], dtype=torch.int8), torch.ones(1, 3))


def independent_pixels(symbols):
    """``[batch, C, H, W]`` -> the same Bernoulli(0.3) table for every pixel."""
    return torch.tensor([0.7, 0.3]).expand(*symbols.shape, 2)


def test_encode_images_takes_uint8_levels():
    torch.manual_seed(0)
    x = (torch.rand(2, 1, 4, 4) < 0.5).long()
    seen = []
    data = inference.encode_images(lambda s: seen.append(s.dtype) or independent_pixels(s),
                                   x.to(torch.uint8))
    assert data == inference.encode_images(independent_pixels, x)
    assert set(seen) == {torch.int64}  # pixel_probs gets int64, as documented
    assert torch.equal(inference.decode_images(independent_pixels, data, (1, 4, 4)), x)


def test_encode_images_names_nan_tables_not_dropout():
    x = (torch.rand(2, 1, 4, 4) < 0.5).long()
    with pytest.raises(ValueError, match="probability table row 0 holds NaN"):
        inference.encode_images(lambda s: torch.full((*s.shape, 2), math.nan), x)


# F1/M1. posterior_means without data; models with NaN weights named as such -----------------
def nan_weights(module):
    with torch.no_grad():
        next(module.parameters()).fill_(math.nan)
    return module


def binary_images():
    return (torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()


def test_posterior_means_without_data_names_the_data():
    vae = VAE((1, 4, 4), 2, hidden=(8,))
    with pytest.raises(TypeError, match=r"whose signature \(x.*\) -> .None. does not take 0 "
                       r"positional and 0 keyword argument\(s\) \(missing a required "
                       r"argument: 'x'\): "
                       r"pass the data the guide takes, e.g. posterior_means\(guide, x\)"):
        inference.posterior_means(vae.guide)
    assert inference.posterior_means(vae.guide, binary_images()).shape == (3, 2)
    assert inference.posterior_means(vae.guide, x=binary_images()).shape == (3, 2)
    with pytest.raises(TypeError, match=r"LocalGaussianGuide\(guide, \*args, \*\*kwargs\) "
                                        r"passes its data to the guide"):
        inference.LocalGaussianGuide(vae.guide)
    assert inference.LocalGaussianGuide(vae.guide, binary_images()).batch_size == 3


@pytest.mark.parametrize("call, error, message", [
    (lambda v, x: v.reconstruct(x), FloatingPointError,
     r"VAE.reconstruct: the parameters \['encoder\..*'\] hold NaN or infinite values"),
    (lambda v, x: v.encode(x), FloatingPointError,
     r"VAE.encode: the parameters \['encoder\..*'\] hold NaN or infinite values"),
    (lambda v, x: inference.posterior_means(v.guide, x), ValueError,
     r"posterior_means: the guide failed to run \(ValueError\); its parameters hold NaN or "
     r"infinite values: .*weight \(\d+ of \d+\)"),
])
def test_vae_with_nan_weights_is_named(call, error, message):
    vae = nan_weights(VAE((1, 4, 4), 2, hidden=(8,)).eval())
    with pytest.raises(error, match=message):
        call(vae, binary_images())


def test_pixelcnn_with_nan_weights_is_named():
    pc = PixelCNN((1, 4, 4), channels=4, num_blocks=1, first_kernel_size=3).eval()
    x = binary_images()
    assert pc.log_prob(x).shape == (3,)
    with pytest.raises(FloatingPointError, match=r"PixelCNN.log_prob: the parameters \[.*\] "
                       "hold NaN or infinite values"):
        nan_weights(pc).log_prob(x)


# I1. load_images arguments, Split and ImageData consistency ----------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"root": "/nonexistent/s5", "download": "no"}, "download must be True or False, got 'no'"),
    ({"root": "/nonexistent/s5", "download": 1}, "download must be True or False, got 1"),
    ({"root": 5}, r"root must be a path \(a str or os.PathLike\) or None, got int"),
])
def test_load_images_checks_root_and_download(tmp_path, kwargs, message):
    for name in ("mnist", "fashion-mnist"):
        with pytest.raises(TypeError, match=message):
            load_images(name, **kwargs)


def test_mnist_hint_names_the_examples_with_a_download_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"download=True \(needs internet; "
                       r"examples/vae.py and examples/pixelcnn.py take it as --download\)"):
        load_images("mnist", root=tmp_path)


def test_split_and_image_data_check_labels():
    images = torch.rand(3, 1, 4, 4)
    with pytest.raises(ValueError, match="Split: 3 images but 2 labels; give one label per"):
        Split(images, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must be an integer tensor \[n\], got "
                       r"torch.float32 \[3\]"):
        Split(images, torch.zeros(3))
    split = Split(images, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"the train labels must lie in 0..1 \(num_classes=2\), "
                       r"got range \[0, 2\]"):
        ImageData("x", split, split, split, num_classes=2)
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        ImageData("x", split, split, split, num_classes=0)
    assert ImageData("x", split, split, split, num_classes=3).binarized().num_classes == 3


# O1. a legal long file name, whose temporary file's name was too long ----------------------
@pytest.mark.parametrize("stem", ["c" * 247, "é" * 123 + "x"])  # 247 bytes, + ".idx": 251
def test_write_idx_and_wav_take_a_legal_long_name(tmp_path, stem):
    array = np.arange(3, dtype=np.uint8)
    write_idx(tmp_path / (stem + ".idx"), array)
    assert np.array_equal(read_idx(tmp_path / (stem + ".idx")), array)
    signal = torch.tensor([0.0, 0.5, -0.5])
    write_wav(tmp_path / (stem + ".wav"), signal, 8000)
    assert torch.allclose(read_wav(tmp_path / (stem + ".wav"))[0], signal, atol=1e-4)
    assert sorted(len(p.name.encode()) for p in tmp_path.iterdir()) == [251, 251]


# H1. small inconsistencies --------------------------------------------------------------------
def test_two_layer_vae_sample_images_checks_mean():
    vae = TwoLayerVAE((1, 4, 4), 3, 2, hidden=(8,), top_hidden=(8,))
    with pytest.raises(TypeError, match="mean must be True or False, got 0"):
        vae.sample_images(2, mean=0)
    assert vae.sample_images(2, mean=False).shape == (2, 1, 4, 4)


def test_pixelcnn_refuses_num_mixtures_without_a_mixture():
    sizes = {"channels": 4, "num_blocks": 1, "first_kernel_size": 3}
    with pytest.raises(ValueError, match="num_mixtures=-5 is for the logistic-mixture "
                       "likelihood; the categorical256 likelihood takes no mixture"):
        PixelCNN((1, 4, 4), likelihood="categorical256", num_mixtures=-5, **sizes)
    mixture = PixelCNN((1, 4, 4), likelihood="logistic-mixture", **sizes)
    assert mixture.likelihood.params_per_pixel == 15  # the default 5 components
    assert PixelCNN((1, 4, 4), likelihood="logistic-mixture", num_mixtures=2,
                    **sizes).likelihood.params_per_pixel == 6


def test_vocabulary_decode_refuses_rows_log_prob_refuses():
    vocab = Vocabulary("abc")  # EOS 0, a..c 1..3, BOS 4, PAD 5
    with pytest.raises(ValueError, match="not padded with PAD=5 exactly after their end"):
        vocab.decode(torch.tensor([[1, 5, 2, 0]]))
    with pytest.raises(ValueError, match="needs exactly one end symbol"):
        vocab.decode(torch.tensor([[1, 2, 3]]))
    # draw_words cuts unfinished words at max_length and still decodes them
    words = draw_words(vocab, lambda previous: torch.tensor([0.0, 1.0, 0.0, 0.0]).expand(
        len(previous), 4), 3, max_length=4)
    assert words == ["aaaa"] * 3
