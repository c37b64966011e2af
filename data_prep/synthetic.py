"""Synthetic talking-face corpus in GRID's raw layout: the project's embedded data set.

GRID cannot be downloaded here, so this module writes a stand-in with the same layout and
the same kind of signal: a 3 s clip per sentence, 25 fps video, 50 kHz speech, word
alignments, and lip motion that follows the speech, plus motion the audio does NOT
determine (blinks, head sway) -- the stochastic part the model has to learn to sample.

* Speech: GRID-grammar sentences ("bin blue at c two soon") synthesised by espeak-ng (the
  ``espeakng-loader`` wheel, through ctypes), with word and phoneme timings from espeak's
  own events; each speaker has its own voice variant, rate and pitch.
* Face: the scikit-image astronaut photo with Dlib's 68 landmarks; per frame the jaw and
  lips are warped open by a mouth-opening value driven by the phoneme timing (the opened
  region is filled with a dark mouth interior), eyelids are painted closed during random
  blinks, and the head sways by a small smooth random rigid motion.
* Layout (``root`` given)::

    root/sN/<clip>.mpg               25 fps, 75 frames, MPEG-1 video, no audio (like GRID)
    root/sN/<clip>.wav               50 kHz mono int16, exactly 3.0 s
    root/sN/align/<clip>.align       "start end word" in 1/25000 s, "sil" around speech
    root/ground_truth/sN/<clip>.npz  mouth_open, eye_open, head_dx/dy/angle [75], sentence,
                                     phoneme and word timings (kept out of speaker folders)
    root/corpus.json                 parameters, seed, version, list of clips

Everything is a deterministic function of (seed, sizes, frame_size): wav, align and npz
bytes and the frames before encoding are identical across runs and worker counts.
Imports no JAX. CLI::

  python -m data_prep.synthetic --out_dir=/tmp/synth --num_speakers=4 \
      --clips_per_speaker=25 --seed=0 --num_workers=2
"""

import argparse
import ctypes
import dataclasses
import io
import json
import multiprocessing
import os
import threading
import time
import wave
import zipfile

import numpy as np
from scipy import ndimage
from scipy import signal

VERSION = "1.1.0"  # 1.1: longer blinks, 0.3-0.6 Hz.
FPS = 25
NUM_FRAMES = 75
CLIP_SECONDS = NUM_FRAMES / FPS  # 3.0
SAMPLE_RATE = 50000  # GRID's distribution rate.
ALIGN_UNITS_PER_SECOND = 25000  # GRID .align units: 1000 per 25 fps frame.
DEFAULT_FRAME_SIZE = (360, 288)  # (W, H), GRID's normal-quality videos.

# GRID grammar: command colour preposition letter digit adverb.
COMMANDS = ("bin", "lay", "place", "set")
COLOURS = ("blue", "green", "red", "white")
PREPOSITIONS = ("at", "by", "in", "with")
LETTERS = tuple("abcdefghijklmnopqrstuvxyz")  # A-Z without W, as in GRID.
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ADVERBS = ("again", "now", "please", "soon")
GRAMMAR = (COMMANDS, COLOURS, PREPOSITIONS, LETTERS, DIGITS, ADVERBS)

# Inside a sentence espeak reads a lone "a" as the article (schwa); "eh" gives the letter
# name /eI/. All other letters are read as their names in context.
_LETTER_SPELLING = {"a": "eh"}

# Voice variants cycled over speakers; each speaker also draws its own rate and pitch.
# The breathy variants (en+f2, en+f3, en+f5) mix in noise that differs from run to run
# even in a fresh process (measured), which would break byte-identical output, so only
# variants measured to be bit-exact across processes are used.
VOICES = ("en+m1", "en+f1", "en+m3", "en+f4", "en+m7", "en+m2", "en+m4", "en+m5",
          "en+m6", "en")


# --------------------------------------------------------------------------- grammar


def random_sentence(rng: np.random.Generator) -> list[str]:
  """Draws one GRID sentence: six words, one from each grammar slot."""
  return [slot[int(rng.integers(len(slot)))] for slot in GRAMMAR]


def clip_name(words: list[str]) -> str:
  """GRID's 6-char clip code: first letters of the words, the digit as a numeral.

  ``["bin", "blue", "at", "c", "two", "soon"] -> "bbac2s"``.
  """
  if len(words) != 6:
    raise ValueError(f"a GRID sentence has 6 words, got {words}")
  return "".join([words[0][0], words[1][0], words[2][0], words[3],
                  str(DIGITS.index(words[4])), words[5][0]])


def spoken_text(words: list[str]) -> str:
  """The text handed to espeak for a GRID sentence (one spoken word per GRID word)."""
  return " ".join(_LETTER_SPELLING.get(w, w) for w in words)


# --------------------------------------------------------------------------- speech


@dataclasses.dataclass(frozen=True)
class PhonemeEvent:
  """One phoneme from espeak: mnemonic, start/end in seconds, word index (-1 = pause)."""
  phoneme: str
  start: float
  end: float
  word_index: int


class _EspeakEvent(ctypes.Structure):
  # espeak_EVENT from speak_lib.h; `id` is a union whose 8-byte `string` member holds the
  # phoneme mnemonic for PHONEME events.
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS, _INITIALIZE_DONT_EXIT = 0x0001, 0x8000
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_EspeakEvent))


class _Espeak:
  """One freshly loaded espeak-ng library instance, for one utterance.

  espeak-ng keeps static state across utterances (e.g. the pitch-flutter phase), so the
  same text gives slightly different audio depending on what was spoken before. Loading
  the library afresh for every utterance and unloading it after (about 10 ms) makes each
  utterance a function of its arguments alone -- needed for seed determinism across
  restarts and worker counts. Its noise sources (breathy variants) draw from libc's
  rand(), which is therefore re-seeded before every utterance. This only holds while nothing else in the process keeps
  libespeak-ng loaded (dlclose then cannot unload it).
  """

  def __init__(self):
    import espeakng_loader  # pylint: disable=g-import-not-at-top
    self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
    self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                            ctypes.c_int]
    self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                       ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                       ctypes.c_void_p, ctypes.c_void_p]
    self.sample_rate = self._lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
        _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
    if self.sample_rate <= 0:
      raise RuntimeError("espeak_Initialize failed")
    self._chunks = []
    self._events = []  # (type, sample, phoneme bytes)
    self._callback = _SYNTH_CALLBACK(self._on_synth)  # Kept alive: C holds the pointer.
    self._lib.espeak_SetSynthCallback(self._callback)

  def close(self):
    import _ctypes  # pylint: disable=g-import-not-at-top
    self._lib.espeak_Terminate()
    _ctypes.dlclose(self._lib._handle)  # pylint: disable=protected-access
    self._lib = None

  def _on_synth(self, wav, num_samples, events):
    if num_samples > 0 and wav:
      self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
      ev = events[i]
      self._events.append((ev.type, ev.sample, bytes(ev.id) if ev.type == _EVENT_PHONEME
                           else b""))
      i += 1
    return 0

  def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int):
    """Returns (int16 samples, [(type, sample, phoneme bytes)])."""
    self._chunks, self._events = [], []
    ctypes.CDLL(None).srand(12345)
    ctypes.CDLL(None).srandom(12345)
    if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
      raise ValueError(f"espeak has no voice {voice!r}")
    self._lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
    self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
    self._lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
    data = text.encode("utf-8")
    err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                 None, None)
    self._lib.espeak_Synchronize()
    if err != 0:
      raise RuntimeError(f"espeak_Synth failed with {err}")
    samples = (np.concatenate(self._chunks) if self._chunks
               else np.zeros(0, np.int16))
    return samples, list(self._events)


_ESPEAK_LOCK = threading.Lock()  # The library's state is process-global.


def synthesize_speech(text: str, voice: str = "en+m1", rate: int = 160, pitch: int = 50,
                      pitch_range: int = 50) -> tuple[np.ndarray, int, list[PhonemeEvent]]:
  """Speaks ``text`` with espeak-ng.

  Args:
    text: words separated by spaces.
    voice: espeak voice name with optional variant, e.g. ``"en+f2"``.
    rate: words per minute (espeak 80..450).
    pitch: base pitch 0..100.
    pitch_range: intonation range 0..100.

  Returns:
    samples: float32 [S] in [-1, 1] at ``sample_rate`` (espeak's 22050 Hz).
    sample_rate: int.
    phoneme_events: every phoneme with start/end seconds from the start of ``samples``;
      ``word_index`` counts the words of ``text`` from 0, -1 for pauses (``_``, ``_:``).
  """
  with _ESPEAK_LOCK:
    eng = _Espeak()
    try:
      raw, events = eng.synth(text, voice, rate, pitch, pitch_range)
      sr = eng.sample_rate
    finally:
      eng.close()
  samples = raw.astype(np.float32) / 32768.0
  starts, names, words = [], [], []
  word = -1
  for kind, sample, ident in events:
    if kind == _EVENT_WORD:
      word += 1
    elif kind == _EVENT_PHONEME:
      name = ident.split(b"\0", 1)[0].decode("ascii", "replace")
      starts.append(sample / sr)
      names.append(name)
      words.append(-1 if name.startswith("_") else word)
  ends = starts[1:] + [max(len(samples) / sr, starts[-1] if starts else 0.0)]
  return samples, sr, [PhonemeEvent(n, s, e, w)
                       for n, s, e, w in zip(names, starts, ends, words)]


def shift_events(events: list[PhonemeEvent], offset: float, duration: float
                 ) -> list[PhonemeEvent]:
  """Moves events by ``offset`` seconds, clipped to [0, duration]; drops empty ones."""
  out = []
  for ev in events:
    s = min(max(ev.start + offset, 0.0), duration)
    e = min(max(ev.end + offset, 0.0), duration)
    if e > s:
      out.append(PhonemeEvent(ev.phoneme, s, e, ev.word_index))
  return out


# --------------------------------------------------------------------------- mouth curve

# Target mouth opening per espeak phoneme class (stress marks stripped first).
_OPEN_VOWELS = ("aI", "aU", "a#", "aa", "a", "A", "V")      # wide
_BACK_VOWELS = ("0", "O")                                    # wide-ish, rounded
_MID_VOWELS = ("e", "E", "@", "3", "oU", "o")               # medium
_CLOSE_VOWELS = ("i", "I", "u", "U", "y")                    # narrow
_BILABIALS = ("p", "b", "m")                                 # lips closed
_LABIODENTALS = ("f", "v", "w")                              # nearly closed


def phoneme_openness(phoneme: str) -> float:
  """Target mouth opening in [0, 1] for one espeak phoneme mnemonic."""
  ph = phoneme.lstrip("',%=")
  if not ph or ph.startswith("_"):
    return 0.0
  for group, value in ((_OPEN_VOWELS, 1.0), (_BACK_VOWELS, 0.8), (_MID_VOWELS, 0.6),
                       (_CLOSE_VOWELS, 0.35), (_BILABIALS, 0.0), (_LABIODENTALS, 0.12)):
    if any(ph.startswith(g) for g in group):
      return value
  return 0.25  # Other consonants: t d n s z l r k g h j S Z T D tS dZ N.


def mouth_curve(phoneme_events: list[PhonemeEvent], num_frames: int = NUM_FRAMES,
                fps: float = FPS, smooth_ms: float = 22.0) -> np.ndarray:
  """Mouth opening per video frame from phoneme timings.

  The per-phoneme targets form a step function on a 1 ms grid (0 where no phoneme:
  silence), smoothed by a Gaussian of ``smooth_ms`` (co-articulation: attack and decay
  of about two frames once averaged over each 40 ms frame) and averaged over each frame.

  Args:
    phoneme_events: events in clip time (seconds).
    num_frames: T.
    fps: video frame rate.
    smooth_ms: Gaussian smoothing sigma in milliseconds.

  Returns:
    float32 [T] in [0, 1].
  """
  ms_per_frame = 1000.0 / fps
  n_ms = int(round(num_frames * ms_per_frame))
  target = np.zeros(n_ms, np.float32)
  for ev in phoneme_events:
    a, b = int(round(ev.start * 1000)), int(round(ev.end * 1000))
    a, b = max(a, 0), min(b, n_ms)
    if b > a:
      target[a:b] = phoneme_openness(ev.phoneme)
  smooth = ndimage.gaussian_filter1d(target, smooth_ms, mode="constant")
  edges = np.round(np.arange(num_frames + 1) * ms_per_frame).astype(int)
  curve = np.add.reduceat(smooth, edges[:-1]) / np.diff(edges)
  return np.clip(curve, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- stochastic motion


def blink_curve(rng: np.random.Generator, num_frames: int = NUM_FRAMES, fps: float = FPS,
                rate_hz: float = 0.35, min_gap_s: float = 0.6) -> np.ndarray:
  """Eye opening per frame: 1 open, 0 closed, with blinks at Poisson-random times.

  Each blink lasts 6-10 frames (240-400 ms, the long end of real blinks, so that a 64x64
  crop shows it for several frames): closing over 30% of it, fully closed for 30%, reopening
  over the rest (opening is slower than closing, as in real blinks).

  Returns:
    float32 [T] in [0, 1].
  """
  t = (np.arange(num_frames) + 0.5) / fps
  eye = np.ones(num_frames, np.float32)
  # Start the process before the clip so the first blink is not biased towards t=0.
  when = -rng.exponential(1.0 / rate_hz)
  while True:
    when += max(rng.exponential(1.0 / rate_hz), min_gap_s)
    if when >= num_frames / fps:
      break
    dur = rng.uniform(6.0, 10.0) / fps
    u = (t - when) / dur
    close = np.where(u < 0.3, 0.5 - 0.5 * np.cos(np.pi * np.clip(u / 0.3, 0, 1)), 1.0)
    reopen = np.where(u > 0.6, 0.5 + 0.5 * np.cos(np.pi * np.clip((u - 0.6) / 0.4, 0, 1)),
                      1.0)
    depth = np.where((u >= 0) & (u <= 1), close * reopen, 0.0)
    eye = np.minimum(eye, 1.0 - depth).astype(np.float32)
  return eye


def sway_curves(rng: np.random.Generator, num_frames: int = NUM_FRAMES,
                amp_px: float = 2.0, amp_deg: float = 1.5, smooth_frames: float = 8.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Smooth random head motion: Gaussian-filtered white noise with stationary std.

  Returns:
    dx, dy (pixels) and angle (degrees), each float32 [T]; the standard deviation of
    each is ``amp_px`` / ``amp_px`` / ``amp_deg`` in expectation.
  """
  pad = int(4 * smooth_frames)
  noise = rng.standard_normal((3, num_frames + 2 * pad))
  smooth = ndimage.gaussian_filter1d(noise, smooth_frames, axis=1, mode="wrap")
  # Std of unit white noise after a Gaussian of sigma s: (2 sqrt(pi) s) ** -0.5.
  smooth *= np.sqrt(2.0 * np.sqrt(np.pi) * smooth_frames)
  smooth = smooth[:, pad:pad + num_frames]
  return ((amp_px * smooth[0]).astype(np.float32), (amp_px * smooth[1]).astype(np.float32),
          (amp_deg * smooth[2]).astype(np.float32))


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


def _detect_landmarks(image: np.ndarray) -> np.ndarray:
  """Dlib 68 landmarks of the best-scoring frontal face, float32 [68, 2]."""
  import dlib  # pylint: disable=g-import-not-at-top
  import face_recognition_models  # pylint: disable=g-import-not-at-top
  detector = dlib.get_frontal_face_detector()
  boxes, scores, _ = detector.run(image, 1, 0.0)
  if not boxes:
    raise RuntimeError("no face found in the template image")
  box = boxes[int(np.argmax(scores))]
  predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
  shape = predictor(image, box)
  return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


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


def build_face_template(frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
                        face_fraction: float = 0.45) -> FaceTemplate:
  """Places the astronaut face on a ``frame_size`` (W, H) canvas, GRID-like.

  The photo is scaled so the brow-to-chin height is ``face_fraction`` of the frame height
  and cropped with the face centred; Dlib's landmarks are found once on the photo and
  mapped to the canvas.
  """
  import skimage.data  # pylint: disable=g-import-not-at-top
  width, height = frame_size
  photo = skimage.data.astronaut()
  lm_photo = _detect_landmarks(photo)
  brow_y = lm_photo[17:27, 1].min()
  face_h = lm_photo[8, 1] - brow_y
  scale = face_fraction * height / face_h
  centre = np.array([lm_photo[:, 0].mean(), 0.5 * (brow_y + lm_photo[8, 1])])
  offset = np.array([width / 2.0, height / 2.0]) - scale * centre
  # Canvas pixel q shows photo point (q - offset) / scale; anti-alias when shrinking.
  sigma = max(0.0, 0.5 * (1.0 / scale - 1.0))
  qy, qx = np.mgrid[0:height, 0:width].astype(np.float64)
  coords = [(qy - offset[1]) / scale, (qx - offset[0]) / scale]
  channels = []
  for c in range(3):
    chan = photo[..., c].astype(np.float64)
    if sigma > 0:
      chan = ndimage.gaussian_filter(chan, sigma)
    channels.append(ndimage.map_coordinates(chan, coords, order=3, mode="nearest"))
  image = np.clip(np.round(np.stack(channels, -1)), 0, 255).astype(np.uint8)
  lm = (lm_photo * scale + offset).astype(np.float32)

  face_h = float(lm[8, 1] - lm[17:27, 1].min())
  jaw_w = float(lm[16, 0] - lm[0, 0])
  # Head region: an ellipse around face and hair; inside it pixels follow the head,
  # fading to the static background at its rim.
  hc = np.array([lm[27:31, 0].mean(), lm[8, 1] - 0.62 * face_h])
  rx, ry = 0.8 * jaw_w, 1.0 * face_h
  gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
  r = np.sqrt(((gx - hc[0]) / rx) ** 2 + ((gy - hc[1]) / ry) ** 2)
  weight = 0.5 + 0.5 * np.cos(np.pi * np.clip((r - 0.75) / 0.3, 0.0, 1.0))
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
      colour=np.array([52.0, 16.0, 22.0], np.float32))
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


# --------------------------------------------------------------------------- writers


def _write_wav(path: str, samples: np.ndarray, sample_rate: int) -> None:
  with wave.open(path, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(sample_rate)
    w.writeframes(samples.astype("<i2").tobytes())


def _write_npz(path: str, arrays: dict) -> None:
  """np.savez-compatible zip with fixed timestamps (np.savez stamps the wall clock)."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    for key in sorted(arrays):
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
      info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      info.external_attr = 0o644 << 16
      zf.writestr(info, buf.getvalue())


def _write_video(path: str, frames: np.ndarray, fps: int = FPS) -> None:
  """MPEG-1 video in an .mpg (program stream) container, no audio, like GRID's."""
  import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top
  writer = imageio.get_writer(
      path, format="FFMPEG", mode="I", fps=fps, codec="mpeg1video", quality=None,
      pixelformat="yuv420p", macro_block_size=8, ffmpeg_log_level="error",
      output_params=["-qscale:v", "3", "-bitexact", "-threads", "1", "-an"])
  try:
    for frame in frames:
      writer.append_data(frame)
  finally:
    writer.close()


def _align_text(words: list[str], starts: list[float], ends: list[float]) -> str:
  """GRID .align: ``start end word`` lines in 1/25000 s, ``sil`` around the sentence."""
  total = int(round(CLIP_SECONDS * ALIGN_UNITS_PER_SECOND))
  units = lambda t: int(round(t * ALIGN_UNITS_PER_SECOND))
  lines, cursor = [], 0
  first = units(starts[0])
  if first > 0:
    lines.append(f"0 {first} sil")
    cursor = first
  for w, s, e in zip(words, starts, ends):
    s_u, e_u = max(units(s), cursor), max(units(e), cursor)
    if s_u > cursor:  # A pause between words: GRID writes it as "sp".
      lines.append(f"{cursor} {s_u} sp")
    lines.append(f"{s_u} {e_u} {w}")
    cursor = e_u
  if cursor < total:
    lines.append(f"{cursor} {total} sil")
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- corpus


def speaker_params(seed: int, speaker: int) -> dict:
  """Per-speaker voice and motion statistics (speaker counts from 1)."""
  rng = np.random.default_rng([seed, speaker, 0])
  return dict(
      voice=VOICES[(speaker - 1 + seed) % len(VOICES)],
      rate=int(rng.integers(145, 186)),
      pitch=int(rng.integers(30, 71)),
      pitch_range=int(rng.integers(35, 76)),
      articulation=round(float(rng.uniform(0.8, 1.0)), 3),
      sway_px=round(float(rng.uniform(1.0, 3.0)), 3),
      sway_deg=round(float(rng.uniform(0.5, 2.5)), 3),
      sway_smooth_frames=round(float(rng.uniform(6.0, 12.0)), 3),
      blink_rate_hz=round(float(rng.uniform(0.3, 0.6)), 3))


def _plan(seed: int, num_speakers: int, clips_per_speaker: int) -> list[dict]:
  """Deterministic list of clip jobs: unique sentences per speaker."""
  if clips_per_speaker > int(np.prod([len(s) for s in GRAMMAR])):
    raise ValueError("more clips per speaker than GRID sentences")
  jobs = []
  for spk in range(1, num_speakers + 1):
    rng = np.random.default_rng([seed, spk, 1])
    params = speaker_params(seed, spk)
    seen = set()
    for i in range(clips_per_speaker):
      while True:
        words = random_sentence(rng)
        name = clip_name(words)
        if name not in seen:
          seen.add(name)
          break
      jobs.append(dict(speaker=f"s{spk}", speaker_index=spk, clip_index=i, name=name,
                       words=words, params=params, seed=seed))
  return jobs


def _clip_paths(root: str, speaker: str, name: str) -> dict:
  return dict(
      wav=os.path.join(root, speaker, name + ".wav"),
      align=os.path.join(root, speaker, "align", name + ".align"),
      mpg=os.path.join(root, speaker, name + ".mpg"),
      npz=os.path.join(root, "ground_truth", speaker, name + ".npz"))


def _clip_complete(root: str, job: dict) -> bool:
  return all(os.path.exists(p) for p in _clip_paths(root, job["speaker"], job["name"]).values())


def make_clip(job: dict, template: FaceTemplate) -> dict:
  """Everything of one clip in memory (no files): audio, align text, frames, truth."""
  p = job["params"]
  rng = np.random.default_rng([job["seed"], job["speaker_index"], 2, job["clip_index"]])
  words = job["words"]
  text = spoken_text(words)
  rate = p["rate"] + int(rng.integers(-8, 9))
  pitch = p["pitch"] + int(rng.integers(-4, 5))
  lead = float(rng.uniform(0.3, 0.8))
  while True:
    samples, sr, events = synthesize_speech(text, p["voice"], rate, pitch, p["pitch_range"])
    speech = [e for e in events if e.word_index >= 0]
    t_first, t_last = speech[0].start, speech[-1].end
    if t_last - t_first <= CLIP_SECONDS - 0.4:
      break
    rate = int(rate * 1.15)  # Too long for 3 s: speak faster.
  lead = min(lead, CLIP_SECONDS - 0.2 - (t_last - t_first))
  offset = lead - t_first

  # Audio: resample espeak's 22050 Hz to GRID's 50 kHz, place at `offset` in 3.0 s.
  g = np.gcd(SAMPLE_RATE, sr)
  audio = signal.resample_poly(samples.astype(np.float64), SAMPLE_RATE // g, sr // g)
  total = int(round(CLIP_SECONDS * SAMPLE_RATE))
  out = np.zeros(total, np.float64)
  start = int(round(offset * SAMPLE_RATE))
  a0, b0 = max(0, -start), min(len(audio), total - start)
  out[start + a0:start + b0] = audio[a0:b0]
  peak = np.abs(out).max()
  out *= 0.6 / max(peak, 1e-6)
  out += rng.normal(0.0, 3e-4, total)  # Room noise floor: no digital silence (log energy).
  pcm = np.clip(np.round(out * 32767), -32768, 32767).astype(np.int16)

  events = shift_events(events, offset, CLIP_SECONDS)
  word_starts, word_ends = [], []
  for w in range(len(words)):
    ph = [e for e in events if e.word_index == w]
    word_starts.append(ph[0].start)
    word_ends.append(ph[-1].end)

  mouth = mouth_curve(events, NUM_FRAMES, FPS) * np.float32(p["articulation"])
  eye = blink_curve(rng, NUM_FRAMES, FPS, p["blink_rate_hz"])
  dx, dy, angle = sway_curves(rng, NUM_FRAMES, p["sway_px"], p["sway_deg"],
                              p["sway_smooth_frames"])
  frames = render_clip(template, mouth, eye, dx, dy, angle)
  truth = dict(
      mouth_open=mouth.astype(np.float32), eye_open=eye, head_dx=dx, head_dy=dy,
      head_angle=angle, sentence=np.array(" ".join(words)),
      words=np.array(words), word_start=np.array(word_starts, np.float32),
      word_end=np.array(word_ends, np.float32),
      phonemes=np.array([e.phoneme for e in events]),
      phoneme_start=np.array([e.start for e in events], np.float32),
      phoneme_end=np.array([e.end for e in events], np.float32),
      phoneme_word=np.array([e.word_index for e in events], np.int32),
      voice=np.array(p["voice"]), rate=np.int32(rate), pitch=np.int32(pitch))
  return dict(pcm=pcm, align=_align_text(words, word_starts, word_ends), frames=frames,
              truth=truth)


def _write_clip(root: str, job: dict, template: FaceTemplate) -> str:
  """Makes one clip and writes its four files through temp files + rename."""
  clip = make_clip(job, template)
  paths = _clip_paths(root, job["speaker"], job["name"])
  tmp_dir = os.path.join(root, ".tmp")
  tag = f"{job['speaker']}_{job['name']}_{os.getpid()}"
  tmp = {k: os.path.join(tmp_dir, f"{tag}.{k}") for k in paths}
  tmp["mpg"] = os.path.join(tmp_dir, f"{tag}.mpg")  # ffmpeg picks the muxer by suffix.
  for path in list(paths.values()) + [tmp_dir]:
    os.makedirs(os.path.dirname(path) if path != tmp_dir else path, exist_ok=True)
  _write_wav(tmp["wav"], clip["pcm"], SAMPLE_RATE)
  with open(tmp["align"], "w") as f:
    f.write(clip["align"])
  _write_video(tmp["mpg"], clip["frames"])
  _write_npz(tmp["npz"], clip["truth"])
  # The ground truth goes last: its presence marks the clip complete on restart.
  for key in ("wav", "align", "mpg", "npz"):
    os.replace(tmp[key], paths[key])
  return f"{job['speaker']}/{job['name']}"


_WORKER = {}


def _worker_init(root: str, template: FaceTemplate) -> None:
  _WORKER["root"], _WORKER["template"] = root, template


def _worker_run(job: dict) -> str:
  return _write_clip(_WORKER["root"], job, _WORKER["template"])


def _corpus_meta(seed, num_speakers, clips_per_speaker, frame_size, jobs) -> dict:
  return dict(
      name="talkface_synthetic_grid", version=VERSION, seed=seed,
      num_speakers=num_speakers, clips_per_speaker=clips_per_speaker,
      frame_size=list(frame_size), fps=FPS, num_frames=NUM_FRAMES,
      sample_rate=SAMPLE_RATE, align_units_per_second=ALIGN_UNITS_PER_SECOND,
      face="skimage.data.astronaut", tts="espeak-ng (espeakng-loader)",
      speakers={f"s{s}": speaker_params(seed, s) for s in range(1, num_speakers + 1)},
      clips=[f"{j['speaker']}/{j['name']}" for j in jobs],
      sentences={f"{j['speaker']}/{j['name']}": " ".join(j["words"]) for j in jobs})


def generate_corpus(root: str, num_speakers: int, clips_per_speaker: int, seed: int = 0,
                    num_workers: int = 1, frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
                    progress: bool = False) -> dict:
  """Writes (or completes) a synthetic GRID-layout corpus under ``root``.

  Clips whose four files already exist are skipped, so an interrupted run can be
  restarted; a ``corpus.json`` from different parameters is an error.

  Returns:
    summary dict: root, num_clips, generated, skipped, seconds, seconds_per_clip.
  """
  t0 = time.time()
  os.makedirs(root, exist_ok=True)
  frame_size = tuple(int(v) for v in frame_size)
  jobs = _plan(seed, num_speakers, clips_per_speaker)
  meta = _corpus_meta(seed, num_speakers, clips_per_speaker, frame_size, jobs)
  meta_path = os.path.join(root, "corpus.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    if old != meta:
      raise ValueError(f"{meta_path} was written with other parameters; use a new out_dir")
  else:
    with open(meta_path + ".tmp", "w") as f:
      json.dump(meta, f, indent=1, sort_keys=True)
    os.replace(meta_path + ".tmp", meta_path)
  todo = [j for j in jobs if not _clip_complete(root, j)]
  bar = None
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="clip")
  if todo:
    template = build_face_template(frame_size)
    if num_workers > 1 and len(todo) > 1:
      # Spawn, not fork: the caller may hold threads (TF, tqdm) that fork would break.
      ctx = multiprocessing.get_context("spawn")
      with ctx.Pool(min(num_workers, len(todo)), _worker_init, (root, template)) as pool:
        for _ in pool.imap_unordered(_worker_run, todo):
          if bar is not None:
            bar.update(1)
    else:
      for job in todo:
        _write_clip(root, job, template)
        if bar is not None:
          bar.update(1)
  if bar is not None:
    bar.close()
  tmp_dir = os.path.join(root, ".tmp")
  if os.path.isdir(tmp_dir) and not os.listdir(tmp_dir):
    os.rmdir(tmp_dir)
  seconds = time.time() - t0
  return dict(root=root, num_clips=len(jobs), generated=len(todo),
              skipped=len(jobs) - len(todo), seconds=round(seconds, 3),
              seconds_per_clip=round(seconds / max(len(todo), 1), 4))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--num_speakers", type=int, default=4)
  parser.add_argument("--clips_per_speaker", type=int, default=25)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_workers", type=int, default=1)
  parser.add_argument("--frame_width", type=int, default=DEFAULT_FRAME_SIZE[0])
  parser.add_argument("--frame_height", type=int, default=DEFAULT_FRAME_SIZE[1])
  args = parser.parse_args(argv)
  summary = generate_corpus(args.out_dir, args.num_speakers, args.clips_per_speaker,
                            seed=args.seed, num_workers=args.num_workers,
                            frame_size=(args.frame_width, args.frame_height), progress=True)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
