"""Mu-law levels, WAV files, signal sources and the fixed split."""

import math
import re
import shutil
import wave

import numpy as np
import pytest
import torch

from ppl_models import audio
from ppl_models.audio import (
    MU,
    histogram_bits_per_sample,
    load_signal,
    mu_law_decode,
    mu_law_encode,
    read_wav,
    split_segments,
    synthetic_signal,
    write_wav,
)


def test_mu_law_round_trip_within_half_a_level():
    x = torch.linspace(-1, 1, 200_001)
    error = (mu_law_decode(mu_law_encode(x)) - x).abs()
    # half a level step (1/mu in the companded domain) through the slope of the inverse map
    bound = (1 + MU * x.abs()) * ((1 + MU) ** (1 / MU) - 1) / MU
    excess = error - bound
    assert excess.max() < 1e-6, f"worst excess {excess.max()} at x = {x[excess.argmax()]}"
    assert error.max() < 0.0221  # the bound at |x| = 1


def test_mu_law_levels_are_fixed_points_and_ordered():
    levels = torch.arange(MU + 1)
    decoded = mu_law_decode(levels)
    assert torch.equal(mu_law_encode(decoded), levels)
    assert (decoded.diff() > 0).all()
    assert mu_law_encode(torch.tensor([-1.0, 1.0])).tolist() == [0, MU]


@pytest.mark.parametrize("bad, error", [
    (torch.tensor([0, 1]), TypeError),
    (torch.tensor([0.5, 1.01]), ValueError),
    (torch.tensor([float("nan")]), ValueError),
])
def test_mu_law_encode_rejects_bad_input(bad, error):
    with pytest.raises(error):
        mu_law_encode(bad)


def test_mu_law_decode_rejects_bad_input():
    with pytest.raises(TypeError, match="integer"):
        mu_law_decode(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="0..255"):
        mu_law_decode(torch.tensor([256]))


def test_wav_round_trip(tmp_path):
    signal = synthetic_signal(0.5, 8000, seed=1)
    write_wav(tmp_path / "a.wav", signal, 8000)
    back, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and back.shape == signal.shape and back.dtype == torch.float32
    # written as round(32767 x), read as k / 32768: at most 1.5 / 32768 off
    assert (back - signal).abs().max() <= 1.5 / 32768 + 1e-7


def test_read_wav_averages_channels_and_reads_8_bit(tmp_path):
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(1)
        f.setframerate(8000)
        f.writeframes(np.array([[128, 192], [0, 64]], dtype=np.uint8).tobytes())
    signal, rate = read_wav(tmp_path / "stereo.wav")
    assert rate == 8000
    assert signal.tolist() == [0.25, -0.75]  # (0 + 64) / 2 / 128 and (-128 - 64) / 2 / 128


def test_read_wav_resamples(tmp_path):
    t = np.arange(16000) / 16000
    write_wav(tmp_path / "a.wav", torch.from_numpy(0.5 * np.sin(2 * np.pi * 440 * t)).float(),
              16000)
    signal, rate = read_wav(tmp_path / "a.wav", rate=8000)
    assert rate == 8000 and signal.shape == (8000,)
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    # away from the edges the polyphase filter passes 440 Hz almost unchanged
    assert np.abs(signal.numpy()[200:-200] - expected[200:-200]).max() < 5e-3


def test_wav_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no WAV file"):
        read_wav(tmp_path / "missing.wav")
    with pytest.raises(FileNotFoundError):
        load_signal(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio at all")
    with pytest.raises(ValueError, match="not a readable PCM WAV"):
        read_wav(tmp_path / "text.wav")
    with pytest.raises(TypeError):
        write_wav(tmp_path / "b.wav", torch.tensor([1, 2]), 8000)
    with pytest.raises(ValueError, match="num_samples"):
        write_wav(tmp_path / "b.wav", torch.zeros(2, 3), 8000)


def test_load_signal_reports_its_source(tmp_path, monkeypatch):
    write_wav(tmp_path / "a.wav", synthetic_signal(0.25, 16000), 16000)
    from_file = load_signal(tmp_path / "a.wav", rate=8000)
    assert from_file.source == f"wav:{tmp_path / 'a.wav'}" and from_file.samples.shape == (2000,)
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    fallback = load_signal(rate=8000, seconds=0.5, seed=3)
    assert fallback.source == "synthetic"
    assert torch.equal(fallback.samples, synthetic_signal(0.5, 8000, seed=3))
    with pytest.raises(RuntimeError, match="espeak-ng is not installed"):
        load_signal("speech")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_speech_from_espeak_ng(tmp_path):
    signal = load_signal("auto", rate=8000, text="hello world")
    assert signal.source == "espeak-ng" and signal.rate == 8000
    assert 0.3 < signal.seconds < 3 and signal.samples.abs().max() > 0.1


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_speech_of_text_that_starts_with_a_dash_is_spoken(tmp_path):
    # as espeak-ng's argument '--version' was an option: no WAV, a FileNotFoundError
    from ppl_models.audio import speech_signal

    assert speech_signal("--version", tmp_path / "dash.wav", rate=8000).abs().max() > 0.1


def test_synthetic_signal_is_seeded_and_in_range():
    a, b = synthetic_signal(1.0, 8000, seed=0), synthetic_signal(1.0, 8000, seed=1)
    assert a.shape == (8000,) and torch.equal(a, synthetic_signal(1.0, 8000, seed=0))
    assert not torch.equal(a, b)
    assert math.isclose(float(a.abs().max()), 0.9, rel_tol=1e-6)


def test_split_keeps_time_order_and_puts_the_end_in_test():
    levels = torch.arange(1050)
    train, test = split_segments(levels, 100, test_fraction=0.1)
    assert train.shape == (9, 100) and test.shape == (1, 100)
    assert torch.equal(torch.cat([train.reshape(-1), test.reshape(-1)]), levels[:1000])
    with pytest.raises(ValueError, match="two segments"):
        split_segments(levels, 600)


def test_histogram_baseline_by_hand():
    train = torch.tensor([0, 0, 1, 1, 1, 1])
    test = torch.tensor([0, 1, 2])
    # pseudocount 1 over 4 levels: p = (3, 5, 1, 1) / 10
    expected = -(math.log2(0.3) + math.log2(0.5) + math.log2(0.1)) / 3
    assert math.isclose(histogram_bits_per_sample(train, test, num_levels=4), expected,
                        rel_tol=1e-12)


@pytest.mark.parametrize("signal, rate, match", [
    (torch.zeros(4), 2**32, r"rate must be at most 2147483647 .*, got 4294967296"),
    (torch.zeros(4), 2**31, r"rate must be at most 2147483647"),  # the header's 2 * rate
    (torch.zeros(4), True, r"rate must be a positive integer, got True"),
    (torch.tensor([0.5, float("nan"), float("nan")]), 8000,
     r"signal holds 2 NaN value\(s\) of 3"),
    (torch.tensor([float("-inf"), 0.0]), 8000, r"signal holds 1 infinite value\(s\) of 2"),
], ids=["rate 2**32", "rate 2**31", "rate True", "nan", "inf"])
def test_write_wav_checks_everything_before_touching_an_existing_file(tmp_path, signal, rate,
                                                                      match):
    # rate 2**32 raised struct.error from wave.py after truncating the file to 8 bytes; NaN
    # was written as silence with only a numpy warning
    path = tmp_path / "a.wav"
    write_wav(path, synthetic_signal(0.1, 8000), 8000)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match):
        write_wav(path, signal, rate)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


def test_write_wav_failing_half_way_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    write_wav(path, synthetic_signal(0.1, 8000), 8000)
    before = path.read_bytes()

    def full_disk(self, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(wave.Wave_write, "writeframes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_wav(path, torch.zeros(100), 8000)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


def test_write_wav_gives_the_file_the_umasks_mode(tmp_path):
    write_wav(tmp_path / "a.wav", torch.zeros(4), 8000)
    (tmp_path / "b").write_bytes(b"")
    assert (tmp_path / "a.wav").stat().st_mode == (tmp_path / "b").stat().st_mode


def test_resampling_too_large_for_memory_is_refused_naming_the_rate(tmp_path):
    # read_wav(path, rate=2**40) failed with numpy's MemoryError (1.25 TiB)
    write_wav(tmp_path / "a.wav", torch.zeros(8000), 8000)
    with pytest.raises(ValueError, match=r"rate=1099511627776: resampling 8000 samples from "
                                         r"8000 Hz.* bytes, more than the .* bytes of this "
                                         r"machine's physical memory"):
        read_wav(tmp_path / "a.wav", rate=2**40)
    with pytest.raises(ValueError, match=r"target_rate=1099511627776: resampling"):
        audio.resample(torch.zeros(8000), 8000, 2**40)


def test_write_wav_into_a_missing_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"cannot write {tmp_path / 'no' / 'a.wav'}"):
        write_wav(tmp_path / "no" / "a.wav", torch.zeros(4), 8000)


def test_write_wav_to_a_folder_names_the_folder(tmp_path):
    # the error named mkstemp's temporary file inside the folder, not the target
    with pytest.raises(IsADirectoryError, match=f"cannot write {tmp_path}: it is a folder"):
        write_wav(tmp_path, torch.zeros(4), 8000)


def test_synthetic_signal_of_impossible_length_is_named():
    # numpy's MemoryError (56.8 PiB) came from np.zeros
    with pytest.raises(ValueError, match=r"seconds=1000000000000\.0 at rate=8000: the signal"):
        audio.synthetic_signal(1e12)


def test_read_wav_names_a_header_with_rate_zero(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, torch.zeros(4), 8000)
    data = bytearray(path.read_bytes())
    data[24:28] = bytes(4)  # the sample rate field
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{path}: the header gives a sample rate of 0 Hz"):
        read_wav(path, rate=8000)


def test_read_wav_refuses_a_data_chunk_of_size_0_followed_by_samples(tmp_path):
    # a streaming writer's unset size: it returned an empty signal, the 200 bytes of samples
    # after the chunk's header ignored without a word
    path = tmp_path / "stream.wav"
    write_wav(path, torch.linspace(-0.5, 0.5, 100), 8000)
    data = bytearray(path.read_bytes())
    assert data[36:40] == b"data"
    data[40:44] = bytes(4)  # the data chunk's size
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(
            f"{path}: its data chunk declares a size of 0 bytes but 200 bytes follow it")):
        read_wav(path)
    path.write_bytes(bytes(data[:44]))  # a data chunk of 0 bytes and nothing after it
    signal, rate = read_wav(path)
    assert signal.shape == (0,) and rate == 8000


@pytest.mark.parametrize("cut, held", [(500, 1500), (501, 1499)], ids=["even", "odd"])
def test_read_wav_refuses_a_truncated_file_naming_it(tmp_path, cut, held):
    # cut by 500 bytes it returned 750 of the 1000 samples; by 501, numpy's "buffer size must
    # be a multiple of element size" without the file
    path = tmp_path / "cut.wav"
    write_wav(tmp_path / "full.wav", torch.linspace(-0.5, 0.5, 1000), 8000)
    path.write_bytes((tmp_path / "full.wav").read_bytes()[:-cut])
    with pytest.raises(ValueError, match=re.escape(
            f"{path} is truncated: its header gives 1000 frames of 2 bytes (2000 bytes of "
            f"samples), the file holds {held} bytes of them")):
        read_wav(path)


@pytest.mark.parametrize("train, test, options, error, match", [
    (torch.arange(256), torch.tensor([-1, -2]), {}, ValueError,
     r"test must hold levels in 0..255, got range \[-2, -1\]"),
    (torch.tensor([0, 1000]), torch.tensor([0]), {}, ValueError,
     r"train must hold levels in 0..255, got range \[0, 1000\]"),
    (torch.arange(4), torch.tensor([0, 4]), {"num_levels": 4}, ValueError,
     r"test must hold levels in 0..3, got range \[0, 4\]"),
    (torch.arange(256), torch.tensor([300]), {}, ValueError, "test must hold levels in 0..255"),
    (torch.arange(256), torch.tensor([], dtype=torch.long), {}, ValueError,
     r"test holds no levels \(shape \[0\]\)"),
    (torch.arange(256.0), torch.tensor([0]), {}, TypeError,
     "train must be an integer tensor, got torch.float32"),
    (torch.arange(256), torch.tensor([True]), {}, TypeError, "test must be an integer tensor"),
    (torch.arange(256), [0, 1], {}, TypeError, "test must be an integer tensor, got list"),
], ids=["negative test", "train beyond", "test beyond", "test 300", "empty test", "float train",
        "bool test", "list test"])
def test_histogram_baseline_checks_its_levels_by_name(train, test, options, error, match):
    # negative test levels indexed from the end (8.50 bits), train levels >= num_levels widened
    # the histogram, an empty test gave NaN, float train a bare NotImplementedError and a test
    # level of 300 a bare IndexError
    with pytest.raises(error, match=match):
        histogram_bits_per_sample(train, test, **options)


def test_histogram_baseline_takes_an_empty_train_set_as_uniform():
    empty = torch.tensor([], dtype=torch.long)
    assert histogram_bits_per_sample(empty, torch.tensor([0, 3]), num_levels=4) == 2.0


@pytest.mark.parametrize("signal, error, match", [
    (torch.zeros(2, 100), ValueError, r"signal must have shape \[num_samples\], got \[2, 100\]"),
    (torch.full((10,), float("nan")), ValueError, r"signal holds 10 NaN value\(s\) of 10"),
    (torch.tensor([0.0, float("inf")]), ValueError, r"signal holds 1 infinite value\(s\) of 2"),
    ([0.0, 0.5], TypeError, "signal must be a floating-point tensor .*got list"),
    (torch.tensor([0, 1]), TypeError, "signal must be a floating-point tensor .*torch.int64"),
], ids=["2-d", "nan", "inf", "list", "int"])
def test_resample_checks_the_signal_by_name(signal, error, match):
    # [2, 100] was resampled along dim 0 into [4, 100], NaN passed through, a list raised
    # AttributeError
    for target_rate in (16000, 8000):
        with pytest.raises(error, match=match):
            audio.resample(signal, 8000, target_rate)


def test_resample_keeps_its_contract_at_the_same_rate():
    signal = torch.tensor([-1.5, 0.25, 2.0], dtype=torch.float64)
    same = audio.resample(signal, 8000, 8000)
    assert same.dtype == torch.float32 and same.tolist() == [-1.0, 0.25, 1.0]


@pytest.mark.parametrize("levels, error, match", [
    ([1, 2, 3], TypeError, "levels must be a tensor .*got list"),
    (torch.zeros(2, 6, dtype=torch.long), ValueError,
     r"levels must have shape \[num_samples\], got \[2, 6\]"),
], ids=["list", "2-d"])
def test_split_segments_checks_the_levels(levels, error, match):
    # a list raised AttributeError; a [2, 6] tensor was cut along its rows
    with pytest.raises(error, match=match):
        split_segments(levels, 1)


@pytest.mark.parametrize("channels, width, extra", [(1, 2, 1), (2, 2, 2), (1, 4, 3)])
def test_read_wav_refuses_a_data_chunk_ending_in_a_partial_frame(tmp_path, channels, width,
                                                                 extra):
    # wave reads the whole frames: the odd trailing byte of a 16-bit file was dropped silently
    path = tmp_path / "partial.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(8000)
        f.writeframes(bytes(10 * channels * width))
    data = bytearray(path.read_bytes())
    declared = 10 * channels * width + extra
    data[40:44] = declared.to_bytes(4, "little")  # the data chunk's size
    data[4:8] = (len(data) + extra - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data) + bytes(extra))
    with pytest.raises(ValueError, match=re.escape(
            f"{path} is corrupt: its data chunk declares {declared} bytes, not a whole number "
            f"of frames of {channels * width} bytes")):
        read_wav(path)
    data[40:44] = (10 * channels * width).to_bytes(4, "little")  # the whole frames alone read
    path.write_bytes(bytes(data))
    assert read_wav(path)[0].shape == (10,)


def test_read_wav_refuses_resampling_a_corrupt_rate_before_allocating(tmp_path, monkeypatch):
    # a 4 KB file whose header gives 2**31 Hz: resampling to 8 kHz designed a 671-million-tap
    # filter, and scipy's temporaries (23.5 GB) got a 24 GB machine's process killed
    import ppl_models.audio as audio_module

    monkeypatch.setattr(audio_module, "physical_memory", lambda: 24 * 2**30)
    path = tmp_path / "a.wav"
    write_wav(path, torch.zeros(2000), 8000)
    data = bytearray(path.read_bytes())
    data[24:28] = (2**31).to_bytes(4, "little")  # the sample rate field
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"rate=8000: resampling .* filter"):
        read_wav(path, rate=8000)


def test_write_wav_through_a_symlink_keeps_the_link(tmp_path):
    # the temporary file was renamed over the link: the link became a file, its target stale
    target = tmp_path / "real.wav"
    write_wav(target, torch.zeros(10), 8000)
    link = tmp_path / "link.wav"
    link.symlink_to(target)
    write_wav(link, torch.full((20,), 0.5), 8000)
    assert link.is_symlink() and read_wav(target)[0].shape == (20,)


def test_load_signal_expands_a_home_path_given_as_a_string(tmp_path, monkeypatch):
    # read_wav and a Path took '~/a.wav'; the string was looked up unexpanded and refused as
    # a misspelt source name (also through wavenet.py --wav '~/a.wav')
    monkeypatch.setenv("HOME", str(tmp_path))
    audio.write_wav(tmp_path / "a.wav", torch.linspace(-0.5, 0.5, 800), audio.DEFAULT_RATE)
    signal = audio.load_signal("~/a.wav")
    assert signal.samples.shape == (800,)
