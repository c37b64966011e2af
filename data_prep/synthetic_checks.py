"""Generated videos of the synthetic corpus against the curves that drove its faces.

The synthetic corpus (``data_prep.synthetic``) knows what each face did: it stores, per clip,
the ``mouth_open`` and ``eye_open`` curves it rendered (``RAW_DIR/ground_truth/<clip>.npz``).
``synthetic_checks`` measures the same quantities on generated videos (Dlib landmarks on the
aligned crops; the mouth on crops upscaled to 256 px with frame 0's eyes,
``measured_openings``) and compares:

* lip sync (``lip_sync``): Pearson r over time between each video's measured mouth opening
  and the generator's ``mouth_open`` curve, next to the same r for the ground-truth frames
  (the measure's ceiling at this resolution);
* blinks (``blinks``): the frames where each video's measured eye opening shows closed eyes,
  next to the generator's ``eye_open`` curve.

The evaluation (``talkface_jax.evaluation``) measures the lip sync of every evaluated clip;
the demo (``configs/demo.py``) adds both checks of its sampled clips to
``WORKDIR/metrics.json``. Imports no JAX.
"""

import os

import numpy as np

from data_prep import face


def truth_curves(raw_dir: str, clip_id: str) -> dict[str, np.ndarray]:
  """The synthetic generator's 'mouth_open' and 'eye_open' curves [T] of ``clip_id``."""
  path = os.path.join(raw_dir, "ground_truth", f"{clip_id}.npz")
  with np.load(path) as truth:
    return {k: np.asarray(truth[k], np.float32) for k in ("mouth_open", "eye_open")}


def measured_openings(frames: np.ndarray) -> dict[str, np.ndarray]:
  """Mouth and eye openings [T] of aligned uint8 crops [T, S, S, 3] (Dlib landmarks on the
  template box): ``mouth_measure`` (with frame 0's eyes) and ``eye_measure``."""
  return {"mouth_open": mouth_measure(frames, frames[0]), "eye_open": eye_measure(frames)}


def mouth_measure(frames: np.ndarray, eyes_from: np.ndarray | None = None) -> np.ndarray:
  """The mouth opening [T] of aligned crops, measured on the crops upscaled to
  ``face.MOUTH_LANDMARK_SIDE`` (at 64 px the lip gap is a pixel or two;
  ``benchmarks.real_test`` upscales real videos the same way, without ``eyes_from``); with
  ``eyes_from`` (the clip's frame 0) every crop has that frame's eye band, so that blinks do
  not move the measure (``face.upscaled_mouth_opening``)."""
  return face.upscaled_mouth_opening(frames, eyes_from=eyes_from)


def eye_measure(frames: np.ndarray) -> np.ndarray:
  """The eye opening [T] of aligned crops, measured on the crops as they are, as the
  evaluation measures it."""
  return face.eye_opening(face.landmarks_on_aligned(frames))


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson r of two series [T]; nan when either is constant."""
  x, y = np.asarray(x, np.float64) - np.mean(x), np.asarray(y, np.float64) - np.mean(y)
  denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
  return float(np.sum(x * y) / denominator) if denominator > 0 else float("nan")


def synthetic_checks(raw_dir: str, clips: list[dict], videos) -> dict[str, dict]:
  """Lip sync and blinks of generated videos against the synthetic truth (frame 0 excluded).

  Args:
    raw_dir: the synthetic corpus (it holds ``ground_truth/``).
    clips: held-out clips ({'clip_id', 'frames'}).
    videos: per clip, uint8 [K, T, S, S, 3] generated videos.

  Returns:
    'lip_sync': ``lip_sync``'s figures; 'blinks': ``blinks``'.
  """
  return {"lip_sync": lip_sync(raw_dir, clips, videos), "blinks": blinks(raw_dir, clips, videos)}


def _clip_curves(raw_dir: str, clip: dict) -> dict[str, np.ndarray]:
  """The clip's driving curves over its frames 1..T-1 (frame 0 is the identity frame)."""
  return {k: v[1:len(clip["frames"])] for k, v in truth_curves(raw_dir, clip["clip_id"]).items()}


def lip_sync(raw_dir: str, clips: list[dict], videos, openings=None) -> dict:
  """Pearson r over time between the mouth opening measured on each video (``mouth_measure``,
  with the eyes of the clip's frame 0) and the generator's ``mouth_open`` curve, frame 0
  excluded.
  The same measure is first applied to the ground-truth frames, where it must recover the
  curve (its ceiling at this resolution).

  Args: as ``synthetic_checks``, and ``openings``: per clip, the ``mouth_measure`` of its
    ground-truth frames 1..T-1 [T-1] and of its videos' [K, T-1], when the caller has them
    (the evaluation); None measures them here.

  Returns:
    'per_clip' (clip id -> {'truth_frames_r', 'sample_r' [K]}), 'truth_frames_r' (mean over
    clips), 'sample_r_mean' (over clips and samples), 'sample_r_min' (the worst sample).
  """
  if openings is None:
    openings = [(mouth_measure(clip["frames"][1:], clip["frames"][0]),
                 [mouth_measure(s[1:], clip["frames"][0]) for s in samples])
                for clip, samples in zip(clips, videos)]
  sync = {}
  for clip, (truth_opening, sample_openings) in zip(clips, openings):
    curve = _clip_curves(raw_dir, clip)["mouth_open"]
    sync[clip["clip_id"]] = {"truth_frames_r": pearson_r(truth_opening, curve),
                             "sample_r": [pearson_r(o, curve) for o in sample_openings]}
  sample_r = np.array([r for c in sync.values() for r in c["sample_r"]])
  sample_r = sample_r[np.isfinite(sample_r)]
  truth_r = np.array([c["truth_frames_r"] for c in sync.values()])
  return {"per_clip": sync, "truth_frames_r": _mean(truth_r[np.isfinite(truth_r)]),
          "sample_r_mean": _mean(sample_r),
          "sample_r_min": float(sample_r.min()) if sample_r.size else None}


def blinks(raw_dir: str, clips: list[dict], videos) -> dict:
  """Closed-eye frames of each video against the generator's ``eye_open`` curve, frame 0
  excluded. A frame has its eyes closed when the eye opening (``eye_measure``) is under half
  of the clip's open level (the median opening of its ground-truth frames); the measure is
  first applied to the ground-truth frames, where it must find the frames the curve closes.

  Args: as ``synthetic_checks``.

  Returns:
    'per_clip' (clip id -> {'truth_closed_frames' (eye_open < 0.5 in the curve),
    'measured_truth_closed_frames', 'truth_frames_r' (measured opening vs the curve; None
    without a blink), 'sample_closed_frames' [K lists]}), 'truth_frames_r' (mean over clips
    with a blink), 'samples_with_blink' (fraction of all samples with a closed frame),
    'truth_clips_with_blink' (the same fraction for the ground truth),
    'closed_fraction_samples' and 'closed_fraction_truth' (fraction of frames measured with
    closed eyes: do the samples blink as often as the data?).
  """
  per_clip = {}
  for clip, samples in zip(clips, videos):
    curve = _clip_curves(raw_dir, clip)["eye_open"]
    truth = eye_measure(clip["frames"][1:])
    closed_level = 0.5 * float(np.median(truth))
    closed = lambda opening: (np.flatnonzero(opening < closed_level) + 1).tolist()
    per_clip[clip["clip_id"]] = {
        "truth_closed_frames": (np.flatnonzero(curve < 0.5) + 1).tolist(),
        "measured_truth_closed_frames": closed(truth),
        "truth_frames_r": pearson_r(truth, curve),
        "sample_closed_frames": [closed(eye_measure(s[1:])) for s in samples]}
  eye_r = np.array([c["truth_frames_r"] for c in per_clip.values()])
  with_blink = [bool(f) for c in per_clip.values() for f in c["sample_closed_frames"]]
  scored = sum(len(c["frames"]) - 1 for c in clips)
  scored_samples = sum((len(c["frames"]) - 1) * len(v) for c, v in zip(clips, videos))
  closed_samples = sum(len(f) for c in per_clip.values() for f in c["sample_closed_frames"])
  closed_truth = sum(len(c["measured_truth_closed_frames"]) for c in per_clip.values())
  return {"per_clip": per_clip, "truth_frames_r": _mean(eye_r[np.isfinite(eye_r)]),
          "samples_with_blink": _mean(np.array(with_blink, np.float32)),
          "truth_clips_with_blink": _mean(np.array(
              [bool(c["truth_closed_frames"]) for c in per_clip.values()], np.float32)),
          "closed_fraction_samples": closed_samples / max(scored_samples, 1),
          "closed_fraction_truth": closed_truth / max(scored, 1)}


def _mean(values: np.ndarray) -> float | None:
  return float(np.mean(values)) if values.size else None
