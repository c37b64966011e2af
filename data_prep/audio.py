"""Audio decoding and the MFCC windows fed to the audio encoder, one per video frame.

The features follow ATVGNet's pre-processing as used by the paper's release: python_speech_features'
``mfcc`` with its defaults (25 ms window, 10 ms hop, 512-point FFT, 26 mel filters spanning
0 to 8 kHz, 13 cepstra, pre-emphasis 0.97, lifter 22, c0 replaced by the log frame energy),
computed on the 16 kHz waveform padded with 1965 zeros on each side, c0 dropped, then one 28x12
window (7 video frames x 4 MFCC rows) per video frame. With that padding a clip of T frames
(T * 640 samples) gives 4T + 24 MFCC rows and exactly T windows.

The MFCC is assembled from numpy/librosa/scipy pieces (framing, power spectrum, HTK mel scale,
filterbank, log, orthonormal DCT-II, lifter); python_speech_features itself is not a dependency.
Decoding goes through the ffmpeg binary of imageio-ffmpeg, which reads every container and
rate. Imports no JAX.
"""

import subprocess

import imageio_ffmpeg
import librosa
import numpy as np
import scipy.fft

from data_prep import schema

PAD_SAMPLES = 1965  # zeros added on each side by the release; yields one window per frame
WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
NFFT = 512
NUM_FILTERS = 26
NUM_CEPSTRA = 13
PREEMPHASIS = 0.97
LIFTER = 22
ROWS_PER_FRAME = 4  # 40 ms of video frame / 10 ms MFCC hop


class AudioError(Exception):
  """The audio could not be decoded, or the file has no audio stream."""


def load_audio(path: str, sample_rate: int = schema.SAMPLE_RATE) -> np.ndarray:
  """Decodes the first audio stream of any file ffmpeg reads, resampled and mixed to mono.

  Args:
    path: a .wav, .mp4, .mpg, ... file.
    sample_rate: output rate in Hz.

  Returns:
    int16 [S] waveform.

  Raises:
    AudioError: ffmpeg failed, or the file has no audio stream.
  """
  cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", path,
         "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-"]
  proc = subprocess.run(cmd, capture_output=True, check=False)
  stderr = proc.stderr.decode(errors="replace").strip()
  if proc.returncode != 0:
    if "matches no streams" in stderr or "does not contain any stream" in stderr:
      raise AudioError("no audio stream")
    raise AudioError(f"audio decode failed: {stderr[-300:]}")
  return np.frombuffer(proc.stdout, np.int16).copy()


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


def _frame_signal(signal: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
  """python_speech_features' framesig: zero-pads the tail so the last frame is complete.

  Returns:
    [N, frame_length] with N = 1 + ceil((len - frame_length) / hop) (N = 1 if shorter).
  """
  length = len(signal)
  num_frames = 1 if length <= frame_length else 1 + int(np.ceil((length - frame_length) / hop))
  padded_length = (num_frames - 1) * hop + frame_length
  padded = np.concatenate([signal, np.zeros(padded_length - length, signal.dtype)])
  return librosa.util.frame(padded, frame_length=frame_length, hop_length=hop, axis=0)


def mel_filterbank(sample_rate: int, nfft: int = NFFT, num_filters: int = NUM_FILTERS,
                   low_hz: float = 0.0, high_hz: float | None = None) -> np.ndarray:
  """Triangular filters on FFT bins, python_speech_features style (HTK mel, floored bins).

  Returns:
    float64 [num_filters, nfft // 2 + 1].
  """
  high_hz = sample_rate / 2 if high_hz is None else high_hz
  mel_points = np.linspace(librosa.hz_to_mel(low_hz, htk=True),
                           librosa.hz_to_mel(high_hz, htk=True), num_filters + 2)
  bins = np.floor((nfft + 1) * librosa.mel_to_hz(mel_points, htk=True) / sample_rate)
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


def mfcc(signal: np.ndarray, sample_rate: int = schema.SAMPLE_RATE) -> np.ndarray:
  """python_speech_features.mfcc with its defaults (see the module docstring).

  Args:
    signal: float [S] waveform (any scale; the release used [-1, 1]).
    sample_rate: Hz.

  Returns:
    float64 [N, 13]: column 0 is the log frame energy, 1-12 the liftered cepstra.
  """
  signal = np.asarray(signal, np.float64)
  emphasized = np.append(signal[:1], signal[1:] - PREEMPHASIS * signal[:-1])
  frames = _frame_signal(emphasized, int(round(WINDOW_SECONDS * sample_rate)),
                         int(round(HOP_SECONDS * sample_rate)))  # A strided view.
  bank = mel_filterbank(sample_rate).T
  # Frames are independent: blocks of them bound the spectra's memory (a 30-minute recording
  # would need ~1.5 GB of FFT at once) without changing any value.
  blocks = [_cepstra(frames[i:i + _FRAMES_PER_BLOCK], bank)
            for i in range(0, len(frames), _FRAMES_PER_BLOCK)]
  return np.concatenate(blocks)


_FRAMES_PER_BLOCK = 6000  # 60 s of 10 ms frames: ~25 MB of spectra.


def _cepstra(frames: np.ndarray, bank: np.ndarray) -> np.ndarray:
  """``mfcc`` of a block of windowed frames [N, L] with the mel filters [NFFT/2+1, 26]."""
  power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT
  eps = np.finfo(float).eps
  energy = power.sum(axis=1)
  energy = np.where(energy == 0, eps, energy)  # log(0) on digital silence
  filtered = power @ bank
  filtered = np.where(filtered == 0, eps, filtered)
  cepstra = scipy.fft.dct(np.log(filtered), type=2, axis=1, norm="ortho")[:, :NUM_CEPSTRA]
  n = np.arange(NUM_CEPSTRA)
  cepstra *= 1 + (LIFTER / 2.0) * np.sin(np.pi * n / LIFTER)
  cepstra[:, 0] = np.log(energy)
  return cepstra


def mfcc_windows(audio: np.ndarray, num_frames: int | None = None) -> np.ndarray:
  """One centred 28x12 MFCC window per video frame.

  Args:
    audio: int16 or float [S] 16 kHz mono waveform; int16 is scaled to [-1, 1] first (as the
      release's librosa.load did). Should be ``num_frames * 640`` samples long
      (:func:`fit_to_frames`).
    num_frames: T; defaults to ``len(audio) // 640``. Checked against the window count.

  Returns:
    float32 [T, 28, 12]: window t holds MFCC rows 4t .. 4t + 27 of the padded signal, centred
    within 5 ms of video frame t's centre.
  """
  audio = np.asarray(audio)
  if audio.dtype == np.int16:
    audio = audio.astype(np.float64) / 32768.0
  padded = np.pad(np.asarray(audio, np.float64), PAD_SAMPLES)
  coefficients = mfcc(padded)[:, 1:]
  count = coefficients.shape[0] // ROWS_PER_FRAME - (schema.MFCC_WINDOW_ROWS // ROWS_PER_FRAME - 1)
  if num_frames is not None and count != num_frames:
    raise ValueError(f"{len(audio)} samples give {count} MFCC windows, expected {num_frames}; "
                     "fit the audio to the video length first")
  starts = ROWS_PER_FRAME * np.arange(max(count, 0))
  index = starts[:, None] + np.arange(schema.MFCC_WINDOW_ROWS)[None, :]
  return coefficients[index].astype(np.float32)
