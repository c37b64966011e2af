"""Inference, one way in: ``talkface_jax.load(workdir).generate(face, audio, num_samples)``.

``load`` reads the config the workdir carries (``workdir.py``) and the newest checkpoint's
parameters and BatchNorm statistics (not the optimiser state), and returns a ``Generator``:

    import talkface_jax
    generator = talkface_jax.load("runs/demo")
    videos = generator.generate("photo.jpg", "speech.wav", num_samples=4, seed=0)
    # uint8 [4, T, S, S, 3] at 25 fps; write them with the audio:
    generator.write("out/", videos, "speech.wav")

Every consumer goes through the ``Generator``: the command line's ``--mode=sample``,
``--mode=eval``, the demo and the end-of-training summaries.

How generation runs. The K samples of B inputs are B * K independent rows: row (b, k) draws
its latents from ``fold_in(fold_in(key, b), k)``, so a sample is the same whatever else is in
its batch. The rows are split over the ``data`` axis of the device mesh (padded to a multiple
of the device count with copies that are dropped), and generated ``config.sample.chunk_frames``
frames per compiled call with every LSTM state carried across chunks: one compiled program
serves every input length, device memory does not grow with the audio, and the result equals
a single ``models.talkface.generate`` call. The audio encoder and the audio prior, which do
not depend on the draws, run once per input (the B inputs' windows, split over the devices
too) and their outputs go to the input's K rows (``generate_chunk``'s ``audio_index``).
"""

import dataclasses
import functools
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging

from data_prep import audio as audio_prep
from data_prep import face as face_prep
from data_prep import fileio
from data_prep import photo
from data_prep import schema
import talkface_jax.checkpointing as checkpointing
import talkface_jax.errors as errors
import talkface_jax.input_pipeline as input_pipeline
import talkface_jax.media as media
import talkface_jax.parallel as parallel
import talkface_jax.workdir as workdir_lib
from talkface_jax.models import talkface
from talkface_jax.ops import conv

FPS, SAMPLE_RATE, SAMPLES_PER_FRAME = schema.FPS, schema.SAMPLE_RATE, schema.SAMPLES_PER_FRAME
# Written into every output folder: what made the videos, and the mark that lets a later
# run replace the folder as a whole.
OUTPUT_MANIFEST = "sample.json"


@dataclasses.dataclass(frozen=True)
class Speech:
  """Audio ready for the model: 16 kHz mono samples and one MFCC window per video frame."""
  samples: np.ndarray  # float32 [T * 640] in [-1, 1].
  mfcc: np.ndarray  # float32 [T, 28, 12]; window t drives frame t.

  @property
  def num_frames(self) -> int:
    return len(self.mfcc)


# -------------------------------------------------------------------------------------------------
# Inputs: a face (photo path or array) and speech (audio path or (samples, rate)).
# -------------------------------------------------------------------------------------------------


def align_config(config: ml_collections.ConfigDict) -> face_prep.AlignConfig:
  """The alignment of the shards the model was trained on (``config.data.align_on``; the
  build's default when the config does not set it), at the model's resolution."""
  align_on = config.data.get("align_on", None) or face_prep.AlignConfig.align_on
  return face_prep.AlignConfig(resolution=int(config.model.resolution), align_on=align_on)


def align_face(face, aligner: face_prep.FaceAligner, face_index: int = 0) -> np.ndarray:
  """The face of a photo, detected and aligned as the training data were: uint8 [S, S, 3].

  Args:
    face: an image file's path (EXIF orientation applied; grey, RGBA, palette, CMYK and 16-bit
      images converted), or an image array [H, W, 3] (uint8, or floats in [0, 1]).
    aligner: a ``data_prep.face.FaceAligner`` with the shards' alignment (``align_config``).
    face_index: 0 for the largest face (a warning names how many there are), k for the
      (k+1)-th largest.

  Raises:
    UserError: not an image, no face, a face under Dlib's minimum size (the message says
      how small), fewer faces than ``face_index + 1``.
  """
  if isinstance(face, (str, os.PathLike)):
    return photo.load_face_photo(os.fspath(face), aligner, face_index)
  image = np.asarray(face)
  if image.ndim == 3 and image.shape[-1] == 4:
    image = image[..., :3]
  if np.issubdtype(image.dtype, np.floating):
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  return photo.align_photo(np.ascontiguousarray(image), aligner, face_index, name="face array")


def prepare_speech(audio, audio_norm: str = "none", energy: bool = False) -> Speech:
  """Speech of any file, rate and channel count, as the model hears it.

  The video gets ``round(duration * 25)`` frames; the waveform is zero-padded or trimmed by
  less than one frame to exactly that length. Silence is valid input.

  Args:
    audio: a path (wav, mp3, ogg, flac, m4a, or a video with an audio track), or a pair
      ``(samples, sample_rate)`` with samples [S] or [S, channels], float in [-1, 1] or int16.
    audio_norm: the model's ``config.data.audio_norm`` (``data_prep.audio.normalize_windows``:
      the recording's own statistics).
    energy: the model's ``config.model.audio_energy`` (``data_prep.audio.model_windows``:
      each MFCC row's loudness relative to the recording's loudest).

  Raises:
    UserError: the file is missing, empty, unreadable, has no audio stream, or lasts less
      than two video frames.
  """
  if isinstance(audio, Speech):
    return audio
  if isinstance(audio, (str, os.PathLike)):
    samples, mfcc = audio_prep.load_speech(os.fspath(audio))
  else:
    try:
      samples, rate = audio
    except (TypeError, ValueError) as e:
      raise errors.UserError("audio: expected a path or a (samples, sample_rate) pair") from e
    samples, mfcc = audio_prep.speech_features(np.asarray(samples), "audio array", int(rate))
  windows = audio_prep.model_windows(samples, mfcc, energy)
  return Speech(samples, audio_prep.normalize_windows(windows, audio_norm))


# -------------------------------------------------------------------------------------------------
# The generator.
# -------------------------------------------------------------------------------------------------


def abstract_variables(model: talkface.TalkFace, mesh):
  """Shapes of {'params', 'batch_stats'}, each leaf replicated over ``mesh``."""
  shapes = jax.eval_shape(functools.partial(talkface.init_variables, model),
                          jax.random.key(0), jax.random.key(0))
  sharding = parallel.replicated(mesh)
  return {k: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          shapes[k]) for k in ("params", "batch_stats")}


LATENT_SOURCES = ("prior", "posterior_bank")
BANK_FILE = "latent_bank_{step}.npz"


def latent_bank(config: ml_collections.ConfigDict, model: talkface.TalkFace, variables,
                step: int | None = None, workdir: str | None = None) -> np.ndarray | None:
  """The latent bank that generation replays z from (``model.latent_source``), or None.

  With 'posterior_bank': the frame posterior's mean trajectories [N, L, z_dim] of the first
  N = ``model.bank_clips`` clips of ``data.train_split``, cropped to the shortest one's
  L = T - 1 frames (the posterior is causal: a cropped clip's means are its first ones).
  Stored as ``WORKDIR/latent_bank_<step>.npz`` when a workdir and step are given, and read
  from there when present, so sampling a trained workdir needs no shards after the first
  time.

  Raises:
    UserError: an unknown ``latent_source``, or no stored bank and no training shards.
  """
  source = config.model.get("latent_source", "prior")
  if source not in LATENT_SOURCES:
    raise errors.UserError(f"model.latent_source={source!r}: use one of "
                           f"{', '.join(LATENT_SOURCES)}")
  if source == "prior":
    return None
  num_clips = int(config.model.get("bank_clips", 256))
  if num_clips < 1:
    raise errors.UserError(f"model.bank_clips={num_clips}: must be >= 1")
  if model.posterior_view == "frame":
    logging.warning("model.latent_source=posterior_bank with posterior_view=frame: z carries "
                    "the mouth too, so samples replay training clips' mouths beside the audio")
  path = None
  if workdir is not None and step is not None:
    path = os.path.join(workdir, BANK_FILE.format(step=step))
    if fileio.exists(path):
      with np.load(io.BytesIO(fileio.read_bytes(path))) as stored:
        # A bank stored before its clip count was (no 'bank_clips'): -1, rebuilt.
        bank = stored["bank"]
        stored_clips = int(stored["bank_clips"]) if "bank_clips" in stored else -1
      if stored_clips == num_clips and bank.ndim == 3 and bank.shape[-1] == model.z_dim:
        return bank
      logging.info("%s: a bank of %d clips, shape %s; building one of %d clips", path,
                   stored_clips, bank.shape, num_clips)
  try:
    clips = input_pipeline.load_clips(config, config.data.train_split, num_clips)
  except (FileNotFoundError, ValueError) as e:
    raise errors.UserError(
        f"model.latent_source=posterior_bank needs the training clips ({config.data.dir}, "
        f"split {config.data.train_split!r}) or a stored {BANK_FILE.format(step=step)}: "
        f"{e}") from e
  length = min(len(c["frames"]) for c in clips)
  if length < 2:
    raise errors.UserError(f"{config.data.dir}: training clips of {length} frame(s) cannot "
                           "make a latent bank (need >= 2)")
  means = jax.jit(functools.partial(talkface.posterior_means, model,
                                    batch_norm=config.model.generation_batch_norm))
  batch = 16
  pieces = []
  for start in range(0, len(clips), batch):
    group = [c["frames"][:length] for c in clips[start:start + batch]]
    frames = np.zeros((batch, *group[0].shape), np.float32)  # One shape: one compilation.
    frames[:len(group)] = np.stack(group) / np.float32(255.0)
    pieces.append(np.asarray(means(variables, frames))[:len(group)])
  bank = np.concatenate(pieces).astype(np.float32)
  logging.info("Latent bank: %d training clips x %d frames", *bank.shape[:2])
  if path is not None and jax.process_index() == 0:
    with fileio.atomic_path(path, suffix=".npz") as tmp:
      np.savez(tmp, bank=bank, bank_clips=num_clips)
  return bank


def load(workdir: str, step: int | None = None,
         config: ml_collections.ConfigDict | None = None) -> "Generator":
  """The generator of a trained workdir.

  Args:
    workdir: a workdir written by ``run_experiment.py --mode=train``.
    step: the checkpoint to load; the newest if None.
    config: a config to use instead of the workdir's (its model keys must agree).

  Raises:
    UserError: no config or checkpoint in ``workdir``, or a config of another model.
  """
  config = workdir_lib.resolve_config(workdir, config)
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  variables, step = checkpointing.restore_variables(
      workdir, abstract_variables(model, mesh), step)
  return Generator(config, variables, step=step, mesh=mesh, workdir=workdir)


class Generator:
  """Makes faces speak: K videos per (face, speech) from a trained model's variables.

  Attributes:
    config: the run's config.
    model: the ``TalkFace`` module.
    variables: {'params', 'batch_stats'}.
    step: the training step the variables come from (None if not from a checkpoint).
    resolution: frame size S.
    num_traces: compilations of the chunk function so far: one per (inputs B, samples K,
      frame size), whatever the number of chunks, the inputs themselves or their lengths.
  """

  def __init__(self, config: ml_collections.ConfigDict, variables, step: int | None = None,
               mesh=None, workdir: str | None = None):
    """``workdir``: where a latent bank (``model.latent_source='posterior_bank'``) of this
    step is stored or, built from the training split, is written (``latent_bank``)."""
    self.config = config
    self.model = talkface.build_model(config.model)
    self.mesh = mesh if mesh is not None else parallel.make_mesh(config)
    self.variables = jax.device_put(variables, parallel.replicated(self.mesh))
    self.step = step
    bank = latent_bank(config, self.model, variables, step, workdir)
    self.bank = None if bank is None else jax.device_put(bank, parallel.replicated(self.mesh))
    self.resolution = int(config.model.resolution)
    self.chunk_frames = int(config.sample.chunk_frames)
    if self.chunk_frames < 1:
      raise errors.UserError(f"sample.chunk_frames must be >= 1, got {self.chunk_frames}")
    self.num_traces = 0
    self._aligner = None
    batch_norm = config.model.generation_batch_norm
    # The conv library's compile option (ops/conv.py) belongs to every jit of the model.
    options = conv.compiler_options(config.model.conv_impl)

    def split_rows(state):
      """Every row axis of ``state`` split over the mesh (the step replicated): the chunk gets
      the same shardings from ``_start`` as from itself, so it compiles once."""
      rows, whole = parallel.data_sharded(self.mesh), parallel.replicated(self.mesh)
      return jax.tree.map(
          lambda x: jax.lax.with_sharding_constraint(x, rows if x.ndim else whole), state)

    def start(variables, frame0, audio_inputs):
      return split_rows(talkface.start_generation(self.model, variables, frame0, 1, batch_norm,
                                                  audio_inputs))

    self._start = jax.jit(start, static_argnames="audio_inputs", compiler_options=options)

    def chunk(variables, state, mfcc, audio_index, key_data, sample_index, bank,
              deterministic):
      self.num_traces += 1  # Runs only while tracing.
      state, frames = talkface.generate_chunk(
          self.model, variables, state, mfcc, jax.random.wrap_key_data(key_data),
          batch_norm=batch_norm, deterministic=deterministic, audio_index=audio_index,
          bank=bank, sample_index=sample_index)
      return split_rows(state), jnp.clip(jnp.round(frames[:, 0] * 255.0), 0, 255).astype(jnp.uint8)

    self._chunk = jax.jit(chunk, static_argnames="deterministic", compiler_options=options)

    def reconstruct(variables, frames, mfcc):
      out = talkface.reconstruct(self.model, variables, frames, mfcc, batch_norm)
      return jnp.clip(jnp.round(out * 255.0), 0, 255).astype(jnp.uint8)

    self._reconstruct = jax.jit(reconstruct, compiler_options=options)

  # -- inputs ---------------------------------------------------------------------------------

  def prepare_face(self, face, face_index: int = 0) -> np.ndarray:
    """``align_face`` with the shards' alignment at this model's resolution: uint8 [S, S, 3]."""
    if self._aligner is None:
      self._aligner = face_prep.FaceAligner(align_config(self.config))
    return align_face(face, self._aligner, face_index)

  def prepare_speech(self, audio) -> Speech:
    """``prepare_speech`` with this model's ``data.audio_norm`` and ``model.audio_energy``."""
    return prepare_speech(audio, audio_prep.audio_norm(self.config),
                          audio_prep.audio_energy(self.config))

  # -- generation -----------------------------------------------------------------------------

  def generate(self, face, audio, num_samples: int = 1, seed: int = 0,
               face_index: int = 0) -> np.ndarray:
    """K videos of ``face`` saying ``audio``.

    Args:
      face: a photo's path or an image array [H, W, 3] (detected and aligned like the
        training data).
      audio: a path, or ``(samples, sample_rate)``.
      num_samples: K.
      seed: the latent draws; the same seed gives the same videos.
      face_index: which face of a photo with several (0: the largest).

    Returns:
      uint8 [K, T, S, S, 3] at 25 fps; T = the audio's duration in frames; frame 0 is the
      aligned face.
    """
    frame0 = self.prepare_face(face, face_index)
    speech = self.prepare_speech(audio)
    return self.generate_aligned(frame0[None], speech.mfcc[None], num_samples,
                                 jax.random.key(seed))[0]

  def generate_aligned(self, frame0: np.ndarray, mfcc: np.ndarray, num_samples: int,
                       key: jax.Array, deterministic: bool = False) -> np.ndarray:
    """K videos for each of B already aligned identity frames.

    Args:
      frame0: uint8 [B, S, S, 3] aligned faces.
      mfcc: float32 [B, T, 28, 12]; window t drives frame t (window 0 belongs to frame 0).
      num_samples: K.
      key: one key, or [B] keys: sample (b, k) draws its latents from
        ``fold_in(keys[b], k)`` with ``keys[b] = fold_in(key, b)`` for a single key (with a
        latent bank, input b's K samples replay K different trajectories drawn from
        ``keys[b]``: ``talkface.bank_rows``).
      deterministic: z = the prior's mean (the deterministic baseline); K copies.

    Generation is causal: windows padded after a clip's end do not change its frames, so
    clips of different lengths can share a batch and be cropped afterwards.

    Returns:
      uint8 [B, K, T, S, S, 3].
    """
    frame0 = np.asarray(frame0)
    mfcc = np.asarray(mfcc, np.float32)
    batch, num_frames = mfcc.shape[:2]
    if frame0.shape != (batch, self.resolution, self.resolution, 3) or num_frames < 1:
      raise ValueError(f"frame0 {frame0.shape} and mfcc {mfcc.shape}: need B aligned "
                       f"{self.resolution}x{self.resolution} faces and B sequences of T >= 1 "
                       "windows")
    row_keys = self._row_keys(key, batch, num_samples)
    pieces = list(self._generate_rows(frame0, mfcc, num_samples, row_keys, deterministic))
    videos = np.concatenate(pieces, axis=1)
    return videos.reshape(batch, num_samples, *videos.shape[1:])

  def generate_clips(self, clips: list[dict], num_samples: int, key: jax.Array,
                     batch_size: int, deterministic: bool = False) -> list[np.ndarray]:
    """K videos from each clip's first frame and audio, ``batch_size`` clips per call.

    Clip i draws from ``fold_in(key, i)`` (its index in ``clips``), so its videos do not
    depend on the batch size or the device count.

    Args:
      clips: dicts with 'frames' uint8 [T_i, S, S, 3] and 'mfcc' [T_i, 28, 12].

    Returns:
      Per clip, uint8 [K, T_i, S, S, 3].
    """
    videos = []
    for start in range(0, len(clips), batch_size):
      batch = clips[start:start + batch_size]
      lengths = [len(c["mfcc"]) for c in batch]
      mfcc = np.zeros((len(batch), max(lengths), *batch[0]["mfcc"].shape[1:]), np.float32)
      for i, clip in enumerate(batch):
        mfcc[i, :lengths[i]] = clip["mfcc"]
      keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
          jnp.arange(start, start + len(batch)))
      out = self.generate_aligned(np.stack([c["frames"][0] for c in batch]), mfcc,
                                  num_samples, keys, deterministic)
      videos.extend(v[:, :n] for v, n in zip(out, lengths))
    return videos

  def reconstruct_clips(self, clips: list[dict]) -> list[np.ndarray]:
    """Teacher-forced reconstructions: frames 1..T-1 from the previous TRUE frame and z = the
    frame posterior's mean (as in training, without the draw).

    What the model renders when the posterior encodes what the frames show: the evaluation
    compares its blinks with the samples' (``metrics.reconstructed_blinks``). One clip per
    device per call; clips are padded at the end to a multiple of 25 frames (the model is
    causal, so padding does not change a clip's frames), so similar lengths compile once.

    Args:
      clips: dicts with 'frames' uint8 [T_i, S, S, 3] and 'mfcc' [T_i, 28, 12].

    Returns:
      Per clip, uint8 [T_i, S, S, 3]: frame 0 (the identity frame), then the reconstructions.
    """
    devices = self.mesh.devices.size
    videos = []
    for start in range(0, len(clips), devices):
      group = clips[start:start + devices]
      lengths = [len(c["frames"]) for c in group]
      padded = max(2, math.ceil(max(lengths) / 25) * 25)
      frames = np.zeros((len(group), padded, *group[0]["frames"].shape[1:]), np.float32)
      mfcc = np.zeros((len(group), padded, *group[0]["mfcc"].shape[1:]), np.float32)
      for row, (clip, n) in enumerate(zip(group, lengths)):
        frames[row, :n] = clip["frames"] / np.float32(255.0)
        mfcc[row, :n] = clip["mfcc"]
      out = parallel.to_host(self._reconstruct(self.variables, self._shard_rows(frames),
                                               self._shard_rows(mfcc)))
      videos.extend(np.concatenate([clip["frames"][:1], out[row, :n - 1]])
                    for row, (clip, n) in enumerate(zip(group, lengths)))
    return videos

  @staticmethod
  def _row_keys(key: jax.Array, batch: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (b, k) as ``generate_chunk`` takes them: uint32 key data [B * K, 2] of input b's
    key (``talkface.input_keys``), and the sample index k [B * K] (the row's own key is
    ``fold_in(keys[b], k)``)."""
    keys = np.asarray(jax.random.key_data(talkface.input_keys(key, batch)))
    return (np.repeat(keys, num_samples, axis=0),
            np.tile(np.arange(num_samples, dtype=np.int32), batch))

  def _padded(self, rows: int) -> int:
    """``rows`` rounded up to a multiple of the mesh's device count."""
    devices = self.mesh.devices.size
    return math.ceil(rows / devices) * devices

  def _shard_rows(self, x: np.ndarray) -> jax.Array:
    """Host rows [R, ...] split over the mesh's devices, padded to a multiple of the device
    count with copies of row 0 (crop the outputs back to R)."""
    padded = self._padded(len(x))
    if padded > len(x):
      x = np.concatenate([x, np.repeat(x[:1], padded - len(x), axis=0)])
    return parallel.shard_rows(x, self.mesh)

  def _generate_rows(self, frame0: np.ndarray, mfcc: np.ndarray, num_samples: int,
                     row_keys: tuple[np.ndarray, np.ndarray], deterministic: bool
                     ) -> Iterator[np.ndarray]:
    """Yields uint8 [B * K, C, S, S, 3] pieces of the videos of rows (b, k) (row b * K + k):
    frame 0, then chunk by chunk.

    Args:
      frame0: uint8 [B, S, S, 3].
      mfcc: [B, T, 28, 12]: not repeated for the K rows; each input's audio is encoded (and
        with the audio prior, its prior run) once per chunk, for its K rows.
      num_samples: K.
      row_keys: (key data [B * K, 2], sample index [B * K]) (``_row_keys``).
    """
    batch = len(frame0)
    rows = batch * num_samples
    state = self._start(self.variables, self._shard_rows(
        np.repeat(frame0, num_samples, axis=0).astype(np.float32) / 255.0),
                        audio_inputs=self._padded(batch))
    audio_index = self._shard_rows(np.repeat(np.arange(batch, dtype=np.int32), num_samples))
    keys, sample_index = (self._shard_rows(x) for x in row_keys)
    yield np.repeat(frame0[:, None], num_samples, axis=0)
    num_frames = mfcc.shape[1]
    for start in range(1, num_frames, self.chunk_frames):
      windows = mfcc[:, start:start + self.chunk_frames]
      valid = windows.shape[1]
      if valid < self.chunk_frames:
        windows = np.concatenate([windows, np.zeros(
            (batch, self.chunk_frames - valid, *windows.shape[2:]), np.float32)], axis=1)
      state, frames = self._chunk(self.variables, state, self._shard_rows(windows),
                                  audio_index, keys, sample_index, self.bank,
                                  deterministic=deterministic)
      yield parallel.to_host(frames)[:rows, :valid]

  # -- outputs --------------------------------------------------------------------------------

  def write(self, out_dir: str, videos: np.ndarray, audio, info: dict | None = None,
            overwrite: bool = True) -> list[str]:
    """Writes K videos into ``out_dir`` as a whole, with the audio; returns the paths.

    ``out_dir`` gets one mp4 per sample (``sample_00.mp4``, ...), ``grid.mp4`` (all K side
    by side), ``contact_sheet.png`` and ``sample.json`` (what made them). Everything is
    written into a hidden folder beside ``out_dir`` first and moved into place at the end,
    so a failure leaves nothing partial; an existing output folder of an earlier sampling
    (it has a ``sample.json``) is replaced as a whole, so no file of an earlier run stays
    beside the new ones. Any other existing non-empty folder is refused.

    Args:
      out_dir: output folder.
      videos: uint8 [K, T, S, S, 3].
      audio: a path, ``(samples, rate)`` or ``Speech``: muxed into the mp4s.
      info: extra fields for ``sample.json``.
      overwrite: False refuses any existing ``out_dir``.

    Raises:
      UserError: ``out_dir`` cannot be written, is a file, or is a folder of other files.
    """
    speech = self.prepare_speech(audio)
    videos = np.asarray(videos)
    return write_outputs(out_dir, [videos], videos.shape[:2], speech.samples,
                         self._manifest(videos.shape[0], videos.shape[1], info), overwrite)

  def generate_to_files(self, face, audio, out_dir: str, num_samples: int = 1, seed: int = 0,
                        info: dict | None = None, overwrite: bool = True,
                        progress: bool = False, face_index: int = 0) -> list[str]:
    """``generate`` then ``write``, streamed: frames go to the encoders chunk by chunk.

    Memory stays that of one chunk whatever the audio's length (K videos of 30 minutes are
    never held at once). The outputs and guarantees are ``write``'s; the videos equal
    ``generate``'s. With several processes, all of them call this and process 0 writes.

    Raises:
      UserError: a bad face, audio or output folder (all checked before generating).
    """
    check_output_dir(out_dir, overwrite)
    frame0 = self.prepare_face(face, face_index)
    speech = self.prepare_speech(audio)
    row_keys = self._row_keys(jax.random.key(seed), 1, num_samples)
    pieces = self._generate_rows(frame0[None], speech.mfcc[None], num_samples, row_keys,
                                 deterministic=False)
    if jax.process_index() != 0:  # Generation is collective; process 0 writes.
      for _ in pieces:
        pass
      return []
    if progress:
      pieces = tqdm.tqdm(pieces, total=1 + math.ceil((speech.num_frames - 1) /
                                                     self.chunk_frames),
                         desc="generating", unit="chunk", leave=False)
    return write_outputs(out_dir, pieces, (num_samples, speech.num_frames), speech.samples,
                         self._manifest(num_samples, speech.num_frames, info), overwrite)

  def _manifest(self, num_samples: int, num_frames: int, info: dict | None) -> dict:
    return {"step": self.step, "num_samples": num_samples, "frames": int(num_frames),
            "fps": FPS, "resolution": self.resolution, **(info or {})}


def output_names(num_samples: int) -> list[str]:
  """Files of one output folder: per-sample mp4s, grid mp4, contact sheet, manifest."""
  return ([f"sample_{k:02d}.mp4" for k in range(num_samples)] +
          ["grid.mp4", "contact_sheet.png", OUTPUT_MANIFEST])


def check_output_dir(out_dir: str, overwrite: bool = True) -> None:
  """Raises UserError if ``out_dir`` cannot receive a sampling's outputs (see ``write``)."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise errors.UserError(f"output {out_dir}: exists and is not a folder")
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    if not overwrite:
      raise errors.UserError(f"output {out_dir}: exists (pass overwrite=True / --overwrite)")
    if not os.path.isfile(os.path.join(out_dir, OUTPUT_MANIFEST)):
      raise errors.UserError(f"output {out_dir}: a folder of other files (no {OUTPUT_MANIFEST}"
                             " of an earlier sampling); choose an empty or new folder")
  probe = os.path.dirname(os.path.abspath(out_dir))
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise errors.UserError(f"output {out_dir}: cannot write there ({probe} is not a folder)")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise errors.UserError(f"output {out_dir}: cannot write there ({probe} is not writable)")


def write_outputs(out_dir: str, pieces, shape: tuple[int, int], samples: np.ndarray,
                  manifest: dict, overwrite: bool = True) -> list[str]:
  """Writes K videos that arrive in pieces (``Generator.write``'s files); returns the paths.

  Args:
    out_dir: output folder.
    pieces: uint8 [K, C_i, S, S, 3] pieces, consecutive in time.
    shape: (K, T), T the sum of the C_i.
    samples: 16 kHz mono audio muxed into the mp4s.
    manifest: ``sample.json``'s fields.
    overwrite: False refuses any existing ``out_dir``.
  """
  out_dir = os.path.abspath(out_dir)
  check_output_dir(out_dir, overwrite)
  num_samples, num_frames = shape
  names = output_names(num_samples)
  # The contact sheet's columns: evenly spaced frames, always the first and the last.
  columns = np.round(np.linspace(0, num_frames - 1, min(16, num_frames))).astype(int)
  cols = math.ceil(math.sqrt(num_samples))
  parent = os.path.dirname(out_dir)
  try:
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".partial",
                               dir=parent)
  except OSError as e:
    raise errors.UserError(f"output {out_dir}: cannot write there ({e.strerror or e})") from e
  writers = []
  try:
    sheet_frames, start = [], 0
    for piece in pieces:
      piece = np.asarray(piece)
      if not writers:
        size = piece.shape[2:4]
        writers = [media.VideoWriter(os.path.join(staging, name), *size, fps=FPS,
                                     audio=samples, sample_rate=SAMPLE_RATE)
                   for name in names[:num_samples]]
        writers.append(media.VideoWriter(
            os.path.join(staging, names[-3]), size[0] * math.ceil(num_samples / cols),
            size[1] * cols, fps=FPS, audio=samples, sample_rate=SAMPLE_RATE))
      for writer, video in zip(writers, piece):
        writer.write(video)
      writers[-1].write(media.grid_video(list(piece), cols))
      picked = columns[(columns >= start) & (columns < start + piece.shape[1])]
      sheet_frames.append(piece[:, picked - start])
      start += piece.shape[1]
    for writer in writers:
      writer.close()
    media.write_png(os.path.join(staging, names[-2]), media.contact_sheet(
        list(np.concatenate(sheet_frames, axis=1)),
        labels=[f"z{k}" for k in range(num_samples)]))
    with open(os.path.join(staging, names[-1]), "w") as f:
      json.dump(manifest, f, indent=2, default=str)
    _publish(staging, out_dir)
  except media.MediaError as e:
    raise errors.UserError(f"output {out_dir}: {e}") from e
  finally:
    for writer in writers:
      writer.abort()
    if os.path.isdir(staging):
      shutil.rmtree(staging, ignore_errors=True)
  return [os.path.join(out_dir, name) for name in names]


def _publish(staging: str, out_dir: str) -> None:
  """Moves the finished ``staging`` folder to ``out_dir``, replacing an earlier one whole."""
  # Temporary files and folders are private (0600/0700); outputs get the usual permissions.
  umask = os.umask(0)
  os.umask(umask)
  for name in os.listdir(staging):
    os.chmod(os.path.join(staging, name), 0o666 & ~umask)
  os.chmod(staging, 0o777 & ~umask)
  old = None
  if os.path.isdir(out_dir):
    old = f"{staging}.old"
    os.rename(out_dir, old)
  os.rename(staging, out_dir)
  if old:
    shutil.rmtree(old, ignore_errors=True)
