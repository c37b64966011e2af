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
  ceiling at this resolution); and blinks: the frames where each video's measured eye
  opening shows closed eyes, next to the generator's ``eye_open`` curve.

and prints a summary.
"""

import json
import math
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from talkface_jax import metrics, sampling, train
from talkface_jax.models import talkface

METRICS_FILE = "metrics.json"


def truth_curves(config: ml_collections.ConfigDict, clip_id: str) -> dict[str, np.ndarray]:
  """The synthetic generator's 'mouth_open' and 'eye_open' curves [T] of ``clip_id``."""
  path = os.path.join(config.data.raw_dir, "ground_truth", f"{clip_id}.npz")
  with np.load(path) as truth:
    return {k: np.asarray(truth[k], np.float32) for k in ("mouth_open", "eye_open")}


def measured_openings(frames: np.ndarray) -> dict[str, np.ndarray]:
  """Mouth and eye openings [T] of aligned uint8 crops [T, S, S, 3], measured as the
  evaluation measures them (one Dlib fit per frame)."""
  from data_prep import face  # pylint: disable=g-import-not-at-top  (Dlib)
  from talkface_jax import evaluation  # pylint: disable=g-import-not-at-top
  landmarks = face.landmarks_on_aligned(frames)
  return {"mouth_open": evaluation.mouth_opening(landmarks, frames.shape[1]),
          "eye_open": evaluation.eye_opening(landmarks)}


def synthetic_checks(config: ml_collections.ConfigDict, clips: list[dict],
                     videos) -> dict[str, dict]:
  """Lip sync and blinks of generated videos against the synthetic truth (frame 0 excluded).

  Lip sync: Pearson r over time between the mouth opening measured on a video and the
  generator's ``mouth_open`` curve. Blinks: a frame has its eyes closed when the measured eye
  opening is under half of the clip's open level (the median opening of its ground-truth
  frames). Both measures are first applied to the ground-truth frames, where they must
  recover the curves that drove the face.

  Args:
    config: the run's config (``data.raw_dir`` holds ``ground_truth/``).
    clips: held-out clips ({'clip_id', 'frames'}).
    videos: per clip, uint8 [K, T, S, S, 3] generated videos.

  Returns:
    'lip_sync': 'per_clip' (clip id -> {'truth_frames_r', 'sample_r' [K]}), 'truth_frames_r'
      (mean over clips: the measure's ceiling at this resolution), 'sample_r_mean' (over
      clips and samples), 'sample_r_min' (the worst sample).
    'blinks': 'per_clip' (clip id -> {'truth_closed_frames' (eye_open < 0.5 in the curve),
      'measured_truth_closed_frames', 'truth_frames_r' (measured opening vs the curve; None
      without a blink), 'sample_closed_frames' [K lists]}), 'truth_frames_r' (mean over
      clips with a blink), 'samples_with_blink' (fraction of all samples with a closed
      frame), 'truth_clips_with_blink' (the same fraction for the ground truth),
      'closed_fraction_samples' and 'closed_fraction_truth' (fraction of frames measured
      with closed eyes: do the samples blink as often as the data?).
  """
  sync, blinks = {}, {}
  for clip, samples in zip(clips, videos):
    num_frames = len(clip["frames"])
    curves = {k: v[1:num_frames] for k, v in truth_curves(config, clip["clip_id"]).items()}
    truth = measured_openings(clip["frames"][1:])
    measured = [measured_openings(s[1:]) for s in samples]
    sync[clip["clip_id"]] = {
        "truth_frames_r": float(metrics.pearson_r(truth["mouth_open"], curves["mouth_open"])),
        "sample_r": [float(metrics.pearson_r(m["mouth_open"], curves["mouth_open"]))
                     for m in measured]}
    closed_level = 0.5 * float(np.median(truth["eye_open"]))
    closed = lambda opening: (np.flatnonzero(opening < closed_level) + 1).tolist()
    blinks[clip["clip_id"]] = {
        "truth_closed_frames": (np.flatnonzero(curves["eye_open"] < 0.5) + 1).tolist(),
        "measured_truth_closed_frames": closed(truth["eye_open"]),
        "truth_frames_r": float(metrics.pearson_r(truth["eye_open"], curves["eye_open"])),
        "sample_closed_frames": [closed(m["eye_open"]) for m in measured]}
  sample_r = np.array([r for c in sync.values() for r in c["sample_r"]])
  sample_r = sample_r[np.isfinite(sample_r)]
  truth_r = np.array([c["truth_frames_r"] for c in sync.values()])
  eye_r = np.array([c["truth_frames_r"] for c in blinks.values()])
  with_blink = [bool(f) for c in blinks.values() for f in c["sample_closed_frames"]]
  scored = sum(len(c["frames"]) - 1 for c in clips)
  scored_samples = sum((len(c["frames"]) - 1) * len(v) for c, v in zip(clips, videos))
  closed_samples = sum(len(f) for c in blinks.values() for f in c["sample_closed_frames"])
  closed_truth = sum(len(c["measured_truth_closed_frames"]) for c in blinks.values())
  return {
      "lip_sync": {"per_clip": sync, "truth_frames_r": _mean(truth_r[np.isfinite(truth_r)]),
                   "sample_r_mean": _mean(sample_r),
                   "sample_r_min": float(sample_r.min()) if sample_r.size else None},
      "blinks": {"per_clip": blinks, "truth_frames_r": _mean(eye_r[np.isfinite(eye_r)]),
                 "samples_with_blink": _mean(np.array(with_blink, np.float32)),
                 "truth_clips_with_blink": _mean(np.array(
                     [bool(c["truth_closed_frames"]) for c in blinks.values()], np.float32)),
                 "closed_fraction_samples": closed_samples / max(scored_samples, 1),
                 "closed_fraction_truth": closed_truth / max(scored, 1)}}


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
  # sampling.write_sample_files, keeping the videos for the checks below.
  clips, videos = sampling.sample_heldout(config, model, variables)
  paths = sampling.write_clip_videos(clips, videos, samples_dir, step)
  logging.info("Wrote %d sample files under %s", len(paths), samples_dir)
  results = {"step": step, "evaluation": eval_results,
             "samples": [os.path.relpath(p, workdir) for p in paths]}
  if "synthetic" in config.data and config.data.synthetic:
    checks = synthetic_checks(config, clips, videos)
    results["synthetic_lip_sync"], results["synthetic_blinks"] = (checks["lip_sync"],
                                                                  checks["blinks"])
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
  if "still_frame_ssim" in ev:
    lines.append(f"  frame 0 held still: ssim {_fmt(ev['still_frame_ssim'])}, psnr "
                 f"{_fmt(ev['still_frame_psnr'])}")
  for name in ("diversity", "diversity_eyes", "diversity_mouth", "agreement_mouth",
               "agreement_eyes"):
    if name in ev:
      lines.append(f"  {name:<16} {_fmt(ev[name])}")
  if "blink_overlap" in ev:  # metrics.sample_variation, averaged over the evaluated clips.
    lines.append(
        f"  eval blinks: samples with one {_fmt(ev['samples_with_blink'])} (clips "
        f"{_fmt(ev['truth_with_blink'])}); closed-eye frames {_fmt(ev['closed_fraction_samples'])}"
        f" (clips {_fmt(ev['closed_fraction_truth'])}); overlap of two samples' blinks "
        f"{_fmt(ev['blink_overlap'])}\n  head: diversity {_fmt(ev['head_diversity'])} px, motion "
        f"{_fmt(ev['head_motion_samples'])} px (clips {_fmt(ev['head_motion_truth'])}); eye "
        f"MSE best of K {_fmt(ev['mse_eyes_best_of_k'])} vs deterministic "
        f"{_fmt(ev['deterministic_mse_eyes'])}")
  sync = results.get("synthetic_lip_sync")
  if sync:
    lines.append(f"  lip sync r vs the synthetic curve: samples mean {_fmt(sync['sample_r_mean'])}"
                 f", worst {_fmt(sync['sample_r_min'])}; ground-truth frames "
                 f"{_fmt(sync['truth_frames_r'])}")
  blinks = results.get("synthetic_blinks")
  if blinks:
    lines.append(f"  blinks: samples with a closed-eye frame {_fmt(blinks['samples_with_blink'])}"
                 f" (ground-truth clips {_fmt(blinks['truth_clips_with_blink'])}); frames "
                 f"with closed eyes {_fmt(blinks['closed_fraction_samples'])} (ground truth "
                 f"{_fmt(blinks['closed_fraction_truth'])}); eye measure r vs the synthetic "
                 f"curve on ground-truth frames {_fmt(blinks['truth_frames_r'])}")
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
