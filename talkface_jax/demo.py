"""The demo's last step: sample videos, check lip sync against the synthetic truth, metrics.json.

Runs after training and evaluation when ``config.sample.after_training`` is set
(``configs/demo.py``). It writes into the workdir

* ``samples/step_<N>/``: per held-out clip (``config.sample.num_clips`` of the eval split) K
  videos with the clip's audio, a side-by-side video (ground truth | samples) and a contact
  sheet (``sampling.write_sample_files``);
* ``metrics.json``: the evaluation's figures (``talkface_jax.evaluation``) and, for a
  synthetic corpus (``config.data.synthetic``), lip sync against the curve that drove the
  mouth: Pearson r over time between the mouth opening measured on each generated video
  (Dlib on the aligned crop, as the evaluation measures it) and the generator's
  ``mouth_open`` curve, next to the same r for the ground-truth frames (the measure's
  ceiling at this resolution).

and prints a summary.
"""

import json
import math
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from talkface_jax import input_pipeline, metrics, sampling, train
from talkface_jax.models import talkface

METRICS_FILE = "metrics.json"


def truth_curve(config: ml_collections.ConfigDict, clip_id: str) -> np.ndarray:
  """The synthetic generator's mouth-opening curve [T] of ``clip_id`` ('sN/name')."""
  path = os.path.join(config.data.raw_dir, "ground_truth", f"{clip_id}.npz")
  with np.load(path) as truth:
    return np.asarray(truth["mouth_open"], np.float32)


def measured_opening(frames: np.ndarray) -> np.ndarray:
  """Mouth opening [T] of aligned uint8 crops [T, S, S, 3], as the evaluation measures it."""
  from data_prep import face  # pylint: disable=g-import-not-at-top  (Dlib)
  from talkface_jax import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation.mouth_opening(face.landmarks_on_aligned(frames), frames.shape[1])


def synthetic_lip_sync(config: ml_collections.ConfigDict, clips: list[dict],
                       videos) -> dict:
  """Pearson r between measured mouth openings and the synthetic truth, frame 0 excluded.

  Args:
    config: the run's config (``data.raw_dir`` holds ``ground_truth/``).
    clips: held-out clips ({'clip_id', 'frames'}).
    videos: per clip, uint8 [K, T, S, S, 3] generated videos.

  Returns:
    'per_clip' (clip id -> {'truth_frames_r', 'sample_r' [K]}), 'truth_frames_r' (mean over
    clips: how well the measure recovers the curve on real frames), 'sample_r_mean' (over
    clips and samples), 'sample_r_min' (the worst sample).
  """
  per_clip = {}
  for clip, samples in zip(clips, videos):
    curve = truth_curve(config, clip["clip_id"])[1:len(clip["frames"])]
    truth_r = float(metrics.pearson_r(measured_opening(clip["frames"][1:]), curve))
    sample_r = [float(metrics.pearson_r(measured_opening(s[1:]), curve)) for s in samples]
    per_clip[clip["clip_id"]] = {"truth_frames_r": truth_r, "sample_r": sample_r}
  sample_r = np.array([r for c in per_clip.values() for r in c["sample_r"]])
  sample_r = sample_r[np.isfinite(sample_r)]
  truth_r = np.array([c["truth_frames_r"] for c in per_clip.values()])
  return {"per_clip": per_clip,
          "truth_frames_r": _mean(truth_r[np.isfinite(truth_r)]),
          "sample_r_mean": _mean(sample_r),
          "sample_r_min": float(sample_r.min()) if sample_r.size else None}


def write_outputs(config: ml_collections.ConfigDict, workdir: str, state: train.TrainState,
                  eval_results: dict | None) -> dict | None:
  """Writes the sample files and ``metrics.json`` of a finished run; returns the metrics.

  A run stopped early (preemption) writes nothing and returns None: its next start resumes
  training and then writes the outputs.
  """
  step = int(state.step)
  if step < config.train.num_steps:
    logging.info("Training stopped at step %d of %d: no demo outputs yet.", step,
                 config.train.num_steps)
    return None
  model = talkface.build_model(config.model)
  variables = train.variables_of(state)
  samples_dir = os.path.join(workdir, "samples")
  paths = sampling.write_sample_files(config, model, variables, samples_dir, step)
  logging.info("Wrote %d sample files under %s", len(paths), samples_dir)
  results = {"step": step, "evaluation": eval_results,
             "samples": [os.path.relpath(p, workdir) for p in paths]}
  if "synthetic" in config.data and config.data.synthetic:
    clips = input_pipeline.load_clips(config, config.data.eval_split, config.sample.num_clips)
    # The same key as write_sample_files: these are the videos just written.
    videos = sampling.sample_clips(config, model, variables, clips,
                                   config.sample.num_samples, jax.random.key(config.sample.seed))
    results["synthetic_lip_sync"] = synthetic_lip_sync(config, clips, videos)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, METRICS_FILE) + ".tmp", "w") as f:
      json.dump(_plain(results), f, indent=2)
    os.replace(os.path.join(workdir, METRICS_FILE) + ".tmp",
               os.path.join(workdir, METRICS_FILE))
    print(format_summary(results, workdir), flush=True)
  return results


def format_summary(results: dict, workdir: str) -> str:
  """The headline figures of ``metrics.json`` and where the outputs are."""
  lines = [f"Demo finished at step {results['step']}: outputs in {workdir}"]
  ev = results.get("evaluation") or {}
  for name in ("ssim", "psnr", "lipsync_r"):
    if f"{name}_mean_of_k" in ev:
      lines.append(f"  {name:<10} mean of K {_fmt(ev[f'{name}_mean_of_k'])}   best of K "
                   f"{_fmt(ev[f'{name}_best_of_k'])}   deterministic "
                   f"{_fmt(ev.get(f'deterministic_{name}'))}")
  for name in ("diversity", "diversity_eyes", "diversity_mouth"):
    if name in ev:
      lines.append(f"  {name:<16} {_fmt(ev[name])}")
  sync = results.get("synthetic_lip_sync")
  if sync:
    lines.append(f"  lip sync r vs the synthetic curve: samples mean {_fmt(sync['sample_r_mean'])}"
                 f", worst {_fmt(sync['sample_r_min'])}; ground-truth frames "
                 f"{_fmt(sync['truth_frames_r'])}")
  lines.append(f"  {len(results['samples'])} sample files under "
               f"{os.path.join(workdir, 'samples')}; figures in "
               f"{os.path.join(workdir, METRICS_FILE)}")
  return "\n".join(lines)


def _mean(values: np.ndarray) -> float | None:
  return float(np.mean(values)) if values.size else None


def _fmt(value) -> str:
  return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _plain(value):
  """``value`` with numpy types as Python ones and non-finite floats as None (valid JSON)."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_plain(v) for v in value]
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value
