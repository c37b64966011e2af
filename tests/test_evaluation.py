"""Evaluation: scores equal to scikit-image, the metrics' aggregation, and a full eval run."""

import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.metrics

from configs import grid
from data_prep import face, fileio, shards, template
from talkface_jax import evaluation, experiment, inference, input_pipeline, train
from tests import fixtures_raw, shard_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_frame_scores_equal_scikit_image_and_skip_frame_zero():
  rng = np.random.default_rng(0)
  truth = rng.integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
  noise = rng.integers(-40, 41, size=(2, 4, 64, 64, 3))
  samples = np.clip(truth[None].astype(int) + noise, 0, 255).astype(np.uint8)
  samples[:, 0] = 0  # Frame 0 is the given identity frame: a wrong one must not count.
  scores = evaluation.frame_scores(samples, truth)
  assert scores["ssim"].shape == scores["psnr"].shape == (2, 3)
  for k in range(2):
    for t in range(1, 4):
      a, b = samples[k, t] / 255.0, truth[t] / 255.0
      expected_ssim = skimage.metrics.structural_similarity(
          a, b, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
          channel_axis=-1)
      expected_psnr = skimage.metrics.peak_signal_noise_ratio(b, a, data_range=1)
      np.testing.assert_allclose(scores["ssim"][k, t - 1], expected_ssim, atol=1e-5)
      np.testing.assert_allclose(scores["psnr"][k, t - 1], expected_psnr, atol=1e-4)


@pytest.fixture(scope="module")
def aligned_clip():
  """A real aligned face clip (astronaut) at 64 x 64 with its mouth landmarks."""
  from data_prep import face  # pylint: disable=g-import-not-at-top
  frames = fixtures_raw.face_frames(6, seed=1)[0]
  aligned = face.FaceAligner(face.AlignConfig(resolution=64)).align(frames)
  return {"clip_id": "s0/astro", "frames": aligned.frames,
          "mouth_landmarks": aligned.mouth_landmarks}


def test_mouth_opening_grows_with_the_inner_lip_gap():
  landmarks = np.zeros((2, 68, 2), np.float32)
  landmarks[1, list(face.LOWER_INNER_LIP), 1] = 3.0  # Lower inner lip 3 px below the upper.
  opening = face.mouth_opening(landmarks, 64)
  np.testing.assert_allclose(opening, [0.0, 3.0 / template.inter_ocular(64)], rtol=1e-6)


def test_crossed_inner_lips_read_as_a_closed_mouth():
  # Dlib crosses the inner lips of some thin-lipped closed mouths (lower points above the
  # upper ones); the unsigned distance read that as an open mouth.
  landmarks = np.zeros((3, 68, 2), np.float32)
  landmarks[:, list(face.UPPER_INNER_LIP), 1] = 10.0
  landmarks[0, list(face.LOWER_INNER_LIP), 1] = 7.0  # All three pairs crossed by 3 px.
  landmarks[1, list(face.LOWER_INNER_LIP), 1] = 13.0  # Open by 3 px.
  landmarks[2, list(face.LOWER_INNER_LIP), 1] = [13.0, 7.0, 13.0]  # The middle pair crossed.
  opening = face.mouth_opening(landmarks, 64)
  gap = 3.0 / template.inter_ocular(64)
  np.testing.assert_allclose(opening, [0.0, gap, 2 * gap / 3], rtol=1e-6)


def test_score_clip_on_the_truth_and_on_a_mouth_only_change(aligned_clip):
  frames = aligned_clip["frames"]
  truth_landmarks = face.landmarks_on_aligned(frames[1:])
  masks = evaluation.region_masks(64)
  perfect = evaluation.score_clip(np.stack([frames, frames]), aligned_clip, truth_landmarks, masks)
  np.testing.assert_allclose(perfect["ssim"], 1.0, atol=1e-6)
  assert perfect["lmd"].max() < 1.5  # Refit on the crops vs. the alignment's own fit.
  assert perfect["diversity"] == perfect["diversity_eyes"] == perfect["diversity_mouth"] == 0
  assert perfect["agreement_mouth"] == pytest.approx(1.0)  # Identical samples agree fully.
  np.testing.assert_array_equal(perfect["mse_eyes"], 0.0)
  assert perfect["head_diversity"] == 0.0
  assert perfect["closed_fraction_samples"] == perfect["closed_fraction_truth"]
  assert perfect["samples_with_blink"] == perfect["truth_with_blink"]
  (y0, y1, x0, x1) = face.region_boxes(64)["mouth"]
  changed = frames.copy()
  changed[1:, y0:y1, x0:x1] = 255 - changed[1:, y0:y1, x0:x1]
  scores = evaluation.score_clip(np.stack([frames, changed]), aligned_clip, truth_landmarks, masks)
  assert scores["ssim"][0] > scores["ssim"][1]
  assert scores["diversity_mouth"] > scores["diversity"] > scores["diversity_eyes"] == 0
  np.testing.assert_array_equal(scores["mse_eyes"], 0.0)  # The eyes were left alone.


def test_synthetic_lip_sync_of_every_clip_or_none(aligned_clip, tmp_path, caplog):
  from data_prep import synthetic_checks  # pylint: disable=g-import-not-at-top
  config = grid.get_config()
  config.data.raw_dir = str(tmp_path)
  frames = aligned_clip["frames"]
  videos = [np.stack([frames, frames[::-1]])]
  assert evaluation.synthetic_lip_sync(config, [aligned_clip], videos) is None  # Not synthetic.
  config.data.synthetic = {"num_speakers": 1}
  assert evaluation.synthetic_lip_sync(config, [aligned_clip], videos) is None  # No curves.
  assert "ground_truth is missing" in caplog.text
  # Curves that are the measure of the clip's own frames: the truth and the first sample
  # follow them exactly, the time-reversed second sample does not.
  mouth = synthetic_checks.mouth_measure(frames, frames[0])
  os.makedirs(tmp_path / "ground_truth" / "s0")
  np.savez(tmp_path / "ground_truth" / "s0" / "astro.npz", mouth_open=mouth,
           eye_open=np.ones_like(mouth))
  sync = evaluation.synthetic_lip_sync(config, [aligned_clip], videos)
  assert sync["truth_frames_r"] == pytest.approx(1.0)
  assert sync["per_clip"]["s0/astro"]["sample_r"][0] == pytest.approx(1.0)
  assert sync["sample_r_min"] == sync["per_clip"]["s0/astro"]["sample_r"][1] < 0.9
  # The evaluation hands over the openings score_clip measured: the same figures.
  scores = evaluation.score_clip(videos[0], aligned_clip,
                                 face.landmarks_on_aligned(frames[1:]), None)
  openings = [(synthetic_checks.mouth_measure(frames[1:], frames[0]), scores["mouth_opening"])]
  assert evaluation.synthetic_lip_sync(config, [aligned_clip], videos, openings) == sync


def test_identity_of_the_same_face_another_person_and_no_face(aligned_clip):
  frames = aligned_clip["frames"]  # The astronaut, 6 frames of a moving head.
  hopper = fixtures_raw.grace_hopper()
  other = face.FaceAligner(face.AlignConfig(resolution=64)).align_one(
      hopper, face.detect_faces(hopper)[0]).frames[0]
  another_person, faceless = frames.copy(), frames.copy()
  another_person[1:] = other
  faceless[1:] = 128
  truth_landmarks = face.landmarks_on_aligned(frames[1:])
  scores = evaluation.score_clip(np.stack([frames, another_person, faceless]), aligned_clip,
                                 truth_landmarks, None, identity_frames=2)
  distance = scores["identity_distance"]  # [K = 3, 2 frames: 1 and 5]
  assert distance.shape == (3, 2)
  assert (distance[0] < 0.3).all() and (distance[1] > face.SAME_PERSON_DISTANCE).all()
  assert np.isnan(distance[2]).all()
  np.testing.assert_array_equal(scores["truth_identity_distance"], distance[0])
  results = evaluation.summarize(
      [scores], [evaluation.score_clip(frames[None], aligned_clip, truth_landmarks, None)])
  assert results["identity_face_found"] == pytest.approx(4 / 6)
  assert results["identity_under_threshold"] == pytest.approx(2 / 6)
  # Sorted: the astronaut's two, the other person's two, two faceless (ranked worst).
  assert results["identity_distance_median"] == pytest.approx(distance[1].mean())
  assert results["truth_identity_under_threshold"] == 1.0
  assert results["identity_clips_unmeasured"] == 0


def test_summarize_mean_best_and_undefined_correlations():
  clip = lambda ssim, psnr, lmd, r: {
      "ssim": np.array(ssim), "psnr": np.array(psnr), "lmd": np.array(lmd),
      "mse_eyes": 0.01 * np.array(lmd), "lipsync_r": np.array(r, np.float32), "diversity": 0.1, "diversity_eyes": 0.2,
      "diversity_mouth": 0.3}
  stochastic = [clip([0.5, 0.7], [20.0, 30.0], [2.0, 1.0], [0.2, math.nan]),
                clip([0.9, 0.8], [25.0, 24.0], [3.0, 5.0], [math.nan, math.nan])]
  deterministic = [clip([0.6], [21.0], [1.5], [0.4]), clip([0.7], [23.0], [2.5], [math.nan])]
  results = evaluation.summarize(stochastic, deterministic)
  assert results["ssim_mean_of_k"] == pytest.approx(0.725)
  assert results["ssim_best_of_k"] == pytest.approx((0.7 + 0.9) / 2)
  assert results["psnr_best_of_k"] == pytest.approx((30.0 + 25.0) / 2)
  assert results["lmd_best_of_k"] == pytest.approx((1.0 + 3.0) / 2)  # Lower is better.
  assert results["mse_eyes_best_of_k"] == pytest.approx(0.02)  # Lower is better.
  assert results["deterministic_mse_eyes"] == pytest.approx(0.02)
  assert results["lipsync_r_mean_of_k"] == pytest.approx(0.2)
  assert results["lipsync_r_best_of_k"] == pytest.approx(0.2)
  assert results["lipsync_r_defined"] == pytest.approx(0.25)
  assert results["diversity_mouth"] == pytest.approx(0.3)
  assert results["deterministic_ssim"] == pytest.approx(0.65)
  assert results["deterministic_lipsync_r"] == pytest.approx(0.4)
  assert results["lipsync_r_worst_clip"] == pytest.approx(0.2)  # The one clip with an r.
  # The worst clip is the one whose K samples follow the mouth least on average.
  stochastic = [clip([0.5] * 2, [20.0] * 2, [1.0] * 2, [0.5, 0.9]),
                clip([0.5] * 2, [20.0] * 2, [1.0] * 2, [0.1, 0.5]),
                clip([0.5] * 2, [20.0] * 2, [1.0] * 2, [0.4, math.nan])]
  results = evaluation.summarize(stochastic, deterministic)
  assert results["lipsync_r_worst_clip"] == pytest.approx(0.3)
  assert results["lipsync_r_best_of_k"] == pytest.approx((0.9 + 0.5 + 0.4) / 3)


_FIELDS = {
    "step", "split", "seed", "num_clips", "num_samples", "frames_scored", "clip_ids", "skipped",
    "ssim_mean_of_k", "ssim_best_of_k", "psnr_mean_of_k", "psnr_best_of_k", "lmd_mean_of_k",
    "lmd_best_of_k", "lipsync_r_mean_of_k", "lipsync_r_best_of_k", "lipsync_r_defined",
    "lipsync_r_worst_clip", "lipsync_r_per_clip",
    "diversity", "diversity_eyes", "diversity_mouth", "agreement_mouth", "agreement_eyes",
    "deterministic_ssim", "deterministic_psnr", "deterministic_lmd", "deterministic_lipsync_r",
    "still_frame_ssim", "still_frame_psnr", "mse_eyes_mean_of_k", "mse_eyes_best_of_k",
    "deterministic_mse_eyes", "closed_fraction_samples", "closed_fraction_truth",
    "samples_with_blink", "truth_with_blink", "blink_overlap", "head_diversity",
    "head_motion_samples", "head_motion_truth", "speakers", "identity_distance_median",
    "identity_distance_worst_clip", "identity_under_threshold", "identity_face_found",
    "truth_identity_distance_median", "truth_identity_distance_worst_clip",
    "truth_identity_under_threshold", "truth_identity_face_found",
    "identity_clips_unmeasured", "closed_fraction_baseline", "closed_with_baseline",
    "closed_fraction_reconstruction", "reconstruction_blink_recall"}


class _EchoGenerator:
  """Stands in for ``inference.Generator`` (no model): K copies of each clip's own frames
  for clips of ``perfect_speakers``, of its frames inverted after frame 0 for the others."""

  def __init__(self, config, perfect_speakers):
    self.config, self.step, self.perfect = config, 7, set(perfect_speakers)

  def generate_clips(self, clips, num_samples, key, batch_size, deterministic=False):
    del key, batch_size, deterministic
    videos = []
    for clip in clips:
      frames = clip["frames"].copy()
      if clip["speaker"] not in self.perfect:
        frames[1:] = 255 - frames[1:]
      videos.append(np.repeat(frames[None], num_samples, axis=0))
    return videos

  def reconstruct_clips(self, clips):
    return [v[0] for v in self.generate_clips(clips, 1, None, 1)]


def test_eval_reports_seen_and_unseen_speakers_apart(tmp_path):
  data, work = str(tmp_path / "data"), str(tmp_path / "work")
  os.makedirs(work)
  make = shard_fixtures.make_clip
  splits = {"train": [make(i, 8, 64, speaker="s9") for i in range(3)],
            "test": ([make(100 + i, 8, 64, speaker="s9") for i in range(5)] +
                     [make(200 + i, 8, 64, speaker="s1") for i in range(2)])}
  shards.write_dataset(data, splits, 64, examples_per_shard=4)
  config = grid.get_config("tiny")
  config.data.dir = data
  config.eval.num_clips, config.eval.num_samples, config.eval.identity_frames = 2, 2, 1
  generator = _EchoGenerator(config, perfect_speakers={"s9"})
  # Shards without the build's manifest: the kinds are not known, overall figures only.
  unknown = evaluation.evaluate(generator, work)
  assert not set(evaluation.KINDS) & set(unknown) and unknown["num_clips"] == 2
  assert "not known" in evaluation.format_table(unknown)
  shard_fixtures.write_manifest(data, splits)
  results = evaluation.evaluate(generator, work)
  with open(os.path.join(work, "eval_7.json")) as f:
    written = json.load(f)
  seen, unseen = written["seen"], written["unseen"]
  # num_clips of each kind (the split has 5 seen and 2 unseen clips), each in its own kind.
  assert seen["num_clips"] == unseen["num_clips"] == 2 and written["num_clips"] == 4
  assert seen["speakers"] == ["s9"] and unseen["speakers"] == ["s1"]
  assert all(c.startswith("s9/") for c in seen["clip_ids"])
  assert all(c.startswith("s1/") for c in unseen["clip_ids"])
  assert sorted(seen["clip_ids"] + unseen["clip_ids"]) == sorted(written["clip_ids"])
  # The seen speaker's videos are perfect, the unseen one's are not; overall is both.
  assert seen["ssim_best_of_k"] == pytest.approx(1.0, abs=1e-6)
  assert unseen["ssim_best_of_k"] < 0.5
  assert written["ssim_mean_of_k"] == pytest.approx(
      (seen["ssim_mean_of_k"] + unseen["ssim_mean_of_k"]) / 2, rel=1e-5)
  assert seen["frames_scored"] == unseen["frames_scored"] == 2 * 7
  # The fixture's frames show no face: identity is not measurable, and says so.
  assert seen["identity_clips_unmeasured"] == 2 and seen["identity_distance_median"] is None
  assert written == json.loads(json.dumps(fileio.json_ready(results)))
  table = evaluation.format_table(results)
  assert "unseen" in table and "identity_distance_median" in table
  # A split of one kind gives the same seeded choice as before the kinds existed.
  plain = input_pipeline.load_clips(config, "test", 3, seed=0)
  one_kind = input_pipeline.load_clips(config, "test", 3, seed=0, strata=["seen"] * 7)
  assert [c["clip_id"] for c in plain] == [c["clip_id"] for c in one_kind]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(config, workdir) of a tiny model trained 2 steps; shared by this module's slow tests."""
  return _trained_workdir(tmp_path_factory.mktemp("trained"))


def _trained_workdir(tmp_path):
  shard_fixtures.write_tiny_dataset(str(tmp_path / "data"), num_frames=10)
  config = grid.get_config("tiny")
  config.model.conv_impl = "xla"
  config.data.dir = str(tmp_path / "data")
  config.train.num_steps = 2
  config.sample.chunk_frames = 4
  workdir = str(tmp_path / "work")
  train.train_and_evaluate(config, workdir)
  return config, workdir


@pytest.mark.slow
def test_eval_of_a_trained_checkpoint_writes_every_field(trained, capsys):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  experiment.run(None, workdir, "eval")  # The workdir's own config.
  with open(os.path.join(workdir, "eval_2.json")) as f:
    results = json.load(f)
  assert set(results) == _FIELDS
  assert results["step"] == 2 and results["num_clips"] == config.eval.num_clips
  assert results["num_samples"] == config.eval.num_samples
  assert results["frames_scored"] == config.eval.num_clips * 9  # Frame 0 excluded.
  for name in ("ssim", "psnr", "lmd"):
    assert results[f"{name}_best_of_k"] is not None and results[f"{name}_mean_of_k"] is not None
    assert math.isfinite(results[f"deterministic_{name}"])
  assert 0 < results["ssim_mean_of_k"] <= results["ssim_best_of_k"] <= 1
  assert results["lmd_best_of_k"] <= results["lmd_mean_of_k"]
  assert results["diversity"] >= 0
  assert 0 < results["still_frame_ssim"] <= 1 and math.isfinite(results["still_frame_psnr"])
  per_clip = results["lipsync_r_per_clip"]  # Names the worst clip.
  assert list(per_clip) == results["clip_ids"]
  defined = [r for r in per_clip.values() if r is not None]
  assert (results["lipsync_r_worst_clip"] == pytest.approx(min(defined)) if defined
          else results["lipsync_r_worst_clip"] is None)
  assert "mean of K" in capsys.readouterr().out
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  # The clips are a seeded random choice: the same seed gives the same clips, and the clips'
  # videos do not depend on how many clips share a generation batch.
  config.eval.batch_size = 1
  again = evaluation.evaluate(inference.load(workdir, config=config), workdir)
  assert again["clip_ids"] == results["clip_ids"]
  for name in ("ssim_mean_of_k", "psnr_mean_of_k", "deterministic_ssim"):
    assert again[name] == pytest.approx(results[name], rel=1e-6), name


_EVAL_ON_DEVICES = """
import json, sys
sys.path.insert(0, {root!r})
from talkface_jax import evaluation, inference
generator = inference.load({workdir!r})
scores = evaluation.evaluate_clips(generator, evaluation.input_pipeline.load_clips(
    generator.config, "test", 2, seed=0))
scores = {{k: v for k, v in scores.items() if isinstance(v, float)}}
print("RESULT" + json.dumps({{**scores, "traces": generator.num_traces}}))
"""


@pytest.mark.slow
def test_eval_on_eight_devices_equals_one(trained):
  _, workdir = trained
  results = {}
  for devices in (1, 8):
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices)}
    run = subprocess.run([sys.executable, "-c", _EVAL_ON_DEVICES.format(root=ROOT,
                                                                        workdir=workdir)],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    line = [l for l in run.stdout.splitlines() if l.startswith("RESULT")][-1]
    results[devices] = json.loads(line[len("RESULT"):])
  assert results[1].keys() == results[8].keys() and "ssim_best_of_k" in results[1]
  # The generation chunk compiles as often on 8 devices as on 1 (once per batch shape and
  # deterministic flag): its state's shardings must not change between chunks.
  assert results[8].pop("traces") == results[1].pop("traces")
  for name, value in results[1].items():
    # 2 clips x K = 2 samples = 4 rows padded to 8 and split over 8 devices: the same rows,
    # the same keys; float32 convolutions of other batch sizes may differ in the last bits.
    assert results[8][name] == pytest.approx(value, rel=1e-4, abs=1e-5, nan_ok=True), name


def test_eye_opening_is_the_eye_aspect_ratio():
  landmarks = np.zeros((2, 68, 2), np.float32)
  # Corners 4 apart; lids 2 apart (first frame) or touching (second), both eyes alike.
  eye = np.array([[0, 0], [1, -1], [3, -1], [4, 0], [3, 1], [1, 1]], np.float32)
  for start in (36, 42):
    landmarks[:, start:start + 6] = eye
  landmarks[1, [37, 38, 43, 44], 1] = 0.0
  landmarks[1, [40, 41, 46, 47], 1] = 0.0
  np.testing.assert_allclose(face.eye_opening(landmarks), [0.5, 0.0], atol=1e-7)
