"""Per-frame curves of the synthetic face: the mouth opening driven by the phoneme timing, and
the motion the audio does NOT determine (blinks, head sway) -- the stochastic part.
Imports no JAX.
"""

import numpy as np
from scipy import ndimage

from data_prep.synthetic.speech import PhonemeEvent

FPS = 25
NUM_FRAMES = 75
CLIP_SECONDS = NUM_FRAMES / FPS  # 3.0

# --------------------------------------------------------------------------- mouth curve

# Target mouth opening per espeak phoneme class (stress marks stripped first).
_OPEN_VOWELS = ("aI", "aU", "a#", "aa", "a", "A", "V")      # wide
_BACK_VOWELS = ("0", "O")                                    # wide-ish, rounded
_MID_VOWELS = ("e", "E", "@", "3", "oU", "o")               # medium
_CLOSE_VOWELS = ("i", "I", "u", "U", "y")                    # narrow
_BILABIALS = ("p", "b", "m")                                 # lips closed
_LABIODENTALS = ("f", "v", "w")                              # nearly closed


def phoneme_openness(phoneme: str) -> float:
  """Target mouth opening in [0, 1] for one espeak phoneme mnemonic."""
  ph = phoneme.lstrip("',%=")
  if not ph or ph.startswith("_"):
    return 0.0
  for group, value in ((_OPEN_VOWELS, 1.0), (_BACK_VOWELS, 0.8), (_MID_VOWELS, 0.6),
                       (_CLOSE_VOWELS, 0.35), (_BILABIALS, 0.0), (_LABIODENTALS, 0.12)):
    if any(ph.startswith(g) for g in group):
      return value
  return 0.25  # Other consonants: t d n s z l r k g h j S Z T D tS dZ N.


def mouth_curve(phoneme_events: list[PhonemeEvent], num_frames: int = NUM_FRAMES,
                fps: float = FPS, smooth_ms: float = 22.0) -> np.ndarray:
  """Mouth opening per video frame from phoneme timings.

  The per-phoneme targets form a step function on a 1 ms grid (0 where no phoneme:
  silence), smoothed by a Gaussian of ``smooth_ms`` (co-articulation: attack and decay
  of about two frames once averaged over each 40 ms frame) and averaged over each frame.

  Args:
    phoneme_events: events in clip time (seconds).
    num_frames: T.
    fps: video frame rate.
    smooth_ms: Gaussian smoothing sigma in milliseconds.

  Returns:
    float32 [T] in [0, 1].
  """
  ms_per_frame = 1000.0 / fps
  n_ms = int(round(num_frames * ms_per_frame))
  target = np.zeros(n_ms, np.float32)
  for ev in phoneme_events:
    a, b = int(round(ev.start * 1000)), int(round(ev.end * 1000))
    a, b = max(a, 0), min(b, n_ms)
    if b > a:
      target[a:b] = phoneme_openness(ev.phoneme)
  smooth = ndimage.gaussian_filter1d(target, smooth_ms, mode="constant")
  edges = np.round(np.arange(num_frames + 1) * ms_per_frame).astype(int)
  curve = np.add.reduceat(smooth, edges[:-1]) / np.diff(edges)
  return np.clip(curve, 0.0, 1.0).astype(np.float32)



# --------------------------------------------------------------------------- stochastic motion


def blink_curve(rng: np.random.Generator, num_frames: int = NUM_FRAMES, fps: float = FPS,
                rate_hz: float = 0.35, min_gap_s: float = 0.6) -> np.ndarray:
  """Eye opening per frame: 1 open, 0 closed, with blinks at Poisson-random times.

  Each blink lasts 6-10 frames (240-400 ms, the long end of real blinks, so that a 64x64
  crop shows it for several frames): closing over 30% of it, fully closed for 30%, reopening
  over the rest (opening is slower than closing, as in real blinks).

  Returns:
    float32 [T] in [0, 1].
  """
  t = (np.arange(num_frames) + 0.5) / fps
  eye = np.ones(num_frames, np.float32)
  # Start the process before the clip so the first blink is not biased towards t=0.
  when = -rng.exponential(1.0 / rate_hz)
  while True:
    when += max(rng.exponential(1.0 / rate_hz), min_gap_s)
    if when >= num_frames / fps:
      break
    dur = rng.uniform(6.0, 10.0) / fps
    u = (t - when) / dur
    close = np.where(u < 0.3, 0.5 - 0.5 * np.cos(np.pi * np.clip(u / 0.3, 0, 1)), 1.0)
    reopen = np.where(u > 0.6, 0.5 + 0.5 * np.cos(np.pi * np.clip((u - 0.6) / 0.4, 0, 1)),
                      1.0)
    depth = np.where((u >= 0) & (u <= 1), close * reopen, 0.0)
    eye = np.minimum(eye, 1.0 - depth).astype(np.float32)
  return eye


def sway_curves(rng: np.random.Generator, num_frames: int = NUM_FRAMES,
                amp_px: float = 2.0, amp_deg: float = 1.5, smooth_frames: float = 8.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Smooth random head motion: Gaussian-filtered white noise with stationary std.

  Returns:
    dx, dy (pixels) and angle (degrees), each float32 [T]; the standard deviation of
    each is ``amp_px`` / ``amp_px`` / ``amp_deg`` in expectation.
  """
  pad = int(4 * smooth_frames)
  noise = rng.standard_normal((3, num_frames + 2 * pad))
  smooth = ndimage.gaussian_filter1d(noise, smooth_frames, axis=1, mode="wrap")
  # Std of unit white noise after a Gaussian of sigma s: (2 sqrt(pi) s) ** -0.5.
  smooth *= np.sqrt(2.0 * np.sqrt(np.pi) * smooth_frames)
  smooth = smooth[:, pad:pad + num_frames]
  return ((amp_px * smooth[0]).astype(np.float32), (amp_px * smooth[1]).astype(np.float32),
          (amp_deg * smooth[2]).astype(np.float32))
