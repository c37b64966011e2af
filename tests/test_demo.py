"""The demo end to end (corpus -> shards -> train -> evaluate -> samples), and data_prep.prepare."""

import glob
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from benchmarks import seeds
from configs import demo as demo_config
from data_prep import build as build_lib
from data_prep import prepare
from talkface_jax import experiment, media
from talkface_jax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config(tmp_path) -> ml_collections.ConfigDict:
  config = demo_config.get_config("tiny")
  config.data.dir = str(tmp_path / "shards")
  config.data.raw_dir = str(tmp_path / "raw")
  return config


def _readme_python_example() -> str:
  """The README's ```python block (the Python API example)."""
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  start = text.index("```python\n") + len("```python\n")
  return text[start:text.index("```", start)]


def _run_demo(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "run_experiment.py"),
         "--config=" + os.path.join(ROOT, "configs/demo.py") + ":tiny",
         f"--workdir={tmp_path / 'work'}", f"--config.data.dir={tmp_path / 'shards'}",
         f"--config.data.raw_dir={tmp_path / 'raw'}"]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


# ------------------------------------------------------------------------------------------------
# The whole demo through run_experiment.py.
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_writes_every_artefact_and_prepares_once(tmp_path):
  first = _run_demo(tmp_path)
  assert first.returncode == 0, first.stderr[-4000:]
  config = _tiny_config(tmp_path)
  work = tmp_path / "work"

  # The corpus and the shards were made, with the held-out sentences as the eval split.
  with open(tmp_path / "raw" / "corpus.json") as f:
    assert len(json.load(f)["clips"]) == config.data.synthetic.clips_per_speaker
  with open(tmp_path / "shards" / build_lib.MANIFEST) as f:
    splits = json.load(f)["splits"]
  assert splits["test"]["clips"] == config.data.heldout_per_speaker
  assert splits["train"]["clips"] == (config.data.synthetic.clips_per_speaker
                                      - config.data.heldout_per_speaker)

  # Training: checkpoint of the last step and TensorBoard events; evaluation: eval_<step>.json.
  step = config.train.num_steps
  assert str(step) in os.listdir(work / "checkpoints")
  assert glob.glob(str(work / "events.out.tfevents.*"))
  assert os.path.exists(work / f"eval_{step}.json")

  # metrics.json: the evaluation's figures and lip sync against the synthetic truth.
  with open(work / experiment.METRICS_FILE) as f:
    metrics = json.load(f)
  assert metrics["step"] == step
  evaluation = metrics["evaluation"]
  for name in ("ssim", "psnr"):
    for kind in ("mean_of_k", "best_of_k"):
      assert np.isfinite(evaluation[f"{name}_{kind}"])
    assert evaluation[f"{name}_best_of_k"] >= evaluation[f"{name}_mean_of_k"]
  assert 0.0 < evaluation["ssim_best_of_k"] <= 1.0
  for name in ("lipsync_r_mean_of_k", "diversity", "diversity_eyes", "diversity_mouth",
               "agreement_mouth", "agreement_eyes", "samples_with_blink", "blink_overlap",
               "head_diversity", "mse_eyes_best_of_k", "deterministic_mse_eyes"):
    assert name in evaluation
  sync = metrics["synthetic_lip_sync"]
  per_clip = list(sync["per_clip"].values())
  assert len(per_clip) == config.sample.num_clips
  assert all(len(c["sample_r"]) == config.sample.num_samples for c in per_clip)
  # The measure follows the curve that drove the mouth on the ground-truth frames (an
  # offset of frames or clips would give r ~ 0). The tiny corpus's one held-out clip opens
  # its mouth little (under half open), close to the measure's noise floor: r 0.58 measured
  # on the crops upscaled to 256 px (0.40 on the 64 px crops); the full demo's 8 held-out
  # clips average 0.87 (BENCHMARKS.md).
  assert sync["truth_frames_r"] > 0.3
  # The evaluation measures the same lip sync on every evaluated clip (here the same one).
  every = evaluation["synthetic_lip_sync"]
  assert len(every["per_clip"]) == config.eval.num_clips
  assert all(len(c["sample_r"]) == config.eval.num_samples for c in every["per_clip"].values())
  assert every["truth_frames_r"] == pytest.approx(sync["truth_frames_r"])
  assert "lip sync r vs the synthetic curve (evaluated clips: 1)" in first.stdout
  blinks = metrics["synthetic_blinks"]
  assert sorted(blinks["per_clip"]) == sorted(sync["per_clip"])
  for clip in blinks["per_clip"].values():
    assert len(clip["sample_closed_frames"]) == config.sample.num_samples
    # On the ground truth, closed eyes are measured only where the generator closed them
    # (within a frame), and a blink of 3 or more frames is found.
    found, truth = clip["measured_truth_closed_frames"], clip["truth_closed_frames"]
    assert all(min(abs(f - t) for t in truth) <= 1 for f in found) if truth else not found
    assert found or len(truth) < 3, (found, truth)

  # Samples: one mp4 with audio per sample at 25 fps, a side-by-side video, a contact sheet.
  files = [str(work / p) for p in metrics["samples"]]
  assert all(os.path.exists(p) for p in files)
  samples = [p for p in files if "_sample" in p and p.endswith(".mp4")]
  assert len(samples) == config.sample.num_clips * config.sample.num_samples
  side = [p for p in files if p.endswith("_side_by_side.mp4")]
  sheets = [p for p in files if p.endswith("_contact_sheet.png")]
  assert len(side) == len(sheets) == config.sample.num_clips
  for path in samples + side:
    info = media.probe(path)
    assert info.has_video and info.has_audio, path
    assert abs(info.video_fps - 25.0) < 1e-3, (path, info.video_fps)
  res = config.model.resolution
  side_frames, _ = media.read_video(side[0])
  assert side_frames.shape[1:] == (res, res * (1 + config.sample.num_samples), 3)
  assert "Finished at step" in first.stdout
  assert "eval blinks: samples with one" in first.stdout
  # A quiet console: progress, warnings and the summaries; library logs are in WORKDIR/log.
  assert "I0000" not in first.stderr and "absl" not in first.stderr, first.stderr[-3000:]
  assert " INFO " not in first.stderr and "Orbax" not in first.stderr, first.stderr[-3000:]
  assert glob.glob(str(work / "log" / "talkface*INFO*"))
  # The workdir carries its config: sampling needs nothing else.
  with open(work / "config.json") as f:
    assert json.load(f)["model"]["resolution"] == config.model.resolution

  # The README's Python example runs on the demo's outputs.
  example = _readme_python_example().replace('"runs/demo', f'"{work}').replace(
      '"data/demo/raw_v2', f'"{tmp_path / "raw"}')
  run = subprocess.run([sys.executable, "-c", example], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "uint8" in run.stdout and (work / "api_example" / "grid.mp4").exists()

  # benchmarks.seeds --remeasure samples the finished run again from its checkpoint and
  # measures it anew: the same videos, so (with the same code) the same figures.
  assert seeds.remeasure(str(work))
  with open(work / experiment.METRICS_FILE) as f:
    again = json.load(f)
  assert again["synthetic_lip_sync"] == metrics["synthetic_lip_sync"]
  assert again["evaluation"] == metrics["evaluation"]

  # The demo replays z from a latent bank, stored beside the checkpoints. --generate_from
  # evaluates and samples the run again with the prior's draws instead (nothing trained,
  # the same checkpoint): the data's figures and the deterministic baseline (the prior's
  # mean) stay. (The samples of this 4-step model differ by less than a uint8 level.)
  assert (work / f"latent_bank_{metrics['evaluation']['step']}.npz").exists()
  other = tmp_path / "with_prior"
  seeds.regenerate(str(work), str(other), ["--config.model.latent_source=prior"])
  assert workdir_lib.read_config(str(other)).model.latent_source == "prior"
  with open(other / experiment.METRICS_FILE) as f:
    prior = json.load(f)["evaluation"]
  for key in ("closed_fraction_truth", "still_frame_ssim", "deterministic_ssim",
              "deterministic_mse_eyes", "closed_fraction_reconstruction"):
    assert prior[key] == metrics["evaluation"][key], key

  # Preparing again finds the corpus and the shards complete and redoes nothing.
  shard_files = sorted(glob.glob(str(tmp_path / "shards" / "*.tfrecord*")))
  mtimes = [os.path.getmtime(p) for p in shard_files]
  assert prepare.ensure_shards(config) == {"status": "present"}
  assert [os.path.getmtime(p) for p in shard_files] == mtimes


# ------------------------------------------------------------------------------------------------
# data_prep.prepare without Dlib.
# ------------------------------------------------------------------------------------------------


def test_build_options_follow_the_config(tmp_path):
  config = _tiny_config(tmp_path)
  options = prepare.build_options(config)
  assert options["resolution"] == config.model.resolution
  assert options["split_rule"] == "sentences"
  assert options["heldout_per_speaker"] == config.data.heldout_per_speaker
  assert options["out_dir"] == os.path.abspath(config.data.dir)


def _fake_build(config, **parameter_changes):
  """A 'complete' shard folder: TFDS metadata and a manifest made as ``config`` asks."""
  os.makedirs(config.data.dir, exist_ok=True)
  options = prepare.build_options(config)
  # As a build writes them: its config's fields and the code's clip parameters.
  parameters = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()
                if k != "dataset"}
  parameters.update(build_lib.BuildConfig.create(**options).clip_parameters())
  parameters.update(parameter_changes)
  with open(os.path.join(config.data.dir, build_lib.MANIFEST), "w") as f:
    json.dump({"dataset": options["dataset"], "parameters": parameters}, f)
  with open(os.path.join(config.data.dir, prepare.DATASET_INFO), "w") as f:
    json.dump({"splits": [{"name": "train"}, {"name": "test"}]}, f)


def test_existing_matching_build_is_left_alone(tmp_path):
  config = _tiny_config(tmp_path)
  _fake_build(config, num_workers=99)  # The worker count does not change the output.
  assert prepare.ensure_shards(config) == {"status": "present"}
  assert not os.path.exists(config.data.raw_dir)  # No corpus was generated.


def test_build_with_other_parameters_is_an_error(tmp_path):
  config = _tiny_config(tmp_path)
  _fake_build(config, heldout_per_speaker=3, resolution=128)
  with pytest.raises(ValueError, match="heldout_per_speaker.*resolution|resolution"):
    prepare.ensure_shards(config)


def test_build_by_an_older_pipeline_is_an_error(tmp_path):
  config = _tiny_config(tmp_path)
  _fake_build(config, pipeline_version="1")
  with pytest.raises(ValueError, match="pipeline_version: built '1'"):
    prepare.ensure_shards(config)


def test_missing_eval_split_is_an_error(tmp_path):
  config = _tiny_config(tmp_path)
  _fake_build(config)
  config.data.eval_split = "validation"
  with pytest.raises(ValueError, match="eval_split='validation'"):
    prepare.ensure_shards(config)


def test_sentence_split_needs_heldout_clips(tmp_path):
  config = _tiny_config(tmp_path)
  config.data.heldout_per_speaker = 0
  with pytest.raises(ValueError, match="heldout_per_speaker > 0"):
    prepare.ensure_shards(config)


def test_several_processes_do_not_build_at_once(tmp_path):
  config = _tiny_config(tmp_path)
  config.distributed = True
  with pytest.raises(ValueError, match="prepare them first"):
    prepare.ensure_shards(config)
  assert not os.path.exists(config.data.raw_dir)


def test_refuses_to_write_a_corpus_into_a_foreign_folder(tmp_path):
  config = _tiny_config(tmp_path)
  os.makedirs(os.path.join(config.data.raw_dir, "s1"))
  with open(os.path.join(config.data.raw_dir, "s1", "clip.mpg"), "wb") as f:
    f.write(b"not ours")
  with pytest.raises(ValueError, match="not a synthetic corpus"):
    prepare.ensure_corpus(config)


def test_missing_real_corpus_is_a_clear_error(tmp_path):
  config = _tiny_config(tmp_path)
  config.data.synthetic = None
  with pytest.raises(FileNotFoundError, match="raw corpus"):
    prepare.ensure_shards(config)


def test_interrupted_corpus_is_completed(tmp_path):
  config = _tiny_config(tmp_path)
  config.data.synthetic.clips_per_speaker = 2
  first = prepare.ensure_corpus(config)
  assert first["generated"] == 2
  with open(os.path.join(config.data.raw_dir, "corpus.json")) as f:
    lost = json.load(f)["clips"][1]
  os.remove(os.path.join(config.data.raw_dir, "ground_truth", lost + ".npz"))
  again = prepare.ensure_corpus(config)
  assert (again["generated"], again["skipped"]) == (1, 1)
