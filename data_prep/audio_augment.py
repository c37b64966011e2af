"""Audio augmentation for training: the audio encoder should hear speech, not one voice or room.

Beyond the paper (its training audio is GRID's, as recorded). A corpus whose voices all come
from one synthesizer (``data_prep.synthetic``: espeak-ng) teaches the audio encoder that
synthesizer's timbre, clean and dry; a user's recording is a human voice in a room with a
microphone's noise. ``config.data.audio_augment`` = p > 0 makes the training input pipeline
(``talkface_jax.input_pipeline``) recompute each training clip's MFCC windows from its stored
waveform, after applying each of these independently with probability p:

* vocal tract length perturbation (Jaitly and Hinton, 2013): the mel filters' frequencies
  scaled by alpha ~ U(1 - w, 1 + w) with w = ``config.data.audio_warp`` (default ``WARP``,
  0.1: about +-1.7 semitones; 0.2 reaches a voice 3 semitones deeper, alpha 1.19)
  (``audio.vtlp_warp``), which moves the formants as a longer or shorter vocal tract would;
* reverberation: convolution with a synthetic room impulse response, a direct path plus an
  exponentially decaying noise tail (RT60 ~ U(``RT60_RANGE``) s, direct-to-reverberant ratio ~
  U(``DRR_RANGE_DB``) dB), loudness restored afterwards;
* additive noise, white or pink with equal odds, at a signal-to-noise ratio ~
  U(``SNR_RANGE_DB``) dB over the clip;
* a frequency mask (SpecAugment's, Park et al. 2019): 1 to ``MASK_MAX_BANDS`` adjacent
  bands of the 26 mel bands held at their mean log energy over the clip, so the encoder cannot
  lean on any one stretch of the spectrum (``audio.mfcc``'s ``band_mask``).

``config.data.audio_augment_kinds`` names which a run uses (default ``DEFAULT_KINDS``: warp,
reverberation and noise, as before the mask existed); the others are never applied, though
their values are still drawn, so a clip's warp is the same whichever kinds are on.

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

WARP = 0.1  # Half-width of the warp's range: alpha ~ U(1 - WARP, 1 + WARP).
MAX_WARP = 0.5
RT60_RANGE = (0.1, 0.6)  # Seconds: small rooms to living rooms.
DRR_RANGE_DB = (0.0, 10.0)
SNR_RANGE_DB = (10.0, 30.0)
KINDS = ("warp", "reverb", "noise", "mask")  # In the order of the draws.
DEFAULT_KINDS = KINDS[:3]  # Configs without ``data.audio_augment_kinds``.
MASK_MAX_BANDS = 8  # Of audio.NUM_FILTERS (26): up to ~1/3 of the mel scale.


def check_probability(p: float) -> float:
  """``p`` if it is a probability; else a UserError naming the config key."""
  if not 0.0 <= float(p) <= 1.0:
    raise UserError(f"data.audio_augment={p}: must be a probability in [0, 1]")
  return float(p)


def augment_probability(config) -> float:
  """A run config's ``data.audio_augment``, checked (0 for configs written before the key)."""
  return check_probability(config.data.get("audio_augment", 0.0))


def check_warp(warp: float) -> float:
  """``warp`` if it is a half-width in [0, ``MAX_WARP``]; else a UserError naming the config
  key."""
  if not 0.0 <= float(warp) <= MAX_WARP:
    raise UserError(f"data.audio_warp={warp}: must be in [0, {MAX_WARP}] (the vocal tract "
                    f"warp's alpha is drawn from U(1 - w, 1 + w))")
  return float(warp)


def augment_warp(config) -> float:
  """A run config's ``data.audio_warp``, checked (``WARP`` for configs written before the
  key)."""
  return check_warp(config.data.get("audio_warp", WARP))


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
  """A run config's ``data.audio_augment_kinds``, checked (``DEFAULT_KINDS`` for configs
  written before the key)."""
  return check_kinds(config.data.get("audio_augment_kinds", DEFAULT_KINDS))


def augment(samples: np.ndarray, rng: np.random.Generator, probability: float,
            kinds=DEFAULT_KINDS, warp: float = WARP) -> tuple[np.ndarray, float]:
  """Reverberation and noise applied to ``samples``, and the warp for the MFCC.

  Args:
    samples: float [S] waveform in [-1, 1] at 16 kHz.
    rng: the draws' generator; the same number of values is drawn whatever is applied.
    probability: of each of the augmentations in ``kinds``.
    kinds: names from ``KINDS``; the others are not applied (the mask is drawn and applied
      by :func:`band_mask`, after these draws).
    warp: half-width of the warp's range, alpha ~ U(1 - warp, 1 + warp) (one uniform draw
      whatever the width, so a clip's draw scales with it).

  Returns:
    (float64 [S] waveform, warp alpha for ``audio.mfcc_windows``; 1.0 when not warped).
  """
  samples = np.asarray(samples, np.float64)
  apply = (rng.uniform(size=3) < probability) & np.isin(KINDS[:3], check_kinds(kinds))
  alpha = rng.uniform(1.0 - check_warp(warp), 1.0 + warp)
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


def band_mask(rng: np.random.Generator, probability: float, kinds=DEFAULT_KINDS
              ) -> np.ndarray | None:
  """The frequency mask's bands (bool [26]) if ``"mask"`` is in ``kinds`` and drawn (with
  ``probability``), else None; three values drawn either way."""
  apply = rng.uniform() < probability and "mask" in check_kinds(kinds)
  width = int(rng.integers(1, MASK_MAX_BANDS + 1))
  start = int(rng.integers(0, audio.NUM_FILTERS - width + 1))
  if not apply:
    return None
  mask = np.zeros(audio.NUM_FILTERS, bool)
  mask[start:start + width] = True
  return mask


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
                      kinds=DEFAULT_KINDS, warp: float = WARP, energy: bool = False
                      ) -> np.ndarray:
  """The MFCC windows [T, 28, 12] of ``samples`` (int16 or float [S], a clip's stored
  waveform) after :func:`augment` of ``kinds`` (warp half-width ``warp``) with draws from
  ``seed`` (a sequence of integers), then :func:`band_mask`'s; with ``energy``, [T, 28, 13]
  with the augmented rows' loudness first (``audio.mfcc_windows``)."""
  num_frames = int(num_frames)
  if np.asarray(samples).dtype == np.int16:
    samples = np.asarray(samples, np.float32) / np.float32(32768.0)
  rng = np.random.default_rng([int(s) % 2 ** 63 for s in np.ravel(seed)])
  samples, alpha = augment(samples, rng, probability, kinds, warp)
  bands = band_mask(rng, probability, kinds)
  samples, _ = audio.fit_to_frames(samples, num_frames)
  return audio.mfcc_windows(samples, num_frames, warp=alpha, band_mask=bands, energy=energy)
