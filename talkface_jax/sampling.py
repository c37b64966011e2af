"""Sampling K videos per input from a trained model, and writing them out.

Two sources of inputs:

* held-out clips of the eval split (``sample_clips``, ``sample_heldout``, ``write_sample_files``,
  ``write_sample_summaries``): the first frame and the clip's MFCC windows;
* user files (``FileSampler``, ``sample_files``): any photo goes through the same Dlib
  detection and alignment as the training data (``data_prep.face``), any audio file through
  ``media.read_audio`` and ``data_prep.audio.mfcc_windows``.

Generation runs through ``ChunkedGenerator``: frames are produced in chunks of a fixed
number of frames (``config.sample.chunk_frames``) by one jitted function of
``models.talkface.generate_chunk`` with every LSTM state carried across chunk borders, so one
compiled program serves every input length, device memory does not grow with the audio,
and the output equals a single ``generate`` call. All K latent draws of an input run in the
same call. User-file outputs (one mp4 per sample with the input audio, a grid video, a
contact sheet) are staged in a hidden folder next to the destination and moved into place
only when all of them are written, so a failure leaves no partial outputs.
"""

import csv
import dataclasses
import functools
import math
import os
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from data_prep import schema
from talkface_jax import input_pipeline, media
from talkface_jax.models import talkface

# The shard schema's rates: 25 fps video, 16 kHz audio, 640 audio samples per frame.
FPS, SAMPLE_RATE, SAMPLES_PER_FRAME = schema.FPS, schema.SAMPLE_RATE, schema.SAMPLES_PER_FRAME


class InputError(ValueError):
  """A face photo, audio file, CSV row or output folder given for sampling cannot be used."""


# -------------------------------------------------------------------------------------------------
# Generation.
# -------------------------------------------------------------------------------------------------


def make_generate_fn(model: talkface.TalkFace, num_samples: int, batch_norm: str,
                     deterministic: bool = False):
  """Jitted ``(variables, frame0 [B,H,W,3] float, mfcc [B,T,28,12], key) -> [B,K,T,H,W,3]``."""
  return jax.jit(functools.partial(talkface.generate, model, num_samples=num_samples,
                                   batch_norm=batch_norm, deterministic=deterministic))


def to_uint8(frames) -> np.ndarray:
  """[0, 1] floats -> uint8."""
  return np.clip(np.round(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)


class ChunkedGenerator:
  """K videos per input of any length, generated ``chunk_frames`` frames per compiled call.

  The audio windows after frame 0 are cut into chunks of exactly ``chunk_frames`` windows,
  the last one padded with zero windows whose frames are dropped (generation is causal, so
  padding after the end cannot change earlier frames). Shapes are therefore static: the
  chunk function compiles once per (batch size, frame size) and is reused for every chunk
  and every input. Frames leave the device chunk by chunk, so device memory does not grow
  with the audio length.

  With ``batch_norm='running'`` the output equals ``models.talkface.generate`` on the whole
  sequence (the latent of frame t is drawn from ``fold_in(key, t)``). With 'batch', the audio
  encoder normalises each chunk with that chunk's statistics, so chunking changes the output.

  Attributes:
    num_samples: K.
    chunk_frames: frames per compiled call.
    num_traces: how many times the chunk function was traced (= compiled); one per input
      shape, whatever the number of chunks or inputs.
  """

  def __init__(self, model: talkface.TalkFace, num_samples: int, chunk_frames: int,
               batch_norm: str = "running", deterministic: bool = False):
    if chunk_frames < 1:
      raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    self.model = model
    self.num_samples = num_samples
    self.chunk_frames = chunk_frames
    self.num_traces = 0
    self._start = jax.jit(functools.partial(
        talkface.start_generation, model, num_samples=num_samples, batch_norm=batch_norm))

    def chunk(variables, state, mfcc, key, quantize):
      self.num_traces += 1  # Runs only while tracing.
      state, frames = talkface.generate_chunk(model, variables, state, mfcc, key,
                                              batch_norm=batch_norm, deterministic=deterministic)
      if quantize:
        frames = jnp.clip(jnp.round(frames * 255.0), 0, 255).astype(jnp.uint8)
      return state, frames

    self._chunk = jax.jit(chunk, static_argnames="quantize")

  def __call__(self, variables, frame0, mfcc, key: jax.Array,
               quantize: bool = True) -> np.ndarray:
    """Generates K videos for each of B inputs.

    Args:
      variables: {'params', 'batch_stats'}.
      frame0: identity frames [B, H, W, 3], uint8 or float in [0, 1].
      mfcc: [B, T, 28, 12]; window t drives frame t (window 0 belongs to frame 0).
      key: PRNG key; the same key gives the same videos.
      quantize: return uint8 frames (4x less host memory) instead of float32.

    Returns:
      [B, K, T, H, W, 3] uint8 (or float32 in [0, 1]); frame 0 is ``frame0``.
    """
    frame0 = np.asarray(frame0)
    if frame0.dtype == np.uint8:
      frame0 = frame0.astype(np.float32) / 255.0
    mfcc = np.asarray(mfcc, np.float32)
    batch, num_frames = mfcc.shape[:2]
    if num_frames < 1 or frame0.shape[0] != batch:
      raise ValueError(f"frame0 {frame0.shape} and mfcc {mfcc.shape}: need B identity frames "
                       "and B sequences of T >= 1 windows")
    state = self._start(variables, jnp.asarray(frame0, jnp.float32))
    first = np.asarray(state.prev_frames)[:, :, None]  # [B, K, 1, H, W, 3]
    pieces = [to_uint8(first) if quantize else first]
    for start in range(1, num_frames, self.chunk_frames):
      windows = mfcc[:, start:start + self.chunk_frames]
      valid = windows.shape[1]
      if valid < self.chunk_frames:
        pad = np.zeros((batch, self.chunk_frames - valid, *windows.shape[2:]), np.float32)
        windows = np.concatenate([windows, pad], axis=1)
      state, frames = self._chunk(variables, state, jnp.asarray(windows), key,
                                  quantize=quantize)
      pieces.append(np.asarray(frames)[:, :, :valid])
    return np.concatenate(pieces, axis=2)


def make_generator(config: ml_collections.ConfigDict, model: talkface.TalkFace,
                   num_samples: int, deterministic: bool = False) -> ChunkedGenerator:
  """The ``ChunkedGenerator`` of ``config`` (chunk size and generation BatchNorm mode)."""
  return ChunkedGenerator(model, num_samples, config.sample.chunk_frames,
                          config.model.generation_batch_norm, deterministic)


# -------------------------------------------------------------------------------------------------
# Held-out clips.
# -------------------------------------------------------------------------------------------------


def sample_clips(config: ml_collections.ConfigDict, model: talkface.TalkFace, variables,
                 clips: list[dict], num_samples: int, key: jax.Array) -> np.ndarray:
  """K videos for each clip's first frame and audio: uint8 [N, K, T, H, W, 3].

  Clips are generated one by one through one compiled chunk function; clip i uses
  ``fold_in(key, i)``. Clips of different lengths give a list of [K, T_i, H, W, 3].
  """
  generator = make_generator(config, model, num_samples)
  videos = []
  for i, clip in enumerate(clips):
    frames = generator(variables, clip["frames"][None, 0], clip["mfcc"][None],
                       jax.random.fold_in(key, i))
    videos.append(frames[0])
  return np.stack(videos) if len({v.shape for v in videos}) == 1 else videos


def sample_heldout(config: ml_collections.ConfigDict, model: talkface.TalkFace, variables,
                   num_samples: int | None = None) -> tuple[list[dict], np.ndarray]:
  """(clips, videos): ``config.sample.num_clips`` clips of the eval split and their K videos
  (``sample_clips`` with ``config.sample.seed``; K defaults to ``config.sample.num_samples``)."""
  clips = input_pipeline.load_clips(config, config.data.eval_split, config.sample.num_clips)
  videos = sample_clips(config, model, variables, clips,
                        num_samples or config.sample.num_samples,
                        jax.random.key(config.sample.seed))
  return clips, videos


def write_sample_summaries(config, model, variables, writer, step: int) -> None:
  """Contact sheets (ground truth row, then K sample rows) of held-out clips to TensorBoard."""
  clips, videos = sample_heldout(config, model, variables)
  images = {}
  for clip, samples in zip(clips, videos):
    sheet = media.contact_sheet([clip["frames"], *samples], max_frames=16)
    images[f"samples/{clip['clip_id']}"] = sheet[None]
  writer.write_images(step, images)


def write_sample_files(config, model, variables, out_dir: str, step: int,
                       num_samples: int | None = None) -> list[str]:
  """``--mode=sample`` on held-out clips: per clip, one mp4 per sample (audio muxed), a
  side-by-side mp4 (ground truth | samples) and a contact-sheet PNG. Returns the paths.

  ``num_samples`` (K) defaults to ``config.sample.num_samples``.
  """
  clips, videos = sample_heldout(config, model, variables, num_samples)
  return write_clip_videos(clips, videos, out_dir, step)


def write_clip_videos(clips: list[dict], videos, out_dir: str, step: int) -> list[str]:
  """Writes ``write_sample_files``'s files for clips and their generated videos (uint8
  [K, T, H, W, 3] per clip) under ``out_dir/step_<step>``; returns the paths."""
  paths = []
  for clip, samples in zip(clips, videos):
    stem = os.path.join(out_dir, f"step_{step}", clip["clip_id"].replace("/", "_"))
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    audio = clip["audio"]
    for k, sample in enumerate(samples):
      paths.append(f"{stem}_sample{k}.mp4")
      media.write_video(paths[-1], sample, audio=audio)
    paths.append(f"{stem}_side_by_side.mp4")
    media.write_video(paths[-1], media.side_by_side([clip["frames"], *samples]), audio=audio)
    paths.append(f"{stem}_contact_sheet.png")
    media.write_png(paths[-1], media.contact_sheet([clip["frames"], *samples]))
  return paths


# -------------------------------------------------------------------------------------------------
# User files: a face photo and an audio file.
# -------------------------------------------------------------------------------------------------


def load_face(path: str, resolution: int, aligner=None) -> np.ndarray:
  """The face of a photo, detected and aligned as the training data were.

  Args:
    path: an image file (jpg, png, ...); grey and RGBA images are converted to RGB.
    resolution: crop size S (``config.model.resolution``).
    aligner: a ``data_prep.face.FaceAligner`` at ``resolution`` (built if None).

  Returns:
    uint8 [S, S, 3], the aligned crop.

  Raises:
    InputError: the file cannot be read as an image, or holds no face. Several faces are not
      an error: the largest is used and a warning is logged.
  """
  from data_prep import face  # pylint: disable=g-import-not-at-top  (Dlib, only when needed)
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise InputError(f"face photo {path}: no such file")
  try:
    image = np.asarray(iio.imread(path, index=0))
  except Exception as e:  # imageio raises several types, depending on the plugin.
    raise InputError(f"face photo {path}: cannot read it as an image ({e})") from e
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 8:
    raise InputError(f"face photo {path}: expected an RGB image, got shape {image.shape}")
  if image.dtype != np.uint8:
    scale = 255.0 / max(1.0, float(np.iinfo(image.dtype).max)) if np.issubdtype(
        image.dtype, np.integer) else 255.0
    image = np.clip(np.round(image.astype(np.float64) * scale), 0, 255).astype(np.uint8)
  image = np.ascontiguousarray(image[..., :3])
  aligner = aligner or face.FaceAligner(face.AlignConfig(resolution=resolution))
  try:
    aligned = aligner.align(image[None])
  except face.NoFaceError as e:
    raise InputError(f"face photo {path}: {e}") from e
  if aligned.stats["max_faces"] > 1:
    logging.warning("%d faces found in %s; using the largest.", aligned.stats["max_faces"], path)
  return aligned.frames[0]


def load_speech(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Audio of any file and rate as 16 kHz mono samples and one MFCC window per video frame.

  The video gets ``round(duration * 25)`` frames; the waveform is zero-padded or trimmed by
  less than one frame to exactly that length. Silence is valid input.

  Args:
    path: wav, mp3, flac, m4a, or a video with an audio track.

  Returns:
    (audio float32 [T * 640] in [-1, 1], mfcc float32 [T, 28, 12]).

  Raises:
    InputError: the file is missing, empty, unreadable, has no audio stream, or lasts less
      than two video frames.
  """
  from data_prep import audio as audio_prep  # pylint: disable=g-import-not-at-top
  try:
    samples = media.read_audio(path, SAMPLE_RATE)
  except media.MediaError as e:
    raise InputError(f"audio {e}") from e
  num_frames = (len(samples) + SAMPLES_PER_FRAME // 2) // SAMPLES_PER_FRAME  # Half up.
  if num_frames < 2:
    raise InputError(f"audio {path}: {len(samples) / SAMPLE_RATE * 1000:.0f} ms is too short "
                     f"(at least two {1000 // FPS} ms video frames)")
  samples, _ = audio_prep.fit_to_frames(samples, num_frames)
  return samples, audio_prep.mfcc_windows(samples, num_frames)


@dataclasses.dataclass(frozen=True)
class FileRequest:
  """One input of file sampling: a face photo, an audio file and the output folder."""
  face: str
  audio: str
  out: str


def read_csv(path: str) -> list[FileRequest]:
  """Rows ``face,audio,out`` of a CSV file (an optional header row, '#' comments).

  Relative paths are taken relative to the CSV file's folder.

  Raises:
    InputError: the file cannot be read, or a row does not have three non-empty fields.
  """
  base = os.path.dirname(os.path.abspath(path))
  try:
    with open(path, newline="") as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise InputError(f"CSV {path}: cannot read it ({e})") from e
  requests = []
  for line, row in enumerate(rows, start=1):
    fields = [field.strip() for field in row]
    if not any(fields) or fields[0].startswith("#"):
      continue
    if line == 1 and [x.lower() for x in fields] == ["face", "audio", "out"]:
      continue
    if len(fields) != 3 or not all(fields):
      raise InputError(f"CSV {path}, line {line}: expected 'face,audio,out', got {row}")
    face, audio, out = (os.path.normpath(os.path.join(base, os.path.expanduser(x)))
                        for x in fields)
    requests.append(FileRequest(face, audio, out))
  if not requests:
    raise InputError(f"CSV {path}: no rows")
  return requests


def output_names(num_samples: int) -> list[str]:
  """Files written into each output folder: per-sample mp4s, grid mp4, contact sheet."""
  return ([f"sample_{k:02d}.mp4" for k in range(num_samples)] +
          ["grid.mp4", "contact_sheet.png"])


def _staging_dir(out_dir: str) -> str:
  """A hidden empty folder next to ``out_dir`` that proves the destination is writable."""
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise InputError(f"output {out_dir}: exists and is not a folder")
  if os.path.isdir(out_dir) and not os.access(out_dir, os.W_OK | os.X_OK):
    raise InputError(f"output {out_dir}: folder is not writable")
  parent = os.path.dirname(out_dir)
  try:
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".partial",
                            dir=parent)
  except OSError as e:
    raise InputError(f"output {out_dir}: cannot write there ({e.strerror or e})") from e


def _commit(staging: str, out_dir: str) -> list[str]:
  """Moves the staged files into ``out_dir`` (renames within one file system)."""
  out_dir = os.path.abspath(out_dir)
  names = sorted(os.listdir(staging))
  # Temporary files and folders are private (0600/0700); outputs get the usual permissions.
  umask = os.umask(0)
  os.umask(umask)
  for name in names:
    os.chmod(os.path.join(staging, name), 0o666 & ~umask)
  os.chmod(staging, 0o777 & ~umask)
  if not os.path.exists(out_dir):
    os.rename(staging, out_dir)
  else:
    for name in names:
      os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    os.rmdir(staging)
  return [os.path.join(out_dir, name) for name in names]


def _write_into(folder: str, videos: np.ndarray, audio: np.ndarray) -> None:
  """Writes ``output_names`` into ``folder``: videos uint8 [K, T, H, W, 3], audio [T * 640]."""
  names = output_names(len(videos))
  for name, video in zip(names, videos):
    media.write_video(os.path.join(folder, name), video, fps=FPS, audio=audio,
                      sample_rate=SAMPLE_RATE)
  cols = math.ceil(math.sqrt(len(videos)))
  media.write_video(os.path.join(folder, names[-2]), media.grid_video(list(videos), cols),
                    fps=FPS, audio=audio, sample_rate=SAMPLE_RATE)
  media.write_png(os.path.join(folder, names[-1]), media.contact_sheet(
      list(videos), labels=[f"z{k}" for k in range(len(videos))]))


class FileSampler:
  """Makes a face photo say an audio file, K ways; one compiled program for every input.

  Attributes:
    generator: the ``ChunkedGenerator`` (its ``num_traces`` stays 1 across inputs).
  """

  def __init__(self, config: ml_collections.ConfigDict, model: talkface.TalkFace, variables,
               num_samples: int):
    from data_prep import face  # pylint: disable=g-import-not-at-top
    self.config = config
    self.variables = variables
    self.generator = make_generator(config, model, num_samples)
    self.aligner = face.FaceAligner(face.AlignConfig(resolution=config.model.resolution))
    # The same key for every input: a (face, audio) pair gives the same videos wherever it
    # appears in a batch.
    self.key = jax.random.key(config.sample.seed)

  def sample(self, request: FileRequest) -> list[str]:
    """Generates and writes one input's outputs; returns their paths.

    Raises:
      InputError: bad face, audio or output folder (checked before generating).
      media.MediaError: encoding failed. Nothing is left under ``request.out`` on error.
    """
    face = load_face(request.face, self.config.model.resolution, self.aligner)
    audio, mfcc = load_speech(request.audio)
    staging = _staging_dir(request.out)  # Fails before the (long) generation.
    try:
      started = time.perf_counter()
      videos = self.generator(self.variables, face[None], mfcc[None], self.key)[0]
      seconds = time.perf_counter() - started
      logging.info("%s + %s: %d frames x %d samples in %.1f s, %.2fx real time (the first "
                   "input includes compilation)", request.face, request.audio, videos.shape[1],
                   len(videos), seconds, videos.shape[1] / FPS / seconds)
      _write_into(staging, videos, audio)
      return _commit(staging, request.out)
    finally:
      if os.path.isdir(staging):
        shutil.rmtree(staging, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class SampleRequest:
  """What ``--mode=sample`` was asked for on the command line (all optional).

  Attributes:
    face: a face photo (with ``audio``).
    audio: an audio file (with ``face``).
    csv: a CSV of ``face,audio,out`` rows (instead of face and audio).
    out: output folder for face + audio; default ``WORKDIR/samples/<face>_<audio>``.
    num_samples: K; default ``config.sample.num_samples``.
  """
  face: str | None = None
  audio: str | None = None
  csv: str | None = None
  out: str | None = None
  num_samples: int | None = None

  def file_requests(self, workdir: str) -> list[FileRequest] | None:
    """The user-file inputs asked for, or None to sample held-out clips.

    Raises:
      InputError: an inconsistent combination of flags, or a bad CSV.
    """
    if self.num_samples is not None and self.num_samples < 1:
      raise InputError(f"--num_samples must be >= 1, got {self.num_samples}")
    if self.csv:
      if self.face or self.audio or self.out:
        raise InputError("--csv takes face, audio and out from its rows: drop --face, "
                         "--audio and --out")
      return read_csv(self.csv)
    if bool(self.face) != bool(self.audio):
      raise InputError("--face and --audio go together (or use --csv)")
    if not self.face:
      if self.out:
        raise InputError("--out needs --face and --audio (held-out clips go to "
                         "WORKDIR/samples)")
      return None
    stem = lambda p: os.path.splitext(os.path.basename(p))[0]
    out = self.out or os.path.join(workdir, "samples", f"{stem(self.face)}_{stem(self.audio)}")
    return [FileRequest(self.face, self.audio, out)]


@dataclasses.dataclass(frozen=True)
class BatchReport:
  """What ``sample_files`` did: written paths per input, and the inputs it skipped."""
  written: dict[str, list[str]]  # out folder -> paths.
  failed: dict[str, str]  # out folder -> reason.
  compilations: int  # Traces of the chunk function: 1 for any number of inputs.


def sample_files(config: ml_collections.ConfigDict, model: talkface.TalkFace, variables,
                 requests: list[FileRequest], num_samples: int) -> BatchReport:
  """Samples every request with one compiled function; a bad input is skipped and reported.

  Returns:
    The report. With a single request its error is raised instead.
  """
  sampler = FileSampler(config, model, variables, num_samples)
  written, failed = {}, {}
  for i, request in enumerate(requests):
    logging.info("Input %d / %d: %s + %s -> %s", i + 1, len(requests), request.face,
                 request.audio, request.out)
    try:
      written[request.out] = sampler.sample(request)
    except (InputError, media.MediaError) as e:
      if len(requests) == 1:
        raise
      logging.error("Skipped input %d (%s): %s", i + 1, request.out, e)
      failed[request.out] = str(e)
  logging.info("Sampling done: %d inputs written, %d skipped; compiled %d time(s).",
               len(written), len(failed), sampler.generator.num_traces)
  for out, reason in failed.items():
    logging.info("  skipped %s: %s", out, reason)
  return BatchReport(written, failed, sampler.generator.num_traces)
