"""Audio decoding and the MFCC windows fed to the audio encoder, one per video frame.

The features follow ATVGNet's pre-processing as used by the paper's release: python_speech_features'
``mfcc`` with its defaults (25 ms window, 10 ms hop, 512-point FFT, 26 mel filters spanning
0 to 8 kHz, 13 cepstra, pre-emphasis 0.97, lifter 22, c0 replaced by the log frame energy),
computed on the 16 kHz waveform padded with 1965 zeros on each side, c0 dropped, then one 28x12
window (7 video frames x 4 MFCC rows) per video frame. With that padding a clip of T frames
(T * 640 samples) gives 4T + 24 MFCC rows and exactly T windows.

The MFCC is assembled from numpy/librosa/scipy pieces (framing, power spectrum, HTK mel scale,
filterbank, log, orthonormal DCT-II, lifter); python_speech_features itself is not a dependency.
Decoding (:func:`load_audio`, the project's one audio decoder) goes through the ffmpeg binary of
imageio-ffmpeg, which reads every container and rate; :func:`load_speech` turns a user's file
into model input. Imports no JAX.
"""

import os
import subprocess

import imageio_ffmpeg
import librosa
import numpy as np
import scipy.fft

from data_prep import schema
from data_prep.errors import UserError

PAD_SAMPLES = 1965  # zeros added on each side by the release; yields one window per frame
WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
NFFT = 512
NUM_FILTERS = 26
NUM_CEPSTRA = 13
PREEMPHASIS = 0.97
LIFTER = 22
ROWS_PER_FRAME = 4  # 40 ms of video frame / 10 ms MFCC hop


MIN_FRAMES = 2  # Shortest speech input: the identity frame and one generated frame.
DECODE_TIMEOUT_SECONDS = 600  # ffmpeg decodes an hour of audio in well under a minute.


class AudioError(UserError):
  """An audio input cannot be used; the message is one line naming the file.

  Attributes:
    path: the file concerned.
    reason: what went wrong, in words (without the path).
  """

  def __init__(self, path: str, reason: str):
    super().__init__(f"audio {path}: {reason}")
    self.path = str(path)
    self.reason = reason


def _last_error_line(stderr: str) -> str:
  lines = [line.strip() for line in stderr.splitlines() if line.strip()]
  return lines[-1][-300:] if lines else "ffmpeg failed without a message"


def load_audio(path: str, sample_rate: int = schema.SAMPLE_RATE, dtype=np.int16,
               timeout: float = DECODE_TIMEOUT_SECONDS) -> np.ndarray:
  """Decodes the first audio stream of any file ffmpeg reads, resampled and mixed to mono.

  This is the one audio decoder of the project (pre-processing and user inputs alike).
  ffmpeg reads every container and codec (wav, flac, mp3, ogg, m4a, the audio track of
  mp4/mpg/mov videos) at any rate and channel count; the downmix is requested in an integer
  sample format, for which ffmpeg normalises its mixing matrix (the channels are averaged;
  with float output it would sum them with weights 1/sqrt(2)).

  Args:
    path: an audio file, or a video file with an audio track.
    sample_rate: output rate in Hz.
    dtype: ``np.int16`` (as the shards are built: ffmpeg's s16 output) or ``np.float32``
      (ffmpeg's s32 output scaled to [-1, 1]).
    timeout: seconds before a stuck ffmpeg (e.g. a path that is a pipe nobody writes) is
      stopped.

  Returns:
    [S] waveform of ``dtype``. Silence is valid and returned as zeros.

  Raises:
    AudioError: missing, a folder, empty, not decodable, no audio stream, no samples, or
      ffmpeg ran past ``timeout``.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(path, "no such file")
  if os.path.isdir(path):
    raise AudioError(path, "is a folder, not an audio file")
  if os.path.isfile(path) and os.path.getsize(path) == 0:
    raise AudioError(path, "file is empty")
  dtype = np.dtype(dtype)
  if dtype not in (np.dtype(np.int16), np.dtype(np.float32)):
    raise ValueError(f"dtype must be int16 or float32, got {dtype}")
  codec = "s16le" if dtype == np.int16 else "s32le"
  cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-i", path,
         "-map", "0:a:0", "-vn", "-sn", "-ac", "1", "-ar", str(int(sample_rate)),
         "-f", codec, "-acodec", "pcm_" + codec, "-"]
  try:
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=timeout)
  except subprocess.TimeoutExpired as e:
    raise AudioError(path, f"ffmpeg did not finish decoding within {timeout:g} s") from e
  stderr = proc.stderr.decode(errors="replace")
  if proc.returncode != 0:
    if ("matches no streams" in stderr or "does not contain any stream" in stderr
        or ("Input #0" in stderr and "Audio:" not in stderr)):
      raise AudioError(path, "has no audio stream")
    raise AudioError(path, f"cannot decode audio ({_last_error_line(stderr)})")
  if dtype == np.int16:
    samples = np.frombuffer(proc.stdout, "<i2", count=len(proc.stdout) // 2).astype(np.int16)
  else:
    samples = np.frombuffer(proc.stdout, "<i4", count=len(proc.stdout) // 4)
    samples = (samples.astype(np.float64) / 2.0**31).astype(np.float32)
  if samples.size == 0:
    raise AudioError(path, "the audio stream has no samples")
  return samples


def speech_features(samples: np.ndarray, name: str = "audio",
                    sample_rate: int = schema.SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
  """Speech samples as model input: whole video frames of audio and their MFCC windows.

  The video gets ``round(duration * 25)`` frames (half up); the waveform is zero-padded or
  trimmed by less than one frame to exactly that length.

  Args:
    samples: float [S] or [S, C] (channels averaged) in [-1, 1], or int16.
    name: how errors name the input (e.g. the file).
    sample_rate: rate of ``samples``; other rates than 16 kHz are resampled (soxr).

  Returns:
    (audio float32 [T * 640] in [-1, 1] at 16 kHz, mfcc float32 [T, 28, 12]).

  Raises:
    AudioError: not a 1-D or 2-D numeric array, not finite, or shorter than ``MIN_FRAMES``
      video frames.
  """
  samples = np.asarray(samples)
  if samples.ndim not in (1, 2) or not (np.issubdtype(samples.dtype, np.floating)
                                        or samples.dtype == np.int16):
    raise AudioError(name, f"expected float or int16 samples [S] or [S, C], got "
                     f"{samples.dtype} {list(samples.shape)}")
  if samples.dtype == np.int16:
    samples = samples.astype(np.float32) / 32768.0
  if samples.ndim == 2:
    samples = samples.mean(axis=1)
  samples = samples.astype(np.float32)
  if not np.isfinite(samples).all():
    raise AudioError(name, "samples are not all finite")
  if sample_rate != schema.SAMPLE_RATE and samples.size:
    samples = librosa.resample(samples, orig_sr=sample_rate, target_sr=schema.SAMPLE_RATE,
                               res_type="soxr_hq").astype(np.float32)
  per_frame = schema.SAMPLES_PER_FRAME
  num_frames = (len(samples) + per_frame // 2) // per_frame  # Half up.
  if num_frames < MIN_FRAMES:
    raise AudioError(name, f"{len(samples) / schema.SAMPLE_RATE * 1000:.0f} ms is too short "
                     f"(at least {MIN_FRAMES} video frames of {1000 // schema.FPS} ms)")
  samples, _ = fit_to_frames(samples, num_frames)
  return samples, mfcc_windows(samples, num_frames)


def load_speech(path: str, timeout: float = DECODE_TIMEOUT_SECONDS
                ) -> tuple[np.ndarray, np.ndarray]:
  """:func:`load_audio` (float32, 16 kHz) then :func:`speech_features`.

  Returns:
    (audio float32 [T * 640] in [-1, 1], mfcc float32 [T, 28, 12]).

  Raises:
    AudioError: one line naming the file and the problem.
  """
  samples = load_audio(path, schema.SAMPLE_RATE, np.float32, timeout)
  return speech_features(samples, name=path)


def fit_to_frames(audio: np.ndarray, num_frames: int) -> tuple[np.ndarray, int]:
  """Zero-pads or trims ``audio`` [S] to exactly ``num_frames * 640`` samples.

  Returns:
    (audio [num_frames * 640], change in samples: > 0 padded, < 0 trimmed).
  """
  target = num_frames * schema.SAMPLES_PER_FRAME
  change = target - len(audio)
  if change > 0:
    audio = np.concatenate([audio, np.zeros(change, audio.dtype)])
  return audio[:target], change


def mel_filterbank(sample_rate: int, nfft: int = NFFT, num_filters: int = NUM_FILTERS,
                   low_hz: float = 0.0, high_hz: float | None = None,
                   warp: float = 1.0) -> np.ndarray:
  """Triangular filters on FFT bins, python_speech_features style (HTK mel, floored bins).

  ``warp`` != 1 moves the filters' edge frequencies by :func:`vtlp_warp` (vocal tract length
  perturbation, a training augmentation; 1 gives the paper's features).

  Returns:
    float64 [num_filters, nfft // 2 + 1].
  """
  high_hz = sample_rate / 2 if high_hz is None else high_hz
  mel_points = np.linspace(librosa.hz_to_mel(low_hz, htk=True),
                           librosa.hz_to_mel(high_hz, htk=True), num_filters + 2)
  hz_points = librosa.mel_to_hz(mel_points, htk=True)
  if warp != 1.0:
    hz_points = vtlp_warp(hz_points, warp, sample_rate / 2)
  bins = np.floor((nfft + 1) * hz_points / sample_rate)
  bins = bins.astype(int)
  bank = np.zeros((num_filters, nfft // 2 + 1))
  k = np.arange(nfft // 2 + 1)
  for j in range(num_filters):
    lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
    rising = (k >= lo) & (k < mid)
    falling = (k >= mid) & (k < hi)
    bank[j, rising] = (k[rising] - lo) / (mid - lo)
    bank[j, falling] = (hi - k[falling]) / (hi - mid)
  return bank


def vtlp_warp(hz: np.ndarray, alpha: float, nyquist: float) -> np.ndarray:
  """Jaitly and Hinton's (2013) vocal tract length warp of frequencies ``hz``.

  Frequencies up to ``VTLP_BOUNDARY_HZ * min(alpha, 1) / alpha`` are scaled by ``alpha``;
  above, a straight line joins that point to the Nyquist frequency, which stays fixed.
  """
  hz = np.asarray(hz, np.float64)
  boundary = VTLP_BOUNDARY_HZ * min(alpha, 1.0) / alpha
  above = nyquist - (nyquist - alpha * boundary) / (nyquist - boundary) * (nyquist - hz)
  return np.where(hz <= boundary, alpha * hz, above)


VTLP_BOUNDARY_HZ = 4800.0  # Jaitly and Hinton's F_hi for 16 kHz audio.


def mfcc(signal: np.ndarray, sample_rate: int = schema.SAMPLE_RATE,
         warp: float = 1.0, band_mask: np.ndarray | None = None) -> np.ndarray:
  """python_speech_features.mfcc with its defaults (see the module docstring).

  Args:
    signal: float [S] waveform (any scale; the release used [-1, 1]).
    sample_rate: Hz.
    warp: the mel filters' vocal tract length warp (:func:`mel_filterbank`); 1 = none.
    band_mask: optional bool [26]: the mel bands whose log energies are replaced by their
      mean over the frames (of each 60 s block; a training augmentation, SpecAugment's
      frequency mask): what they carry over time is removed before the DCT.

  Returns:
    float64 [N, 13]: column 0 is the log frame energy, 1-12 the liftered cepstra.
  """
  signal = np.asarray(signal)
  if signal.dtype != np.float32:  # float32 converts to float64 exactly, block by block below.
    signal = signal.astype(np.float64)
  frame_length = int(round(WINDOW_SECONDS * sample_rate))
  hop = int(round(HOP_SECONDS * sample_rate))
  length = len(signal)
  num_frames = 1 if length <= frame_length else 1 + int(np.ceil((length - frame_length) / hop))
  bank = mel_filterbank(sample_rate, warp=warp).T
  # Frames are independent: blocks of them, each pre-emphasised and framed from its own
  # stretch of the signal, bound the memory (a 30-minute recording would need ~2 GB of
  # float64 copies and FFTs at once). The values equal one pass's up to the FFT's last bits
  # (measured: 9e-14 at most on cepstra of order 1-10; the FFT's SIMD grouping of rows
  # depends on how many it is given).
  blocks = []
  for first in range(0, num_frames, _FRAMES_PER_BLOCK):
    count = min(_FRAMES_PER_BLOCK, num_frames - first)
    start = first * hop
    stop = start + (count - 1) * hop + frame_length  # May run past the end: zeros there.
    segment = np.asarray(signal[start:stop], np.float64)
    head = segment[:1] if start == 0 else segment[:1] - PREEMPHASIS * float(signal[start - 1])
    emphasized = np.concatenate([head, segment[1:] - PREEMPHASIS * segment[:-1]])
    padded = np.concatenate([emphasized, np.zeros(stop - start - len(emphasized))])
    frames = librosa.util.frame(padded, frame_length=frame_length, hop_length=hop, axis=0)
    blocks.append(_cepstra(frames, bank, band_mask))
  return np.concatenate(blocks)


_FRAMES_PER_BLOCK = 6000  # 60 s of 10 ms frames: ~25 MB of spectra.


def _cepstra(frames: np.ndarray, bank: np.ndarray, band_mask: np.ndarray | None = None
             ) -> np.ndarray:
  """``mfcc`` of a block of windowed frames [N, L] with the mel filters [NFFT/2+1, 26] and
  the ``band_mask`` bands held at their mean log energy."""
  power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT
  eps = np.finfo(float).eps
  energy = power.sum(axis=1)
  energy = np.where(energy == 0, eps, energy)  # log(0) on digital silence
  filtered = power @ bank
  filtered = np.where(filtered == 0, eps, filtered)
  log_bands = np.log(filtered)
  if band_mask is not None and np.any(band_mask):
    log_bands[:, band_mask] = log_bands[:, band_mask].mean(axis=0)
  cepstra = scipy.fft.dct(log_bands, type=2, axis=1, norm="ortho")[:, :NUM_CEPSTRA]
  n = np.arange(NUM_CEPSTRA)
  cepstra *= 1 + (LIFTER / 2.0) * np.sin(np.pi * n / LIFTER)
  cepstra[:, 0] = np.log(energy)
  return cepstra


def mfcc_windows(audio: np.ndarray, num_frames: int | None = None,
                 warp: float = 1.0, band_mask: np.ndarray | None = None,
                 energy: bool = False) -> np.ndarray:
  """One centred 28x12 MFCC window per video frame.

  Args:
    audio: int16 or float [S] 16 kHz mono waveform; int16 is scaled to [-1, 1] first (as the
      release's librosa.load did). Should be ``num_frames * 640`` samples long
      (:func:`fit_to_frames`).
    num_frames: T; defaults to ``len(audio) // 640``. Checked against the window count.
    warp: vocal tract length warp of the mel filters (:func:`mfcc`); 1 = none.
    band_mask: mel bands held at their mean (:func:`mfcc`); None = none.
    energy: also the rows' loudness (:func:`relative_log_energy` of c0) as feature 0, before
      the 12 cepstra (``config.model.audio_energy``, beyond the paper).

  Returns:
    float32 [T, 28, 12] ([T, 28, 13] with ``energy``): window t holds MFCC rows 4t .. 4t + 27
    of the padded signal, centred within 5 ms of video frame t's centre.
  """
  audio = np.asarray(audio)
  if audio.dtype == np.int16:  # Exact in float32: 16-bit values over a power of two.
    audio = audio.astype(np.float32) / np.float32(32768.0)
  elif audio.dtype != np.float32:
    audio = audio.astype(np.float64)
  padded = np.pad(audio, PAD_SAMPLES)
  coefficients = mfcc(padded, warp=warp, band_mask=band_mask)
  if energy:
    coefficients[:, 0] = relative_log_energy(coefficients[:, 0])
  else:
    coefficients = coefficients[:, 1:]
  count = coefficients.shape[0] // ROWS_PER_FRAME - (schema.MFCC_WINDOW_ROWS // ROWS_PER_FRAME - 1)
  if num_frames is not None and count != num_frames:
    raise ValueError(f"{len(audio)} samples give {count} MFCC windows, expected {num_frames}; "
                     "fit the audio to the video length first")
  starts = ROWS_PER_FRAME * np.arange(max(count, 0))
  index = starts[:, None] + np.arange(schema.MFCC_WINDOW_ROWS)[None, :]
  return coefficients[index].astype(np.float32)


ENERGY_RANGE_DB = 40.0  # Loudness below the loudest row's minus this is all one silence.


def relative_log_energy(log_energy: np.ndarray) -> np.ndarray:
  """MFCC rows' log frame energies (c0) as loudness relative to the loudest row, floored.

  Natural log units: 0 at the loudest row, down to ``-ENERGY_RANGE_DB`` dB (-9.2) for every
  quieter one. The paper drops c0; a model given it (``config.model.audio_energy``) hears how
  loud each 10 ms is whatever the recording's gain, and silence is one value whether it is a
  synthesizer's digital zeros (c0 = log(eps) = -36) or a microphone's noise floor.
  """
  log_energy = np.asarray(log_energy, np.float64)
  if log_energy.size == 0:
    return log_energy
  floor = -ENERGY_RANGE_DB / 10.0 * np.log(10.0)
  return np.maximum(log_energy - log_energy.max(), floor)


def audio_energy(config) -> bool:
  """A run config's ``model.audio_energy`` (False for configs written before the key)."""
  return bool(config.model.get("audio_energy", False))


def model_windows(samples: np.ndarray, windows: np.ndarray, energy: bool) -> np.ndarray:
  """A clip's stored MFCC windows [T, 28, 12] with, if ``energy``, its rows' loudness
  (:func:`mfcc_windows` with ``energy``) from its waveform ``samples`` (int16 or float [S],
  T * 640 long) as feature 0: [T, 28, 13]. Without ``energy``, ``windows`` as they are."""
  windows = np.asarray(windows, np.float32)
  if not energy:
    return windows
  loudness = mfcc_windows(samples, len(windows), energy=True)[..., :1]
  return np.concatenate([loudness, windows], axis=-1)


AUDIO_NORMS = ("none", "clip")  # Values of ``config.data.audio_norm``.
_MIN_STD = 1e-2  # Floor of a coefficient's spread: silence (all rows equal) stays all zero.


def check_audio_norm(norm: str) -> str:
  """``norm`` if it is one of ``AUDIO_NORMS``; else a UserError naming the config key."""
  if norm not in AUDIO_NORMS:
    raise UserError(f"data.audio_norm={norm!r}: expected one of {AUDIO_NORMS}")
  return norm


def audio_norm(config) -> str:
  """A run config's ``data.audio_norm``, checked ('none' for configs written before the key
  existed)."""
  return check_audio_norm(config.data.get("audio_norm", "none"))


def normalize_windows(windows: np.ndarray, norm: str) -> np.ndarray:
  """A clip's MFCC windows as the model hears them under ``config.data.audio_norm``.

  'none' returns them as they are (the paper's features). 'clip' is per-utterance cepstral
  mean and variance normalisation: every coefficient gets zero mean and unit spread over the
  clip's MFCC rows (each row counted once: the first 4 rows of every window and the last
  window's other 24). A speaker's or a channel's stationary colouring is an offset of the
  cepstra, so the audio encoder hears the speech rather than the voice or the microphone; the
  statistics are the whole clip's (or recording's), the same in training and generation.

  Args:
    windows: float32 [T, 28, F] (``mfcc_windows``, ``model_windows``).
    norm: one of ``AUDIO_NORMS``.

  Returns:
    float32 [T, 28, F].
  """
  windows = np.asarray(windows, np.float32)
  if check_audio_norm(norm) == "none" or len(windows) == 0:
    return windows
  rows = np.concatenate([windows[:, :ROWS_PER_FRAME].reshape(-1, windows.shape[-1]),
                         windows[-1, ROWS_PER_FRAME:]])
  mean = rows.mean(axis=0, dtype=np.float64)
  std = np.maximum(rows.std(axis=0, dtype=np.float64), _MIN_STD)
  return ((windows - mean) / std).astype(np.float32)
