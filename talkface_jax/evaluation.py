"""``--mode=eval``: K sampled videos per held-out clip, scored against the ground truth.

For ``config.eval.num_clips`` clips of the eval split (a seeded random choice, as the paper's
256 random test videos), the model generates K = ``config.eval.num_samples`` videos from the
clip's first frame and audio, plus one deterministic video with z fixed to the audio prior's
mean (the baseline). Frame 0 is the given identity frame and is excluded from every score.
Per clip and sample (``metrics`` owns the formulas):

* SSIM and PSNR on frames in [0, 1] (data_range 1), averaged over frames;
* LMD: Dlib mouth landmarks (48-67) fitted on the generated crops
  (``data_prep.face.landmarks_on_aligned``) against the clip's stored ``mouth_landmarks``;
* lip-sync r: Pearson r over time between the inner-lip opening of the generated frames and
  that of the ground-truth frames (both measured the same way, as
  ``data_prep.face.mouth_opening`` does);
* diversity between the K samples: mean pairwise absolute difference per pixel, over the
  whole frame and in the eye and mouth regions of the template (``region_boxes``);
* agreement between the K samples: mean pairwise Pearson r over time of their mouth
  openings and of their eye openings (Dlib eye aspect ratio). Lips follow the audio, so
  the samples' mouths should agree (r near 1) while their blinks need not (r near 0);
* what the audio does not decide (``metrics.sample_variation``): closed-eye fraction of the
  samples and of the ground truth, fraction of samples / clips with a blink, the overlap of
  closed-eye frames of samples that both blink, head motion and head diversity (Dlib
  landmark centroid), and the eye-region MSE ('mse_eyes', ranked like SSIM, so best-of-K
  and the deterministic baseline compare on the region blinks live in).

Stochastic scores are reported as mean-of-K and best-of-K (each metric ranks the samples by
itself, as SVG does for SSIM). Results go to ``WORKDIR/eval_<step>.json``, to TensorBoard
(``eval/...`` scalars) and to a table on stdout.
"""

import json
import math
import os
import tempfile

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from talkface_jax import input_pipeline, metrics, parallel, sampling, train
from talkface_jax.models import talkface

# Dlib indices of the inner-lip points whose vertical gaps measure the mouth opening.
_UPPER_INNER_LIP = (61, 62, 63)
_LOWER_INNER_LIP = (67, 66, 65)
_MOUTH = slice(48, 68)
# Dlib's six points of each eye: corners (0, 3), upper lid (1, 2), lower lid (5, 4).
_EYES = (tuple(range(36, 42)), tuple(range(42, 48)))

# Reported metrics: (name, higher is better).
_RANKED_METRICS = (("ssim", True), ("psnr", True), ("lmd", False), ("mse_eyes", False))
# Figures comparing the K samples of a clip with each other (K >= 2).
_BETWEEN_SAMPLES = ("diversity", "diversity_eyes", "diversity_mouth", "agreement_mouth",
                    "agreement_eyes", "closed_fraction_samples", "closed_fraction_truth",
                    "samples_with_blink", "truth_with_blink", "blink_overlap",
                    "head_diversity", "head_motion_samples", "head_motion_truth")


# -------------------------------------------------------------------------------------------------
# Per-clip scores.
# -------------------------------------------------------------------------------------------------


def frame_scores(samples: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
  """SSIM and PSNR of every generated frame after frame 0.

  Args:
    samples: uint8 [K, T, H, W, 3] generated videos.
    truth: uint8 [T, H, W, 3] ground-truth video.

  Returns:
    {'ssim': [K, T-1], 'psnr': [K, T-1]} float32, on frames scaled to [0, 1] (data_range 1).
  """
  generated = np.asarray(samples[:, 1:], np.float32) / 255.0
  real = np.broadcast_to(np.asarray(truth[1:], np.float32) / 255.0, generated.shape)
  return {"ssim": np.asarray(metrics.ssim(generated, real)),
          "psnr": np.asarray(metrics.psnr(generated, real))}


def mouth_opening(landmarks: np.ndarray, resolution: int) -> np.ndarray:
  """Inner-lip gap of Dlib 68-point landmarks, as ``data_prep.face.mouth_opening`` measures it.

  Taking fitted landmarks lets one Dlib fit per frame serve both LMD and lip sync.

  Args:
    landmarks: [N, 68, 2] fitted on aligned crops of size ``resolution``.
    resolution: crop size S.

  Returns:
    float32 [N], the gap over the template's inter-ocular distance.
  """
  from data_prep import template  # pylint: disable=g-import-not-at-top
  gap = np.linalg.norm(landmarks[:, _UPPER_INNER_LIP] - landmarks[:, _LOWER_INNER_LIP], axis=-1)
  return (gap.mean(-1) / template.inter_ocular(resolution)).astype(np.float32)


def eye_opening(landmarks: np.ndarray) -> np.ndarray:
  """Eye aspect ratio of Dlib 68-point landmarks [N, 68, 2], both eyes averaged: float32 [N].

  (|p1 - p5| + |p2 - p4|) / (2 |p0 - p3|) per eye (Soukupova and Cech 2016): about 0.35 for
  an open eye of the synthetic face at 64x64, under 0.15 when it is closed.
  """
  ratios = []
  for eye in _EYES:
    p = landmarks[:, eye]
    lids = (np.linalg.norm(p[:, 1] - p[:, 5], axis=-1) +
            np.linalg.norm(p[:, 2] - p[:, 4], axis=-1))
    ratios.append(lids / (2.0 * np.linalg.norm(p[:, 0] - p[:, 3], axis=-1)))
  return np.mean(ratios, axis=0).astype(np.float32)


@jax.jit
def _diversity(frames: jax.Array, masks: jax.Array) -> jax.Array:
  """Pairwise diversity of frames [K, T, H, W, 3] for each mask of [M, H, W]: [M]."""
  return jax.vmap(lambda mask: metrics.pairwise_diversity(frames, mask))(masks)


def region_masks(resolution: int) -> tuple[tuple[str, ...], np.ndarray]:
  """(names, float32 [3, S, S]) masks of the whole frame, the eyes and the mouth."""
  from data_prep import face  # pylint: disable=g-import-not-at-top
  names, masks = ["diversity"], [np.ones((resolution, resolution), np.float32)]
  for region, (y0, y1, x0, x1) in face.region_boxes(resolution).items():
    mask = np.zeros((resolution, resolution), np.float32)
    mask[y0:y1, x0:x1] = 1.0
    names.append(f"diversity_{region}")
    masks.append(mask)
  return tuple(names), np.stack(masks)


def score_clip(samples: np.ndarray, clip: dict, truth_opening: np.ndarray,
               masks: tuple[tuple[str, ...], np.ndarray] | None) -> dict[str, np.ndarray]:
  """Scores K generated videos of one clip (frame 0 excluded).

  Args:
    samples: uint8 [K, T, S, S, 3].
    clip: the clip ({'frames' uint8 [T, S, S, 3], 'mouth_landmarks' [T, 20, 2], ...}).
    truth_opening: [T-1] mouth opening of the ground-truth frames 1..T-1.
    masks: ``region_masks`` for diversity, or None to skip it and the agreement (K = 1).

  Returns:
    {'ssim', 'psnr', 'lmd', 'lipsync_r': [K]} (r is nan for a constant opening) and, with
    masks, a scalar per diversity region and 'agreement_mouth', 'agreement_eyes' (nan when
    no pair of curves has a defined r).
  """
  from data_prep import face  # pylint: disable=g-import-not-at-top
  num_samples, num_frames, size = samples.shape[:3]
  scores = {k: v.mean(axis=1) for k, v in frame_scores(samples, clip["frames"]).items()}
  fitted = face.landmarks_on_aligned(samples[:, 1:].reshape(-1, size, size, 3))
  fitted = fitted.reshape(num_samples, num_frames - 1, 68, 2)
  true_mouth = np.broadcast_to(clip["mouth_landmarks"][1:], fitted[:, :, _MOUTH].shape)
  scores["lmd"] = np.asarray(metrics.landmark_distance(fitted[:, :, _MOUTH], true_mouth))
  opening = mouth_opening(fitted.reshape(-1, 68, 2), size).reshape(num_samples, -1)
  scores["lipsync_r"] = np.asarray(
      metrics.pearson_r(opening, np.broadcast_to(truth_opening, opening.shape)), np.float32)
  y0, y1, x0, x1 = face.region_boxes(size)["eyes"]
  eye_mask = np.zeros((size, size), np.float32)
  eye_mask[y0:y1, x0:x1] = 1.0
  scores["mse_eyes"] = metrics.region_mse(samples[:, 1:] / 255.0, clip["frames"][1:] / 255.0,
                                          eye_mask).astype(np.float32)
  if masks is not None:
    names, region_weights = masks
    values = _diversity(np.asarray(samples[:, 1:], np.float32) / 255.0, region_weights)
    scores.update(zip(names, np.asarray(values).tolist()))
    eyes = eye_opening(fitted.reshape(-1, 68, 2)).reshape(num_samples, -1)
    scores["agreement_mouth"] = metrics.mean_pairwise_r(opening)
    scores["agreement_eyes"] = metrics.mean_pairwise_r(eyes)
    truth_fitted = face.landmarks_on_aligned(clip["frames"][1:])
    scores.update(metrics.sample_variation(eyes, eye_opening(truth_fitted), fitted,
                                           truth_fitted))
  return scores


# -------------------------------------------------------------------------------------------------
# Aggregation.
# -------------------------------------------------------------------------------------------------


def summarize(stochastic: list[dict], deterministic: list[dict]) -> dict[str, float]:
  """Mean-of-K, best-of-K, diversity and baseline figures over clips.

  Args:
    stochastic: per clip, ``score_clip`` of the K samples.
    deterministic: per clip, ``score_clip`` of the one deterministic video.

  Returns:
    Scalars: '<metric>_mean_of_k', '<metric>_best_of_k' for ssim, psnr, lmd, lipsync_r;
    'lipsync_r_defined' (fraction of videos whose r is defined); 'diversity',
    'diversity_eyes', 'diversity_mouth', 'agreement_mouth', 'agreement_eyes' (nan when
    K = 1; the agreements average the clips where they are defined);
    'deterministic_<metric>'.
  """
  results = {}
  for name, higher in _RANKED_METRICS:
    per_sample = np.stack([clip[name] for clip in stochastic], axis=1)  # [K, N]
    best, mean = metrics.best_and_mean_of_k(per_sample, higher_is_better=higher)
    results[f"{name}_mean_of_k"] = float(mean)
    results[f"{name}_best_of_k"] = float(best)
  r = np.stack([clip["lipsync_r"] for clip in stochastic], axis=1)  # [K, N], nan if undefined.
  defined = np.isfinite(r)
  results["lipsync_r_mean_of_k"] = float(np.mean(r[defined])) if defined.any() else math.nan
  best_r = [np.max(col[np.isfinite(col)]) for col in r.T if np.isfinite(col).any()]
  results["lipsync_r_best_of_k"] = float(np.mean(best_r)) if best_r else math.nan
  results["lipsync_r_defined"] = float(np.mean(defined))
  for name in _BETWEEN_SAMPLES:
    values = [clip[name] for clip in stochastic if np.isfinite(clip.get(name, math.nan))]
    results[name] = float(np.mean(values)) if values else math.nan
  for name in ("ssim", "psnr", "lmd", "lipsync_r", "mse_eyes"):
    values = np.concatenate([clip[name] for clip in deterministic])
    values = values[np.isfinite(values)] if name == "lipsync_r" else values
    results[f"deterministic_{name}"] = float(np.mean(values)) if values.size else math.nan
  return results


def format_table(results: dict) -> str:
  """The figures of ``evaluate`` as a text table (stochastic mean/best of K | deterministic)."""
  lines = [f"Evaluation at step {results['step']}: {results['num_clips']} clips of "
           f"'{results['split']}', K = {results['num_samples']}, "
           f"{results['frames_scored']} frames scored (frame 0 excluded)",
           f"{'metric':<12}{'mean of K':>12}{'best of K':>12}{'determin.':>12}"]
  fmt = lambda v: f"{v:>12.4f}" if v is not None else f"{'-':>12}"
  for name in ("ssim", "psnr", "lmd", "lipsync_r", "mse_eyes"):
    lines.append(f"{name:<12}{fmt(results[f'{name}_mean_of_k'])}"
                 f"{fmt(results[f'{name}_best_of_k'])}{fmt(results[f'deterministic_{name}'])}")
  for name in _BETWEEN_SAMPLES:
    lines.append(f"{name:<24}{fmt(results[name])}")
  if "still_frame_ssim" in results:
    lines.append(f"frame 0 held still (a model that moves nothing): ssim "
                 f"{results['still_frame_ssim']:.4f}, psnr {results['still_frame_psnr']:.4f}")
  return "\n".join(lines)


# -------------------------------------------------------------------------------------------------
# The evaluation.
# -------------------------------------------------------------------------------------------------


def evaluate_variables(config: ml_collections.ConfigDict, model: talkface.TalkFace, variables,
                       clips: list[dict]) -> dict:
  """Generates and scores ``clips`` with ``variables``; see the module docstring.

  Returns:
    ``summarize``'s figures plus 'still_frame_ssim' and 'still_frame_psnr' (frame 0 repeated:
    the score of a model that moves nothing), 'num_clips', 'num_samples', 'frames_scored',
    'clip_ids', 'skipped' (clip id -> reason for clips under 3 frames, which have no lip-sync
    r).
  """
  from data_prep import face  # pylint: disable=g-import-not-at-top
  import tqdm  # pylint: disable=g-import-not-at-top
  num_samples = config.eval.num_samples
  stochastic_fn = sampling.make_generator(config, model, num_samples)
  deterministic_fn = sampling.make_generator(config, model, 1, deterministic=True)
  masks = region_masks(config.model.resolution) if num_samples > 1 else None
  key = jax.random.key(config.eval.seed)
  stochastic, deterministic, still, clip_ids, skipped, frames_scored = [], [], [], [], {}, 0
  for i, clip in enumerate(tqdm.tqdm(clips, desc="eval clips", unit="clip",
                                     disable=jax.process_index() > 0)):
    if len(clip["frames"]) < 3:
      skipped[clip["clip_id"]] = f"{len(clip['frames'])} frames (needs >= 3)"
      continue
    frame0, mfcc = clip["frames"][None, 0], clip["mfcc"][None]
    truth_opening = mouth_opening(face.landmarks_on_aligned(clip["frames"][1:]),
                                  config.model.resolution)
    samples = stochastic_fn(variables, frame0, mfcc, jax.random.fold_in(key, i))[0]
    stochastic.append(score_clip(samples, clip, truth_opening, masks))
    baseline = deterministic_fn(variables, frame0, mfcc, key)[0]
    deterministic.append(score_clip(baseline, clip, truth_opening, None))
    held = np.repeat(frame0[None], len(clip["frames"]), axis=1)
    still.append(frame_scores(held, clip["frames"]))
    clip_ids.append(clip["clip_id"])
    frames_scored += len(clip["frames"]) - 1
  if not stochastic:
    raise ValueError(f"no clip of >= 3 frames to evaluate (skipped: {skipped})")
  for clip_id, reason in skipped.items():
    logging.warning("Eval skipped %s: %s", clip_id, reason)
  # The trivial baseline: the identity frame held for the whole clip.
  still_scores = {f"still_frame_{name}": float(np.mean(np.concatenate([c[name] for c in still])))
                  for name in ("ssim", "psnr")}
  return {**summarize(stochastic, deterministic), **still_scores, "num_clips": len(stochastic),
          "num_samples": num_samples, "frames_scored": frames_scored, "clip_ids": clip_ids,
          "skipped": skipped}


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates the latest checkpoint of ``workdir`` on the eval split.

  Writes ``WORKDIR/eval_<step>.json`` (non-finite figures as null), ``eval/...`` TensorBoard
  scalars, and prints the table.

  Returns:
    The results: ``evaluate_variables``'s plus 'step', 'split', 'seed'.
  """
  from talkface_jax import experiment  # pylint: disable=g-import-not-at-top  (imports us)
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  state = experiment.restore_latest(config, workdir, model, mesh)
  step = int(state.step)
  clips = input_pipeline.load_clips(config, config.data.eval_split, config.eval.num_clips,
                                    seed=config.eval.seed)
  logging.info("Evaluating step %d on %d clips of %r, K = %d.", step, len(clips),
               config.data.eval_split, config.eval.num_samples)
  results = {"step": step, "split": config.data.eval_split, "seed": config.eval.seed,
             **evaluate_variables(config, model, train.variables_of(state), clips)}
  results = {k: _finite_or_none(v) for k, v in results.items()}
  if jax.process_index() == 0:
    path = os.path.join(workdir, f"eval_{step}.json")
    _write_json(path, results)
    writer = metric_writers.create_default_writer(workdir)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()
                                if isinstance(v, float)})
    writer.flush()
    print(format_table(results), flush=True)
    logging.info("Eval results written to %s", path)
  return results


def _finite_or_none(value):
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _write_json(path: str, data: dict) -> None:
  """Writes ``data`` to ``path`` via a temporary file and a rename (no partial file)."""
  handle, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                  dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(handle, "w") as f:
      json.dump(data, f, indent=2)
    os.replace(temp, path)
  finally:
    if os.path.exists(temp):
      os.remove(temp)
