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
  that of the ground-truth frames (both measured the same way, ``data_prep.face.mouth_opening``
  of landmarks fitted on the crops upscaled to 256 px with the eye band of the clip's frame 0,
  ``upscaled_mouth_opening``: Dlib's fit moves the inner lips with the lids, so a blink
  would read as an opening mouth);
* diversity between the K samples: mean pairwise absolute difference per pixel, over the
  whole frame and in the eye and mouth regions of the template (``region_boxes``);
* agreement between the K samples: mean pairwise Pearson r over time of their mouth
  openings and of their eye openings (Dlib eye aspect ratio). Lips follow the audio, so
  the samples' mouths should agree (r near 1) while their blinks need not (r near 0);
* what the audio does not decide (``metrics.sample_variation``): closed-eye fraction of the
  samples and of the ground truth, fraction of samples / clips with a blink, the overlap of
  closed-eye frames of samples that both blink, head motion and head diversity (Dlib
  landmark centroid), and the eye-region MSE ('mse_eyes', ranked like SSIM, so best-of-K
  and the deterministic baseline compare on the region blinks live in);
* drawn or decided (``metrics.closed_with_baseline``): the fraction of the samples'
  closed-eye frames where the deterministic video's eyes are closed too. Near 1, the closures
  come from the inputs (e.g. the model shuts the eyes wherever the audio is silent), not
  from the latent draw, however many samples "blink";
* rendered or drawn (``metrics.reconstructed_blinks``, K > 1): the closed-eye fraction of the
  teacher-forced reconstruction (z = the frame posterior's mean, previous true frames;
  ``Generator.reconstruct_clips``) and the fraction of the ground truth's closed-eye frames
  it closes too. Reconstructions that blink with the data while the samples do not:
  generation fails to draw blinks (the prior, or the predictor fed its own frames);
  reconstructions that do not blink: the model has not learnt to render one.

* identity preservation: Dlib's face-descriptor distance (``data_prep.face.face_descriptors``)
  between the identity frame (the clip's frame 0) and ``config.eval.identity_frames`` evenly
  spaced frames after it, of each of the K samples and, as the reference a perfect model
  would reach, of the ground truth (the deterministic video is not scored: the descriptor
  costs ~0.2 s per frame on a CPU core). Per kind: the median distance over frames, the worst
  clip's median, the fraction of frames under Dlib's 0.6 same-person threshold and the
  fraction where a face was found at all; a frame without a face is a failure (never under
  the threshold, ranked worst in the medians). Clips whose identity frame shows no face are
  left out of these figures and counted ('identity_clips_unmeasured').

* on a synthetic corpus (``config.data.synthetic``), lip sync against the curve that drove
  each face's mouth ('synthetic_lip_sync', ``data_prep.synthetic_checks``: the mouth opening
  measured on crops upscaled to 256 px, Pearson r per sample; the same r of the ground-truth
  frames is the measure's ceiling), over every evaluated clip and sample.

Stochastic scores are reported as mean-of-K and best-of-K (each metric ranks the samples by
itself, as SVG does for SSIM). Results go to ``WORKDIR/eval_<step>.json``, to TensorBoard
(``eval/...`` scalars); ``format_table`` prints them.

Kinds of speaker: a held-out clip is 'seen' when its speaker has clips in the training split
(held-out sentences of a training speaker, i.e. of a known face and voice) and 'unseen'
otherwise (a new identity and voice: the paper's speaker-independent protocol). The training
split's speakers come from the shard build's manifest (``data_prep.build.split_speakers``).
``config.eval.num_clips`` clips are drawn (seeded) from each kind present in the eval split,
so both are measured however unbalanced the split is (a split of one kind gives the same
clips as before kinds existed); the json's top-level figures are over all of them, and
'seen' / 'unseen' hold the same figures per kind. Shards without a manifest (or LRW, whose
'speaker' is the word) have no kinds: everything is reported overall, with a warning.
"""

import math
import os
from collections.abc import Collection

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from data_prep import build
from data_prep import face
from data_prep import fileio
from data_prep import synthetic_checks
import talkface_jax.errors as errors
import talkface_jax.inference as inference
import talkface_jax.input_pipeline as input_pipeline
import talkface_jax.metrics as metrics

_MOUTH = slice(48, 68)  # Dlib's mouth points, as stored in the shards for LMD.

# Reported metrics: (name, higher is better).
_RANKED_METRICS = (("ssim", True), ("psnr", True), ("lmd", False), ("mse_eyes", False))
# Figures comparing the K samples of a clip with each other (K >= 2).
_BETWEEN_SAMPLES = ("diversity", "diversity_eyes", "diversity_mouth", "agreement_mouth",
                    "agreement_eyes", "closed_fraction_samples", "closed_fraction_truth",
                    "samples_with_blink", "truth_with_blink", "blink_overlap",
                    "head_diversity", "head_motion_samples", "head_motion_truth",
                    "closed_fraction_baseline", "closed_with_baseline",
                    "closed_fraction_reconstruction", "reconstruction_blink_recall")
# The kinds of held-out speaker, and the figures ``format_table`` compares between them.
KINDS = ("seen", "unseen")
_PER_KIND_ROWS = ("num_clips", "ssim_best_of_k", "ssim_mean_of_k", "psnr_mean_of_k",
                  "lmd_mean_of_k", "lipsync_r_mean_of_k", "lipsync_r_best_of_k",
                  "lipsync_r_worst_clip", "still_frame_ssim", "identity_distance_median",
                  "identity_distance_worst_clip", "identity_under_threshold", "identity_face_found",
                  "truth_identity_distance_median", "truth_identity_under_threshold")
# Frames per video scored for identity when a stored config predates the setting.
_IDENTITY_FRAMES_UNSET = 0


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


@jax.jit
def _diversity(frames: jax.Array, masks: jax.Array) -> jax.Array:
  """Pairwise diversity of frames [K, T, H, W, 3] for each mask of [M, H, W]: [M]."""
  return jax.vmap(lambda mask: metrics.pairwise_diversity(frames, mask))(masks)


def region_masks(resolution: int) -> tuple[tuple[str, ...], np.ndarray]:
  """(names, float32 [3, S, S]) masks of the whole frame, the eyes and the mouth."""
  names, masks = ["diversity"], [np.ones((resolution, resolution), np.float32)]
  for region, (y0, y1, x0, x1) in face.region_boxes(resolution).items():
    mask = np.zeros((resolution, resolution), np.float32)
    mask[y0:y1, x0:x1] = 1.0
    names.append(f"diversity_{region}")
    masks.append(mask)
  return tuple(names), np.stack(masks)


def identity_frame_indices(num_frames: int, count: int) -> np.ndarray:
  """``count`` evenly spaced frame indices in 1..num_frames-1 (all of them if fewer): int [n]."""
  return np.unique(np.round(np.linspace(1, num_frames - 1, max(1, count))).astype(int))


def identity_distances(samples: np.ndarray, truth: np.ndarray, count: int) -> dict:
  """Face-descriptor distances of scored frames to the identity frame (``truth[0]``).

  Args:
    samples: uint8 [K, T, S, S, 3] generated videos.
    truth: uint8 [T, S, S, 3] ground-truth video; frame 0 is the identity frame.
    count: frames scored per video (``identity_frame_indices``).

  Returns:
    {'identity_distance': float32 [K, n], 'truth_identity_distance': float32 [n]} (nan where
    no face was found), or {} when the identity frame itself shows no face.
  """
  identity, found = face.face_descriptors(truth[:1])
  if not found[0]:
    return {}
  times = identity_frame_indices(truth.shape[0], count)
  descriptors, _ = face.face_descriptors(np.concatenate(
      [truth[times], samples[:, times].reshape(-1, *samples.shape[2:])]))
  distance = face.descriptor_distance(descriptors, identity[0])
  return {"truth_identity_distance": distance[:len(times)],
          "identity_distance": distance[len(times):].reshape(samples.shape[0], len(times))}


def truth_mouth_opening(clip: dict) -> np.ndarray:
  """[T-1] mouth opening of the clip's ground-truth frames 1..T-1, measured as the samples'
  are (``face.upscaled_mouth_opening`` with the eye band of frame 0)."""
  return face.upscaled_mouth_opening(clip["frames"][1:], eyes_from=clip["frames"][0])


def score_clip(samples: np.ndarray, clip: dict, truth_landmarks: np.ndarray,
               masks: tuple[tuple[str, ...], np.ndarray] | None,
               identity_frames: int = 0,
               baseline_eyes: np.ndarray | None = None,
               reconstruction_eyes: np.ndarray | None = None,
               truth_opening: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Scores K generated videos of one clip (frame 0 excluded).

  Args:
    samples: uint8 [K, T, S, S, 3].
    clip: the clip ({'frames' uint8 [T, S, S, 3], 'mouth_landmarks' [T, 20, 2], ...}).
    truth_landmarks: [T-1, 68, 2] Dlib landmarks of the ground-truth frames 1..T-1
      (``data_prep.face.landmarks_on_aligned``).
    masks: ``region_masks`` for diversity, or None to skip it and the agreement (K = 1).
    identity_frames: frames per video scored for identity (``identity_distances``); 0 skips.
    baseline_eyes: [T-1] eye openings of the clip's deterministic video ('eye_opening' of its
      ``score_clip``), for ``metrics.sample_variation``'s drawn-or-decided figures.
    reconstruction_eyes: [T-1] eye openings of the clip's teacher-forced reconstruction
      (``Generator.reconstruct_clips``), for ``metrics.reconstructed_blinks``.
    truth_opening: [T-1] ``truth_mouth_opening(clip)``, if already measured (else measured
      here).

  Returns:
    {'ssim', 'psnr', 'lmd', 'lipsync_r', 'mse_eyes': [K]} (r is nan for a constant opening),
    'mouth_opening' [K, T-1] (``face.upscaled_mouth_opening``), 'eye_opening' [K, T-1]
    (Dlib eye aspect ratio per frame) and, with masks, a scalar per
    diversity region, 'agreement_mouth', 'agreement_eyes' (nan when no pair of curves has a
    defined r) and ``metrics.sample_variation``'s figures; with
    ``identity_frames``, 'identity_checked' (True) and ``identity_distances``' arrays.
  """
  num_samples, num_frames, size = samples.shape[:3]
  scores = {k: v.mean(axis=1) for k, v in frame_scores(samples, clip["frames"]).items()}
  fitted = face.landmarks_on_aligned(samples[:, 1:].reshape(-1, size, size, 3))
  fitted = fitted.reshape(num_samples, num_frames - 1, 68, 2)
  true_mouth = np.broadcast_to(clip["mouth_landmarks"][1:], fitted[:, :, _MOUTH].shape)
  scores["lmd"] = np.asarray(metrics.landmark_distance(fitted[:, :, _MOUTH], true_mouth))
  # The mouth opening on the crops upscaled (``face.MOUTH_LANDMARK_SIDE``), as the checks
  # against the synthetic curves measure it: at 64 px the inner-lip gap is a pixel or two.
  # Every crop gets the eye band of the clip's frame 0 (the identity frame, every video's
  # first), so the samples' blinks do not read as mouth motion. The eyes, head and LMD keep
  # the fits on the crops as they are.
  opening = face.upscaled_mouth_opening(samples[:, 1:].reshape(-1, size, size, 3),
                                        eyes_from=clip["frames"][0])
  opening = opening.reshape(num_samples, -1)
  scores["mouth_opening"] = opening
  if truth_opening is None:
    truth_opening = truth_mouth_opening(clip)
  scores["lipsync_r"] = np.asarray(
      metrics.pearson_r(opening, np.broadcast_to(truth_opening, opening.shape)), np.float32)
  y0, y1, x0, x1 = face.region_boxes(size)["eyes"]
  eye_mask = np.zeros((size, size), np.float32)
  eye_mask[y0:y1, x0:x1] = 1.0
  scores["mse_eyes"] = metrics.region_mse(samples[:, 1:] / 255.0, clip["frames"][1:] / 255.0,
                                          eye_mask).astype(np.float32)
  eyes = face.eye_opening(fitted.reshape(-1, 68, 2)).reshape(num_samples, -1)
  scores["eye_opening"] = eyes
  if masks is not None:
    names, region_weights = masks
    values = _diversity(np.asarray(samples[:, 1:], np.float32) / 255.0, region_weights)
    scores.update(zip(names, np.asarray(values).tolist()))
    scores["agreement_mouth"] = metrics.mean_pairwise_r(opening)
    scores["agreement_eyes"] = metrics.mean_pairwise_r(eyes)
    scores.update(metrics.sample_variation(eyes, face.eye_opening(truth_landmarks), fitted,
                                           truth_landmarks, baseline_eyes, reconstruction_eyes))
  if identity_frames > 0:
    scores["identity_checked"] = True
    scores.update(identity_distances(samples, clip["frames"], identity_frames))
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
    'lipsync_r_defined' (fraction of videos whose r is defined); 'lipsync_r_worst_clip' and
    'lipsync_r_per_clip' (a list in clip order, None where no r is defined); 'diversity',
    'diversity_eyes', 'diversity_mouth', 'agreement_mouth', 'agreement_eyes' (nan when
    K = 1; the agreements average the clips where they are defined);
    'deterministic_<metric>'; when the clips were scored for identity,
    ``metrics.identity_summary``'s figures of the samples ('identity_...') and of the ground
    truth ('truth_identity_...'), and 'identity_clips_unmeasured' (no face in the identity
    frame).
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
  clips_r = [col[np.isfinite(col)] for col in r.T if np.isfinite(col).any()]
  results["lipsync_r_best_of_k"] = (float(np.mean([c.max() for c in clips_r])) if clips_r
                                    else math.nan)
  # Each clip's mean over its samples with a defined r (None where none is), in clip order;
  # the worst is the clip whose K samples follow its mouth least (issue 10: every clip >= 0.4).
  per_clip = [float(col[np.isfinite(col)].mean()) if np.isfinite(col).any() else None
              for col in r.T]
  results["lipsync_r_per_clip"] = per_clip
  results["lipsync_r_worst_clip"] = (min(m for m in per_clip if m is not None) if clips_r
                                     else math.nan)
  results["lipsync_r_defined"] = float(np.mean(defined))
  for name in _BETWEEN_SAMPLES:
    values = [clip[name] for clip in stochastic if np.isfinite(clip.get(name, math.nan))]
    results[name] = float(np.mean(values)) if values else math.nan
  for name in ("ssim", "psnr", "lmd", "lipsync_r", "mse_eyes"):
    values = np.concatenate([clip[name] for clip in deterministic])
    values = values[np.isfinite(values)] if name == "lipsync_r" else values
    results[f"deterministic_{name}"] = float(np.mean(values)) if values.size else math.nan
  if any(clip.get("identity_checked") for clip in stochastic):
    checked = [clip for clip in stochastic if clip.get("identity_checked")]
    measured = [clip for clip in checked if "identity_distance" in clip]
    for prefix, key in (("identity", "identity_distance"),
                        ("truth_identity", "truth_identity_distance")):
      figures = metrics.identity_summary([clip[key] for clip in measured],
                                         face.SAME_PERSON_DISTANCE)
      results.update({f"{prefix}_{name}": value for name, value in figures.items()})
    results["identity_clips_unmeasured"] = len(checked) - len(measured)
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
    lines.append(f"{name:<32}{fmt(results[name])}")
  if "still_frame_ssim" in results:
    lines.append(f"frame 0 held still (a model that moves nothing): ssim "
                 f"{fmt(results['still_frame_ssim']).strip()}, psnr "
                 f"{fmt(results['still_frame_psnr']).strip()}")
  if "identity_distance_median" in results:
    lines.append(f"identity (face-descriptor distance to frame 0, same person under "
                 f"{face.SAME_PERSON_DISTANCE}): samples median "
                 f"{fmt(results['identity_distance_median']).strip()}, under "
                 f"{fmt(results['identity_under_threshold']).strip()}, face found "
                 f"{fmt(results['identity_face_found']).strip()}; ground truth median "
                 f"{fmt(results['truth_identity_distance_median']).strip()}; "
                 f"{results['identity_clips_unmeasured']} clips without a face in frame 0")
  if not any(kind in results for kind in KINDS):
    lines.append("seen / unseen speakers: not known for these shards (overall figures only)")
    return "\n".join(lines)
  lines.append(f"{'by kind of speaker':<32}" + "".join(f"{kind:>12}" for kind in KINDS))
  for name in _PER_KIND_ROWS:
    values = [results[kind].get(name) for kind in KINDS]
    lines.append(f"{name:<32}" + "".join(
        f"{v:>12d}" if isinstance(v, int) else fmt(v) for v in values))
  return "\n".join(lines)


# -------------------------------------------------------------------------------------------------
# The evaluation.
# -------------------------------------------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks the evaluation's settings before anything long runs (before training, too).

  Raises:
    UserError: a batch size or clip count under 1, a negative identity frame count.
  """
  for key in ("batch_size", "num_clips", "num_samples"):
    if config.eval[key] < 1:
      raise errors.UserError(f"eval.{key} must be >= 1, got {config.eval[key]}")
  if config.eval.get("identity_frames", 0) < 0:
    raise errors.UserError(f"eval.identity_frames must be >= 0 (0: identity not scored), got "
                           f"{config.eval.identity_frames}")


def evaluate_clips(generator: inference.Generator, clips: list[dict],
                   seen_speakers: Collection[str] | None = None) -> dict:
  """Generates and scores ``clips``; see the module docstring.

  Generation is batched (``config.eval.batch_size`` clips x K samples per call, split over
  every device of every process); scoring (Dlib, SSIM) runs on the host of process 0.
  Clip i draws from ``fold_in(key(config.eval.seed), i)``, so the figures do not depend on
  the batch size or the number of devices.

  Args:
    generator: the model.
    clips: ``input_pipeline.load_clips`` clips (with 'speaker').
    seen_speakers: the training split's speakers; with it, the figures are also reported
      per kind of speaker (a clip is 'seen' when its speaker is in it).

  Returns:
    ``summarize``'s figures plus 'still_frame_ssim' and 'still_frame_psnr' (frame 0 repeated:
    the score of a model that moves nothing), 'num_clips', 'num_samples', 'frames_scored',
    'clip_ids', 'lipsync_r_per_clip' (clip id -> the mean of its samples' lip-sync r, None
    where undefined), 'skipped' (clip id -> reason for clips under 3 frames, which have no
    lip-sync r); with ``seen_speakers``, 'seen' and 'unseen': the same figures over the clips
    of that kind (only 'num_clips', 'clip_ids' and 'speakers' when it has none) plus its
    'speakers';
    on a synthetic corpus, 'synthetic_lip_sync' (``synthetic_lip_sync``, all clips).
    Processes other than 0 return None.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  config = generator.config
  num_samples = config.eval.num_samples
  identity_frames = identity_frames_of(config)
  skipped = {c["clip_id"]: f"{len(c['frames'])} frames (needs >= 3)"
             for c in clips if len(c["frames"]) < 3}
  clips = [c for c in clips if len(c["frames"]) >= 3]
  if not clips:
    raise errors.UserError(f"no clip of >= 3 frames to evaluate in {config.data.dir} "
                           f"(skipped: {skipped})")
  key = jax.random.key(config.eval.seed)
  batch_size = config.eval.batch_size
  stochastic_videos = generator.generate_clips(clips, num_samples, key, batch_size)
  deterministic_videos = generator.generate_clips(clips, 1, key, batch_size, deterministic=True)
  reconstructions = generator.reconstruct_clips(clips) if num_samples > 1 else [None] * len(clips)
  if jax.process_index() != 0:
    return None
  masks = region_masks(config.model.resolution) if num_samples > 1 else None
  scored = []  # Per clip: (stochastic scores, deterministic scores, still-frame scores).
  mouth_openings = []  # Per clip: (ground truth's [T-1], samples' [K, T-1]).
  for clip, samples, baseline, reconstruction in tqdm.tqdm(
      list(zip(clips, stochastic_videos, deterministic_videos, reconstructions)),
      desc="scoring clips", unit="clip", leave=False):
    truth_landmarks = face.landmarks_on_aligned(clip["frames"][1:])
    truth_opening = truth_mouth_opening(clip)
    held = np.repeat(clip["frames"][None, :1], len(clip["frames"]), axis=1)
    deterministic = score_clip(baseline, clip, truth_landmarks, None,
                               truth_opening=truth_opening)
    reconstruction_eyes = None if reconstruction is None else face.eye_opening(
        face.landmarks_on_aligned(reconstruction[1:]))
    stochastic = score_clip(samples, clip, truth_landmarks, masks, identity_frames,
                            deterministic["eye_opening"][0], reconstruction_eyes, truth_opening)
    scored.append((stochastic, deterministic, frame_scores(held, clip["frames"])))
    mouth_openings.append((truth_opening, stochastic["mouth_opening"]))
  for clip_id, reason in skipped.items():
    logging.warning("Eval skipped %s: %s", clip_id, reason)
  results = {**_summarize_clips(clips, scored), "num_samples": num_samples, "skipped": skipped}
  sync = synthetic_lip_sync(config, clips, stochastic_videos, mouth_openings)
  if sync is not None:
    results["synthetic_lip_sync"] = sync
  if seen_speakers is not None:
    seen_speakers = set(seen_speakers)
    for kind in KINDS:
      members = [i for i, clip in enumerate(clips)
                 if (clip["speaker"] in seen_speakers) == (kind == "seen")]
      results[kind] = _summarize_clips([clips[i] for i in members], [scored[i] for i in members])
  return results


def synthetic_lip_sync(config: ml_collections.ConfigDict, clips: list[dict],
                       videos: list[np.ndarray],
                       openings: list[tuple[np.ndarray, np.ndarray]] | None = None
                       ) -> dict | None:
  """Lip sync of every evaluated clip's K samples against the curve that drove the synthetic
  face's mouth (``data_prep.synthetic_checks.lip_sync``: 'per_clip', 'sample_r_mean',
  'sample_r_min', 'truth_frames_r'), or None when the corpus is not synthetic or its
  ``ground_truth/`` curves are not on disk (a warning says so). ``openings``: the mouth
  openings ``score_clip`` already measured, per clip (ground truth's, samples'), not fitted
  again."""
  if not config.data.get("synthetic"):
    return None
  truth_dir = os.path.join(config.data.raw_dir, "ground_truth")
  if not os.path.isdir(truth_dir):
    logging.warning("%s is missing: lip sync against the synthetic curves is not measured.",
                    truth_dir)
    return None
  return synthetic_checks.lip_sync(config.data.raw_dir, clips, videos, openings)


def _summarize_clips(clips: list[dict], scored: list[tuple]) -> dict:
  """``summarize``, the still-frame baseline and the counts of some scored clips."""
  counts = {"num_clips": len(clips), "clip_ids": [c["clip_id"] for c in clips],
            "speakers": sorted({c["speaker"] for c in clips})}
  if not clips:
    return counts
  stochastic, deterministic, still = zip(*scored)
  # The trivial baseline: the identity frame held for the whole clip.
  still_scores = {f"still_frame_{name}": float(np.mean(np.concatenate([c[name] for c in still])))
                  for name in ("ssim", "psnr")}
  summary = summarize(list(stochastic), list(deterministic))
  # Which clip is the worst: each clip's lip sync by its id.
  summary["lipsync_r_per_clip"] = dict(zip(counts["clip_ids"], summary["lipsync_r_per_clip"]))
  return {**summary, **still_scores, **counts,
          "frames_scored": sum(len(c["frames"]) - 1 for c in clips)}


def identity_frames_of(config: ml_collections.ConfigDict) -> int:
  """``config.eval.identity_frames``; 0 (not scored, with a warning) for a config stored
  before the setting existed."""
  if "identity_frames" not in config.eval:
    logging.warning("config.eval.identity_frames is not set (a config from before identity "
                    "scoring): identity is not scored; pass --config.eval.identity_frames=4 "
                    "with --config to score it.")
    return _IDENTITY_FRAMES_UNSET
  return config.eval.identity_frames


def seen_speakers_of(config: ml_collections.ConfigDict) -> list[str] | None:
  """The speakers of ``config.data.train_split`` from the shard build's manifest, or None
  (with a warning: seen and unseen speakers are then not told apart)."""
  speakers = build.split_speakers(config.data.dir)
  if speakers is None or config.data.train_split not in speakers:
    why = ("no build manifest listing each split's speakers (shards written by another tool, "
           "or LRW, whose 'speaker' is the word)" if speakers is None else
           f"its manifest has no split {config.data.train_split!r} (has {sorted(speakers)})")
    logging.warning("%s: %s; seen and unseen speakers are not reported apart, overall figures "
                    "only.", config.data.dir, why)
    return None
  return speakers[config.data.train_split]


def speaker_strata(config: ml_collections.ConfigDict) -> tuple[list[str] | None,
                                                                list[str] | None]:
  """(seen speakers, kind of each eval-split example) for choosing clips of every kind.

  Returns:
    ``seen_speakers_of(config)`` and, when it is known, 'seen' or 'unseen' for every example
    of ``config.data.eval_split`` (``input_pipeline.load_clips``'s ``strata``); else
    (None, None).
  """
  seen = seen_speakers_of(config)
  if seen is None:
    return None, None
  seen_set = set(seen)
  speakers = input_pipeline.example_speakers(config, config.data.eval_split)
  return seen, ["seen" if speaker in seen_set else "unseen" for speaker in speakers]


def evaluate(generator: inference.Generator, workdir: str) -> dict | None:
  """Evaluates ``generator`` (a workdir's checkpoint) on the eval split.

  Writes ``WORKDIR/eval_<step>.json`` (non-finite figures as null) and ``eval/...``
  TensorBoard scalars, from process 0.

  The clips are ``config.eval.num_clips`` of each kind of speaker in the eval split (seen /
  unseen, ``seen_speakers_of``), or of the whole split when the kinds are not known.

  Returns:
    The results (``evaluate_clips``'s plus 'step', 'split', 'seed'); None on processes > 0.
  """
  config = generator.config
  check_config(config)
  seen, strata = speaker_strata(config)
  clips = input_pipeline.load_clips(config, config.data.eval_split, config.eval.num_clips,
                                    seed=config.eval.seed, strata=strata)
  logging.info("Evaluating step %s on %d clips of %r, K = %d.", generator.step, len(clips),
               config.data.eval_split, config.eval.num_samples)
  scores = evaluate_clips(generator, clips, seen)
  if scores is None:
    return None
  step = generator.step
  results = {"step": step, "split": config.data.eval_split, "seed": config.eval.seed, **scores}
  results = fileio.json_ready(results)
  path = os.path.join(workdir, f"eval_{step}.json")
  fileio.write_json(path, results)
  writer = metric_writers.create_default_writer(workdir)
  scalars = {f"eval/{k}": v for k, v in results.items() if isinstance(v, float)}
  for kind in KINDS:
    scalars.update({f"eval/{kind}/{k}": v for k, v in results.get(kind, {}).items()
                    if isinstance(v, float)})
  writer.write_scalars(step, scalars)
  writer.flush()
  logging.info("Eval results written to %s", path)
  return results

