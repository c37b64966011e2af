"""Training-time audio augmentation (data_prep.audio_augment): each piece checked analytically,
the whole as a pure function of its seed, and the input pipeline applying exactly it."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import grid
from data_prep import audio, audio_augment, schema
from talkface_jax import input_pipeline
from tests import shard_fixtures

NYQUIST = schema.SAMPLE_RATE / 2


def _speech_like(seconds=1.0, seed=0):
  """A voiced tone with a syllable-rate envelope, float32 in [-1, 1]."""
  t = np.arange(int(seconds * schema.SAMPLE_RATE)) / schema.SAMPLE_RATE
  rng = np.random.default_rng(seed)
  harmonics = sum(np.sin(2 * np.pi * 140 * h * t + rng.uniform(0, 6)) / h for h in range(1, 20))
  return (0.2 * harmonics * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_vtlp_warp_scales_low_frequencies_and_keeps_the_band(alpha):
  hz = np.linspace(0, NYQUIST, 2001)
  warped = audio.vtlp_warp(hz, alpha, NYQUIST)
  assert warped[0] == 0 and warped[-1] == pytest.approx(NYQUIST)
  assert np.all(np.diff(warped) > 0)  # Monotonic: no two frequencies swap.
  low = hz <= audio.VTLP_BOUNDARY_HZ * min(alpha, 1) / alpha
  np.testing.assert_allclose(warped[low], alpha * hz[low])
  assert np.max(np.abs(np.diff(warped))) < 2 * NYQUIST / 2000  # Continuous at the boundary.
  np.testing.assert_array_equal(audio.vtlp_warp(hz, 1.0, NYQUIST), hz)


def test_warped_filterbank_moves_the_filters_by_alpha():
  plain = audio.mel_filterbank(schema.SAMPLE_RATE)
  np.testing.assert_array_equal(audio.mel_filterbank(schema.SAMPLE_RATE, warp=1.0), plain)
  up = audio.mel_filterbank(schema.SAMPLE_RATE, warp=1.1)
  centre = lambda bank: np.argmax(bank, axis=1)
  assert np.all(centre(up) >= centre(plain)) and np.any(centre(up) > centre(plain))
  mid = slice(8, 16)  # Filters well above the floored low bins, below the 4.8 kHz boundary.
  np.testing.assert_allclose(centre(up)[mid], 1.1 * centre(plain)[mid], rtol=0.08)


def test_reverberation_has_the_asked_direct_to_reverberant_ratio_and_loudness():
  impulse = np.zeros(16000)
  impulse[100] = 1.0
  tail = np.random.default_rng(0).standard_normal(16000)
  response = audio_augment.reverberate(impulse, tail, rt60=0.3, drr_db=6.0, power=1.0)
  direct, reverberant = response[100] ** 2, np.sum(response[101:] ** 2)
  assert 10 * np.log10(direct / reverberant) == pytest.approx(6.0, abs=1e-6)
  assert np.mean(response ** 2) == pytest.approx(1.0)
  assert np.max(np.abs(response[:100])) < 1e-12  # Causal (up to the FFT's rounding).
  # The tail decays by 60 dB over RT60: the last 10 % of it carries almost nothing.
  assert np.sum(response[101 + 4320:101 + 4800] ** 2) < 1e-4 * reverberant
  speech = _speech_like()
  dry = audio_augment.reverberate(speech, tail, rt60=0.3, drr_db=80.0,
                                  power=float(np.mean(speech.astype(np.float64) ** 2)))
  np.testing.assert_allclose(dry, speech, atol=2e-3)


def test_noise_is_added_at_the_asked_snr_and_pink_noise_falls_as_1_over_f():
  speech = _speech_like().astype(np.float64)
  power = float(np.mean(speech ** 2))
  white = np.random.default_rng(1).standard_normal(len(speech))
  noisy = audio_augment.add_noise(speech, white, 15.0, power)
  assert 10 * np.log10(power / np.mean((noisy - speech) ** 2)) == pytest.approx(15.0)
  pink = audio_augment.pink_noise(np.random.default_rng(2).standard_normal(2 ** 16))
  spectrum = np.abs(np.fft.rfft(pink)) ** 2
  f = np.arange(len(spectrum))
  bands = np.logspace(1, np.log10(len(spectrum) - 1), 12).astype(int)
  band_power = [spectrum[a:b].mean() for a, b in zip(bands[:-1], bands[1:])]
  band_f = [f[a:b].mean() for a, b in zip(bands[:-1], bands[1:])]
  slope = np.polyfit(np.log(band_f), np.log(band_power), 1)[0]
  assert slope == pytest.approx(-1.0, abs=0.1)


def test_augmented_windows_are_a_pure_function_of_the_seed():
  speech = (_speech_like(1.2) * 32767).astype(np.int16)  # 30 frames of 640 samples.
  clean = audio.mfcc_windows(speech, 30)
  np.testing.assert_array_equal(audio_augment.augmented_windows(speech, 30, [4, 2], 0.0), clean)
  first = audio_augment.augmented_windows(speech, 30, [4, 2], 1.0)
  assert first.shape == (30, 28, 12) and first.dtype == np.float32
  np.testing.assert_array_equal(audio_augment.augmented_windows(speech, 30, [4, 2], 1.0), first)
  assert not np.allclose(first, clean, atol=0.1)
  assert not np.allclose(audio_augment.augmented_windows(speech, 30, [4, 3], 1.0), first,
                         atol=0.1)


def test_kinds_apply_only_the_named_augmentations_with_the_same_draws():
  speech = _speech_like(1.2).astype(np.float64)
  draw = lambda kinds: audio_augment.augment(speech, np.random.default_rng(5), 1.0, kinds)
  every = draw(audio_augment.KINDS)
  warp_only, warp = draw(("warp",))
  np.testing.assert_array_equal(warp_only, speech)  # No reverberation, no noise.
  assert warp == every[1] != 1.0  # The warp drawn is the one every kind would use.
  waveform, no_warp = draw("reverb,noise")
  np.testing.assert_array_equal(waveform, every[0])  # Both applied, as with all three.
  assert no_warp == 1.0
  # The MFCC windows: warp only differs from clean, and from warp + reverb + noise.
  pcm = (_speech_like(1.2) * 32767).astype(np.int16)
  clean = audio.mfcc_windows(pcm, 30)
  only = audio_augment.augmented_windows(pcm, 30, [4, 2], 1.0, ("warp",))
  assert not np.allclose(only, clean, atol=0.1)
  assert not np.allclose(only, audio_augment.augmented_windows(pcm, 30, [4, 2], 1.0), atol=0.1)


def test_the_warp_width_scales_the_same_draw_and_reaches_the_configured_range():
  speech = _speech_like(1.2).astype(np.float64)
  draw = lambda warp: audio_augment.augment(speech, np.random.default_rng(5), 1.0, ("warp",),
                                            warp)[1]
  narrow, wide = draw(audio_augment.WARP), draw(0.2)
  # One uniform u whatever the width: alpha - 1 = w (2u - 1) scales with w.
  assert (wide - 1.0) == pytest.approx(2.0 * (narrow - 1.0), rel=1e-12)
  assert draw(0.0) == 1.0
  alphas = [audio_augment.augment(speech, np.random.default_rng(s), 1.0, ("warp",), 0.2)[1]
            for s in range(200)]
  assert 0.8 <= min(alphas) < 0.83 and 1.17 < max(alphas) <= 1.2
  config = grid.get_config("tiny")
  assert audio_augment.augment_warp(config) == audio_augment.WARP == 0.1
  for bad in (-0.1, 0.6):
    config.data.audio_warp = bad
    with pytest.raises(ValueError, match="data.audio_warp"):
      audio_augment.augment_warp(config)
  pcm = (_speech_like(1.2) * 32767).astype(np.int16)
  assert not np.allclose(audio_augment.augmented_windows(pcm, 30, [4, 2], 1.0, ("warp",), 0.2),
                         audio_augment.augmented_windows(pcm, 30, [4, 2], 1.0, ("warp",)),
                         atol=0.1)


def test_a_masked_band_carries_nothing_over_time_and_the_mask_is_drawn_after_the_rest():
  speech = _speech_like(1.2)
  clean = audio.mfcc(speech)
  every_band = audio.mfcc(speech, band_mask=np.ones(audio.NUM_FILTERS, bool))
  # Every log band at its mean: the cepstra are the same in every frame; the energy is kept.
  np.testing.assert_allclose(every_band[:, 1:], every_band[:1, 1:].repeat(len(clean), 0),
                             atol=1e-9)
  np.testing.assert_array_equal(every_band[:, 0], clean[:, 0])
  mask = np.zeros(audio.NUM_FILTERS, bool)
  mask[5:9] = True
  masked = audio.mfcc(speech, band_mask=mask)
  assert not np.allclose(masked, clean, atol=0.1)
  np.testing.assert_array_equal(audio.mfcc(speech, band_mask=np.zeros_like(mask)), clean)
  # The draws: one mask of 1..MASK_MAX_BANDS adjacent bands, only when "mask" is on; the three
  # other kinds draw what they drew before the mask existed.
  masks = [audio_augment.band_mask(np.random.default_rng(s), 1.0, "mask") for s in range(100)]
  widths = [int(m.sum()) for m in masks]
  assert min(widths) == 1 and max(widths) == audio_augment.MASK_MAX_BANDS
  assert all(np.all(np.diff(np.flatnonzero(m)) == 1) for m in masks)
  assert audio_augment.band_mask(np.random.default_rng(0), 1.0, "warp") is None
  assert audio_augment.band_mask(np.random.default_rng(0), 0.0, "mask") is None
  pcm = (speech * 32767).astype(np.int16)
  plain = audio_augment.augmented_windows(pcm, 30, [4, 2], 1.0, "warp")
  _, alpha = audio_augment.augment(pcm / 32768.0, np.random.default_rng([4, 2]), 1.0, "warp")
  np.testing.assert_array_equal(plain, audio.mfcc_windows(pcm, 30, warp=alpha))
  with_mask = audio_augment.augmented_windows(pcm, 30, [4, 2], 1.0, "warp,mask")
  assert not np.allclose(with_mask, plain, atol=0.1)
  np.testing.assert_array_equal(audio_augment.augmented_windows(pcm, 30, [4, 2], 0.0, "mask"),
                                audio.mfcc_windows(pcm, 30))


@pytest.mark.parametrize("kinds", ["warp,echo", "", " , ", "warp noise"])
def test_audio_augment_kinds_must_name_known_augmentations(kinds):
  config = grid.get_config("tiny")
  # The default: the three there were before the mask.
  assert audio_augment.augment_kinds(config) == audio_augment.DEFAULT_KINDS
  config.data.audio_augment_kinds = kinds
  with pytest.raises(ValueError, match="data.audio_augment_kinds"):
    audio_augment.augment_kinds(config)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_audio_augment_must_be_a_probability(p):
  config = grid.get_config("tiny")
  config.data.audio_augment = p
  with pytest.raises(ValueError, match="data.audio_augment"):
    audio_augment.augment_probability(config)


@pytest.mark.parametrize("kinds", [None, "warp,mask"])
def test_the_training_pipeline_augments_with_its_own_draws_and_resumes_exactly(tmp_path, kinds):
  warp = 0.2 if kinds else audio_augment.WARP
  splits = shard_fixtures.write_tiny_dataset(str(tmp_path), num_train=6, num_test=2,
                                             num_frames=9, examples_per_shard=3)
  config = grid.get_config("tiny")
  config.data.dir = str(tmp_path)
  config.data.seq_len = 5
  config.data.audio_augment = 1.0
  if kinds is not None:
    config.data.audio_augment_kinds = kinds
    config.data.audio_warp = warp
  pipeline = input_pipeline.InputPipeline(config, local_batch_size=2)
  batches = list(itertools.islice(pipeline.train_batches(), 4))
  clips = {c["clip_id"]: c for c in splits["train"]}
  seed = input_pipeline._epoch_seed(config.seed, 0)  # pylint: disable=protected-access
  for batch, _ in batches[:3]:  # The first epoch: example indices 0-5.
    for frames, mfcc in zip(batch["frames"], batch["mfcc"]):
      [(clip_id, offset)] = [(c["clip_id"], o) for c in splits["train"] for o in range(5)
                             if np.array_equal(c["frames"][o:o + 5], frames)]
      clip = clips[clip_id]
      candidates = [audio_augment.augmented_windows(clip["audio"], 9, [seed, i], 1.0,
                                                    kinds or audio_augment.DEFAULT_KINDS,
                                                    warp)
                    for i in range(6)]
      assert any(np.array_equal(c[offset:offset + 5], mfcc) for c in candidates)
      assert not np.array_equal(clip["mfcc"][offset:offset + 5], mfcc)
  resumed = list(itertools.islice(pipeline.train_batches(batches[1][1]), 2))
  for (a, _), (b, _) in zip(batches[2:], resumed):
    np.testing.assert_array_equal(a["mfcc"], b["mfcc"])
  evaluation = next(pipeline.eval_batches(num_batches=1, local_batch_size=2))
  np.testing.assert_array_equal(evaluation["mfcc"][0], splits["test"][0]["mfcc"][:5])


_LEAVE_EARLY = """
import sys
from configs import grid
from talkface_jax import input_pipeline
config = grid.get_config("tiny")
config.data.dir, config.data.seq_len, config.data.audio_augment = sys.argv[1], 8, 1.0
batches = input_pipeline.InputPipeline(config, local_batch_size=2).train_batches()
next(batches)
"""


def test_a_process_that_leaves_its_training_batches_open_still_exits(tmp_path):
  """A tf.data iterator deleted during interpreter finalization waits forever for its
  in-flight augmentation calls (they need the GIL); the pipeline closes its readers first."""
  shard_fixtures.write_tiny_dataset(str(tmp_path), num_train=8, num_test=1, num_frames=75,
                                    examples_per_shard=4)
  result = subprocess.run([sys.executable, "-c", _LEAVE_EARLY, str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr[-2000:]
