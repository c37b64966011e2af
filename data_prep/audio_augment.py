"""Audio augmentation for training: the audio encoder should hear speech, not one voice or room.

Beyond the paper (its training audio is GRID's, as recorded). A corpus whose voices all come
from one synthesizer (``data_prep.synthetic``: espeak-ng) teaches the audio encoder that
synthesizer's timbre, clean and dry; a user's recording is a human voice in a room with a
microphone's noise. ``config.data.audio_augment`` = p > 0 makes the training input pipeline
(``talkface_jax.input_pipeline``) recompute each training clip's MFCC windows from its stored
waveform, after applying each of these independently with probability p:

* vocal tract length perturbation (Jaitly and Hinton, 2013): the mel filters' frequencies
  scaled by alpha ~ U(``WARP_RANGE``) (``audio.vtlp_warp``), which moves the formants as a
  longer or shorter vocal tract would;
* reverberation: convolution with a synthetic room impulse response, a direct path plus an
  exponentially decaying noise tail (RT60 ~ U(``RT60_RANGE``) s, direct-to-reverberant ratio ~
  U(``DRR_RANGE_DB``) dB), loudness restored afterwards;
* additive noise, white or pink with equal odds, at a signal-to-noise ratio ~
  U(``SNR_RANGE_DB``) dB over the clip.

``config.data.audio_augment_kinds`` names which of the three a run uses (default all three:
``("warp", "reverb", "noise")``); the others are never applied, though their values are still
drawn, so a clip's warp is the same whichever kinds are on.

Timing is untouched (no tempo change), so the windows stay aligned with the video frames.
The draws are a pure function of ``seed`` (the pipeline's (epoch seed, example index)), so a
resumed run hears what an uninterrupted one does. Evaluation and generation never augment.
Imports no JAX.
"""

import numpy as np
import scipy.signal

from data_prep import audio
from data_prep import schema
from data_prep.errors import UserError

WARP_RANGE = (0.9, 1.1)
RT60_RANGE = (0.1, 0.6)  # Seconds: small rooms to living rooms.
DRR_RANGE_DB = (0.0, 10.0)
SNR_RANGE_DB = (10.0, 30.0)
KINDS = ("warp", "reverb", "noise")  # In the order of augment's draws.


def check_probability(p: float) -> float:
  """``p`` if it is a probability; else a UserError naming the config key."""
  if not 0.0 <= float(p) <= 1.0:
    raise UserError(f"data.audio_augment={p}: must be a probability in [0, 1]")
  return float(p)


def augment_probability(config) -> float:
  """A run config's ``data.audio_augment``, checked (0 for configs written before the key)."""
  return check_probability(config.data.get("audio_augment", 0.0))


def check_kinds(kinds) -> tuple[str, ...]:
  """``kinds`` (a sequence of names, or one comma-separated string) as a tuple of known
  augmentations; else a UserError naming the config key."""
  if isinstance(kinds, str):
    kinds = [k for k in kinds.split(",") if k.strip()]
  kinds = tuple(str(k).strip() for k in kinds)
  unknown = [k for k in kinds if k not in KINDS]
  if unknown or not kinds:
    raise UserError(f"data.audio_augment_kinds={','.join(kinds)!r}: must name one or more of "
                    f"{', '.join(KINDS)}")
  return kinds


def augment_kinds(config) -> tuple[str, ...]:
  """A run config's ``data.audio_augment_kinds``, checked (all three for configs written
  before the key)."""
  return check_kinds(config.data.get("audio_augment_kinds", KINDS))


def augment(samples: np.ndarray, rng: np.random.Generator, probability: float,
            kinds=KINDS) -> tuple[np.ndarray, float]:
  """Reverberation and noise applied to ``samples``, and the warp for the MFCC.

  Args:
    samples: float [S] waveform in [-1, 1] at 16 kHz.
    rng: the draws' generator; the same number of values is drawn whatever is applied.
    probability: of each of the augmentations in ``kinds``.
    kinds: names from ``KINDS``; the others are not applied.

  Returns:
    (float64 [S] waveform, warp alpha for ``audio.mfcc_windows``; 1.0 when not warped).
  """
  samples = np.asarray(samples, np.float64)
  apply = (rng.uniform(size=3) < probability) & np.isin(KINDS, check_kinds(kinds))
  alpha = rng.uniform(*WARP_RANGE)
  rt60, drr_db = rng.uniform(*RT60_RANGE), rng.uniform(*DRR_RANGE_DB)
  snr_db, pink = rng.uniform(*SNR_RANGE_DB), rng.uniform() < 0.5
  tail_noise = rng.standard_normal(int(RT60_RANGE[1] * schema.SAMPLE_RATE))
  noise = rng.standard_normal(len(samples))
  power = float(np.mean(samples ** 2))
  if power == 0.0:  # Digital silence: nothing to reverberate or to set a noise level by.
    return samples, (alpha if apply[0] else 1.0)
  if apply[1]:
    samples = reverberate(samples, tail_noise, rt60, drr_db, power)
  if apply[2]:
    samples = add_noise(samples, pink_noise(noise) if pink else noise, snr_db, power)
  return samples, (alpha if apply[0] else 1.0)


def add_noise(samples: np.ndarray, noise: np.ndarray, snr_db: float, power: float
              ) -> np.ndarray:
  """``samples`` plus ``noise`` scaled to a mean square ``snr_db`` below ``power``."""
  noise = noise * np.sqrt(power / 10 ** (snr_db / 10) / max(float(np.mean(noise ** 2)), 1e-20))
  return samples + noise


def reverberate(samples: np.ndarray, tail_noise: np.ndarray, rt60: float, drr_db: float,
                power: float) -> np.ndarray:
  """``samples`` through a room impulse response: 1 at lag 0, then ``tail_noise`` decaying by
  60 dB over ``rt60`` s with energy ``drr_db`` below the direct path's; rescaled to ``power``
  (the mean square it had)."""
  length = int(rt60 * schema.SAMPLE_RATE)
  t = np.arange(1, length) / schema.SAMPLE_RATE
  tail = tail_noise[1:length] * np.exp(-3 * np.log(10) * t / rt60)
  tail *= np.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(tail ** 2)), 1e-20))
  response = np.concatenate([[1.0], tail])
  wet = scipy.signal.fftconvolve(samples, response)[:len(samples)]
  return wet * np.sqrt(power / max(float(np.mean(wet ** 2)), 1e-20))


def pink_noise(white: np.ndarray) -> np.ndarray:
  """``white`` noise shaped to a 1/f power spectrum (the DC bin removed)."""
  spectrum = np.fft.rfft(white)
  f = np.arange(len(spectrum), dtype=np.float64)
  f[0] = np.inf
  return np.fft.irfft(spectrum / np.sqrt(f), n=len(white))


def augmented_windows(samples: np.ndarray, num_frames, seed, probability: float,
                      kinds=KINDS) -> np.ndarray:
  """The MFCC windows [T, 28, 12] of ``samples`` (int16 or float [S], a clip's stored
  waveform) after :func:`augment` of ``kinds`` with draws from ``seed`` (a sequence of
  integers)."""
  num_frames = int(num_frames)
  if np.asarray(samples).dtype == np.int16:
    samples = np.asarray(samples, np.float32) / np.float32(32768.0)
  rng = np.random.default_rng([int(s) % 2 ** 63 for s in np.ravel(seed)])
  samples, warp = augment(samples, rng, probability, kinds)
  samples, _ = audio.fit_to_frames(samples, num_frames)
  return audio.mfcc_windows(samples, num_frames, warp=warp)
