"""The mean-face template that every frame is aligned to, and the regions defined on it.

The template is 68 Dlib landmarks as (x, y) normalised to [0, 1] of the crop, shipped as
``data_prep/mean_face.npy`` so any resolution (64, 128, ...) is a multiplication away. It was
built once by ``python -m data_prep.template`` from Dlib's own 68-point predictor: run on a
featureless grey image, every split of the regression trees compares equal intensities, so the
predictor returns (close to) the mean shape it was trained from, expressed in the coordinates
of the face box it was given. That shape is made left-right symmetric and placed as ATVGNet
places its 128x128 faces: eye centres at y ~ 53, chin at y ~ 126, mouth at y ~ 93-106,
centred in x. Because the shape is given relative to the Dlib face box, the same placement
yields the box that Dlib's detector would report for a template-aligned face
(:func:`face_box`), which lets the predictor run on aligned crops without detection.

Imports no JAX. Importing this module does not need Dlib (only rebuilding the file does).
"""

import functools
import os

import numpy as np

from data_prep import dlib_models

TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "mean_face.npy")

# Points that the per-frame similarity transform is fitted to (``AlignConfig.align_on``);
# none moves with speech, unlike jaw and lips.
# - 'nose_eyes' (27-47): the release's nose and eyes (docs/REFERENCE.md). The eyes move with
#   blinks: Dlib's fit of a closing eye moves its lids and corners, which shifts and scales
#   the whole crop at every blink (synthetic corpus at 64x64: mean |difference| outside the
#   eyes up to 0.076 in a blink frame between two renderings that differ only in blink
#   times).
# - 'nose' (27-35), the default: the same comparison gives 0.017, so a blink stays at the
#   eyes. The face's scale in the crop then comes from the nose alone and follows each
#   person's proportions (the synthetic face's eyes are 15% further apart than the
#   template's at 128x128, 5% with 'nose_eyes'); crops stay sub-pixel stable under motion.
ALIGN_POINTS = {"nose": np.arange(27, 36), "nose_eyes": np.arange(27, 48)}
STABLE_POINTS = ALIGN_POINTS["nose"]
MOUTH_POINTS = np.arange(48, 68)
EYE_POINTS = np.arange(36, 48)
BROW_POINTS = np.arange(17, 27)

# Placement of the box-normalised mean shape in a 128x128 crop (ATVGNet-like): the shape's
# eye line (box y ~ 0.31) lands at y = 53 and its chin (box y ~ 1.075) at y = 126.
_REFERENCE_SIZE = 128.0
_EYE_Y, _CHIN_Y = 53.0, 126.0

# Dlib 68-point left/right mirror permutation (point i <-> _MIRROR[i]).
_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] +
    [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40] +
    [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


def _placement(box_shape: np.ndarray) -> tuple[float, float, float]:
  """Scale and offsets mapping a box-normalised shape to normalised crop coordinates."""
  eye_y = box_shape[EYE_POINTS, 1].mean()
  chin_y = box_shape[8, 1]
  scale = (_CHIN_Y - _EYE_Y) / (chin_y - eye_y)
  offset_y = _EYE_Y - scale * eye_y
  offset_x = _REFERENCE_SIZE / 2 - scale * box_shape[:, 0].mean()
  return scale / _REFERENCE_SIZE, offset_x / _REFERENCE_SIZE, offset_y / _REFERENCE_SIZE


def build_template(predictor_path: str | None = None) -> np.ndarray:
  """Builds the template from Dlib's predictor (see the module docstring).

  Returns:
    float32 [70, 2]: rows 0-67 the template landmarks (x, y) in [0, 1] crop coordinates; rows
    68 and 69 the face box's (left, top) and (right, bottom). Read it through
    :func:`mean_face` and :func:`face_box`.
  """
  import dlib  # pylint: disable=g-import-not-at-top
  predictor = dlib.shape_predictor(
      predictor_path or dlib_models.path(dlib_models.LANDMARKS_68))
  box = 400
  grey = np.full((box + 200, box + 200, 3), 128, np.uint8)
  shape = predictor(grey, dlib.rectangle(100, 100, 100 + box, 100 + box))
  points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
  box_shape = (points - 100.0) / box
  mirrored = box_shape[_MIRROR] * [-1.0, 1.0] + [1.0, 0.0]
  box_shape = (box_shape + mirrored) / 2
  scale, offset_x, offset_y = _placement(box_shape)
  template = box_shape * scale + [offset_x, offset_y]
  # Row 68 stores the face box (the unit box in box-normalised coordinates) as
  # (x0, y0) and row 69 as (x1, y1), so the box travels with the template.
  box_rows = np.array([[offset_x, offset_y], [offset_x + scale, offset_y + scale]])
  return np.concatenate([template, box_rows]).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _stored() -> np.ndarray:
  return np.load(TEMPLATE_PATH)


def mean_face(resolution: int = 1) -> np.ndarray:
  """Template landmarks, float32 [68, 2] (x, y), in pixels of a ``resolution`` crop."""
  return _stored()[:68] * np.float32(resolution)


def face_box(resolution: int) -> tuple[int, int, int, int]:
  """(left, top, right, bottom) of the Dlib face box of a template-aligned face, in pixels."""
  (x0, y0), (x1, y1) = _stored()[68:70] * resolution
  return int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))


def inter_ocular(resolution: int) -> float:
  """Distance between the template's eye centres, in pixels of a ``resolution`` crop."""
  face = mean_face(resolution)
  return float(np.linalg.norm(face[36:42].mean(0) - face[42:48].mean(0)))


def region_boxes(resolution: int, margin: float = 0.25) -> dict[str, tuple[int, int, int, int]]:
  """Eye and mouth regions of the template, for per-region diversity metrics.

  Args:
    resolution: crop size S.
    margin: growth of each landmark bounding box, as a fraction of its size per side.

  Returns:
    {'eyes': (y0, y1, x0, x1), 'mouth': (y0, y1, x0, x1)}: integer slice bounds within
    [0, S] (use ``frames[..., y0:y1, x0:x1, :]``).
  """
  face = mean_face(resolution)
  boxes = {}
  for name, points in (("eyes", np.concatenate([EYE_POINTS, BROW_POINTS])),
                       ("mouth", MOUTH_POINTS)):
    (x0, y0), (x1, y1) = face[points].min(0), face[points].max(0)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    clip = lambda v: int(np.clip(round(v), 0, resolution))
    boxes[name] = (clip(y0 - dy), clip(y1 + dy), clip(x0 - dx), clip(x1 + dx))
  return boxes


if __name__ == "__main__":
  np.save(TEMPLATE_PATH, build_template())
  face = mean_face(128)
  print(f"wrote {TEMPLATE_PATH}: eyes y={face[36:48, 1].mean():.1f} "
        f"mouth y={face[48:68, 1].min():.1f}-{face[48:68, 1].max():.1f} chin y={face[8, 1]:.1f} "
        f"face box {face_box(128)} regions {region_boxes(128)}")
