"""Face alignment with Dlib: detect, track, fit landmarks, align to the mean-face template, crop.

Per clip (``FaceAligner.align``):

1. Detect faces with Dlib's frontal (HOG) detector on every ``detect_every``-th frame (and the
   last), on a copy downscaled so its longer side is at most ``detect_max_side``; detection is
   the slow part (tens of ms per frame). Where several faces are found, the track keeps one
   identity: the largest face starts it, then the face nearest the track is followed.
   Around a keyframe that finds no face, every frame is checked, so gaps are located exactly.
2. Frames between two successful detections get a linearly interpolated box, verified by
   correlating its face patch with the nearest detection's (frames that fail go to the
   detector), and the fast 68-point predictor (~2 ms) runs on every frame with a box. Runs of
   at most ``max_gap`` frames with no face get landmarks interpolated over time. A longer run,
   a shot cut or a change of identity (consecutive detections whose face patches do not
   correlate) ends a stretch; the longest stretch of one face is kept (the rest is dropped and
   the reason recorded), so frame 0 always shows a detected face. No face at all rejects the
   clip (:class:`NoFaceError`).
3. The stable points (``template.ALIGN_POINTS[align_on]``: the nose, or nose and eyes) are
   smoothed over time with a Gaussian filter so the crop does not jitter, and a least-squares
   similarity transform maps them onto the template (:mod:`data_prep.template`) at the crop
   resolution.
4. Each frame is warped (bilinear) into the ``resolution`` x ``resolution`` crop, and the
   per-frame landmarks are mapped through the same transform; points 48-67 are kept for LMD.

Photos (one frame, often large: :mod:`data_prep.photo`) use :func:`detect_faces` at a scale of
their choosing and ``FaceAligner.align_one``, whose warp is anti-aliased.

Also: :func:`landmarks_on_aligned` runs the predictor on already aligned crops using the
template's face box (no detection); :func:`mouth_opening` and :func:`eye_opening` measure
those landmarks (LMD, lip sync, blinks). :func:`face_descriptors` and
:func:`descriptor_distance` measure identity with Dlib's face descriptor (same person under
``SAME_PERSON_DISTANCE``).
Imports no JAX.
"""

import dataclasses
import functools

import dlib
import numpy as np
import scipy.ndimage
from PIL import Image

from data_prep import dlib_models
from data_prep import errors
from data_prep import template


class NoFaceError(errors.ContentError):
  """No usable face track in a clip; the message is the reason recorded in the manifest."""


@dataclasses.dataclass(frozen=True)
class AlignConfig:
  """Face alignment parameters.

  Attributes:
    resolution: crop size S (64 or 128).
    detect_every: run the detector on every k-th frame; boxes in between are interpolated.
    detect_max_side: downscale frames for detection so the longer side is at most this.
    detect_upsample: Dlib detector upsampling (1 finds faces down to ~40 px, 4x slower).
    max_gap: longest run of frames without a face that is filled by interpolation.
    smooth_sigma: std (frames) of the temporal Gaussian on the stable points; 0 disables.
    track_min_correlation: a frame between detections whose tracked face patch correlates
      less than this with the nearest detected one is checked by the detector.
    identity_min_correlation: consecutive detections whose face patches correlate less than
      this are a shot cut or another person: the clip is cut there (the same face measured
      at 0.39 or more with fast motion, 0.81 or more in the synthetic LRW clips).
    align_on: 'nose' (points 27-35) or 'nose_eyes' (27-47, the release's choice, which
      lets blinks move the crop): the points the similarity is fitted to
      (``template.ALIGN_POINTS``).
  """
  resolution: int = 128
  detect_every: int = 5
  detect_max_side: int = 640
  detect_upsample: int = 0
  max_gap: int = 5
  smooth_sigma: float = 1.0
  track_min_correlation: float = 0.5
  identity_min_correlation: float = 0.3
  align_on: str = "nose"

  @classmethod
  def field_help(cls) -> dict[str, str]:
    """Field name -> its description in the docstring above (command-line help)."""
    helps, name = {}, None
    for line in cls.__doc__.split("Attributes:")[1].splitlines():
      field = line.strip().split(":", 1)
      if line.startswith("    ") and not line.startswith("      ") and len(field) == 2:
        name = field[0]
        helps[name] = field[1].strip()
      elif name and line.strip():
        helps[name] += " " + line.strip()
    return {k: v.replace("%", "%%") for k, v in helps.items()}

  def __post_init__(self):
    if self.align_on not in template.ALIGN_POINTS:
      raise ValueError(f"align_on={self.align_on!r}; expected one of "
                       f"{sorted(template.ALIGN_POINTS)}")


@dataclasses.dataclass
class AlignedClip:
  """Aligned faces of one clip.

  Attributes:
    frames: uint8 [T, S, S, 3] aligned crops.
    landmarks: float32 [T, 68, 2] (x, y) landmarks in crop pixels (unsmoothed fits).
    boxes: float32 [T, 4] (left, top, right, bottom) face box per frame in source pixels
      (NaN where the face was missing and landmarks were interpolated).
    scale_rotation: complex [T], ``a`` of the per-frame map ``z_crop = a z_frame + b``.
    translation: complex [T], its ``b``.
    stats: counts for the manifest: detections run, faces found, interpolated frames.
  """
  frames: np.ndarray
  landmarks: np.ndarray
  boxes: np.ndarray
  scale_rotation: np.ndarray
  translation: np.ndarray
  stats: dict

  @property
  def mouth_landmarks(self) -> np.ndarray:
    """float32 [T, 20, 2], points 48-67."""
    return self.landmarks[:, template.MOUTH_POINTS]


@functools.lru_cache(maxsize=1)
def _predictor() -> "dlib.shape_predictor":
  return dlib.shape_predictor(dlib_models.path(dlib_models.LANDMARKS_68))


@functools.lru_cache(maxsize=1)
def _detector() -> "dlib.fhog_object_detector":
  return dlib.get_frontal_face_detector()


def _fit_landmarks(frame: np.ndarray, box) -> np.ndarray:
  """Dlib 68-point fit in ``box`` (left, top, right, bottom); float32 [68, 2]."""
  left, top, right, bottom = (int(round(v)) for v in box)
  shape = _predictor()(frame, dlib.rectangle(left, top, right, bottom))
  return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Least-squares similarity (rotation, uniform scale, translation) from source to target.

  Written with complex numbers: ``z_target ~= a * z_source + b``, which for 2-D points is
  exactly the Umeyama solution without reflection.

  Args:
    source: [..., N, 2] points.
    target: [N, 2] or [..., N, 2] points.

  Returns:
    (a, b): complex [...] scale-rotation and translation.
  """
  zs = source[..., 0] + 1j * source[..., 1]
  zt = target[..., 0] + 1j * target[..., 1]
  zs_mean, zt_mean = zs.mean(-1, keepdims=True), zt.mean(-1, keepdims=True)
  zs_c, zt_c = zs - zs_mean, zt - zt_mean
  a = (np.conj(zs_c) * zt_c).sum(-1) / (np.abs(zs_c) ** 2).sum(-1)
  b = zt_mean[..., 0] - a * zs_mean[..., 0]
  return a, b


def apply_similarity(points: np.ndarray, a, b) -> np.ndarray:
  """Maps [..., N, 2] points through ``z -> a z + b`` (a, b broadcast over [...])."""
  z = (points[..., 0] + 1j * points[..., 1]) * np.asarray(a)[..., None] + np.asarray(b)[..., None]
  return np.stack([z.real, z.imag], -1).astype(np.float32)


def warp(frame: np.ndarray, a: complex, b: complex, size: int,
         antialias: bool = False) -> np.ndarray:
  """Crop of ``frame`` [H, W, 3] under ``z_crop = a z_frame + b`` (pixel indices), bilinear.

  PIL's affine transform works in continuous coordinates (pixel i spans [i, i + 1]) and maps
  output to input, so the index-space map is inverted and shifted by half a pixel.
  Outside the frame is black.

  Args:
    frame: uint8 [H, W, 3].
    a, b: the map's scale-rotation and translation.
    size: S, the crop's side.
    antialias: when the map shrinks (``|a| < 1``), first blur the source region with a
      Gaussian of std ``(1 / |a| - 1) / 2`` source pixels (scikit-image's choice for
      ``rescale``), so detail finer than a crop pixel averages out instead of aliasing.
      Off for video clips (their output stays as the shards were built); on for photos.

  Returns:
    uint8 [S, S, 3].
  """
  scale = abs(a)
  if antialias and scale < 1:
    frame, b = _blurred_region(frame, a, b, size, sigma=(1 / scale - 1) / 2)
  inv_a, inv_b = 1 / a, -b / a
  half = 0.5 + 0.5j
  offset = inv_b + half - inv_a * half
  data = (inv_a.real, -inv_a.imag, offset.real, inv_a.imag, inv_a.real, offset.imag)
  image = Image.fromarray(frame).transform((size, size), Image.Transform.AFFINE, data=data,
                                           resample=Image.Resampling.BILINEAR)
  return np.asarray(image)


def _blurred_region(frame: np.ndarray, a: complex, b: complex, size: int, sigma: float
                    ) -> tuple[np.ndarray, complex]:
  """The part of ``frame`` that the crop sees, Gaussian-blurred, and the map's new ``b``.

  Only the crop's footprint (plus 3 sigma and the bilinear support) is blurred, so a 4000 px
  photo costs no more than its face. Pixels outside the frame stay black, as in ``warp``.
  """
  corners = (np.array([0, size - 1, (size - 1) * 1j, (size - 1) * (1 + 1j)]) - b) / a
  margin = int(np.ceil(3 * sigma)) + 2
  height, width = frame.shape[:2]
  left = max(0, int(np.floor(corners.real.min())) - margin)
  top = max(0, int(np.floor(corners.imag.min())) - margin)
  right = min(width, int(np.ceil(corners.real.max())) + margin + 1)
  bottom = min(height, int(np.ceil(corners.imag.max())) + margin + 1)
  if right <= left or bottom <= top:
    return frame, b  # The crop lies outside the frame: it is black either way.
  region = frame[top:bottom, left:right].astype(np.float32)
  blurred = scipy.ndimage.gaussian_filter(region, (sigma, sigma, 0), mode="nearest")
  blurred = np.clip(np.round(blurred), 0, 255).astype(np.uint8)
  return blurred, b + a * (left + 1j * top)


def detect_faces(image: np.ndarray, scale: float = 1.0, upsample: int = 0) -> np.ndarray:
  """Dlib frontal-face boxes in ``image``, largest first.

  Args:
    image: uint8 [H, W, 3].
    scale: detect on a copy resized by this factor (< 1 for speed: Dlib's detector finds
      faces of about 50 px and up at ``upsample`` 0, so faces must be >= 50 / scale px).
    upsample: Dlib's own upsampling passes (each halves the smallest face it finds).

  Returns:
    float32 [N, 4] (left, top, right, bottom) in ``image`` pixels.
  """
  height, width = image.shape[:2]
  small = image
  if scale != 1.0:
    small = np.asarray(Image.fromarray(image).resize(
        (max(1, round(width * scale)), max(1, round(height * scale))),
        Image.Resampling.BILINEAR))
  rects = sorted(_detector()(small, upsample), key=lambda r: -r.width() * r.height())
  return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects],
                  np.float32).reshape(-1, 4) / scale


def _interpolate_boxes(known: dict[int, np.ndarray], frames: np.ndarray) -> np.ndarray:
  """Boxes [len(frames), 4] linearly interpolated over time between the ``known`` frames."""
  times = np.array(sorted(known))
  values = np.stack([known[t] for t in times])
  return np.stack([np.interp(frames, times, values[:, c]) for c in range(4)], -1)


def _patch(frame: np.ndarray, box: np.ndarray, size: int = 24) -> np.ndarray:
  """Zero-mean, unit-norm grey patch [size * size] of ``box`` in ``frame`` (zeros if flat)."""
  grey = Image.fromarray(frame).convert("L")
  # Dlib's boxes may reach past the frame's edge (a face at the border); Pillow refuses those.
  height, width = frame.shape[:2]
  left = min(max(float(box[0]), 0.0), width - 1.0)
  top = min(max(float(box[1]), 0.0), height - 1.0)
  right = min(max(float(box[2]), left + 1.0), float(width))
  bottom = min(max(float(box[3]), top + 1.0), float(height))
  patch = np.asarray(grey.resize((size, size), Image.Resampling.BILINEAR,
                                 box=(left, top, right, bottom)), np.float32).ravel()
  patch = patch - patch.mean()
  norm = np.linalg.norm(patch)
  return patch / norm if norm > 1e-3 * size else np.zeros_like(patch)


def _patch_correlation(frame, box, reference_frame, reference_box) -> float:
  """Normalised correlation of the face patches of two frames (1: same appearance)."""
  return float(_patch(frame, box) @ _patch(reference_frame, reference_box))


def _centre(box: np.ndarray) -> complex:
  return complex((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


class FaceAligner:
  """Aligns clips to the template; holds the Dlib models (load once per worker)."""

  def __init__(self, config: AlignConfig = AlignConfig()):
    self.config = config
    self.template = template.mean_face(config.resolution)
    _detector()
    _predictor()

  def detect(self, frame: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Largest face in ``frame`` [H, W, 3], detected on a copy of longer side at most
    ``config.detect_max_side``.

    Returns:
      (box float32 [4] (left, top, right, bottom) in frame pixels or None, number of faces).
    """
    height, width = frame.shape[:2]
    scale = min(1.0, self.config.detect_max_side / max(height, width))
    boxes = detect_faces(frame, scale, self.config.detect_upsample)
    return (boxes[0] if len(boxes) else None), len(boxes)

  def align_one(self, image: np.ndarray, box: np.ndarray) -> AlignedClip:
    """Aligns the face in ``box`` of a single image (a photo), with an anti-aliased warp.

    Args:
      image: uint8 [H, W, 3] RGB.
      box: float [4] (left, top, right, bottom), e.g. from :func:`detect_faces`.

    Returns:
      An ``AlignedClip`` of one frame at ``config.resolution``.
    """
    landmarks = _fit_landmarks(image, box)[None]
    points = template.ALIGN_POINTS[self.config.align_on]
    a, b = similarity(landmarks[:, points].astype(np.float64), self.template[points])
    crop = warp(image, a[0], b[0], self.config.resolution, antialias=True)
    return AlignedClip(frames=crop[None], landmarks=apply_similarity(landmarks, a, b),
                       boxes=np.asarray(box, np.float32)[None], scale_rotation=a,
                       translation=b, stats={"scale": float(np.abs(a[0]))})

  def detect_all(self, frame: np.ndarray) -> list[np.ndarray]:
    """Every face in ``frame`` [H, W, 3], largest first: float32 [4] boxes (left, top, right,
    bottom), detected as ``detect`` does."""
    height, width = frame.shape[:2]
    scale = min(1.0, self.config.detect_max_side / max(height, width))
    return list(detect_faces(frame, scale, self.config.detect_upsample))

  def _track(self, frames: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray, dict]:
    """Detects on keyframes (densely around misses). Returns (boxes by frame, miss mask, stats).

    With several faces in a frame, the track keeps one identity: the face whose box is
    nearest (centre distance relative to size) to the box of the nearest earlier detection;
    the largest face starts the track.
    """
    num_frames = len(frames)
    step = max(1, self.config.detect_every)
    keyframes = sorted(set(range(0, num_frames, step)) | {num_frames - 1})
    found, missed, max_faces = {}, set(), 0

    def run(t):
      nonlocal max_faces
      boxes = self.detect_all(frames[t])
      max_faces = max(max_faces, len(boxes))
      if not boxes:
        missed.add(t)
        return
      earlier = [u for u in found if u < t]
      if len(boxes) == 1:
        found[t] = boxes[0]
      elif earlier:
        ref = found[max(earlier)]
        size = max(ref[2] - ref[0], ref[3] - ref[1], 1.0)
        found[t] = min(boxes, key=lambda b: np.abs(_centre(b) - _centre(ref)) / size)
      else:
        found[t] = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))

    for t in keyframes:
      run(t)
    # A frame between two detections is trusted only if its tracked box still shows the face
    # seen at the nearest detection (patch correlation); otherwise the detector decides.
    # This catches faceless frames (cuts, occlusion) that the stride would step over.
    if found:
      detected = np.array(sorted(found))
      boxes = _interpolate_boxes(found, np.arange(num_frames))
      for t in range(num_frames):
        if t in found or t in missed:
          continue
        nearest = detected[np.argmin(np.abs(detected - t))]
        if (_patch_correlation(frames[t], boxes[t], frames[nearest], found[nearest])
            < self.config.track_min_correlation):
          run(t)
    for i, t in enumerate(keyframes):
      if t in missed:
        lo = keyframes[i - 1] + 1 if i > 0 else 0
        hi = keyframes[i + 1] if i + 1 < len(keyframes) else num_frames
        for u in range(lo, hi):
          if u not in found and u not in missed:
            run(u)
    miss = np.zeros(num_frames, bool)
    miss[sorted(missed)] = True
    stats = {"detections": len(found) + len(missed), "max_faces": max_faces,
             "missed_frames": int(miss.sum())}
    return found, miss, stats

  def _segment(self, frames, found, miss) -> tuple[int, int, str]:
    """The longest stretch of one face: (start, stop, why the rest was cut, or '').

    Cuts are shot cuts or identity changes (consecutive detections whose face patches, each in
    its own box or both in the earlier box, correlate less than ``identity_min_correlation``)
    and runs of more than ``max_gap`` faceless frames; a stretch starts and ends
    on a detected face, so frame 0 of a clip always shows it.
    """
    detected = sorted(found)
    segments, start, why = [], detected[0], []
    for prev, t in zip(detected, detected[1:]):
      gap = int(miss[prev + 1:t].sum())
      if gap > self.config.max_gap:
        segments.append((start, prev + 1))
        why.append(f"face lost for {gap} frames from frame {prev + 1}")
        start = t
      elif max(_patch_correlation(frames[t], found[t], frames[prev], found[prev]),
               _patch_correlation(frames[t], found[prev], frames[prev], found[prev])
               ) < self.config.identity_min_correlation:
        segments.append((start, prev + 1))
        why.append(f"shot cut or other face at frame {t}")
        start = t
    segments.append((start, detected[-1] + 1))
    best = max(segments, key=lambda s: (s[1] - s[0], -s[0]))
    if best == (0, len(frames)):
      return 0, len(frames), ""
    reasons = why or []
    if best[0] > 0 and not why:
      reasons.append(f"no face in frames 0-{best[0] - 1}")
    if best[1] < len(frames) and not why:
      reasons.append(f"no face after frame {best[1] - 1}")
    return best[0], best[1], "; ".join(reasons)

  def align(self, frames: np.ndarray) -> AlignedClip:
    """Aligns one clip.

    Args:
      frames: uint8 [T, H, W, 3] RGB video frames.

    Returns:
      The aligned clip at ``config.resolution``.

    Only the longest stretch of one face is aligned (see ``_segment``): frames before and
    after it are dropped, ``stats['kept_frames']`` is its (start, stop) in ``frames`` and
    ``stats['kept_reason']`` says why the rest was dropped.

    Raises:
      NoFaceError: no face in any frame.
    """
    found, miss, stats = self._track(frames)
    if not found:
      raise NoFaceError(f"no face detected ({stats['detections']} frames checked)")
    first, stop, why = self._segment(frames, found, miss)
    stats.update(kept_frames=[first, stop], kept_reason=why)
    frames, miss = frames[first:stop], miss[first:stop]
    found = {t - first: box for t, box in found.items() if first <= t < stop}
    num_frames = len(frames)
    # A missed frame can sit between two found ones; the box there is not trusted, so the
    # predictor only runs where a face was detected or tracked between detections.
    times = np.arange(num_frames)
    boxes = _interpolate_boxes(found, times).astype(np.float32)
    boxes[miss] = np.nan
    landmarks = np.full((num_frames, 68, 2), np.nan, np.float32)
    for t in np.flatnonzero(~miss):
      landmarks[t] = _fit_landmarks(frames[t], boxes[t])
    if miss.any():
      good = np.flatnonzero(~miss)
      flat = landmarks.reshape(num_frames, -1)
      for c in range(flat.shape[1]):
        flat[miss, c] = np.interp(times[miss], good, flat[good, c])
    points = template.ALIGN_POINTS[self.config.align_on]
    stable = landmarks[:, points].astype(np.float64)
    if self.config.smooth_sigma > 0 and num_frames > 1:
      stable = scipy.ndimage.gaussian_filter1d(stable, self.config.smooth_sigma, axis=0,
                                               mode="nearest")
    a, b = similarity(stable, self.template[points])
    size = self.config.resolution
    crops = np.stack([warp(frames[t], a[t], b[t], size) for t in range(num_frames)])
    aligned = apply_similarity(landmarks, a, b)
    stats.update(interpolated_frames=int(miss.sum()),
                 scale=float(np.median(np.abs(a))))
    return AlignedClip(frames=crops, landmarks=aligned, boxes=boxes, scale_rotation=a,
                       translation=b, stats=stats)


def landmarks_on_aligned(aligned_frames: np.ndarray) -> np.ndarray:
  """Dlib 68 landmarks on template-aligned crops, using the template's face box (no detection).

  Args:
    aligned_frames: uint8 [T, S, S, 3] crops aligned to the template (real or generated).

  Returns:
    float32 [T, 68, 2] (x, y) in crop pixels.
  """
  aligned_frames = np.asarray(aligned_frames)
  box = template.face_box(aligned_frames.shape[1])
  return np.stack([_fit_landmarks(np.ascontiguousarray(f), box) for f in aligned_frames])


# Dlib indices of the inner-lip points whose vertical gaps measure the mouth opening, and of
# each eye's six points: corners (0, 3), upper lid (1, 2), lower lid (5, 4).
UPPER_INNER_LIP = (61, 62, 63)
LOWER_INNER_LIP = (67, 66, 65)
EYES = (tuple(range(36, 42)), tuple(range(42, 48)))


# The mouth opening is measured on aligned crops upscaled (bicubic) to this side: at 64 px the
# inner-lip gap is a pixel or two and Dlib's fitted points move in whole-pixel steps. On the
# ground-truth frames of the demo's 8 held-out clips, r between the measured opening and the
# curve that drove the mouth is 0.84 mean at 64 px and 0.87 at 256; on the clip whose mouth
# opens least while the head sways most (s1/brwk3p) 0.53 -> 0.70. The eye opening stays on the
# native crops: there its closed-eye threshold (half the clip's median) finds 31 of the 37
# frames the curves close, 22 at 256 px (BENCHMARKS.md, "stochasticity").
MOUTH_LANDMARK_SIDE = 256


def upscale_frames(frames: np.ndarray, side: int) -> np.ndarray:
  """Frames uint8 [N, S, S, 3] resized (bicubic) to [N, side, side, 3]; unchanged if S >= side."""
  frames = np.asarray(frames)
  if frames.shape[1] >= side:
    return frames
  return np.stack([np.asarray(Image.fromarray(f).resize((side, side), Image.Resampling.BICUBIC))
                   for f in frames])


def hold_eyes(aligned_frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """Aligned crops [N, S, S, 3] with the eye band of ``reference`` [S, S, 3] (the template's
  eyes and brows, ``template.region_boxes``' 'eyes') in place of their own: a copy."""
  frames = np.array(aligned_frames)
  y0, y1, x0, x1 = template.region_boxes(frames.shape[1])["eyes"]
  frames[:, y0:y1, x0:x1] = np.asarray(reference)[y0:y1, x0:x1]
  return frames


def upscaled_mouth_opening(aligned_frames: np.ndarray, side: int = MOUTH_LANDMARK_SIDE,
                           eyes_from: np.ndarray | None = None) -> np.ndarray:
  """:func:`mouth_opening` [N] of aligned uint8 crops [N, S, S, 3], the landmarks fitted on the
  crops upscaled to ``side`` (:func:`upscale_frames`, ``MOUTH_LANDMARK_SIDE``).

  ``eyes_from``: an aligned crop [S, S, 3] (a clip's frame 0) whose eye band every crop gets
  before the fit (:func:`hold_eyes`), so that the eyes cannot move the measure. Dlib fits the
  68 points together, and closed lids can pull the inner lips apart: on the demo model's
  samples a blink in silence raised a closed mouth's measured opening from about 0.06 of the
  inter-ocular distance to 0.09-0.11 (0.06-0.08 with the eye band of an open-eyed frame
  pasted in; a spoken syllable reaches 0.17-0.19), so a sample that blinked while the
  speaker was silent lost lip sync it had (BENCHMARKS.md, "The eyes in the mouth's
  measure")."""
  if eyes_from is not None:
    aligned_frames = hold_eyes(aligned_frames, eyes_from)
  frames = upscale_frames(aligned_frames, side)
  return mouth_opening(landmarks_on_aligned(frames), frames.shape[1])


def mouth_opening(landmarks: np.ndarray, resolution: int) -> np.ndarray:
  """Inner-lip gap per frame, normalised by the template's inter-ocular distance.

  The gap is the mean of the distances 61-67, 62-66 and 63-65 of Dlib's 68 landmarks fitted
  on aligned crops (:func:`landmarks_on_aligned`), each 0 where the lower point lies above the
  upper one (crossed inner lips: a closed mouth); used to correlate lip motion with the
  ground truth, on landmarks fitted on crops upscaled to ``MOUTH_LANDMARK_SIDE``
  (:func:`upscaled_mouth_opening`).

  Args:
    landmarks: [N, 68, 2] fitted on aligned crops of size ``resolution``.
    resolution: crop size S.

  Returns:
    float32 [N].
  """
  landmarks = np.asarray(landmarks)
  upper, lower = landmarks[:, UPPER_INNER_LIP], landmarks[:, LOWER_INNER_LIP]
  gap = np.linalg.norm(upper - lower, axis=-1)
  # A lower inner-lip point fitted above its upper partner (crossed lips) is a closed mouth:
  # on a thin-lipped closed mouth Dlib may cross the inner lips by as much as an open mouth's
  # gap (Marie Curie's photo in benchmarks/real_inputs.json: 0.12-0.15 inter-ocular, an open
  # mouth's 0.10-0.16), which the unsigned distance read as wide open.
  gap = np.where(lower[..., 1] > upper[..., 1], gap, 0.0)
  return (gap.mean(-1) / template.inter_ocular(resolution)).astype(np.float32)


def eye_opening(landmarks: np.ndarray) -> np.ndarray:
  """Eye aspect ratio of Dlib 68-point landmarks [N, 68, 2], both eyes averaged: float32 [N].

  (|p1 - p5| + |p2 - p4|) / (2 |p0 - p3|) per eye (Soukupova and Cech 2016): about 0.35 for
  an open eye of the synthetic face at 64x64, under 0.15 when it is closed.
  """
  landmarks = np.asarray(landmarks)
  ratios = []
  for eye in EYES:
    p = landmarks[:, eye]
    lids = (np.linalg.norm(p[:, 1] - p[:, 5], axis=-1) +
            np.linalg.norm(p[:, 2] - p[:, 4], axis=-1))
    ratios.append(lids / (2.0 * np.linalg.norm(p[:, 0] - p[:, 3], axis=-1)))
  return np.mean(ratios, axis=0).astype(np.float32)


region_boxes = template.region_boxes


# -------------------------------------------------------------------------------------------------
# Identity: Dlib's face descriptor.
# -------------------------------------------------------------------------------------------------

# Dlib's face recognition ResNet maps an aligned 150 x 150 face chip to a 128-D descriptor; two
# faces whose descriptors are closer (Euclidean) than this are the same person (Dlib's
# threshold, 99.38 % accuracy on LFW).
SAME_PERSON_DISTANCE = 0.6
# Images are upscaled (bicubic) so their shorter side is at least this before detection and the
# chip. A face in a 64 px aligned crop is ~40 px wide: Dlib's HOG detector scans an 80 x 80
# window (it would miss it without its own, 4x slower, upsampling pass), the landmark
# predictor was trained on larger faces, and the 150 px chip would be a 3-4x bilinear blow-up
# of a few pixels. At 256 px the face is ~160 px: found at upsample 0, and the chip is a mild
# resampling. Measured on the astronaut photo: its 64 px aligned crop vs. the 512 px photo is
# 0.19 at 256, 0.20 at 150 and 384 (insensitive to the choice; another person is 0.70).
DESCRIPTOR_MIN_SIDE = 256
_CHIP_SIZE, _CHIP_PADDING = 150, 0.25  # What the descriptor was trained on (Dlib's defaults).


@functools.lru_cache(maxsize=1)
def _recognizer() -> "dlib.face_recognition_model_v1":
  return dlib.face_recognition_model_v1(
      dlib_models.path(dlib_models.FACE_DESCRIPTOR))


def face_descriptors(images, min_side: int = DESCRIPTOR_MIN_SIDE) -> tuple[np.ndarray, np.ndarray]:
  """Dlib's 128-D face descriptor of the largest face in each image.

  Each image is upscaled (bicubic) so its shorter side is at least ``min_side`` (see
  ``DESCRIPTOR_MIN_SIDE``), the largest face is detected (HOG, no upsampling), its 68
  landmarks are fitted, and the face is cut into Dlib's aligned 150 px chip
  (``dlib.get_face_chip``) for the descriptor network. The network is the slow part
  (BENCHMARKS.md, "Identity preservation": ~0.2 s per face on a CPU core).

  Args:
    images: uint8 [N, H, W, 3] array or a sequence of uint8 [H_i, W_i, 3] images (frames or
      crops; the detector runs on the whole image, so crop multi-megapixel photos first).
    min_side: shorter side the images are upscaled to (never downscaled).

  Returns:
    (float32 [N, 128] descriptors, NaN where no face was found; bool [N] face found).
  """
  descriptors = np.full((len(images), 128), np.nan, np.float32)
  found = np.zeros(len(images), bool)
  for i, image in enumerate(images):
    image = np.asarray(image)
    height, width = image.shape[:2]
    if min(height, width) < min_side:
      scale = min_side / min(height, width)
      image = np.asarray(Image.fromarray(image).resize(
          (round(width * scale), round(height * scale)), Image.Resampling.BICUBIC))
    image = np.ascontiguousarray(image)
    boxes = detect_faces(image)
    if not len(boxes):
      continue
    left, top, right, bottom = (int(round(v)) for v in boxes[0])
    shape = _predictor()(image, dlib.rectangle(left, top, right, bottom))
    chip = dlib.get_face_chip(image, shape, size=_CHIP_SIZE, padding=_CHIP_PADDING)
    descriptors[i] = np.asarray(_recognizer().compute_face_descriptor(chip), np.float32)
    found[i] = True
  return descriptors, found


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Euclidean distance between descriptors [..., 128] (broadcast): [...]; NaN stays NaN.

  Under ``SAME_PERSON_DISTANCE`` (0.6) Dlib calls two faces the same person.
  """
  return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)
