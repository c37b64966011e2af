"""Evaluation metrics: SSIM, PSNR, LMD, diversity, lip-sync r, best-of-K.

This module owns every number the evaluation reports (docs/REFERENCE.md, "Metrics"):

* `ssim` and `psnr` on frames in [0, 1], equal to scikit-image's
  `structural_similarity(..., data_range=1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, channel_axis=-1)` and
  `peak_signal_noise_ratio(..., data_range=1)`, but batched and jittable.
* `landmark_distance`: ATVGNet's LMD on mouth landmarks.
* `pairwise_diversity`: mean pairwise distance between K samples of one input.
* `pearson_r`: correlation over time (mouth opening vs. ground truth).
* `rms_envelope` and `lagged_pearson_r`: how a mouth opening follows the loudness of the
  speech when there is no ground-truth video (real recordings).
* `best_and_mean_of_k`: the two ways stochastic models are reported.
* `identity_summary`: face-descriptor distances to the identity frame, summarized.

All functions are pure. The image metrics take arrays of shape [..., H, W, C]
and return one value per image, shape [...].
"""

import math
from typing import Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Union[jax.Array, np.ndarray]

# Wang et al. 2004 constants, as scikit-image uses them.
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_SIGMA = 1.5
# scikit-image passes truncate=3.5 to scipy.ndimage, giving radius
# int(3.5 * 1.5 + 0.5) = 5, i.e. an 11-tap filter and an 11x11 window.
_SSIM_TRUNCATE = 3.5


def _gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
  """The normalised 1-D Gaussian scipy.ndimage.gaussian_filter uses. [2r+1]."""
  radius = int(truncate * sigma + 0.5)
  offsets = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (offsets / sigma) ** 2)
  return taps / taps.sum()


def _valid_filter_1d(x: jax.Array, taps: np.ndarray, axis: int) -> jax.Array:
  """Correlates `x` with `taps` along `axis`, keeping fully covered outputs.

  Written as a sum of shifted slices rather than a convolution or matmul: on
  GPUs those may run in TF32 by default, which would cost SSIM its 1e-5
  agreement with scikit-image; elementwise float32 arithmetic does not.

  Args:
    x: array of any shape.
    taps: [N] filter taps (N odd).
    axis: axis to filter.

  Returns:
    Array with `x.shape[axis]` reduced by N - 1.
  """
  n_taps = len(taps)
  length = x.shape[axis] - n_taps + 1
  out = None
  for offset, weight in enumerate(taps):
    shifted = jax.lax.slice_in_dim(x, offset, offset + length, axis=axis)
    term = float(weight) * shifted
    out = term if out is None else out + term
  return out


# Jitted so that eager callers (offline evaluation) run one compiled program
# per image shape instead of dispatching ~60 small ops one by one.
@jax.jit
def ssim(a: ArrayLike, b: ArrayLike, data_range: float = 1.0) -> jax.Array:
  """Structural similarity per image, matching scikit-image exactly.

  scikit-image filters the whole image with reflect padding and then drops a
  (win_size - 1) // 2 = 5 pixel border before averaging the SSIM map. Every
  pixel it keeps has its 11x11 window inside the image, so a 'valid' filter over
  the unpadded image gives the same cropped map and never touches padding.

  Args:
    a: [..., H, W, C] images (H, W >= 11), values in [0, data_range].
    b: same shape as `a`.
    data_range: dynamic range of the pixel values (1 for frames in [0, 1]).

  Returns:
    [...] mean SSIM over the cropped map and over channels, float32.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f'ssim: shapes differ, {a.shape} vs {b.shape}.')
  if a.ndim < 3:
    raise ValueError(f'ssim: expected [..., H, W, C], got shape {a.shape}.')
  taps = _gaussian_taps(_SSIM_SIGMA, _SSIM_TRUNCATE)
  height, width = a.shape[-3], a.shape[-2]
  if min(height, width) < len(taps):
    raise ValueError(
        f'ssim: images must be at least {len(taps)}x{len(taps)}, got '
        f'{height}x{width}.')

  # Variances are E[x^2] - E[x]^2, which cancels badly in float32. Removing a
  # per-image, per-channel constant leaves every variance and covariance
  # unchanged and keeps the squared terms small; the means are restored below.
  a_offset = jnp.mean(a, axis=(-3, -2), keepdims=True)
  b_offset = jnp.mean(b, axis=(-3, -2), keepdims=True)
  a_centred = a - a_offset
  b_centred = b - b_offset

  def local_mean(x):
    return _valid_filter_1d(_valid_filter_1d(x, taps, axis=x.ndim - 3), taps,
                            axis=x.ndim - 2)

  mu_a_centred = local_mean(a_centred)
  mu_b_centred = local_mean(b_centred)
  var_a = local_mean(a_centred * a_centred) - mu_a_centred**2
  var_b = local_mean(b_centred * b_centred) - mu_b_centred**2
  cov_ab = local_mean(a_centred * b_centred) - mu_a_centred * mu_b_centred
  mu_a = mu_a_centred + a_offset
  mu_b = mu_b_centred + b_offset

  c1 = (_SSIM_K1 * data_range)**2
  c2 = (_SSIM_K2 * data_range)**2
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2) /
              ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
  return jnp.mean(ssim_map, axis=(-3, -2, -1))


@jax.jit
def psnr(a: ArrayLike, b: ArrayLike, data_range: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio per image, as scikit-image computes it.

  Args:
    a: [..., H, W, C] images, values in [0, data_range].
    b: same shape as `a`.
    data_range: dynamic range of the pixel values.

  Returns:
    [...] PSNR in dB, float32. Identical images give +inf (zero error), as in
    scikit-image; average PSNR over a test set with that in mind.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f'psnr: shapes differ, {a.shape} vs {b.shape}.')
  mse = jnp.mean((a - b)**2, axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range**2 / mse)


def landmark_distance(pred: ArrayLike, true: ArrayLike) -> jax.Array:
  """Landmark distance (LMD, ATVGNet) between predicted and true landmarks.

  Each frame's landmark set is centred on its own mean, so a global shift of the
  face does not count; what remains is the shape of the mouth.

  Args:
    pred: [..., T, P, 2] landmarks (e.g. the 20 mouth points 48-67) found on
      generated frames, in pixels.
    true: same shape, found on the real frames.

  Returns:
    [...] Euclidean distance per point averaged over points and frames.
  """
  pred = jnp.asarray(pred, jnp.float32)
  true = jnp.asarray(true, jnp.float32)
  if pred.shape != true.shape or pred.ndim < 3 or pred.shape[-1] != 2:
    raise ValueError(
        f'landmark_distance: expected equal shapes [..., T, P, 2], got '
        f'{pred.shape} and {true.shape}.')
  pred = pred - jnp.mean(pred, axis=-2, keepdims=True)
  true = true - jnp.mean(true, axis=-2, keepdims=True)
  per_point = jnp.sqrt(jnp.sum((pred - true)**2, axis=-1))
  return jnp.mean(per_point, axis=(-2, -1))


def pairwise_diversity(samples: ArrayLike,
                       mask: Optional[ArrayLike] = None) -> jax.Array:
  """Mean pairwise distance between K samples generated from one input.

  The distance between two samples is their mean absolute per-pixel difference;
  the result averages it over all K (K - 1) / 2 pairs i < j. The pairs are
  visited one row at a time so memory stays at two samples' worth of
  differences rather than K^2.

  Args:
    samples: [K, T, H, W, C] videos (K >= 2) drawn for the same input.
    mask: optional [H, W] region weights (boolean or in [0, 1]), e.g. an eyes
      or mouth box; the difference is averaged over the masked pixels only.

  Returns:
    Scalar mean pairwise distance.
  """
  samples = jnp.asarray(samples, jnp.float32)
  if samples.ndim != 5:
    raise ValueError(
        f'pairwise_diversity: expected [K, T, H, W, C], got {samples.shape}.')
  num_samples, num_frames, height, width, channels = samples.shape
  if num_samples < 2:
    raise ValueError('pairwise_diversity: needs at least 2 samples.')
  if mask is None:
    weights = jnp.ones((height, width), jnp.float32)
  else:
    weights = jnp.asarray(mask, jnp.float32)
    if weights.shape != (height, width):
      raise ValueError(
          f'pairwise_diversity: mask shape {weights.shape} does not match the '
          f'frame size {(height, width)}.')
  # Weight per pixel of one sample, summed over frames and channels.
  normaliser = jnp.sum(weights) * num_frames * channels
  pixel_weights = weights[None, :, :, None]

  def row_sum(i):
    # Distances from sample i to every sample, kept only for j > i.
    abs_diff = jnp.abs(samples - samples[i])
    per_sample = jnp.sum(abs_diff * pixel_weights, axis=(1, 2, 3, 4))
    later = jnp.arange(num_samples) > i
    return jnp.sum(jnp.where(later, per_sample, 0.0))

  total = jax.lax.fori_loop(0, num_samples - 1,
                            lambda i, acc: acc + row_sum(i), jnp.float32(0.0))
  num_pairs = num_samples * (num_samples - 1) / 2
  return total / (normaliser * num_pairs)


def pearson_r(x: ArrayLike, y: ArrayLike) -> ArrayLike:
  """Pearson correlation over the last axis.

  Computed with jax.numpy when either input is a JAX array (so it can be
  jitted) and with numpy otherwise (so offline evaluation needs no device).

  Args:
    x: [..., T] series, e.g. the mouth opening measured on generated frames.
    y: [..., T] series of the same shape, e.g. the ground-truth opening.

  Returns:
    [...] correlation coefficients. A constant series has no defined
    correlation and gives nan, as numpy.corrcoef does.
  """
  xp = jnp if isinstance(x, jax.Array) or isinstance(y, jax.Array) else np
  x = xp.asarray(x)
  y = xp.asarray(y)
  if not xp.issubdtype(x.dtype, xp.floating):
    x = x.astype(xp.float32)
  if not xp.issubdtype(y.dtype, xp.floating):
    y = y.astype(xp.float32)
  x = x - xp.mean(x, axis=-1, keepdims=True)
  y = y - xp.mean(y, axis=-1, keepdims=True)
  numerator = xp.sum(x * y, axis=-1)
  denominator = xp.sqrt(xp.sum(x * x, axis=-1) * xp.sum(y * y, axis=-1))
  if xp is np:
    with np.errstate(invalid='ignore', divide='ignore'):
      return numerator / denominator
  return numerator / denominator


def rms_envelope(samples: ArrayLike, samples_per_frame: int) -> np.ndarray:
  """Loudness per video frame: the RMS of each frame's audio samples (numpy).

  Args:
    samples: [S] waveform, S a multiple of ``samples_per_frame`` (e.g.
      ``inference.Speech.samples``: 640 samples of 16 kHz audio per frame at 25 fps).
    samples_per_frame: audio samples per video frame.

  Returns:
    float64 [S / samples_per_frame].
  """
  samples = np.asarray(samples, np.float64)
  if samples.ndim != 1 or samples.size % samples_per_frame:
    raise ValueError(f'rms_envelope: expected [S] with S a multiple of {samples_per_frame}, '
                     f'got shape {samples.shape}.')
  frames = samples.reshape(-1, samples_per_frame)
  return np.sqrt(np.mean(frames * frames, axis=-1))


def lagged_pearson_r(x: ArrayLike, y: ArrayLike, max_lag: int) -> Tuple[np.ndarray,
                                                                         np.ndarray]:
  """The best Pearson r over time between ``x`` and ``y`` shifted by up to ``max_lag`` steps.

  At lag L, x[t] is correlated with y[t - L] over the steps where both exist: L > 0 means
  ``x`` follows ``y`` L steps late (a mouth opening after the sound that drives it), L < 0
  that it runs ahead. A mouth is not expected to peak on the very frame of the loudest
  audio, so the correlation is taken at the best lag within a small window.

  Args:
    x: [..., T] series (e.g. mouth openings of K generated videos).
    y: [..., T] series broadcastable to ``x`` (e.g. the audio's ``rms_envelope``).
    max_lag: lags -max_lag..max_lag are tried (T - max_lag >= 2).

  Returns:
    (r [...], lag [...] int): the largest r over the lags and its lag; r is nan (lag 0)
    where no lag gives a defined r (a constant series).
  """
  x = np.asarray(x, np.float64)
  y = np.broadcast_to(np.asarray(y, np.float64), x.shape)
  num_steps = x.shape[-1]
  if max_lag < 0 or num_steps - max_lag < 2:
    raise ValueError(f'lagged_pearson_r: max_lag {max_lag} for series of {num_steps} steps.')
  lags = np.arange(-max_lag, max_lag + 1)
  rs = np.stack([pearson_r(x[..., lag:], y[..., :num_steps - lag]) if lag >= 0 else
                 pearson_r(x[..., :lag], y[..., -lag:]) for lag in lags])
  ranked = np.where(np.isfinite(rs), rs, -np.inf)
  best = np.argmax(ranked, axis=0)
  r = np.take_along_axis(ranked, best[None], axis=0)[0]
  # A constant series has no r; rounding in its mean can leave a tiny nonzero one instead.
  constant = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0)
  defined = np.isfinite(r) & ~constant
  return np.where(defined, r, np.nan), np.where(defined, lags[best], 0)


def mean_pairwise_r(series: ArrayLike) -> float:
  """Mean Pearson r over time between every pair of K series [K, T] (numpy).

  How much K samples of one input agree about a measured curve (e.g. their mouth
  openings); pairs with a constant series have no defined r and are left out.

  Returns:
    The mean over defined pairs i < j, or nan if none is defined (or K < 2).
  """
  series = np.asarray(series, np.float64)
  if series.ndim != 2:
    raise ValueError(f'mean_pairwise_r: expected [K, T], got {series.shape}.')
  i, j = np.triu_indices(series.shape[0], 1)
  r = np.asarray(pearson_r(series[i], series[j]))
  r = r[np.isfinite(r)]
  return float(r.mean()) if r.size else math.nan


def best_and_mean_of_k(
    per_sample_scores: ArrayLike,
    higher_is_better: bool = True,
    rank_by: Optional[ArrayLike] = None,
    rank_higher_is_better: bool = True,
) -> Tuple[jax.Array, jax.Array]:
  """Best-of-K and mean-over-K reports for K samples of N test clips.

  Following SVG, a clip's K samples are ranked by the clip's mean score over
  frames, the best sample's score counts for the clip, and the clips are
  averaged. The mean-over-K report averages every sample of every clip.

  Args:
    per_sample_scores: [K, N] per-clip scores, or [K, N, T] (any trailing axes)
      per-frame scores, which are averaged over the trailing axes first.
    higher_is_better: whether a larger score is better (SSIM, PSNR) or worse
      (LMD).
    rank_by: optional [K, N, ...] scores that choose the best sample instead of
      `per_sample_scores` themselves, e.g. report the PSNR of the sample with
      the best SSIM. Its trailing axes are averaged too.
    rank_higher_is_better: direction of `rank_by`.

  Returns:
    (best, mean): scalars; best-of-K averaged over clips and mean over K and
    clips.
  """
  scores = jnp.asarray(per_sample_scores, jnp.float32)
  if scores.ndim < 2:
    raise ValueError(
        f'best_and_mean_of_k: expected [K, N, ...], got {scores.shape}.')
  clip_scores = jnp.mean(scores, axis=tuple(range(2, scores.ndim)))
  if rank_by is None:
    ranking, ranking_higher = clip_scores, higher_is_better
  else:
    rank_by = jnp.asarray(rank_by, jnp.float32)
    if rank_by.shape[:2] != scores.shape[:2]:
      raise ValueError(
          f'best_and_mean_of_k: rank_by shape {rank_by.shape} does not start '
          f'with [K, N] = {scores.shape[:2]}.')
    ranking = jnp.mean(rank_by, axis=tuple(range(2, rank_by.ndim)))
    ranking_higher = rank_higher_is_better
  best_index = (jnp.argmax(ranking, axis=0) if ranking_higher
                else jnp.argmin(ranking, axis=0))
  best = jnp.take_along_axis(clip_scores, best_index[None, :], axis=0)[0]
  return jnp.mean(best), jnp.mean(clip_scores)


# -------------------------------------------------------------------------------------------------
# What varies between the K samples where the audio does not decide: blinks and head motion.
# -------------------------------------------------------------------------------------------------

# A frame's eyes count as closed when the eye opening is under this fraction of the clip's
# open level (the median opening of its ground-truth frames).
CLOSED_EYE_LEVEL = 0.5


def closed_eyes(openings: ArrayLike, open_level: float) -> np.ndarray:
  """Boolean [..., T]: frames whose eye opening is under half of ``open_level``.

  Args:
    openings: [..., T] eye openings (e.g. Dlib eye aspect ratios) of K samples or a clip.
    open_level: the clip's open-eye level, e.g. the median opening of its true frames.
  """
  return np.asarray(openings, np.float64) < CLOSED_EYE_LEVEL * float(open_level)


def blink_overlap(closed: ArrayLike) -> Tuple[float, int]:
  """How much K samples blink together: closed-eye frame overlap of samples that both blink.

  For every pair i < j of samples that both have a closed-eye frame, the overlap is
  |A_i & A_j| / min(|A_i|, |A_j|), A being the set of closed-eye frames: 1 when the shorter
  blink lies inside the other (the samples blink together), 0 when the blinks are disjoint.

  Args:
    closed: boolean [K, T], ``closed_eyes`` of K samples of one clip.

  Returns:
    (mean overlap over those pairs, nan if there are none; the number of pairs).
  """
  closed = np.asarray(closed, bool)
  if closed.ndim != 2:
    raise ValueError(f'blink_overlap: expected [K, T], got {closed.shape}.')
  counts = closed.sum(axis=1)
  values = []
  for i, j in zip(*np.triu_indices(closed.shape[0], 1)):
    if counts[i] and counts[j]:
      values.append(np.sum(closed[i] & closed[j]) / min(counts[i], counts[j]))
  return (float(np.mean(values)) if values else math.nan), len(values)


def head_trajectory(landmarks: ArrayLike) -> np.ndarray:
  """The face's position over time: the centroid of the 68 Dlib landmarks [..., T, 68, 2]
  -> [..., T, 2] in pixels (on aligned crops it moves with the head's residual sway)."""
  landmarks = np.asarray(landmarks, np.float64)
  if landmarks.ndim < 3 or landmarks.shape[-1] != 2:
    raise ValueError(f'head_trajectory: expected [..., T, P, 2], got {landmarks.shape}.')
  return landmarks.mean(axis=-2)


def head_motion(trajectory: ArrayLike) -> np.ndarray:
  """How much a head moves within a clip: mean distance of [..., T, 2] from its own mean
  position (pixels) -> [...]."""
  trajectory = np.asarray(trajectory, np.float64)
  centre = trajectory.mean(axis=-2, keepdims=True)
  return np.linalg.norm(trajectory - centre, axis=-1).mean(axis=-1)


def pairwise_trajectory_distance(trajectories: ArrayLike) -> float:
  """Head diversity: mean over pairs i < j of the mean per-frame distance (pixels) between
  the trajectories [K, T, 2] of K samples; nan for K < 2."""
  trajectories = np.asarray(trajectories, np.float64)
  if trajectories.ndim != 3 or trajectories.shape[-1] != 2:
    raise ValueError(f'pairwise_trajectory_distance: expected [K, T, 2], got '
                     f'{trajectories.shape}.')
  i, j = np.triu_indices(trajectories.shape[0], 1)
  if not i.size:
    return math.nan
  return float(np.linalg.norm(trajectories[i] - trajectories[j], axis=-1).mean())


def region_mse(videos: ArrayLike, truth: ArrayLike, mask: ArrayLike) -> np.ndarray:
  """Mean squared error inside a region: videos [K, T, H, W, C] vs truth [T, H, W, C], mask
  [H, W] (weights) -> [K], averaged over the masked pixels, channels and frames."""
  videos = np.asarray(videos, np.float64)
  truth = np.asarray(truth, np.float64)
  weights = np.asarray(mask, np.float64)
  if videos.shape[1:] != truth.shape or weights.shape != truth.shape[1:3]:
    raise ValueError(f'region_mse: shapes {videos.shape}, {truth.shape}, mask {weights.shape} '
                     'do not match [K, T, H, W, C], [T, H, W, C], [H, W].')
  per_pixel = np.square(videos - truth).mean(axis=-1)  # [K, T, H, W]
  return (per_pixel * weights).sum(axis=(-2, -1)).mean(axis=1) / weights.sum()


def sample_variation(sample_eyes: ArrayLike, truth_eyes: ArrayLike,
                     sample_landmarks: ArrayLike, truth_landmarks: ArrayLike,
                     baseline_eyes: Optional[ArrayLike] = None,
                     reconstruction_eyes: Optional[ArrayLike] = None) -> dict[str, float]:
  """Blink and head figures of one clip's K samples against its ground truth.

  Args:
    sample_eyes: [K, T] eye openings of the samples (frame 0 excluded).
    truth_eyes: [T] eye openings of the ground-truth frames; their median is the open level.
    sample_landmarks: [K, T, 68, 2] Dlib landmarks of the samples.
    truth_landmarks: [T, 68, 2] Dlib landmarks of the ground truth.
    baseline_eyes: optional [T] eye openings of the clip's deterministic video.
    reconstruction_eyes: optional [T] eye openings of the clip's teacher-forced
      reconstruction (z from the frame posterior).

  Returns:
    'closed_fraction_samples' / 'closed_fraction_truth': fraction of frames with closed eyes;
    'samples_with_blink': fraction of samples with a closed-eye frame; 'truth_with_blink': 1.0
    if the ground truth has one, else 0.0; 'blink_overlap' (nan without a pair of blinking
    samples) and 'blink_pairs' (``blink_overlap``); 'head_diversity': pairwise distance of the
    samples' head trajectories (pixels); 'head_motion_samples' / 'head_motion_truth': mean
    ``head_motion`` of the samples / of the ground truth (pixels); with ``baseline_eyes``,
    ``closed_with_baseline``'s figures; with ``reconstruction_eyes``,
    ``reconstructed_blinks``' figures.
  """
  truth_eyes = np.asarray(truth_eyes, np.float64)
  level = float(np.median(truth_eyes))
  closed = closed_eyes(sample_eyes, level)
  truth_closed = closed_eyes(truth_eyes, level)
  overlap, pairs = blink_overlap(closed)
  trajectories = head_trajectory(sample_landmarks)
  drawn_or_decided = ({} if baseline_eyes is None else
                      closed_with_baseline(sample_eyes, baseline_eyes, truth_eyes))
  if reconstruction_eyes is not None:
    drawn_or_decided.update(reconstructed_blinks(reconstruction_eyes, truth_eyes))
  return {
      'closed_fraction_samples': float(closed.mean()),
      'closed_fraction_truth': float(truth_closed.mean()),
      'samples_with_blink': float(closed.any(axis=1).mean()),
      'truth_with_blink': float(truth_closed.any()),
      'blink_overlap': overlap,
      'blink_pairs': float(pairs),
      'head_diversity': pairwise_trajectory_distance(trajectories),
      'head_motion_samples': float(head_motion(trajectories).mean()),
      'head_motion_truth': float(head_motion(head_trajectory(truth_landmarks))),
      **drawn_or_decided,
  }


def closed_with_baseline(sample_eyes: ArrayLike, baseline_eyes: ArrayLike,
                         truth_eyes: ArrayLike) -> dict[str, float]:
  """Whether the samples' closed eyes were drawn or decided: compared with the deterministic
  video (z = the prior's mean) of the same clip.

  A closed-eye frame that the deterministic video shares was decided by the inputs (the audio
  and the identity frame), not by the latent draw: drawn blinks fall where the deterministic
  video's eyes are open.

  Args:
    sample_eyes: [K, T] eye openings of the samples (frame 0 excluded).
    baseline_eyes: [T] eye openings of the deterministic video.
    truth_eyes: [T] eye openings of the ground truth; their median is the open level.

  Returns:
    'closed_fraction_baseline': fraction of the deterministic video's frames with closed
    eyes; 'closed_with_baseline': fraction of the samples' closed-eye frames where the
    deterministic video's eyes are closed too (nan when no sample closes its eyes).
  """
  level = float(np.median(np.asarray(truth_eyes, np.float64)))
  closed = closed_eyes(sample_eyes, level)
  baseline = closed_eyes(baseline_eyes, level)
  shared = (closed & baseline[None]).sum()
  return {'closed_fraction_baseline': float(baseline.mean()),
          'closed_with_baseline': float(shared / closed.sum()) if closed.any() else math.nan}


def reconstructed_blinks(reconstruction_eyes: ArrayLike,
                         truth_eyes: ArrayLike) -> dict[str, float]:
  """Whether the decoder renders the clip's blinks when the frame posterior encodes them.

  The teacher-forced reconstruction (z from the frame posterior, previous true frames) tells
  a model whose generation does not draw a blink (reconstructions blink, samples do not: the
  prior, or the predictor fed its own frames) from one that has not learnt to render one
  (reconstructions do not blink either).

  Args:
    reconstruction_eyes: [T] eye openings of the reconstruction (frame 0 excluded).
    truth_eyes: [T] eye openings of the ground truth; their median is the open level.

  Returns:
    'closed_fraction_reconstruction': fraction of its frames with closed eyes;
    'reconstruction_blink_recall': fraction of the ground truth's closed-eye frames closed in
    the reconstruction too (nan when the ground truth never closes its eyes).
  """
  level = float(np.median(np.asarray(truth_eyes, np.float64)))
  closed = closed_eyes(reconstruction_eyes, level)
  truth = closed_eyes(truth_eyes, level)
  return {'closed_fraction_reconstruction': float(closed.mean()),
          'reconstruction_blink_recall': (float((closed & truth).sum() / truth.sum())
                                          if truth.any() else math.nan)}


# -------------------------------------------------------------------------------------------------
# Identity preservation: face-descriptor distances to the identity frame.
# -------------------------------------------------------------------------------------------------


def identity_summary(distances: Sequence[ArrayLike], threshold: float) -> dict[str, float]:
  """Identity figures over clips from face-descriptor distances to each clip's identity frame.

  A frame where no face was found (distance nan) counts as a failure: it ranks above every
  measured distance in the medians and is never under the threshold.

  Args:
    distances: per clip, distances [...] (any shape, e.g. [K, n] for K samples of n frames)
      of its scored frames to its identity frame; nan where no face was found.
    threshold: the same-person distance (Dlib: 0.6).

  Returns:
    'distance_median': median over all frames of all clips; 'distance_worst_clip': the
    largest per-clip median; 'under_threshold': fraction of frames with a face closer than
    ``threshold``; 'face_found': fraction of frames with a face. Medians are inf when
    about half (or more) of the frames have no face; all nan without clips.
  """
  if not distances:
    return {'distance_median': math.nan, 'distance_worst_clip': math.nan,
            'under_threshold': math.nan, 'face_found': math.nan}
  per_clip = [np.asarray(d, np.float64).ravel() for d in distances]
  ranked = [np.where(np.isnan(d), np.inf, d) for d in per_clip]
  pooled = np.concatenate(ranked)
  return {
      'distance_median': float(np.median(pooled)),
      'distance_worst_clip': float(max(np.median(d) for d in ranked)),
      'under_threshold': float(np.mean(pooled < threshold)),
      'face_found': float(np.mean(np.isfinite(pooled))),
  }
