"""One-dimensional signals for autoregressive models: mu-law levels, WAV files, speech, splits.

A signal is a float tensor ``[num_samples]`` in [-1, 1] at a sample rate in Hz. Models see it
as 8-bit mu-law levels (ITU-T G.711 [1], used by WaveNet [2]): with ``mu = 255``::

    F(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu),   level = round((F(x) + 1) / 2 * mu)

so quiet samples get finer steps than loud ones. Decoding inverts ``F`` at the level's centre;
the round trip errs by at most ``(1 + mu |x|) ((1 + mu)^(1/mu) - 1) / mu`` (about 8.6e-5 at
``x = 0`` and 0.022 at ``|x| = 1``), half a level step mapped through the slope of ``F^-1``.

Sources, as chosen by :func:`load_signal`: a user WAV file, speech synthesized offline by
the Debian package ``espeak-ng``, or a seeded synthetic voice-like signal
(:func:`synthetic_signal`) when neither is available. WAV files are read with the standard
library's :mod:`wave` (8, 16, 24 or 32-bit integer PCM, plain or WAVE_FORMAT_EXTENSIBLE) and
written as 16-bit PCM mono.

References:
    [1] ITU-T Recommendation G.711 (1988), Pulse code modulation of voice frequencies.
    [2] van den Oord et al. (2016), WaveNet: A Generative Model for Raw Audio, arXiv:1609.03499.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly

from .checks import (
    as_int,
    as_number,
    as_path,
    atomic_file,
    check_levels,
    check_memory,
    check_not_special,
    check_values,
    physical_memory,
)

MU = 255
NUM_LEVELS = MU + 1
DEFAULT_RATE = 8000
MIN_RATE = 20  # the lowest rate of generated signals (synthetic or speech), in Hz
DEFAULT_TEXT = (
    "A generative model of raw audio predicts every sample from the ones before it. "
    "Dilated convolutions let it hear a long stretch of the past at a small cost. "
    "The north wind and the sun were disputing which was the stronger, when a traveler "
    "came along wrapped in a warm cloak. They agreed that the one who first succeeded in "
    "making the traveler take his cloak off should be considered stronger than the other. "
    "Then the north wind blew as hard as he could, but the more he blew the more closely "
    "did the traveler fold his cloak around him; and at last the north wind gave up the "
    "attempt. Then the sun shined out warmly, and immediately the traveler took off his "
    "cloak. And so the north wind was obliged to confess that the sun was the stronger of "
    "the two."
)
_PCM_SCALE = {1: 128.0, 2: 32768.0, 3: 8388608.0, 4: 2147483648.0}  # full scale per width
_PCM_DTYPE = {1: np.uint8, 2: "<i2", 4: "<i4"}
WAVE_FORMAT_PCM, WAVE_FORMAT_EXTENSIBLE = 0x0001, 0xFFFE
# an EXTENSIBLE header's sub-format: the format tag in its first two bytes, then this GUID tail
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_FORMAT_NAMES = {0x0002: "Microsoft ADPCM", 0x0003: "IEEE floating point", 0x0006: "A-law",
                 0x0007: "mu-law", 0x0011: "IMA ADPCM", 0x0055: "MPEG Layer 3"}
# The WAV header stores the rate and the bytes per second (2 * rate for 16-bit mono) and the
# data size plus 36 in unsigned 32-bit fields.
MAX_WAV_RATE = (2**32 - 1) // 2
MAX_WAV_SAMPLES = (2**32 - 1 - 36) // 2


def mu_law_encode(x: torch.Tensor) -> torch.Tensor:
    """Float samples ``x: [...]`` in [-1, 1] -> int64 levels ``[...]`` in 0..255."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    check_values(x, "x", -1, 1)
    companded = torch.sign(x) * torch.log1p(MU * x.abs()) / math.log1p(MU)
    return torch.round((companded + 1) / 2 * MU).long()


def mu_law_decode(levels: torch.Tensor) -> torch.Tensor:
    """Integer levels ``[...]`` in 0..255 -> float32 samples ``[...]`` in [-1, 1]."""
    check_levels(levels, "levels", NUM_LEVELS)
    companded = 2 * levels.float() / MU - 1
    return torch.sign(companded) * torch.expm1(companded.abs() * math.log1p(MU)) / MU


def resample(signal: torch.Tensor, rate: int, target_rate: int) -> torch.Tensor:
    """Polyphase resampling (:func:`scipy.signal.resample_poly`) of ``signal: [num_samples]``.

    Returns ``[ceil(num_samples * target_rate / rate)]`` float32, clipped to [-1, 1] (the
    anti-aliasing filter can overshoot full-scale peaks). Raises ``TypeError``/``ValueError``
    naming ``signal`` unless it is a finite floating-point tensor ``[num_samples]``, and
    ``ValueError`` naming ``target_rate`` when the result and the filter would not fit in
    this machine's memory.
    """
    _check_signal(signal)
    rate, target_rate = as_int(rate, "rate"), as_int(target_rate, "target_rate")
    if rate == target_rate:
        return signal.float().clamp(-1, 1)
    _check_resample_memory(signal.shape[0], rate, target_rate, "target_rate")
    g = math.gcd(rate, target_rate)
    out = resample_poly(signal.detach().cpu().double().numpy(), target_rate // g, rate // g)
    return torch.from_numpy(np.clip(out, -1.0, 1.0)).float()


def _check_signal(signal) -> None:
    """``TypeError``/``ValueError`` naming ``signal`` unless it is a floating-point tensor
    ``[num_samples]`` without NaN or infinite samples."""
    if not torch.is_tensor(signal) or not signal.is_floating_point():
        raise TypeError(f"signal must be a floating-point tensor [num_samples], got "
                        f"{getattr(signal, 'dtype', type(signal).__name__)}")
    if signal.dim() != 1:
        raise ValueError(f"signal must have shape [num_samples], got {list(signal.shape)}")
    check_values(signal, "signal")


def _check_resample_memory(num_samples: int, rate: int, target_rate: int, name: str) -> None:
    """``ValueError`` naming ``name`` (the target rate) when :func:`resample` would need more
    than this machine's physical memory: ``resample_poly``'s filter of about
    ``20 max(up, down) + 1`` float64 taps, which scipy's design holds about six times over
    (a corrupt header's rate of 2**31 Hz peaked at 23.5 GB for a 4 KB file, counted once),
    and the result of ``ceil(n up / down)`` samples, held three times (float64, clipped,
    float32 counted as float64)."""
    g = math.gcd(rate, target_rate)
    up, down = target_rate // g, rate // g
    taps = 20 * max(up, down) + 1
    out = -(-num_samples * up // down)
    need = 8 * (6 * taps + 3 * out)
    total = physical_memory()
    if total is not None and need > total:
        raise ValueError(
            f"{name}={target_rate}: resampling {num_samples} samples from {rate} Hz to "
            f"{target_rate} Hz makes {out:,} samples with a {taps:,}-tap filter: about "
            f"{need:,} bytes, more than the {total:,} bytes of this machine's physical "
            f"memory; pick a lower {name}")


def write_wav(path: str | Path, signal: torch.Tensor, rate: int) -> None:
    """Write ``signal: [num_samples]`` (finite floats, clipped to [-1, 1]) as 16-bit PCM mono.

    ``rate`` is a positive integer up to ``MAX_WAV_RATE`` (2**31 - 1, since the header holds
    ``2 * rate`` bytes per second in 32 bits) and ``num_samples`` at most ``MAX_WAV_SAMPLES``.
    Every argument is checked before anything is opened, and the file is written atomically:
    to a temporary file in the same folder, renamed over ``path`` only when complete, so a
    failure leaves an existing file at ``path`` as it was. The file gets the mode ``open``
    would give it (``0o666`` less the umask).

    Raises:
        TypeError: ``signal`` is not a floating-point tensor, or ``path`` is not a str or an
            ``os.PathLike`` (bytes, an int).
        ValueError: a wrong shape, NaN or infinite samples (counted), a ``rate`` out of range,
            or a NUL byte in ``path``.
    """
    path = as_path(path)
    _check_signal(signal)
    if signal.shape[0] > MAX_WAV_SAMPLES:
        raise ValueError(f"signal has {signal.shape[0]} samples; a WAV file holds at most "
                         f"{MAX_WAV_SAMPLES} 16-bit samples")
    rate = as_int(rate, "rate")
    if rate > MAX_WAV_RATE:
        raise ValueError(f"rate must be at most {MAX_WAV_RATE} (the WAV header holds 2 * rate "
                         f"bytes per second in 32 bits), got {rate}")
    samples = signal.detach().cpu().double()
    pcm = np.round(np.clip(samples.numpy(), -1, 1) * 32767).astype("<i2")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; pass a file name")
    check_not_special(path, "write")
    with atomic_file(path) as file, wave.open(file, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def _find_chunk(path: Path, name: bytes) -> tuple[int, int] | None:
    """The byte offset of the body of ``path``'s first RIFF chunk called ``name`` and the size
    it declares, or None where none is found (the :mod:`wave` reader then names what is wrong
    with the file)."""
    with path.open("rb") as f:
        if f.read(12)[8:12] != b"WAVE":
            return None
        while len(header := f.read(8)) == 8:
            size = int.from_bytes(header[4:], "little")
            if header[:4] == name:
                return f.tell(), size
            f.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to even sizes
    return None


def _data_chunk_bytes(path: Path) -> tuple[int, int] | None:
    """The size the RIFF ``data`` chunk of ``path`` declares and the number of bytes of the
    file after that chunk's header, or None where none is found."""
    found = _find_chunk(path, b"data")
    return None if found is None else (found[1], path.stat().st_size - found[0])


def _unpadded_chunk(path: Path) -> str | None:
    """Where the RIFF chunks of ``path`` lose their alignment: "the 'junk' chunk of 3 bytes at
    byte 36 lacks the pad byte ..." for the first odd-sized chunk not followed by its pad
    byte (the next chunk's name starts right after it), None where none is found."""
    def is_name(tag: bytes) -> bool:
        return len(tag) == 4 and all(32 <= c < 127 for c in tag)

    with path.open("rb") as f:
        if f.read(12)[8:12] != b"WAVE":
            return None
        while len(header := f.read(8)) == 8:
            start, size = f.tell() - 8, int.from_bytes(header[4:], "little")
            if header[:4] == b"data":
                return None
            f.seek(start + 8 + size)
            after = f.read(5)
            if size % 2 and not is_name(after[1:5]) and is_name(after[:4]):
                name = header[:4].decode("ascii", "replace")
                return (f"its {name!r} chunk of {size} bytes at byte {start} has an odd size "
                        "but no pad byte after it (RIFF pads chunks to even sizes), so the "
                        "chunks after it are misaligned")
            f.seek(start + 8 + size + size % 2)
    return None


def _format_tag(path: Path) -> tuple[int, int, int | None] | None:
    """Where the ``fmt `` chunk of ``path`` keeps its format tag (a byte offset), the tag, and
    the tag of its sub-format when the tag is WAVE_FORMAT_EXTENSIBLE (None without one), or
    None where no ``fmt `` chunk is found (the :mod:`wave` reader then names the problem)."""
    found = _find_chunk(path, b"fmt ")
    if found is None:
        return None
    start, size = found
    with path.open("rb") as f:
        f.seek(start)
        body = f.read(min(size, 40))
    if len(body) < 2:
        return None
    tag, sub = int.from_bytes(body[:2], "little"), None
    if tag == WAVE_FORMAT_EXTENSIBLE:
        # the sub-format GUID's tail is fixed for formats that have a tag; -1 for another
        registered = len(body) == 40 and body[26:40] == _GUID_TAIL
        sub = int.from_bytes(body[24:26], "little") if registered else -1
    return start, tag, sub


def _pcm_source(path: Path) -> str | io.BytesIO:
    """What :func:`wave.open` reads for ``path``: the path itself, or for a
    WAVE_FORMAT_EXTENSIBLE file with the PCM sub-format (which :mod:`wave` before Python 3.12
    does not read) its bytes with the plain PCM format tag. ``ValueError`` naming the format
    and a conversion command for anything else than integer PCM (IEEE float, A-law, ...)."""
    found = _format_tag(path)
    if found is None or found[1] == WAVE_FORMAT_PCM:
        return str(path)
    offset, tag, sub = found
    if tag == WAVE_FORMAT_EXTENSIBLE and sub == WAVE_FORMAT_PCM:
        data = bytearray(path.read_bytes())
        data[offset:offset + 2] = WAVE_FORMAT_PCM.to_bytes(2, "little")
        return io.BytesIO(bytes(data))
    code = tag if sub is None else sub
    name = ("an unknown sub-format" if code == -1 else
            f"format {code:#06x} ({_FORMAT_NAMES.get(code, 'not integer PCM')})")
    where = " in a WAVE_FORMAT_EXTENSIBLE header" if sub is not None else ""
    raise ValueError(f"{path} holds {name}{where}; only integer PCM WAV files are read: "
                     "convert it, e.g. sox in.wav -b 16 -e signed-integer out.wav, or "
                     "ffmpeg -i in.wav -c:a pcm_s16le out.wav")


def _pcm_samples(frames: bytes, width: int) -> np.ndarray:
    """The integer PCM samples of ``frames`` (little-endian, ``width`` bytes each) as float64,
    centred on 0 (8-bit WAV is unsigned, silence at 128; 24-bit is a 3-byte signed int)."""
    if width == 3:
        b = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return np.where(value >= 1 << 23, value - (1 << 24), value).astype(np.float64)
    pcm = np.frombuffer(frames, dtype=_PCM_DTYPE[width]).astype(np.float64)
    return pcm - 128 if width == 1 else pcm


def read_wav(path: str | Path, rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Read an integer-PCM WAV file (8, 16, 24 or 32 bit, plain or WAVE_FORMAT_EXTENSIBLE with
    the PCM sub-format; channels are averaged to mono).

    Args:
        rate: resample to this rate in Hz; None keeps the file's rate.

    Returns:
        ``signal: [num_samples]`` float32 in [-1, 1] and its rate in Hz.

    Raises:
        TypeError: ``path`` is not a str or an ``os.PathLike`` (bytes, an int).
        FileNotFoundError: no file at ``path``.
        IsADirectoryError: ``path`` is a folder.
        ValueError: the file is not a readable PCM WAV file (naming the chunk without its pad
            byte where an odd-sized chunk misaligns the rest), holds another format than
            integer PCM (IEEE float, A-law, ...: named, with a conversion command), fewer
            samples than its header gives (truncated), a data chunk ending in a partial frame
            or one that declares 0 bytes but has bytes after it (a streaming writer's unset
            size), or resampling it to ``rate`` would need more than this machine's memory
            (checked before reading the samples); also a NUL byte in ``path``, or a ``path``
            that is a named pipe, a device or a socket (not a regular file: read before, it
            was "no WAV file").
    """
    path = as_path(path)
    if rate is not None:
        rate = as_int(rate, "rate")
    if path.is_dir():
        raise IsADirectoryError(f"cannot read {path} as a WAV file: it is a folder; pass a "
                                "file's path")
    check_not_special(path, "read")
    if not path.is_file():
        raise FileNotFoundError(f"no WAV file at {path}")
    source = _pcm_source(path)
    try:
        with wave.open(source, "rb") as f:
            channels, width, file_rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            if file_rate < 1:
                raise ValueError(f"{path}: the header gives a sample rate of {file_rate} Hz")
            if rate is not None and rate != file_rate and width in _PCM_SCALE:
                # the frames there are, not more than the file holds whatever its header says
                frames = min(f.getnframes(), path.stat().st_size // (channels * width))
                _check_resample_memory(frames, file_rate, rate, "rate")
            expected = f.getnframes()
            frames = f.readframes(expected)
    except (wave.Error, EOFError, RuntimeError) as error:
        # an EOFError says nothing: say where it ended; a bare RuntimeError (wave's seek past
        # a chunk's end) comes from chunks misaligned by an odd-sized one without its pad byte
        size = path.stat().st_size
        reason = str(error) or (
            "empty file" if not size else
            _unpadded_chunk(path) or "its chunks are misaligned (a chunk's size points "
            "beyond the next chunk)" if isinstance(error, RuntimeError) else
            f"truncated header: the file ends after {size} bytes")
        raise ValueError(f"{path} is not a readable PCM WAV file: {reason}") from error
    if width not in _PCM_SCALE:
        raise ValueError(f"{path}: unsupported sample width of {width} bytes (need 1, 2, 3 or "
                         "4): convert it, e.g. sox in.wav -b 16 out.wav")
    if len(frames) != expected * channels * width:
        raise ValueError(f"{path} is truncated: its header gives {expected} frames of "
                         f"{channels * width} bytes ({expected * channels * width} bytes of "
                         f"samples), the file holds {len(frames)} bytes of them")
    declared, following = _data_chunk_bytes(path) or (None, 0)
    if declared == 0 and following:
        # a streaming writer that never went back to fill the size in: wave reads nothing
        raise ValueError(f"{path}: its data chunk declares a size of 0 bytes but {following} "
                         "bytes follow it (a streaming writer that left the size unset?); "
                         "the samples are not read from a size of 0: rewrite the file with "
                         "its data chunk size, e.g. sox in.wav out.wav")
    if declared is not None and declared % (channels * width):
        # wave reads the whole frames and drops the rest without a word
        raise ValueError(f"{path} is corrupt: its data chunk declares {declared} bytes, not a "
                         f"whole number of frames of {channels * width} bytes "
                         f"({channels} channel(s) of {width} byte(s))")
    samples = _pcm_samples(frames, width).reshape(-1, channels).mean(1)
    signal = torch.from_numpy(samples / _PCM_SCALE[width]).float()  # [num_samples]
    if rate is not None:
        return resample(signal, file_rate, rate), rate
    return signal, file_rate


def speech_signal(text: str, path: str | Path, rate: int = DEFAULT_RATE,
                  voice: str = "en") -> torch.Tensor:
    """Synthesize ``text`` offline with ``espeak-ng``, keep the WAV at ``path``.

    Returns:
        ``[num_samples]`` float32 in [-1, 1] at ``rate`` Hz.

    Raises:
        TypeError/ValueError: ``text`` is not a string holding a word, ``rate`` is not an
            integer >= ``MIN_RATE`` (as for :func:`synthetic_signal`).
        IsADirectoryError: ``path`` is a folder.
        RuntimeError: ``espeak-ng`` is not installed or fails.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"text must hold at least one word to speak, got {text!r}")
    rate = as_int(rate, "rate", minimum=MIN_RATE)
    path = as_path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path {path} is a folder; pass the WAV file to write")
    program = shutil.which("espeak-ng")
    if program is None:
        raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    # the text on stdin: as an argument, a text that starts with '-' was read as an option
    result = subprocess.run([program, "-v", voice, "-w", str(path), "--stdin"], input=text,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"espeak-ng failed ({result.returncode}): {result.stderr.strip()}")
    return read_wav(path, rate)[0]


def synthetic_signal(seconds: float = 4.0, rate: int = DEFAULT_RATE,
                     seed: int = 0) -> torch.Tensor:
    """A seeded voice-like signal: harmonic "syllables" with gliding pitch, plus a little noise.

    Each syllable of 0.15-0.4 s has a fundamental gliding linearly between two random
    pitches in 90-220 Hz, eight harmonics with amplitudes ``1/k`` under a random spectral tilt,
    and a raised-cosine envelope; 0.05-0.15 s pauses separate syllables. Gaussian noise of
    standard deviation 0.005 is added and the result scaled to a peak of 0.9.

    Args:
        seconds: length, > 0 and at least one sample long.
        rate: samples per second, >= ``MIN_RATE`` = 20 (so every pause lasts a sample).
        seed: a non-negative integer.

    Returns:
        ``[round(seconds * rate)]`` float32 in [-1, 1].
    """
    seconds = as_number(seconds, "seconds", 0, low_open=True)
    rate = as_int(rate, "rate", minimum=MIN_RATE)
    rng = np.random.default_rng(as_int(seed, "seed", minimum=0))
    num_samples = round(seconds * rate)
    if num_samples < 1:
        raise ValueError(f"seconds={seconds} at rate={rate} gives no samples")
    check_memory(num_samples, torch.float64,
                 f"seconds={seconds} at rate={rate}: the signal's {num_samples:,} samples")
    signal = np.zeros(num_samples)
    start = 0
    while start < num_samples:
        length = int(rng.uniform(0.15, 0.4) * rate)
        t = np.arange(min(length, num_samples - start)) / rate
        f0, f1 = rng.uniform(90, 220, size=2)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * length / rate))  # linear chirp
        tilt = rng.uniform(0.5, 1.5)
        voiced = sum(np.sin(k * phase) / k**tilt for k in range(1, 9))
        envelope = 0.5 - 0.5 * np.cos(2 * np.pi * t * rate / length)
        signal[start:start + len(t)] = rng.uniform(0.4, 1.0) * envelope * voiced
        start += length + int(rng.uniform(0.05, 0.15) * rate)
    signal += 0.005 * rng.standard_normal(num_samples)
    return torch.from_numpy(0.9 * signal / np.abs(signal).max()).float()


@dataclass(frozen=True)
class Signal:
    """``samples: [num_samples]`` float32 in [-1, 1] at ``rate`` Hz, and where they came from.

    ``source`` is ``"wav:<path>"``, ``"espeak-ng"`` or ``"synthetic"``.
    """

    samples: torch.Tensor
    rate: int
    source: str

    def __post_init__(self):
        """Refuse, by name, ``samples`` that are not a 1-D floating tensor and a ``rate`` that
        is not a positive integer (``seconds`` divided by a rate of 0)."""
        if (not torch.is_tensor(self.samples) or not self.samples.is_floating_point()
                or self.samples.dim() != 1):
            raise ValueError(f"samples must be a floating tensor [num_samples], got "
                             f"{getattr(self.samples, 'dtype', type(self.samples).__name__)} "
                             f"{list(getattr(self.samples, 'shape', []))}")
        object.__setattr__(self, "rate", as_int(self.rate, "rate"))

    @property
    def seconds(self) -> float:
        """The signal's length in seconds."""
        return self.samples.shape[0] / self.rate


def load_signal(source: str | Path | None = None, *, rate: int = DEFAULT_RATE,
                text: str = DEFAULT_TEXT, seconds: float = 4.0, seed: int = 0) -> Signal:
    """Load a signal from a WAV file, espeak-ng speech, or the synthetic generator.

    Args:
        source: a WAV path (a :class:`~pathlib.Path` always means a file); ``"speech"``
            (espeak-ng, error if missing); ``"synthetic"``; or None / ``"auto"``: espeak-ng
            speech of ``text`` when ``espeak-ng`` is installed, else synthetic.
        rate: sample rate of the result in Hz (files and speech are resampled); at least
            ``MIN_RATE`` for speech and synthetic signals.
        seconds, seed: length and seed of the synthetic signal.

    Returns:
        a :class:`Signal`; ``source`` says which one was used.

    Raises:
        TypeError: ``source`` is not None, a str or an ``os.PathLike`` (bytes, an int).
    """
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be None, 'auto', 'speech', 'synthetic' or the path of a "
                        f"WAV file (a str or a path), got {type(source).__name__}")
    if source in (None, "auto"):
        source = "speech" if shutil.which("espeak-ng") else "synthetic"
    if source == "synthetic":
        return Signal(synthetic_signal(seconds, rate, seed), rate, "synthetic")
    if source == "speech":
        with tempfile.TemporaryDirectory() as tmp:
            return Signal(speech_signal(text, Path(tmp) / "speech.wav", rate), rate, "espeak-ng")
    if isinstance(source, str) and not Path(source).expanduser().exists():  # misspelt, likely
        raise FileNotFoundError(f"no WAV file at {source!r}; source must be 'synthetic', "
                                f"'speech', 'auto', None or the path of a WAV file")
    samples, _ = read_wav(as_path(source, "source"), rate)
    return Signal(samples, rate, f"wav:{source}")


def split_segments(levels: torch.Tensor, segment_length: int,
                   test_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``levels: [num_samples]`` into consecutive segments; the last ones are the test set.

    The trailing ``num_samples % segment_length`` samples are dropped. The test set is the
    last ``max(1, round(test_fraction * num_segments))`` segments in time order, so it is
    audio the model never heard, not interleaved with training audio.

    Returns:
        ``train: [num_train, segment_length]`` and ``test: [num_test, segment_length]``.
    """
    if not torch.is_tensor(levels):
        raise TypeError(f"levels must be a tensor [num_samples], got {type(levels).__name__}")
    if levels.dim() != 1:
        raise ValueError(f"levels must have shape [num_samples], got {list(levels.shape)}")
    segment_length = as_int(segment_length, "segment_length")
    test_fraction = as_number(test_fraction, "test_fraction", 0, 1, high_open=True)
    num_segments = levels.shape[0] // segment_length
    if num_segments < 2:
        raise ValueError(f"need at least two segments of {segment_length} samples, got "
                         f"{levels.shape[0]} samples")
    num_test = min(max(1, round(test_fraction * num_segments)), num_segments - 1)
    segments = levels[: num_segments * segment_length].reshape(num_segments, segment_length)
    return segments[:-num_test], segments[-num_test:]


def histogram_bits_per_sample(train: torch.Tensor, test: torch.Tensor,
                              num_levels: int = NUM_LEVELS, pseudocount: float = 1.0) -> float:
    """Test bits per sample of the i.i.d. baseline: the smoothed level histogram of ``train``.

    ``p(k) = (count_k + pseudocount) / (n + num_levels * pseudocount)`` from ``train: [...]``
    levels, scored on ``test: [...]`` levels (at least one) as ``-mean log2 p(test)``. Both
    must be integer tensors with levels in ``0..num_levels - 1`` (``TypeError``/``ValueError``
    naming the argument otherwise).
    """
    num_levels = as_int(num_levels, "num_levels")
    pseudocount = as_number(pseudocount, "pseudocount", 0, low_open=True)
    check_levels(train, "train", num_levels)
    check_levels(test, "test", num_levels, nonempty=True)
    counts = torch.bincount(train.reshape(-1), minlength=num_levels).double() + pseudocount
    log2_p = (counts / counts.sum()).log2()
    return float(-log2_p[test.reshape(-1)].mean())
