"""The synthetic face: a real face photo (one per speaker, see :mod:`.faces`; the scikit-image
astronaut by default) with Dlib's 68 landmarks, rendered per frame with the jaw and lips warped
open, eyelids painted closed and a small rigid head sway.
Imports no JAX.
"""

import dataclasses

import numpy as np
from scipy import ndimage

from data_prep import face

DEFAULT_FRAME_SIZE = (360, 288)  # (W, H), GRID's normal-quality videos.

# --------------------------------------------------------------------------- face


@dataclasses.dataclass
class FaceTemplate:
  """The still face on its canvas plus everything precomputed for fast per-frame warps.

  ``image`` uint8 [H, W, 3]; ``landmarks`` float32 [68, 2] (x, y) on the canvas. The
  remaining fields are derived geometry (see :func:`build_face_template`).
  """
  image: np.ndarray
  landmarks: np.ndarray
  quad: np.ndarray                 # float32 [H*W, 4, 3] 2x2 neighbourhoods for sampling.
  pixels: np.ndarray               # int64 [N] flat canvas index of head-region pixels.
  grid_x: np.ndarray               # float32 [N] canvas x of those pixels.
  grid_y: np.ndarray               # float32 [N] canvas y of those pixels.
  head_weight: np.ndarray          # float32 [N] 1 on the head, fading to 0 (static bg).
  pivot: np.ndarray                # float32 [2] rotation centre (the neck).
  mouth: dict
  eyes: list


def _detect_landmarks(image: np.ndarray, upsample: int = 1) -> np.ndarray:
  """Dlib 68 landmarks of the best-scoring frontal face, float32 [68, 2].

  ``upsample`` 0 finds faces of about 50 px and up, faster than 1 on a large photo; a photo
  where it finds none is searched again with 1. Dlib's models are ``data_prep.face``'s
  (loaded once per process).
  """
  # pylint: disable=protected-access
  image = np.ascontiguousarray(image)
  boxes, scores, _ = face._detector().run(image, upsample, 0.0)
  if not boxes and upsample == 0:
    boxes, scores, _ = face._detector().run(image, 1, 0.0)
  if not boxes:
    raise ValueError("no face found in the template photo")
  box = boxes[int(np.argmax(scores))]
  return face._fit_landmarks(image, (box.left(), box.top(), box.right(), box.bottom()))


def _neighbourhoods(image: np.ndarray) -> np.ndarray:
  """float32 [H*W, 4, 3]: pixel, right, below, below-right (edge-replicated)."""
  pad = np.pad(image, ((0, 1), (0, 1), (0, 0)), mode="edge").astype(np.float32)
  quad = np.stack([pad[:-1, :-1], pad[:-1, 1:], pad[1:, :-1], pad[1:, 1:]], axis=2)
  return np.ascontiguousarray(quad.reshape(-1, 4, 3))


def _curve(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(xs, ys) sorted by x, for np.interp along a lip or lid contour."""
  order = np.argsort(points[:, 0], kind="stable")
  xs = points[order, 0].astype(np.float64)
  # np.interp needs increasing xs; nudge ties by a hair.
  xs = xs + np.arange(len(xs)) * 1e-4
  return xs, points[order, 1].astype(np.float64)


@dataclasses.dataclass(frozen=True)
class Look:
  """How one speaker's photo is placed and lit on the canvas.

  ``face_fraction``: brow-to-chin height over the frame height; ``centre``: where the face
  centre lands, as fractions of (W, H); ``mirror``: flip the photo left-right (the same
  person); ``gain``: per-channel (R, G, B) colour gain; ``gamma``: applied to [0, 1]
  intensities; ``side_light``: brightness slope across the frame, -0.3 (lit from the
  left) .. 0.3 (from the right).
  """
  face_fraction: float = 0.45
  centre: tuple[float, float] = (0.5, 0.5)
  mirror: bool = False
  gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
  gamma: float = 1.0
  side_light: float = 0.0


def astronaut_photo() -> np.ndarray:
  """scikit-image's astronaut (Eileen Collins), the corpus's one face before 2.0."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  return skimage.data.astronaut()


def build_face_template(frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
                        face_fraction: float = 0.45, photo: np.ndarray | None = None,
                        look: Look | None = None) -> FaceTemplate:
  """Places a face photo on a ``frame_size`` (W, H) canvas, GRID-like.

  The photo is scaled so the brow-to-chin height is ``look.face_fraction`` of the frame
  height and placed with the face centre at ``look.centre``; Dlib's landmarks are found once
  on the photo and mapped to the canvas. Canvas pixels beyond the photo's edge repeat the
  edge, blurred with the distance (a soft background, no hard border).

  Args:
    frame_size: (W, H).
    face_fraction: used when ``look`` is None.
    photo: uint8 [h, w, 3] with one face (a crop from :mod:`.faces`); None: the astronaut.
    look: placement and lighting; None: ``Look(face_fraction)``.
  """
  width, height = frame_size
  look = Look(face_fraction=face_fraction) if look is None else look
  astronaut = photo is None
  photo = astronaut_photo() if astronaut else np.asarray(photo)
  if look.mirror:
    photo = np.ascontiguousarray(photo[:, ::-1])
  # The astronaut keeps the upsampled detection its corpus was made with (same pixels).
  lm_photo = _detect_landmarks(photo, upsample=1 if astronaut else 0)
  brow_y = lm_photo[17:27, 1].min()
  face_h = lm_photo[8, 1] - brow_y
  scale = look.face_fraction * height / face_h
  centre = np.array([lm_photo[:, 0].mean(), 0.5 * (brow_y + lm_photo[8, 1])])
  offset = np.array([look.centre[0] * width, look.centre[1] * height]) - scale * centre
  # Canvas pixel q shows photo point (q - offset) / scale; anti-alias when shrinking.
  sigma = max(0.0, 0.5 * (1.0 / scale - 1.0))
  qy, qx = np.mgrid[0:height, 0:width].astype(np.float64)
  coords = [(qy - offset[1]) / scale, (qx - offset[0]) / scale]
  # Distance (canvas px) beyond the photo's edge, for the soft background there.
  ph, pw = photo.shape[:2]
  beyond = scale * np.maximum(np.maximum(-coords[0], coords[0] - (ph - 1)),
                              np.maximum(-coords[1], coords[1] - (pw - 1))).clip(0, None)
  channels = []
  for c in range(3):
    chan = photo[..., c].astype(np.float64)
    if sigma > 0:
      chan = ndimage.gaussian_filter(chan, sigma)
    chan = ndimage.map_coordinates(chan, coords, order=3, mode="nearest")
    if beyond.max() > 0:
      blend = np.clip(beyond / 12.0, 0.0, 1.0)
      chan = chan * (1 - blend) + ndimage.gaussian_filter(chan, 10.0) * blend
    channels.append(chan)
  image = np.stack(channels, -1)
  if look.gain != (1.0, 1.0, 1.0) or look.gamma != 1.0 or look.side_light != 0.0:
    # Lighting: colour gain, gamma and a left-right brightness slope.
    image = np.clip(image / 255.0 * np.asarray(look.gain, np.float64), 0.0, 1.0) ** look.gamma
    image = 255.0 * image * (1.0 + look.side_light * (qx[..., None] / max(width - 1, 1) - 0.5)
                             * 2)
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  lm = (lm_photo * scale + offset).astype(np.float32)
  # Mouth interior: dark red, grey in a grey-scale photo, lit like the rest of the face.
  interior = np.array([52.0, 16.0, 22.0])
  if np.abs(np.diff(photo.astype(np.float64), axis=-1)).mean() < 2.0:
    interior = np.full(3, interior @ np.array([0.299, 0.587, 0.114]))
  interior = 255.0 * (np.clip(interior / 255.0 * np.asarray(look.gain), 0, 1) ** look.gamma)

  face_h = float(lm[8, 1] - lm[17:27, 1].min())
  jaw_w = float(lm[16, 0] - lm[0, 0])
  # Head region: an ellipse around face and hair; inside it pixels follow the head,
  # fading to the static background at its rim.
  hc = np.array([lm[27:31, 0].mean(), lm[8, 1] - 0.62 * face_h])
  rx, ry = 0.8 * jaw_w, 1.0 * face_h
  gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
  r = np.sqrt(((gx - hc[0]) / rx) ** 2 + ((gy - hc[1]) / ry) ** 2)
  weight = 0.5 + 0.5 * np.cos(np.pi * np.clip((r - 0.75) / 0.3, 0.0, 1.0))
  if not astronaut:
    # Nobody else of a group photo appears in this speaker's frames (a neighbour may be
    # another speaker, even a held-out one): beyond the head the photo is blurred past
    # recognition, like a shallow depth of field.
    keep = (0.5 + 0.5 * np.cos(np.pi * np.clip((r - 0.85) / 0.3, 0.0, 1.0)))[..., None]
    blurred = np.stack([ndimage.gaussian_filter(image[..., c].astype(np.float32),
                                                0.1 * face_h) for c in range(3)], -1)
    image = np.clip(np.round(image * keep + blurred * (1 - keep)), 0, 255).astype(np.uint8)
  # Only pixels that can move are resampled per frame (the rest is static background).
  pixels = np.nonzero(weight.ravel() > 0)[0]

  ux, uy = _curve(lm[[60, 61, 62, 63, 64]])
  lx, ly = _curve(lm[[60, 67, 66, 65, 64]])
  mouth_w = float(lm[64, 0] - lm[60, 0])
  mouth = dict(
      ux=ux, uy=uy, lx=lx, ly=ly,
      xc=float(0.5 * (lm[60, 0] + lm[64, 0])), half_w=0.5 * mouth_w,
      chin=float(lm[8, 1]), fade=0.3 * face_h, jaw_half_w=0.5 * jaw_w,
      upper_h=float(max(3.0, uy.min() - lm[33, 1])),
      max_open=0.4 * mouth_w,
      box=(float(lm[33, 1]), float(lm[8, 1] + 0.3 * face_h),
           float(lm[0, 0]), float(lm[16, 0])),
      colour=interior.astype(np.float32))
  eyes = []
  for idx in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)):
    p = lm[list(idx)].astype(np.float64)
    eye_w = float(p[3, 0] - p[0, 0])
    # Lids as parabolas through the landmarks (a polyline would give a polygonal lid).
    upper = np.polyfit(p[[0, 1, 2, 3], 0], p[[0, 1, 2, 3], 1], 2)
    lower = np.polyfit(p[[0, 5, 4, 3], 0], p[[0, 5, 4, 3], 1], 2)
    upper[2] -= 0.15 * eye_w  # Cover the lashes and the lid margin too.
    lower[2] += 0.05 * eye_w
    # Lid colour: the skin just above the eye, as a linear ramp in x per channel (a
    # single colour looks pasted on; raw columns are streaky from brow and lashes).
    xs = np.linspace(p[0, 0], p[3, 0], 16)
    samples = []
    for k in (0.18, 0.25, 0.32):
      ys = np.polyval(upper, xs) - k * eye_w
      samples.append([ndimage.map_coordinates(image[..., c].astype(np.float64), [ys, xs],
                                              order=1) for c in range(3)])
    ramp = np.polyfit(xs, np.mean(samples, axis=0).T, 1)  # [2, 3]
    eyes.append(dict(
        upper=upper, lower=lower, xl=float(p[0, 0]) - 1.0, xr=float(p[3, 0]) + 1.0,
        skin_ramp=ramp.astype(np.float32),
        box=(float(p[:, 1].min() - 0.4 * eye_w), float(p[:, 1].max() + 0.3 * eye_w),
             float(p[0, 0] - 2.0), float(p[3, 0] + 2.0))))
  return FaceTemplate(
      image=image, landmarks=lm,
      quad=_neighbourhoods(image),
      pixels=pixels, grid_x=gx.ravel()[pixels], grid_y=gy.ravel()[pixels],
      head_weight=weight.ravel()[pixels].astype(np.float32),
      pivot=np.array([lm[8, 0], lm[8, 1] + 0.1 * face_h], np.float32),
      mouth=mouth, eyes=eyes)


def _in_box(px, py, box):
  top, bottom, left, right = box
  return np.nonzero((py > top) & (py < bottom) & (px > left) & (px < right))[0]


def _bilinear(quad: np.ndarray, width: int, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
  """Bilinear samples at float (sx, sy) [N]; returns float32 [N, 3].

  ``quad`` is float32 [H*W, 4, 3]: each pixel with its right, lower and lower-right
  neighbours, so one row gather fetches all four and a batched 1x4 @ 4x3 product blends
  them (measured ~1.5x faster than four gathers, and than ndimage.map_coordinates).
  """
  height = quad.shape[0] // width
  sx = np.clip(sx, 0.0, np.float32(width - 1.001))
  sy = np.clip(sy, 0.0, np.float32(height - 1.001))
  x0 = sx.astype(np.int32)
  y0 = sy.astype(np.int32)
  fx = sx - x0
  fy = sy - y0
  w = np.empty((len(sx), 1, 4), np.float32)
  w[:, 0, 1] = fx * (1 - fy)
  w[:, 0, 0] = (1 - fy) - w[:, 0, 1]
  w[:, 0, 3] = fx * fy
  w[:, 0, 2] = fy - w[:, 0, 3]
  return np.matmul(w, np.take(quad, y0 * width + x0, axis=0))[:, 0]


def _warp_mouth(m: dict, x: np.ndarray, y: np.ndarray, open_: float):
  """Backward map of the jaw/lip warp at canonical points; returns (src_y, interior alpha).

  Closes the photo's smile gap (lower inner lip moved up to the upper one), then opens the
  lips by ``open_ * max_open`` with an elliptic profile between the mouth corners (20% of
  it lifts the upper lip, 80% drops the lower lip), and drops the chin with a broader
  profile. The band between the displaced lips is the mouth interior.
  """
  u = (x - m["xc"]) / m["half_w"]
  lens = np.sqrt(np.clip(1.0 - u * u, 0.0, 1.0))
  upper = np.interp(x, m["ux"], m["uy"])
  lower = np.interp(x, m["lx"], m["ly"])
  gap = np.clip(lower - upper, 0.0, None) * (lens > 0)
  opening = open_ * m["max_open"] * lens
  lift, drop = 0.2 * opening, 0.8 * opening
  g = np.clip(1.0 - ((x - m["xc"]) / m["jaw_half_w"]) ** 2, 0.0, 1.0) ** 2
  jaw = 0.6 * open_ * m["max_open"] * g
  chin, fade_len = m["chin"], m["fade"]
  span = np.maximum(chin - lower, 1.0)

  def displacement(s):
    # Downward displacement of the source point s below the lips (fixed-point inverse).
    r = np.clip((s - lower) / span, 0.0, 1.0)
    fade = 0.5 + 0.5 * np.cos(np.pi * np.clip((s - chin) / fade_len, 0.0, 1.0))
    return (drop * (1 - r) + jaw * r) * fade - gap * (1 - r)

  src = y.copy()
  top_edge, bottom_edge = upper - lift, upper + drop
  above = y < top_edge
  rup = np.clip(1.0 - (top_edge - y) / m["upper_h"], 0.0, 1.0)
  src[above] = (y + lift * rup)[above]
  below = y >= bottom_edge
  s = y - (drop - gap)
  for _ in range(2):
    s = y - displacement(s)
  src[below] = s[below]
  alpha = np.clip(y - top_edge + 0.5, 0, 1) * np.clip(bottom_edge - y + 0.5, 0, 1)
  alpha = alpha * (opening > 0.05)
  return src, alpha.astype(np.float32)


def _eyelid_alpha(e: dict, x: np.ndarray, y: np.ndarray, eye_open: float):
  """Eyelid lowered to ``1 - eye_open`` of the eye height.

  Returns:
    skin alpha [n], lash (dark line at the lid edge) alpha [n], lid colour [n, 3].
  """
  top = np.polyval(e["upper"], x)
  bottom = np.maximum(np.polyval(e["lower"], x), top)
  lid = top + (1.0 - eye_open) * (bottom - top)
  inside_x = np.clip(np.minimum(x - e["xl"], e["xr"] - x) + 0.5, 0.0, 1.0)
  skin = inside_x * np.clip(lid - y + 0.5, 0, 1) * np.clip(y - top + 1.5, 0, 1)
  lash = inside_x * np.clip(1.2 - np.abs(y - lid), 0, 1) * (1.0 - eye_open)
  lid_colour = e["skin_ramp"][0][None, :] * x[:, None] + e["skin_ramp"][1][None, :]
  return (skin.astype(np.float32), np.clip(lash, 0, 1).astype(np.float32),
          0.95 * lid_colour)


def render_frame(template: FaceTemplate, mouth_open: float, eye_open: float,
                 head_dx: float, head_dy: float, head_angle: float) -> np.ndarray:
  """One frame: uint8 [H, W, 3].

  Args:
    template: from :func:`build_face_template`.
    mouth_open: 0 closed .. 1 wide.
    eye_open: 1 open .. 0 closed.
    head_dx, head_dy: head translation in pixels.
    head_angle: head roll in degrees (about the neck).
  """
  t = template
  # Canonical (un-swayed) point p for each output pixel q of the head region.
  # Python floats keep the float32 arrays float32 (numpy scalars would promote to float64).
  a = float(np.deg2rad(head_angle))
  cos, sin = float(np.cos(a)), float(np.sin(a))
  cx, cy = float(t.pivot[0]), float(t.pivot[1])
  qx = t.grid_x - (cx + float(head_dx))
  qy = t.grid_y - (cy + float(head_dy))
  rigid_x = cx + cos * qx + sin * qy
  rigid_y = cy - sin * qx + cos * qy
  px = t.grid_x + t.head_weight * (rigid_x - t.grid_x)
  py = t.grid_y + t.head_weight * (rigid_y - t.grid_y)
  sx, sy = px, py.copy()

  mi = _in_box(px, py, t.mouth["box"])
  m_src, m_alpha = _warp_mouth(t.mouth, px[mi], py[mi], float(mouth_open))
  sy[mi] = m_src
  colour = _bilinear(t.quad, t.image.shape[1], sx, sy)

  # Mouth interior: dark, darker towards the middle of the opening.
  mask = m_alpha > 0
  if mask.any():
    idx = mi[mask]
    depth = 0.75 + 0.25 * np.cos(np.clip((py[idx] - np.interp(
        px[idx], t.mouth["ux"], t.mouth["uy"])) / (t.mouth["max_open"] + 1e-6), 0, 1) * np.pi)
    inner = t.mouth["colour"][None, :] * depth[:, None]
    al = m_alpha[mask][:, None]
    colour[idx] = colour[idx] * (1 - al) + inner * al
  if eye_open < 0.999:
    for e in t.eyes:
      ei = _in_box(px, py, e["box"])
      skin, lash, lid_colour = _eyelid_alpha(e, px[ei], py[ei], float(eye_open))
      c = colour[ei]
      c = c * (1 - skin[:, None]) + lid_colour * skin[:, None]
      c = c * (1 - 0.55 * lash[:, None])
      colour[ei] = c
  frame = t.image.copy()
  frame.reshape(-1, 3)[t.pixels] = np.clip(colour + 0.5, 0, 255).astype(np.uint8)
  return frame


def render_clip(template: FaceTemplate, mouth_open: np.ndarray, eye_open: np.ndarray,
                head_dx: np.ndarray, head_dy: np.ndarray, head_angle: np.ndarray
                ) -> np.ndarray:
  """All frames of a clip: uint8 [T, H, W, 3] from per-frame curves [T]."""
  return np.stack([render_frame(template, *v) for v in zip(
      mouth_open, eye_open, head_dx, head_dy, head_angle)])
