"""Tests for talkface_jax.metrics: scikit-image agreement and analytic cases."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from skimage.metrics import peak_signal_noise_ratio
from skimage.metrics import structural_similarity

from talkface_jax import metrics


def _skimage_ssim(a, b):
  return structural_similarity(
      a, b, data_range=1, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, channel_axis=-1)


def _astronaut_pairs(size, rng):
  """Real-image pairs: a crop against noisy, shifted and darkened versions."""
  image = skimage.data.astronaut().astype(np.float64) / 255.0
  reference = image[80:80 + size, 160:160 + size]
  noisy = np.clip(reference + rng.normal(0, 0.05, reference.shape), 0, 1)
  shifted = image[83:83 + size, 158:158 + size]
  darker = reference * 0.7
  return [(reference, noisy), (reference, shifted), (reference, darker),
          (reference, reference)]


@pytest.mark.parametrize('size', [64, 128])
def test_ssim_psnr_match_skimage_on_real_frames(size):
  rng = np.random.default_rng(size)
  for a, b in _astronaut_pairs(size, rng):
    np.testing.assert_allclose(
        float(metrics.ssim(a, b)), _skimage_ssim(a, b), atol=1e-5)
    expected_psnr = (np.inf if np.array_equal(a, b) else
                     peak_signal_noise_ratio(a, b, data_range=1))
    np.testing.assert_allclose(
        float(metrics.psnr(a, b)), expected_psnr, rtol=1e-5)


def test_ssim_psnr_match_skimage_on_random_frames():
  rng = np.random.default_rng(0)
  for shape in [(64, 64, 3), (40, 56, 3), (32, 32, 1)]:
    a = rng.random(shape)
    # Correlated pair (a plus noise) and an independent pair.
    for b in [np.clip(a + rng.normal(0, 0.1, shape), 0, 1), rng.random(shape)]:
      np.testing.assert_allclose(
          float(metrics.ssim(a, b)), _skimage_ssim(a, b), atol=1e-5)
      np.testing.assert_allclose(
          float(metrics.psnr(a, b)),
          peak_signal_noise_ratio(a, b, data_range=1), rtol=1e-5)


def test_ssim_is_not_fooled_by_a_constant_offset():
  # Large local means stress the float32 variance; SSIM must still match.
  rng = np.random.default_rng(1)
  a = 0.9 + 0.05 * rng.random((48, 48, 3))
  b = np.clip(a + rng.normal(0, 0.01, a.shape), 0, 1)
  np.testing.assert_allclose(
      float(metrics.ssim(a, b)), _skimage_ssim(a, b), atol=1e-5)


def test_batched_and_jitted_metrics_equal_per_image_calls():
  rng = np.random.default_rng(2)
  a = rng.random((2, 3, 32, 32, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
  batched_ssim = jax.jit(metrics.ssim)(a, b)
  batched_psnr = jax.jit(metrics.psnr)(a, b)
  assert batched_ssim.shape == (2, 3)
  assert batched_psnr.shape == (2, 3)
  for i, j in itertools.product(range(2), range(3)):
    np.testing.assert_allclose(batched_ssim[i, j],
                               _skimage_ssim(a[i, j], b[i, j]), atol=1e-5)
    np.testing.assert_allclose(
        batched_psnr[i, j],
        peak_signal_noise_ratio(a[i, j], b[i, j], data_range=1), rtol=1e-5)


def test_ssim_of_identical_images_is_one_and_psnr_infinite():
  a = np.random.default_rng(3).random((16, 16, 3))
  np.testing.assert_allclose(float(metrics.ssim(a, a)), 1.0, atol=1e-6)
  assert np.isposinf(float(metrics.psnr(a, a)))


def test_psnr_known_value():
  # A uniform error of 0.1 gives MSE 0.01, i.e. 20 dB.
  a = np.full((8, 8, 3), 0.5)
  np.testing.assert_allclose(float(metrics.psnr(a, a + 0.1)), 20.0, rtol=1e-5)


def test_ssim_rejects_small_or_mismatched_images():
  with pytest.raises(ValueError, match='at least 11x11'):
    metrics.ssim(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)))
  with pytest.raises(ValueError, match='shapes differ'):
    metrics.ssim(np.zeros((20, 20, 3)), np.zeros((20, 21, 3)))


def test_landmark_distance_ignores_translation():
  rng = np.random.default_rng(4)
  true = rng.normal(size=(5, 20, 2)) * 10 + 64
  # A different shift per frame still leaves the shape of the mouth unchanged.
  shifted = true + rng.normal(size=(5, 1, 2)) * 7
  np.testing.assert_allclose(
      float(metrics.landmark_distance(shifted, true)), 0.0, atol=1e-4)


def test_landmark_distance_known_offsets():
  # Two points; moving them apart by 3 px each in x after centring gives 3 px
  # per point, and frame 2 is exact, so the mean over frames is 1.5.
  true = np.array([[[0.0, 0.0], [10.0, 0.0]],
                   [[0.0, 0.0], [10.0, 0.0]]])
  pred = np.array([[[-3.0, 5.0], [13.0, 5.0]],
                   [[1.0, 1.0], [11.0, 1.0]]])
  np.testing.assert_allclose(
      float(metrics.landmark_distance(pred, true)), 1.5, rtol=1e-6)
  # 3-4-5 triangle offsets on each point of a centred pair: distance 5.
  pred = np.array([[[-3.0, -4.0], [13.0, 4.0]]])
  np.testing.assert_allclose(
      float(metrics.landmark_distance(pred, true[:1])), 5.0, rtol=1e-6)


def test_landmark_distance_batched():
  rng = np.random.default_rng(5)
  pred = rng.normal(size=(3, 4, 20, 2))
  true = rng.normal(size=(3, 4, 20, 2))
  batched = metrics.landmark_distance(pred, true)
  assert batched.shape == (3,)
  for i in range(3):
    np.testing.assert_allclose(
        batched[i], metrics.landmark_distance(pred[i], true[i]), rtol=1e-6)


def test_diversity_is_zero_for_identical_samples():
  sample = np.random.default_rng(6).random((1, 3, 8, 8, 3))
  samples = np.repeat(sample, 4, axis=0)
  assert float(metrics.pairwise_diversity(samples)) == pytest.approx(
      0.0, abs=1e-7)


def test_diversity_matches_hand_computation():
  rng = np.random.default_rng(7)
  samples = rng.random((2, 3, 8, 8, 3))
  expected = np.mean(np.abs(samples[0] - samples[1]))
  np.testing.assert_allclose(
      float(metrics.pairwise_diversity(samples)), expected, rtol=1e-5)

  # Three samples: the mean over the three pairs.
  samples = rng.random((3, 2, 6, 6, 3))
  pairs = [(0, 1), (0, 2), (1, 2)]
  expected = np.mean(
      [np.mean(np.abs(samples[i] - samples[j])) for i, j in pairs])
  np.testing.assert_allclose(
      float(metrics.pairwise_diversity(samples)), expected, rtol=1e-5)


def test_diversity_mask_restricts_to_region():
  # Samples differ only in the top half ("eyes"), never in the bottom ("mouth").
  base = np.zeros((2, 8, 8, 3))
  samples = np.stack([base, base])
  samples[1, :, :4] = 0.5
  eyes = np.zeros((8, 8), bool)
  eyes[:4] = True
  np.testing.assert_allclose(
      float(metrics.pairwise_diversity(samples, mask=eyes)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(
      float(metrics.pairwise_diversity(samples, mask=~eyes)), 0.0, atol=1e-7)
  np.testing.assert_allclose(
      float(metrics.pairwise_diversity(samples)), 0.25, rtol=1e-6)
  with pytest.raises(ValueError, match='mask shape'):
    metrics.pairwise_diversity(samples, mask=np.ones((4, 4)))


def test_pearson_matches_numpy_corrcoef_for_numpy_and_jax():
  rng = np.random.default_rng(8)
  x = rng.normal(size=(4, 50))
  y = 0.5 * x + rng.normal(size=(4, 50))
  expected = [np.corrcoef(x[i], y[i])[0, 1] for i in range(4)]
  numpy_r = metrics.pearson_r(x, y)
  assert isinstance(numpy_r, np.ndarray)
  np.testing.assert_allclose(numpy_r, expected, rtol=1e-10)
  jax_r = jax.jit(metrics.pearson_r)(jnp.asarray(x), jnp.asarray(y))
  assert isinstance(jax_r, jax.Array)
  np.testing.assert_allclose(jax_r, expected, rtol=1e-5)
  np.testing.assert_allclose(
      metrics.pearson_r(x[0], -3 * x[0] + 1), -1.0, rtol=1e-12)
  assert np.isnan(metrics.pearson_r(np.ones(5), np.arange(5.0)))


def test_best_and_mean_of_k_ranks_by_clip_mean():
  # [K=3, N=2, T=2]: sample 1 has the best mean for clip 0 although sample 0
  # has the single best frame; sample 2 is best for clip 1.
  scores = np.array([[[1.0, 0.0], [0.1, 0.1]],
                     [[0.6, 0.6], [0.2, 0.2]],
                     [[0.0, 0.0], [0.9, 0.5]]])
  best, mean = metrics.best_and_mean_of_k(scores)
  np.testing.assert_allclose(best, (0.6 + 0.7) / 2, rtol=1e-6)
  np.testing.assert_allclose(mean, scores.mean(), rtol=1e-6)
  # Lower is better (e.g. LMD): clip 0 -> sample 2 (0.0), clip 1 -> sample 0.
  best, _ = metrics.best_and_mean_of_k(scores, higher_is_better=False)
  np.testing.assert_allclose(best, (0.0 + 0.1) / 2, rtol=1e-6)


def test_best_of_k_can_rank_by_another_metric():
  ssim_scores = np.array([[0.9, 0.1], [0.5, 0.8]])  # [K=2, N=2]
  psnr_scores = np.array([[20.0, 40.0], [30.0, 25.0]])
  best, mean = metrics.best_and_mean_of_k(psnr_scores, rank_by=ssim_scores)
  # SSIM picks sample 0 for clip 0 and sample 1 for clip 1.
  np.testing.assert_allclose(best, (20.0 + 25.0) / 2, rtol=1e-6)
  np.testing.assert_allclose(mean, psnr_scores.mean(), rtol=1e-6)


def test_mean_pairwise_r():
  rising = np.array([1.0, 2.0, 3.0, 5.0])
  series = np.stack([rising, 2 * rising + 1, -rising, np.full(4, 7.0)])
  # Pairs: (0, 1) r = 1, (0, 2) and (1, 2) r = -1; the constant series has no r.
  assert metrics.mean_pairwise_r(series) == pytest.approx(-1 / 3, rel=1e-12)
  assert np.isnan(metrics.mean_pairwise_r(series[2:]))
  with pytest.raises(ValueError, match='expected \\[K, T\\]'):
    metrics.mean_pairwise_r(rising)


# Blinks and head motion between samples.


def test_closed_eyes_is_under_half_the_open_level():
  closed = metrics.closed_eyes([0.35, 0.2, 0.1, 0.174, 0.176], open_level=0.35)
  np.testing.assert_array_equal(closed, [False, False, True, True, False])


def test_blink_overlap_known_cases():
  t = np.zeros((4, 20), bool)
  t[0, 2:8] = True    # 6 frames
  t[1, 5:8] = True    # 3 frames, inside sample 0: overlap 1
  t[2, 12:16] = True  # disjoint from 0 and 1: overlap 0
  # Sample 3 never blinks: pairs with it do not count.
  overlap, pairs = metrics.blink_overlap(t)
  assert pairs == 3
  np.testing.assert_allclose(overlap, (1.0 + 0.0 + 0.0) / 3)
  t[2, 12:16] = False
  t[2, 6:10] = True   # 2 of 4 frames shared with sample 0, 2 of 3 with sample 1
  overlap, _ = metrics.blink_overlap(t)
  np.testing.assert_allclose(overlap, (1.0 + 2 / 4 + 2 / 3) / 3)


def test_blink_overlap_without_two_blinking_samples_is_nan():
  t = np.zeros((3, 10), bool)
  t[1, 4] = True
  overlap, pairs = metrics.blink_overlap(t)
  assert math.isnan(overlap) and pairs == 0
  with pytest.raises(ValueError, match=r'\[K, T\]'):
    metrics.blink_overlap(t[0])


def test_head_trajectory_motion_and_pairwise_distance():
  rng = np.random.default_rng(0)
  shape = rng.normal(size=(68, 2))
  path = np.stack([np.arange(5.0), np.zeros(5)], -1)  # Moves 1 px/frame along x.
  a = shape + path[:, None]
  b = a + np.array([0.0, 3.0])  # Same motion, 3 px lower.
  traj = metrics.head_trajectory(np.stack([a, b]))
  np.testing.assert_allclose(traj[0] - traj[0, :1], path, atol=1e-12)
  np.testing.assert_allclose(metrics.head_motion(traj), [1.2, 1.2])  # |x - 2| mean over 0..4.
  np.testing.assert_allclose(metrics.pairwise_trajectory_distance(traj), 3.0)
  assert math.isnan(metrics.pairwise_trajectory_distance(traj[:1]))


def test_region_mse_counts_only_the_masked_pixels():
  truth = np.zeros((2, 4, 4, 3))
  videos = np.zeros((2, 2, 4, 4, 3))
  videos[0, :, 0, 0] = 1.0   # Inside the mask.
  videos[1, :, 3, 3] = 1.0   # Outside it.
  mask = np.zeros((4, 4))
  mask[:2, :2] = 1.0
  np.testing.assert_allclose(metrics.region_mse(videos, truth, mask), [0.25, 0.0])


def test_sample_variation_of_one_clip():
  open_eye, closed_eye = 0.3, 0.05
  truth_eyes = np.full(20, open_eye)
  truth_eyes[10:13] = closed_eye  # 3 of 20 frames.
  sample_eyes = np.full((3, 20), open_eye)
  sample_eyes[0, 2:6] = closed_eye
  sample_eyes[1, 4:8] = closed_eye  # Overlaps sample 0 in 2 of 4 frames.
  landmarks = np.zeros((3, 20, 68, 2))
  landmarks[1] += 2.0  # 2 px right and down: sqrt(8) from the others.
  figures = metrics.sample_variation(sample_eyes, truth_eyes, landmarks, landmarks[0])
  assert figures['closed_fraction_samples'] == pytest.approx(8 / 60)
  assert figures['closed_fraction_truth'] == pytest.approx(3 / 20)
  assert figures['samples_with_blink'] == pytest.approx(2 / 3)
  assert figures['truth_with_blink'] == 1.0
  assert figures['blink_overlap'] == pytest.approx(0.5) and figures['blink_pairs'] == 1
  assert figures['head_diversity'] == pytest.approx(2 * math.sqrt(8) / 3)
  assert figures['head_motion_samples'] == 0.0 == figures['head_motion_truth']


def test_reconstructed_blinks_against_the_truth():
  truth = np.full(8, 0.4)  # Open level 0.4: closed under 0.2.
  truth[[2, 3, 4]] = 0.1
  reconstruction = np.full(8, 0.4)
  reconstruction[[3, 4, 6]] = 0.1  # Two of the truth's three closed frames, one of its own.
  figures = metrics.reconstructed_blinks(reconstruction, truth)
  assert figures["closed_fraction_reconstruction"] == pytest.approx(3 / 8)
  assert figures["reconstruction_blink_recall"] == pytest.approx(2 / 3)
  never = metrics.reconstructed_blinks(reconstruction, np.full(8, 0.4))
  assert np.isnan(never["reconstruction_blink_recall"])
  eyes, landmarks = np.full((2, 8), 0.4), np.zeros((2, 8, 68, 2))
  with_it = metrics.sample_variation(eyes, truth, landmarks, landmarks[0], None, reconstruction)
  assert with_it["reconstruction_blink_recall"] == pytest.approx(2 / 3)
  assert "reconstruction_blink_recall" not in metrics.sample_variation(eyes, truth, landmarks,
                                                                       landmarks[0])


def test_closed_with_baseline_counts_sample_closures_the_deterministic_video_shares():
  truth = np.full(8, 0.4)  # Open level 0.4: closed under 0.2.
  baseline = np.array([0.4, 0.1, 0.1, 0.4, 0.4, 0.4, 0.4, 0.4])  # Closed at frames 1, 2.
  samples = np.array([[0.4, 0.1, 0.1, 0.4, 0.4, 0.4, 0.4, 0.4],   # Closed at 1, 2 (shared).
                      [0.4, 0.4, 0.4, 0.4, 0.4, 0.1, 0.1, 0.4]])  # Closed at 5, 6 (drawn).
  figures = metrics.closed_with_baseline(samples, baseline, truth)
  assert figures["closed_fraction_baseline"] == pytest.approx(2 / 8)
  assert figures["closed_with_baseline"] == pytest.approx(2 / 4)
  none_closed = metrics.closed_with_baseline(np.full((2, 8), 0.4), baseline, truth)
  assert np.isnan(none_closed["closed_with_baseline"])


def test_identity_summary_counts_faceless_frames_as_failures():
  clips = [np.array([[0.1, 0.3], [0.7, np.nan]]),  # K = 2 samples x 2 frames; one faceless.
           np.array([0.2, 0.5, 0.9])]
  figures = metrics.identity_summary(clips, threshold=0.6)
  # Pooled: 0.1 0.2 0.3 0.5 0.7 0.9 inf -> median 0.5; per clip 0.5 (0.3 / 0.7) and 0.5.
  assert figures['distance_median'] == pytest.approx(0.5)
  assert figures['distance_worst_clip'] == pytest.approx(0.5)
  assert figures['under_threshold'] == pytest.approx(4 / 7)
  assert figures['face_found'] == pytest.approx(6 / 7)
  mostly_faceless = metrics.identity_summary([np.array([0.1, np.nan, np.nan])], 0.6)
  assert mostly_faceless['distance_median'] == math.inf  # Not a small distance.
  assert mostly_faceless['under_threshold'] == pytest.approx(1 / 3)
  assert all(math.isnan(v) for v in metrics.identity_summary([], 0.6).values())


# -------------------------------------------------------------------------------------------------
# Mouth opening against the loudness of real speech.
# -------------------------------------------------------------------------------------------------


def test_rms_envelope_of_sines_and_silence():
  rate, per_frame = 16000, 640
  t = np.arange(3 * per_frame) / rate
  # 500 Hz: 20 whole periods per 40 ms frame, so each frame's RMS is exactly A / sqrt(2).
  amplitude = np.repeat([0.0, 0.5, 0.2], per_frame)
  samples = amplitude * np.sin(2 * np.pi * 500 * t)
  np.testing.assert_allclose(metrics.rms_envelope(samples, per_frame),
                             [0.0, 0.5 / math.sqrt(2), 0.2 / math.sqrt(2)], atol=1e-12)
  with pytest.raises(ValueError, match='multiple of 640'):
    metrics.rms_envelope(samples[:-1], per_frame)


def _smooth_envelope(num_frames, seed):
  rng = np.random.default_rng(seed)
  return np.convolve(rng.random(num_frames + 4), np.ones(5) / 5, mode='valid')


@pytest.mark.parametrize('lag', [-2, -1, 0, 1, 2])
def test_lagged_r_finds_the_lag_of_an_opening_that_follows_the_envelope(lag):
  envelope = _smooth_envelope(80, seed=lag + 10)
  # opening[t] = 0.3 envelope[t - lag] + 0.1 where that index exists (edges: anything).
  opening = 0.3 * np.roll(envelope, lag) + 0.1
  r, found = metrics.lagged_pearson_r(opening, envelope, max_lag=2)
  assert int(found) == lag
  assert float(r) == pytest.approx(1.0, abs=1e-9)
  # Without that lag in the window, the correlation is weaker.
  if lag:
    r_zero, found_zero = metrics.lagged_pearson_r(opening, envelope, max_lag=0)
    assert int(found_zero) == 0 and float(r_zero) < 0.99


def test_lagged_r_per_sample_noise_and_undefined():
  envelope = _smooth_envelope(100, seed=0)
  rng = np.random.default_rng(1)
  follows = np.roll(envelope, 1) + rng.normal(0, 0.05, 100)  # Noisy, one frame late.
  opposite = -envelope  # Closes when the speech is loud: the best lag cannot make r high.
  still = np.full(100, 0.2)  # A mouth that does not move: r undefined.
  r, lag = metrics.lagged_pearson_r(np.stack([follows, opposite, still]), envelope, max_lag=2)
  expected = metrics.pearson_r(follows[1:], envelope[:-1])
  assert r[0] == pytest.approx(float(expected)) and 0.5 < r[0] < 0.99 and lag[0] == 1
  assert r[1] < 0.0
  assert np.isnan(r[2]) and lag[2] == 0
  with pytest.raises(ValueError, match='max_lag'):
    metrics.lagged_pearson_r(envelope[:3], envelope[:3], max_lag=2)
