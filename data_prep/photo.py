"""Face photos: read any image file the way a viewer shows it, find a face, align it.

The model's identity frame is one face crop aligned like the training clips
(:class:`data_prep.face.FaceAligner`). A user's photo differs from a video frame:

* **Orientation**: phones store the sensor's pixels and an EXIF orientation tag; the tag is
  applied (``PIL.ImageOps.exif_transpose``), since Dlib's frontal detector finds upright
  faces only.
* **Pixel formats**: grey, grey + alpha, RGBA, palette, CMYK (JPEG), 16-bit PNG (grey or RGB)
  all become uint8 RGB; alpha is dropped (composited on nothing: the colour channels as
  stored), 16-bit values are scaled by 255 / 65535.
* **Size**: Dlib's HOG detector finds faces of about 50 px and up (``MIN_FACE_PX``). A large
  photo is searched coarse to fine (``DETECT_SIDES``): first a copy of longer side 640 px
  (fast, finds large faces), then 2048 px, then full size, stopping at the first level that
  finds the requested face. A face found only by upsampling the full-size photo (while that
  stays under ``MAX_UPSAMPLED_SIDE``) is smaller than ``MIN_FACE_PX`` and is refused as too
  small, with its size (its box in the upsampled pass).
* **Several faces**: the largest is used (``face_index=0``); ``face_index=k`` picks the
  (k+1)-th largest.
* The crop is warped with an anti-aliasing prefilter (``face.warp(antialias=True)``): a face
  of 300 px shrunk into a 64 or 128 px crop would otherwise alias.

Every problem raises :class:`PhotoError`, one line naming the file. Imports no JAX.
"""

import os

import numpy as np
from absl import logging
from PIL import Image, ImageOps, UnidentifiedImageError

from data_prep import face
from data_prep.errors import UserError

# The smallest face Dlib's frontal detector finds without upsampling: its 80 px window
# reports boxes of 72 px and up, and fires on faces from about 50 px (45 px ones are missed).
MIN_FACE_PX = 50
DETECT_SIDES = (640, 2048)  # Longer sides of the coarse detection copies, then full size.
MAX_UPSAMPLED_SIDE = 4096  # Upsampling (only to tell "too small" from "no face") stops here.


class PhotoError(UserError):
  """A face photo cannot be used: unreadable, no face, a face too small, no such face."""


def read_photo(path: str) -> np.ndarray:
  """Reads an image file as displayed: EXIF orientation applied, as uint8 RGB.

  Args:
    path: any image format Pillow reads (JPEG, PNG, WebP, TIFF, BMP, GIF: first frame).

  Returns:
    uint8 [H, W, 3].

  Raises:
    PhotoError: missing, a folder, empty, or not an image.
  """
  name = f"face photo {path}"
  if not os.path.exists(path):
    raise PhotoError(f"{name}: no such file")
  if os.path.isdir(path):
    raise PhotoError(f"{name}: is a folder, not an image file")
  if os.path.getsize(path) == 0:
    raise PhotoError(f"{name}: file is empty")
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      pixels = _to_rgb8(image)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    # Pillow reports truncated and malformed files with OSError/SyntaxError/ValueError.
    raise PhotoError(f"{name}: cannot read it as an image ({e})") from e
  if min(pixels.shape[:2]) < 8:
    raise PhotoError(f"{name}: {pixels.shape[1]}x{pixels.shape[0]} px is too small an image")
  return pixels


def _to_rgb8(image: Image.Image) -> np.ndarray:
  """uint8 [H, W, 3] from any Pillow mode; 16-bit and 32-bit grey are scaled, not clipped."""
  if image.mode in ("I;16", "I;16B", "I;16L", "I"):
    values = np.asarray(image).astype(np.float64)
    peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
    grey = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))
  if image.mode == "F":
    grey = np.asarray(image, np.float64)
    grey = grey * 255.0 if grey.max() <= 1.0 else grey
    grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))
  if image.mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")  # Pillow warns converting transparent palettes straight.
  return np.ascontiguousarray(np.asarray(image.convert("RGB"), np.uint8))


def _boxes_coarse_to_fine(image: np.ndarray, wanted: int) -> tuple[np.ndarray, int]:
  """Face boxes of ``image``, from the coarsest level that finds at least ``wanted``.

  Returns:
    (float32 [N, 4] boxes largest first, the upsampling passes they needed: > 0 means
    smaller than ``MIN_FACE_PX``; if none was found, minus the passes tried).
  """
  longer = max(image.shape[:2])
  scales = [side / longer for side in DETECT_SIDES if side < longer] + [1.0]
  boxes = np.zeros((0, 4), np.float32)
  for scale in scales:
    boxes = face.detect_faces(image, scale)
    if len(boxes) >= wanted:
      return boxes, 0
  upsample = 0
  # Only to name a too-small face as such: Dlib's upsampling doubles the side per pass.
  while longer * 2**(upsample + 1) <= MAX_UPSAMPLED_SIDE:
    upsample += 1
    small = face.detect_faces(image, 1.0, upsample)
    if len(small) > len(boxes):
      return small, upsample
  return boxes, -upsample


def align_photo(image: np.ndarray, aligner: face.FaceAligner, face_index: int = 0,
                name: str = "face photo") -> np.ndarray:
  """Detects the faces of a photo and aligns one as the training clips were.

  Args:
    image: uint8 [H, W, 3] RGB (from :func:`read_photo`, or a caller's array).
    aligner: a ``FaceAligner`` at the model's resolution and ``align_on``.
    face_index: 0 for the largest face, k for the (k+1)-th largest.
    name: how errors name the input (e.g. "face photo me.jpg").

  Returns:
    uint8 [S, S, 3], the aligned crop.

  Raises:
    PhotoError: no face, the face is smaller than ``MIN_FACE_PX``, or fewer faces than
      ``face_index + 1``.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise PhotoError(f"{name}: expected a uint8 [H, W, 3] RGB image, got {image.dtype} "
                     f"{list(image.shape)}")
  if face_index < 0:
    raise PhotoError(f"{name}: face_index must be >= 0, got {face_index}")
  boxes, upsampled = _boxes_coarse_to_fine(np.ascontiguousarray(image), face_index + 1)
  if not len(boxes):
    smallest = MIN_FACE_PX // 2**-upsampled  # No face: upsampled is minus the passes tried.
    raise PhotoError(f"{name}: no face found (searched {image.shape[1]}x{image.shape[0]} px "
                     f"for upright frontal faces of {smallest} px and up)")
  if face_index >= len(boxes):
    raise PhotoError(f"{name}: face_index {face_index} asked for, but only {len(boxes)} "
                     f"face(s) found")
  box = boxes[face_index]
  size = int(round(max(box[2] - box[0], box[3] - box[1])))
  if upsampled > 0:
    raise PhotoError(f"{name}: the face is too small ({size} px, at least {MIN_FACE_PX}); "
                     "use a photo where the face is larger")
  if len(boxes) > 1:
    logging.warning("%s: %d faces found; using the %s (face_index=%d).", name, len(boxes),
                    "largest" if face_index == 0 else f"number {face_index + 1} by size",
                    face_index)
  return aligner.align_one(image, box).frames[0]


def load_face_photo(path: str, aligner: face.FaceAligner, face_index: int = 0) -> np.ndarray:
  """Reads a photo file and aligns its face: :func:`read_photo` then :func:`align_photo`.

  Args:
    path: image file.
    aligner: e.g. ``face.FaceAligner(face.AlignConfig(resolution=S, align_on=...))`` with the
      alignment of the shards the model was trained on.
    face_index: 0 for the largest face, k for the (k+1)-th largest.

  Returns:
    uint8 [S, S, 3].

  Raises:
    PhotoError: one line naming the file and the problem.
  """
  return align_photo(read_photo(path), aligner, face_index, name=f"face photo {path}")
