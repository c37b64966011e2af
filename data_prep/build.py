"""Raw GRID / LRW / folder videos -> TFDS-loadable TFRecord shards: the offline pipeline.

Usage::

  python -m data_prep.build --dataset=grid --raw_dir=/data/GRID --out_dir=/data/grid128 \\
      --resolution=128 --num_workers=16
  python -m data_prep.build --dataset=lrw --raw_dir=gs://bucket/LRW --out_dir=gs://bucket/lrw128 \\
      --runner=beam --beam_options="--runner=FlinkRunner --flink_master=host:8081"

The run is planned up front and deterministically: clips are scanned and sorted by id, given a
split, and clip i of a split goes to shard i % num_shards, so the same inputs always give the
same shards (contents and order). Two runners execute the plan with the same per-clip code
(:func:`process_clip`) and the same shard writer (:func:`write_shard`): ``pool`` (worker
processes on this machine, each loading the Dlib models once; the default) and ``beam`` (an
Apache Beam pipeline, :mod:`data_prep.beam_build`). Each finished clip is cached in
``out_dir/_work/clips/`` and each shard is written atomically as soon as its clips are done,
followed by a marker in ``out_dir/_work/shards/``. An interrupted run (even kill -9) is simply
started again: finished shards are kept, finished clips of unfinished shards are not redone.
TFDS metadata (``dataset_info.json``) and ``manifest.json`` are written last, so a folder that
has them is complete. A lock file (``_work/build.lock``: pid and host) refuses a second build
into the same folder; one left by a dead build on this host is taken over.

Failures are told apart (:mod:`data_prep.errors`): a clip whose content cannot be used (no
face, unreadable video, no audio, too short, audio and video lengths that disagree) is skipped
with its reason and the run goes on; an error that is not the clip's fault (I/O, memory, a
killed or timed-out ffmpeg) is retried ``--retries`` times, never cached, and fails the run
naming the clip if it persists -- a rerun processes it again. Every file found is accounted for
in the manifest (used by a clip, part of a skipped clip, or ignored with a reason), and
recoverable problems (audio padded or trimmed, silent audio, resampled frame rate, rotation,
downscaling, decode errors, interpolated face gaps, frames dropped around a shot cut) are
recorded per clip. Clips are identified by their content (files relative to ``raw_dir`` and
their sizes), so a moved or symlinked corpus keeps its cache and shards. ``raw_dir`` and
``out_dir`` may be local or ``tf.io.gfile`` URLs (:mod:`data_prep.fileio`). Imports no JAX.
"""

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import platform
import socket
import sys
import time
from collections.abc import Sequence

import dlib
import imageio_ffmpeg
import librosa
import numpy as np
import tensorflow as tf
from tensorflow import errors as tf_errors
import tensorflow_datasets as tfds
import tqdm

from data_prep import audio as audio_lib
from data_prep import errors
from data_prep import face
from data_prep import fileio
from data_prep import readers
from data_prep import schema
from data_prep import shards
from data_prep import video as video_lib

DEFAULT_GRID_HELDOUT = ("s1", "s2", "s20", "s22")
WORK_DIR = "_work"
MANIFEST = "manifest.json"
CLIPS_LOG = "clips.jsonl"
LOCK_FILE = "build.lock"
RUNNERS = ("pool", "beam")
# Bump when a change alters the examples produced (2: nose-only alignment; 3: audio/video
# length bound, 4K downscaling, one tracked identity, no face-less frame 0).
PIPELINE_VERSION = "3"
# Audio and video lengths may differ by this much whatever the clip's length (2.5 frames):
# the synthetic GRID corpus differs by 0, mp4s with AAC audio by under 0.03 s (BENCHMARKS.md).
MIN_AV_MISMATCH_SECONDS = 0.1


class BuildError(Exception):
  """A build that cannot start or finish; the message says why (shown as one ``error:`` line)."""


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  """Everything that decides the output of a build.

  The face-alignment parameters live in ``align`` (:class:`data_prep.face.AlignConfig`, their
  one home, defaults included); :meth:`create` takes them as flat keyword arguments, the way the
  command line, ``data_prep.prepare`` and the manifest name them.

  Attributes:
    dataset: 'grid', 'lrw' or 'folder'.
    raw_dir: root of the raw layout (a local path or a ``tf.io.gfile`` URL).
    out_dir: shard folder (a local path or a ``tf.io.gfile`` URL such as ``gs://...``).
    align: face detection, tracking and alignment parameters, the crop resolution included.
    num_workers: worker processes; 0 processes in this process.
    clips_per_shard: target clips per shard (shards of a split differ by at most one clip).
    split_rule: 'speakers' (held-out speakers -> 'test'), 'sentences' (held-out clips per
      speaker -> 'test') or 'speakers+sentences' (both: 'test' holds the held-out speakers,
      unseen, and ``heldout_per_speaker`` sentences of every other speaker, seen); LRW always
      uses its own train/val/test.
    heldout_speakers: speakers held out under 'speakers' and 'speakers+sentences'; None: the
      raw corpus's ``corpus.json`` ``heldout_speakers`` (the synthetic photo corpus) if it
      has them, else GRID's s1, s2, s20, s22 (grid) or none.
    heldout_per_speaker: clips per (training) speaker in 'test' under 'sentences' and
      'speakers+sentences'.
    min_frames: clips shorter than this (after resampling to 25 fps) are skipped.
    video_max_side: videos with a longer side are downscaled when decoded (bounds memory for
      4K input; the crops are at most 128 px).
    max_av_mismatch: audio and video whose durations differ by more than
      ``max(max_av_mismatch * video duration, MIN_AV_MISMATCH_SECONDS)`` are a recorded skip
      (a smaller difference is padded or trimmed, and recorded).
    retries: further attempts of a clip after a transient error (I/O, memory, killed or
      timed-out subprocess) before the run fails naming it.
    retry_delay: seconds before the first retry (doubled for each further one).
    ffmpeg_timeout: seconds an ffmpeg video decode may take.
  """
  dataset: str
  raw_dir: str
  out_dir: str
  align: face.AlignConfig = face.AlignConfig()
  num_workers: int = 1
  clips_per_shard: int = 64
  split_rule: str = "speakers"
  heldout_speakers: tuple[str, ...] | None = None
  heldout_per_speaker: int = 0
  min_frames: int = 8
  video_max_side: int = 1280
  max_av_mismatch: float = 0.1
  retries: int = 2
  retry_delay: float = 1.0
  ffmpeg_timeout: float = video_lib.DEFAULT_TIMEOUT

  @classmethod
  def create(cls, **kwargs) -> "BuildConfig":
    """A config from flat keyword arguments: ``AlignConfig`` fields go into ``align``."""
    align_names = {f.name for f in dataclasses.fields(face.AlignConfig)}
    align = {k: kwargs.pop(k) for k in list(kwargs) if k in align_names}
    if "align" in kwargs:
      kwargs["align"] = dataclasses.replace(kwargs["align"], **align)
    else:
      kwargs["align"] = face.AlignConfig(**align)
    return cls(**kwargs)

  @property
  def resolution(self) -> int:
    return self.align.resolution

  def align_config(self) -> face.AlignConfig:
    return self.align

  def clip_parameters(self) -> dict:
    """The parameters that change a clip's example (part of the per-clip cache key)."""
    return dict(
        dataclasses.asdict(self.align), pipeline_version=PIPELINE_VERSION,
        schema_version=schema.SCHEMA_VERSION, min_frames=self.min_frames,
        video_max_side=self.video_max_side, max_av_mismatch=self.max_av_mismatch,
        fps=schema.FPS, sample_rate=schema.SAMPLE_RATE, mfcc_pad_samples=audio_lib.PAD_SAMPLES)

  def parameters(self) -> dict:
    """Every field, alignment flattened (the manifest's ``parameters``)."""
    flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "align"}
    return dict(flat, **self.clip_parameters())

  def fingerprint(self) -> str:
    text = json.dumps(self.clip_parameters(), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Planning: splits and shards
# ---------------------------------------------------------------------------------------------


def _heldout_hash(clip_id: str) -> str:
  # A hash rather than the sorted order, so held-out sentences spread over the corpus.
  return hashlib.sha1(clip_id.encode()).hexdigest()


SPLIT_RULES = ("speakers", "sentences", "speakers+sentences")
CORPUS_META = "corpus.json"  # The synthetic corpus's description, at the raw corpus's root.


def corpus_meta(raw_dir: str) -> dict | None:
  """The raw corpus's ``corpus.json`` (a synthetic corpus) or None."""
  if not raw_dir:
    return None
  path = fileio.join(raw_dir, CORPUS_META)
  return fileio.read_json(path) if fileio.exists(path) else None


def heldout_speakers(config: BuildConfig) -> tuple[str, ...]:
  """The held-out speakers of the 'speakers' rules (see ``BuildConfig.heldout_speakers``)."""
  if config.heldout_speakers is not None:
    return tuple(config.heldout_speakers)
  meta = corpus_meta(config.raw_dir) if config.dataset == "grid" else None
  if meta is not None and "heldout_speakers" in meta:
    return tuple(meta["heldout_speakers"])
  return DEFAULT_GRID_HELDOUT if config.dataset == "grid" else ()


def assign_splits(clips: Sequence[readers.ClipSource], config: BuildConfig) -> dict[str, str]:
  """clip_id -> split name, by the layout (LRW) or the configured rule."""
  if config.dataset == "lrw":
    return {c.clip_id: c.split for c in clips}
  if config.split_rule not in SPLIT_RULES:
    raise ValueError(f"unknown split_rule {config.split_rule!r}; expected one of {SPLIT_RULES}")
  held_speakers = set()
  if config.split_rule in ("speakers", "speakers+sentences"):
    held_speakers = set(heldout_speakers(config))
  per_speaker = 0 if config.split_rule == "speakers" else config.heldout_per_speaker
  by_speaker = collections.defaultdict(list)
  for c in clips:
    by_speaker[c.speaker].append(c.clip_id)
  splits = {}
  for speaker, ids in by_speaker.items():
    if speaker in held_speakers:
      splits.update({i: "test" for i in ids})
      continue
    held = set(sorted(ids, key=_heldout_hash)[:per_speaker])
    splits.update({i: "test" if i in held else "train" for i in ids})
  return splits


def unseen_in_test(split_speakers: dict[str, dict], meta: dict | None) -> dict:
  """What of 'test' no 'train' clip shows: speakers, and (synthetic photo corpus) identities
  and voices.

  Args:
    split_speakers: split -> {speaker: clips used}.
    meta: the raw corpus's ``corpus.json`` or None.

  Returns:
    {"speakers": [...], "seen_speakers": [...]}, plus "identities" and "voices" when the
    corpus records them per speaker.
  """
  train = set(split_speakers.get("train", {}))
  test = set(split_speakers.get("test", {}))
  key = lambda s: (len(s), s)
  out = {"speakers": sorted(test - train, key=key), "seen_speakers": sorted(test & train, key=key)}
  speakers = (meta or {}).get("speakers", {})
  if all(s in speakers and "identity" in speakers[s] for s in train | test):
    for field, name in (("identity", "identities"), ("voice", "voices")):
      used = {speakers[s][field] for s in train}
      out[name] = sorted({speakers[s][field] for s in test} - used)
  return out


@dataclasses.dataclass(frozen=True)
class ShardPlan:
  """One shard of the plan: its split, index, count and clips (in write order)."""
  split: str
  index: int
  num_shards: int
  clip_ids: tuple[str, ...]

  @property
  def name(self) -> str:
    return f"{self.split}-{self.index:05d}-of-{self.num_shards:05d}"


def plan_shards(splits: dict[str, str], clips_per_shard: int) -> list[ShardPlan]:
  """Clip i (sorted by id) of a split -> shard i % num_shards; balanced and deterministic."""
  by_split = collections.defaultdict(list)
  for clip_id in sorted(splits):
    by_split[splits[clip_id]].append(clip_id)
  plan = []
  for split in sorted(by_split):
    ids = by_split[split]
    num_shards = max(1, -(-len(ids) // clips_per_shard))
    for index in range(num_shards):
      plan.append(ShardPlan(split, index, num_shards, tuple(ids[index::num_shards])))
  return plan


# ---------------------------------------------------------------------------------------------
# One clip: decode, align, featurise, serialise (runs in a worker, the same code for both runners)
# ---------------------------------------------------------------------------------------------


def clip_identity(source: readers.ClipSource, raw_dir: str, sizes: dict | None = None) -> str:
  """The clip's content identity: its files' paths relative to ``raw_dir`` and their sizes.

  Not the absolute path: a corpus that is moved, copied or reached through a symlink keeps
  its identity (and its cached clips and shards).
  """
  size = (lambda p: sizes[p]) if sizes is not None else fileio.getsize
  parts = [f"{readers.relpath(p, raw_dir)}:{size(p)}" for p in source.files()]
  return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def clip_identities(clips: Sequence[readers.ClipSource], raw_dir: str) -> dict[str, str]:
  """clip id -> :func:`clip_identity`; file sizes are read by 32 threads on remote storage."""
  paths = [p for c in clips for p in c.files()]
  threads = 1 if fileio.is_local(raw_dir) else 32
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    sizes = dict(zip(paths, pool.map(fileio.getsize, paths, chunksize=64)))
  return {c.clip_id: clip_identity(c, raw_dir, sizes) for c in clips}


def _cache_key(clip_id: str, fingerprint: str, identity: str = "") -> str:
  return hashlib.sha1(f"{fingerprint}:{clip_id}:{identity}".encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=None)
def _aligner(align_config: face.AlignConfig) -> face.FaceAligner:
  return face.FaceAligner(align_config)


def max_av_mismatch_seconds(num_frames: int, config: BuildConfig) -> float:
  """The largest audio/video duration difference that is padded or trimmed, not skipped."""
  return max(config.max_av_mismatch * num_frames / schema.FPS, MIN_AV_MISMATCH_SECONDS)


def make_example(source: readers.ClipSource, config: BuildConfig) -> tuple[dict | None, dict]:
  """Decodes, aligns and featurises one clip.

  Returns:
    (example of the schema or None if skipped, info for the manifest: status, reason,
    warnings and measurements).

  Raises:
    the transient errors of :mod:`data_prep.errors` (OSError, MemoryError, timeouts, a killed
    ffmpeg): not the clip's fault, so not a skip.
  """
  info = {"status": "skipped", "warnings": []}
  warnings = info["warnings"]
  try:
    with fileio.local_copy(source.video_path) as video_path:
      video = video_lib.read_video(video_path, max_side=config.video_max_side,
                                   timeout=config.ffmpeg_timeout)
  except video_lib.VideoError as e:
    info["reason"] = f"corrupt or unreadable video ({e})"
    return None, info
  frames = video.frames
  info.update(num_frames=len(frames), source_fps=round(video.source_fps, 3),
              frame_size=list(frames.shape[1:3]))
  if video.decode_errors:
    warnings.append(f"truncated or corrupt video, kept {len(frames)} decoded frames: "
                    f"{video.decode_errors.splitlines()[-1][:200]}")
  if video.source_fps and abs(video.source_fps - schema.FPS) > 0.01:
    warnings.append(f"frame rate {video.source_fps:g} resampled to {schema.FPS}")
  if video.rotation:
    warnings.append(f"rotated by {video.rotation:g} degrees (display matrix)")
  if video.source_size and max(video.source_size) > config.video_max_side:
    warnings.append(f"{video.source_size[0]}x{video.source_size[1]} downscaled to "
                    f"{frames.shape[2]}x{frames.shape[1]}")
  if len(frames) < config.min_frames:
    info["reason"] = f"too short: {len(frames)} frames < min_frames {config.min_frames}"
    return None, info

  info["audio_source"] = "wav" if source.audio_path else "video"
  try:
    with fileio.local_copy(source.audio_path or source.video_path) as audio_path:
      waveform = audio_lib.load_audio(audio_path)
  except audio_lib.AudioError as e:
    where = "no .wav found and the video has no audio stream" if not source.audio_path else e
    info["reason"] = f"missing audio ({where})"
    return None, info
  if waveform.size == 0:
    info["reason"] = "missing audio (empty audio stream)"
    return None, info
  if not np.any(waveform):
    warnings.append("silent audio (all zeros), kept")
  video_seconds = len(frames) / schema.FPS
  audio_seconds = len(waveform) / schema.SAMPLE_RATE
  bound = max_av_mismatch_seconds(len(frames), config)
  info["av_difference_seconds"] = round(audio_seconds - video_seconds, 4)
  if abs(audio_seconds - video_seconds) > bound:
    info["reason"] = (f"audio and video lengths differ: audio {audio_seconds:.3f} s, video "
                      f"{video_seconds:.3f} s (more than {bound:.3f} s)")
    return None, info
  waveform, change = audio_lib.fit_to_frames(waveform, len(frames))
  info["audio_samples_added"] = int(change)
  if abs(change) >= schema.SAMPLES_PER_FRAME:
    verb = "shorter" if change > 0 else "longer"
    action = "zero-padded" if change > 0 else "trimmed"
    warnings.append(f"audio {abs(change) / schema.SAMPLE_RATE:.3f} s {verb} than the video, "
                    f"{action} to its length")

  if source.align_path:
    try:
      words = readers.parse_alignment(fileio.read_text(source.align_path))
      info["transcript"] = readers.transcript(words)
    except ValueError as e:
      warnings.append(f"unreadable alignment: {e}")

  try:
    aligned = _aligner(config.align).align(frames)
  except face.NoFaceError as e:
    info["reason"] = f"no usable face: {e}"
    return None, info
  info["face"] = aligned.stats
  if aligned.stats["max_faces"] > 1:
    warnings.append(f"{aligned.stats['max_faces']} faces in a frame, one identity tracked")
  if aligned.stats["interpolated_frames"]:
    warnings.append(f"face missed in {aligned.stats['interpolated_frames']} frames, "
                    "interpolated")
  kept = aligned.stats.get("kept_frames")
  if kept and (kept[0] > 0 or kept[1] < len(frames)):
    start, stop = kept
    warnings.append(f"kept frames {start}-{stop - 1} of {len(frames)} "
                    f"({aligned.stats['kept_reason']})")
    waveform = waveform[start * schema.SAMPLES_PER_FRAME:stop * schema.SAMPLES_PER_FRAME]
    info["num_frames"] = stop - start
    if stop - start < config.min_frames:
      info["reason"] = (f"too short: {stop - start} frames of one face < min_frames "
                        f"{config.min_frames} ({aligned.stats['kept_reason']})")
      return None, info
  num_frames = len(aligned.frames)
  example = {
      "clip_id": source.clip_id,
      "speaker": source.speaker,
      "frames": aligned.frames,
      "mfcc": audio_lib.mfcc_windows(waveform, num_frames),
      "mouth_landmarks": aligned.mouth_landmarks.astype(np.float32),
      "audio": waveform,
  }
  schema.check_example(example, config.resolution)
  info["status"] = "used"
  return example, info


def process_clip(source: readers.ClipSource, config: BuildConfig, work_dir: str,
                 identity: str = "") -> dict:
  """Processes one clip and caches the result in ``work_dir`` (survives interruption).

  Writes ``<key>.rec`` (the serialized tf.train.Example) for a used clip, then ``<key>.json``
  (the manifest info) for every clip; the .json is the commit point. Content problems are
  cached as skips; transient errors (:data:`errors.TRANSIENT`) propagate and cache nothing.

  Returns:
    the clip's manifest info.
  """
  start = time.perf_counter()
  key = _cache_key(source.clip_id, config.fingerprint(), identity)
  try:
    example, info = make_example(source, config)
    if example is not None:
      record = shards.serialize_example(example, config.resolution)
      fileio.write_bytes(fileio.join(work_dir, f"{key}.rec"), record)
  except errors.TRANSIENT:
    raise
  except errors.ContentError as e:
    info = {"status": "skipped", "reason": str(e)[:500], "warnings": []}
  except Exception as e:  # pylint: disable=broad-except
    # Whatever else a broken file does inside a decoder, the run goes on; the reason is kept.
    info = {"status": "skipped", "reason": f"error: {type(e).__name__}: {e}"[:500],
            "warnings": []}
  info["clip_id"] = source.clip_id
  info["seconds"] = round(time.perf_counter() - start, 3)
  fileio.write_json(fileio.join(work_dir, f"{key}.json"), info)
  return info


def process_with_retries(source: readers.ClipSource, config: BuildConfig, work_dir: str,
                         identity: str = "") -> dict:
  """:func:`process_clip`, retried after transient errors (``config.retries`` times).

  Returns:
    the clip's info; ``status`` 'failed' (nothing cached) if every attempt met a transient
    error, with the last one as ``reason``.
  """
  for attempt in range(config.retries + 1):
    try:
      return process_clip(source, config, work_dir, identity)
    except errors.TRANSIENT as e:
      error = e
      if attempt < config.retries:
        time.sleep(config.retry_delay * 2 ** attempt)
  return {"clip_id": source.clip_id, "status": "failed", "attempts": config.retries + 1,
          "reason": f"{type(error).__name__}: {error}"[:500], "warnings": []}


def _worker_process(args):
  return process_with_retries(*args)


# ---------------------------------------------------------------------------------------------
# Shards: one writer for both runners
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardJob:
  """A shard to write: its plan and the cache key of each of its clips (same order)."""
  plan: ShardPlan
  keys: tuple[str, ...]

  @property
  def name(self) -> str:
    return self.plan.name

  @property
  def content(self) -> str:
    return hashlib.sha1(":".join(self.keys).encode()).hexdigest()[:16]


def _clip_dir(config: BuildConfig) -> str:
  return fileio.join(config.out_dir, WORK_DIR, "clips")


def _marker_dir(config: BuildConfig) -> str:
  return fileio.join(config.out_dir, WORK_DIR, "shards")


def _shard_file(config: BuildConfig, shard: ShardPlan) -> str:
  return shards.shard_path(config.out_dir, shard.split, shard.index, shard.num_shards)


def _marker_path(config: BuildConfig, shard: ShardPlan) -> str:
  return fileio.join(_marker_dir(config), f"{shard.name}.json")


def cached_info(config: BuildConfig, key: str) -> dict | None:
  """A clip's cached info if it is complete (its record too, for a used clip), else None."""
  try:
    info = fileio.read_json(fileio.join(_clip_dir(config), f"{key}.json"))
  except (OSError, ValueError, tf_errors.OpError):
    return None
  if info.get("status") == "used" and not fileio.exists(
      fileio.join(_clip_dir(config), f"{key}.rec")):
    return None
  return info


def finished_marker(config: BuildConfig, job: ShardJob) -> dict | None:
  """The shard's marker if the shard on disk is exactly this job's shard, else None."""
  try:
    marker = fileio.read_json(_marker_path(config, job.plan))
  except (OSError, ValueError, tf_errors.OpError):
    return None
  if (marker.get("fingerprint") != config.fingerprint() or
      tuple(marker.get("clip_ids", ())) != job.plan.clip_ids or
      marker.get("content") != job.content or
      not fileio.exists(_shard_file(config, job.plan))):
    return None
  return marker


def write_shard(config: BuildConfig, job: ShardJob, infos: dict[str, dict]) -> dict:
  """Writes the shard from cached records (atomically), then its marker; drops the cache.

  Args:
    config: the build.
    job: the shard.
    infos: clip id -> info of (at least) the clips processed in this run; the others are read
      from the cache.

  Returns:
    the shard's marker.
  """
  clip_dir = _clip_dir(config)
  infos = {i: infos.get(i) or cached_info(config, k) for i, k in zip(job.plan.clip_ids, job.keys)}
  missing = [i for i, info in infos.items() if info is None or info["status"] == "failed"]
  if missing:
    raise BuildError(f"shard {job.name}: clips {missing[:3]} are not processed")
  used = [k for i, k in zip(job.plan.clip_ids, job.keys) if infos[i]["status"] == "used"]
  records = (fileio.read_bytes(fileio.join(clip_dir, f"{k}.rec")) for k in used)
  count = shards.write_shard(_shard_file(config, job.plan), records)
  marker = {"fingerprint": config.fingerprint(), "clip_ids": list(job.plan.clip_ids),
            "content": job.content, "records": count,
            "infos": [infos[i] for i in job.plan.clip_ids]}
  fileio.write_json(_marker_path(config, job.plan), marker)
  for key in job.keys:
    for suffix in ("rec", "json"):
      fileio.remove(fileio.join(clip_dir, f"{key}.{suffix}"))
  return marker


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _versions() -> dict:
  return {"python": platform.python_version(), "numpy": np.__version__,
          "dlib": dlib.__version__, "librosa": librosa.__version__,
          "tensorflow": tf.__version__, "tensorflow_datasets": tfds.__version__,
          "ffmpeg": imageio_ffmpeg.get_ffmpeg_version(), "pipeline": PIPELINE_VERSION}


class _Run:
  """State of one build: the plan and the cache."""

  def __init__(self, config: BuildConfig, scan: readers.Scan):
    self.config = config
    self.scan = scan
    self.fingerprint = config.fingerprint()
    self.sources = {c.clip_id: c for c in scan.clips}
    self.identities = clip_identities(scan.clips, config.raw_dir)
    self.splits = assign_splits(scan.clips, config)
    self.plan = plan_shards(self.splits, config.clips_per_shard)
    self.jobs = [ShardJob(s, tuple(self.key(i) for i in s.clip_ids)) for s in self.plan]
    self.clip_dir = _clip_dir(config)
    self.marker_dir = _marker_dir(config)
    fileio.makedirs(self.clip_dir)
    fileio.makedirs(self.marker_dir)

  def key(self, clip_id: str) -> str:
    return _cache_key(clip_id, self.fingerprint, self.identities[clip_id])

  def shard_file(self, shard: ShardPlan) -> str:
    return _shard_file(self.config, shard)

  def corpus_identity(self) -> str:
    return _identity_of(self.identities)


def _identity_of(identities: dict[str, str]) -> str:
  text = "|".join(f"{i}:{identities[i]}" for i in sorted(identities))
  return hashlib.sha1(text.encode()).hexdigest()[:16]


def corpus_identity(scan: readers.Scan, raw_dir: str) -> str:
  """Content identity of a whole corpus: clip ids, files relative to ``raw_dir``, sizes."""
  return _identity_of(clip_identities(scan.clips, raw_dir))


def _remove_incomplete_outputs(out_dir: str) -> None:
  """Removes what would make a folder under construction look complete, and temp files."""
  for name in ("dataset_info.json", "features.json", MANIFEST, CLIPS_LOG):
    fileio.remove(fileio.join(out_dir, name))
  for folder in (out_dir, fileio.join(out_dir, WORK_DIR, "clips"),
                 fileio.join(out_dir, WORK_DIR, "shards")):
    fileio.remove_temp_files(folder)


def _remove_stale_shards(run: _Run) -> list[str]:
  """Deletes shard files and markers of earlier plans (other inputs or parameters)."""
  out_dir = run.config.out_dir
  keep = {os.path.basename(run.shard_file(s)) for s in run.plan}
  keep_markers = {f"{s.name}.json" for s in run.plan}
  removed = []
  prefix = f"{schema.DATASET_NAME}-"
  for name in fileio.listdir(out_dir):
    if name.startswith(prefix) and ".tfrecord-" in name and name not in keep:
      fileio.remove(fileio.join(out_dir, name))
      removed.append(name)
  for name in fileio.listdir(run.marker_dir):
    if name not in keep_markers:
      fileio.remove(fileio.join(run.marker_dir, name))
  return removed


def _process_pool(run: _Run, jobs: list[str], on_clip) -> None:
  """Runs ``process_with_retries`` over ``jobs`` (clip ids), inline or in worker processes."""
  config = run.config
  args = ((run.sources[i], config, run.clip_dir, run.identities[i]) for i in jobs)
  if config.num_workers <= 0 or len(jobs) <= 1:
    for arg in args:
      on_clip(arg[0].clip_id, process_with_retries(*arg))
    return
  # spawn, not fork: the parent has TensorFlow's threads running, which fork does not survive.
  # A process pool executor, not multiprocessing.Pool: a worker killed by the OOM killer
  # breaks the run with an error instead of hanging it.
  workers = min(config.num_workers, len(jobs))
  try:
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      pending = set()
      for arg in args:
        pending.add(pool.submit(_worker_process, arg))
        if len(pending) >= 4 * workers:  # A bounded queue: memory does not grow with the corpus.
          done, pending = concurrent.futures.wait(
              pending, return_when=concurrent.futures.FIRST_COMPLETED)
          for future in done:
            info = future.result()
            on_clip(info["clip_id"], info)
      for future in concurrent.futures.as_completed(pending):
        info = future.result()
        on_clip(info["clip_id"], info)
  except concurrent.futures.process.BrokenProcessPool as e:
    raise BuildError(
        "a worker process died (killed by a signal, e.g. the out-of-memory killer; try fewer "
        "--num_workers); finished clips and shards are kept: run the build again") from e


@contextlib.contextmanager
def output_lock(out_dir: str):
  """Refuses a second build into ``out_dir`` while one runs (lock file with pid and host).

  A lock left by a build that died (same host, process gone) is taken over.

  Raises:
    BuildError: another build holds the folder.
  """
  fileio.makedirs(fileio.join(out_dir, WORK_DIR))
  path = fileio.join(out_dir, WORK_DIR, LOCK_FILE)
  me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
  for _ in range(2):
    try:
      if fileio.is_local(path):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
          json.dump(me, f)
      elif fileio.exists(path):
        raise FileExistsError(path)
      else:  # Object stores have no exclusive create; a narrow race remains there.
        fileio.write_json(path, me)
      break
    except FileExistsError:
      try:
        holder = fileio.read_json(path)
      except (OSError, ValueError):
        holder = {}
      if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
        fileio.remove(path)  # Stale: its build died (kill -9, power loss).
        continue
      since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
      raise BuildError(
          f"{out_dir} is being written by another build (pid {holder.get('pid')} on "
          f"{holder.get('host')}, since {since}); if no build is running, delete {path}")
  else:
    raise BuildError(f"cannot take the lock {path}")
  try:
    yield
  finally:
    fileio.remove(path)


def _alive(pid) -> bool:
  if not isinstance(pid, int):
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def build(dataset: str, raw_dir: str, out_dir: str,
          resolution: int = face.AlignConfig.resolution, num_workers: int = 1,
          progress: bool = True, runner: str = "pool", beam_options: str | None = None,
          **options) -> dict:
  """Builds (or finishes building) the shards of ``raw_dir`` in ``out_dir``.

  Args:
    dataset: 'grid', 'lrw' or 'folder'.
    raw_dir: root of the raw layout (local, or a ``tf.io.gfile`` URL).
    out_dir: output folder (created; local, or a URL such as ``gs://bucket/grid128``).
    resolution: crop size, 64 or 128.
    num_workers: worker processes (0: in this process).
    progress: show a tqdm progress bar.
    runner: 'pool' (processes on this machine) or 'beam' (an Apache Beam pipeline; needs
      the ``beam`` extra).
    beam_options: Beam pipeline options as a command line (default: the DirectRunner in
      multi-processing mode with ``num_workers`` workers).
    **options: other :class:`BuildConfig` fields and :class:`data_prep.face.AlignConfig`
      fields (clips_per_shard, split_rule, heldout_speakers, detect_every, align_on, ...).

  Returns:
    summary: clips used and skipped per split and reason, shards written or kept, throughput
    of the clips processed in this run (videos/s, frames/s), paths of the outputs.

  Raises:
    BuildError: no clips found, another build holds ``out_dir``, or clips failed with
      transient errors after their retries (named; a rerun processes them again).
  """
  start = time.perf_counter()
  if runner not in RUNNERS:
    raise ValueError(f"runner={runner!r}; expected one of {RUNNERS}")
  absolute = lambda p: p if not fileio.is_local(p) else os.path.abspath(p)
  config = BuildConfig.create(dataset=dataset, raw_dir=absolute(raw_dir),
                              out_dir=absolute(out_dir), resolution=resolution,
                              num_workers=num_workers, **options)
  scan = readers.scan(dataset, config.raw_dir)
  if not scan.clips:
    raise BuildError(f"no clips found in {config.raw_dir} ({scan.num_files} files): the "
                     f"{dataset} layout expects {readers.LAYOUTS[dataset]}")
  fileio.makedirs(config.out_dir)
  with output_lock(config.out_dir):
    return _build_locked(config, scan, progress, runner, beam_options, start)


def _build_locked(config, scan, progress, runner, beam_options, start) -> dict:
  run = _Run(config, scan)
  markers = {j.name: finished_marker(config, j) for j in run.jobs}
  pending = [j for j in run.jobs if markers[j.name] is None]
  if pending or not fileio.exists(fileio.join(config.out_dir, MANIFEST)):
    _remove_incomplete_outputs(config.out_dir)

  # Cached clips of unfinished shards are reused; the rest are processed in shard order.
  infos = {}
  for job in pending:
    for clip_id, key in zip(job.plan.clip_ids, job.keys):
      cached = cached_info(config, key)
      if cached is not None:
        infos[clip_id] = cached
  todo = [i for j in pending for i in j.plan.clip_ids if i not in infos]
  shard_of = {i: j for j in pending for i in j.plan.clip_ids}
  remaining = {j.name: sum(i not in infos for i in j.plan.clip_ids) for j in pending}
  written, failed = [], {}

  def flush(job):
    markers[job.name] = write_shard(config, job, infos)
    written.append(job.name)

  for job in pending:
    if remaining[job.name] == 0:
      flush(job)
  processed_frames = 0
  process_start = time.perf_counter()
  if runner == "beam":
    # Imported here: apache-beam is an optional dependency (the `beam` extra).
    from data_prep import beam_build  # pylint: disable=g-import-not-at-top
    beam_jobs = [j for j in pending if remaining[j.name]]
    todo_set = set(todo)
    clips = [(j.name, run.sources[i], run.identities[i]) for j in beam_jobs
             for i in j.plan.clip_ids if i in todo_set]
    beam_build.run_pipeline(
        functools.partial(process_with_retries, config=config, work_dir=run.clip_dir),
        functools.partial(write_shard, config), clips, beam_jobs, beam_options,
        config.num_workers)
    for job in beam_jobs:
      markers[job.name] = finished_marker(config, job)
      if markers[job.name] is not None:
        written.append(job.name)
        processed_frames += sum(info.get("num_frames", 0) for info in markers[job.name]["infos"]
                                if info["clip_id"] in todo_set)
      else:
        for clip_id, key in zip(job.plan.clip_ids, job.keys):
          if cached_info(config, key) is None:
            failed[clip_id] = "failed after its retries (see the Beam workers' logs)"
  else:
    bar = tqdm.tqdm(total=len(todo), disable=not progress, unit="clip", dynamic_ncols=True,
                    desc=f"{config.dataset} -> {os.path.basename(config.out_dir)}")
    skipped_now = 0

    def on_clip(clip_id, info):
      nonlocal processed_frames, skipped_now
      bar.update(1)
      job = shard_of[clip_id]
      if info["status"] == "failed":
        failed[clip_id] = info["reason"]
        return
      infos[clip_id] = info
      processed_frames += info.get("num_frames", 0)
      skipped_now += info["status"] != "used"
      bar.set_postfix(skipped=skipped_now, shards=len(written), refresh=False)
      remaining[job.name] -= 1
      if remaining[job.name] == 0:
        flush(job)

    try:
      _process_pool(run, todo, on_clip)
    finally:
      bar.close()
  process_seconds = time.perf_counter() - process_start
  if failed:
    listed = "; ".join(f"{c}: {r}" for c, r in sorted(failed.items())[:5])
    raise BuildError(
        f"{len(failed)} clips failed with errors that are not the clips' fault, after "
        f"{config.retries + 1} attempts each ({listed}); finished clips and shards are kept: "
        "run the build again to retry them")

  stale = _remove_stale_shards(run)
  manifest = _finish(run, markers)
  manifest["run"] = {
      "runner": runner, "clips_processed": len(todo), "frames_processed": processed_frames,
      "seconds_processing": round(process_seconds, 2),
      "seconds_total": round(time.perf_counter() - start, 2),
      "videos_per_second": round(len(todo) / process_seconds, 3) if todo else None,
      "frames_per_second": round(processed_frames / process_seconds, 2) if todo else None,
      "shards_written": len(written), "shards_kept": len(run.plan) - len(written),
      "stale_shards_removed": stale}
  fileio.write_json(fileio.join(config.out_dir, MANIFEST), manifest, indent=1, sort_keys=True)
  summary = {k: manifest[k] for k in ("splits", "totals", "skipped_reasons", "run")}
  summary.update(out_dir=config.out_dir, manifest=fileio.join(config.out_dir, MANIFEST))
  return summary


def _finish(run: _Run, markers: dict[str, dict]) -> dict:
  """Writes TFDS metadata and the per-clip log; returns the manifest (not yet written)."""
  config = run.config
  split_shards = collections.defaultdict(list)
  for shard in run.plan:
    split_shards[shard.split].append(markers[shard.name]["records"])
  complete = {split: len(lengths) for split, lengths in split_shards.items() if sum(lengths)}
  if complete:
    shards.write_metadata(
        config.out_dir, config.resolution, complete,
        description=f"talkface {config.dataset} at {config.resolution}px from {config.raw_dir}",
        shard_lengths={s: split_shards[s] for s in complete})

  rel = lambda p: readers.relpath(p, config.raw_dir)
  splits = {}
  skipped, warned = [], []
  used_files = skipped_files = 0
  reasons = collections.Counter()
  lines = []
  for shard in run.plan:
    entry = splits.setdefault(shard.split, {"clips": 0, "skipped": 0, "frames": 0,
                                            "shards": shard.num_shards,
                                            "in_metadata": shard.split in complete,
                                            "speakers": collections.Counter()})
    for info in markers[shard.name]["infos"]:
      source = run.sources[info["clip_id"]]
      files = [rel(p) for p in source.files()]
      record = dict(info, speaker=source.speaker, split=shard.split, shard=shard.index,
                    files=files)
      lines.append(json.dumps(record, sort_keys=True))
      if info["status"] == "used":
        entry["clips"] += 1
        entry["frames"] += info["num_frames"]
        entry["speakers"][source.speaker] += 1
        used_files += len(files)
        if info["warnings"]:
          warned.append({"clip_id": info["clip_id"], "warnings": info["warnings"]})
      else:
        entry["skipped"] += 1
        skipped_files += len(files)
        reason = info["reason"]
        reasons[reason.split(":")[0].split(" (")[0]] += 1
        skipped.append({"clip_id": info["clip_id"], "reason": reason, "files": files})
  for entry in splits.values():
    entry["speakers"] = dict(sorted(entry["speakers"].items()))
  fileio.write_text(fileio.join(config.out_dir, CLIPS_LOG), "\n".join(lines) + "\n")
  ignored = [{"path": p, "reason": r} for p, r in run.scan.ignored]
  totals = {"files_found": run.scan.num_files, "files_used": used_files,
            "files_of_skipped_clips": skipped_files, "files_ignored": len(ignored),
            "clips": len(run.scan.clips), "clips_used": sum(s["clips"] for s in splits.values()),
            "clips_skipped": len(skipped)}
  # Every file is in exactly one of the three groups; a mismatch is a bug worth stopping for.
  accounted = used_files + skipped_files + len(ignored)
  if accounted != run.scan.num_files:
    raise RuntimeError(f"{run.scan.num_files} files found but {accounted} accounted for")
  return {
      "dataset": config.dataset, "raw_dir": config.raw_dir, "out_dir": config.out_dir,
      "resolution": config.resolution, "schema_version": schema.SCHEMA_VERSION,
      "fingerprint": run.fingerprint, "corpus_identity": run.corpus_identity(),
      "parameters": config.parameters(),
      "versions": _versions(), "splits": splits, "totals": totals,
      "unseen_in_test": unseen_in_test({k: v["speakers"] for k, v in splits.items()},
                                       corpus_meta(config.raw_dir)
                                       if config.dataset == "grid" else None),
      "skipped_reasons": dict(sorted(reasons.items())), "skipped": skipped,
      "warnings": warned, "ignored_files": ignored, "clips_log": CLIPS_LOG,
  }


def split_speakers(out_dir: str) -> dict[str, list[str]] | None:
  """Speakers with used clips in each split, as the build of ``out_dir`` recorded them.

  The evaluation tells held-out sentences of training speakers ('seen') from held-out
  speakers ('unseen') with it, without reading the shards.

  Args:
    out_dir: a shard folder written by :func:`build`.

  Returns:
    Split name -> sorted speakers, or None when the folder has no manifest (shards not
    written by this module), the manifest does not list speakers per split, or the dataset
    is LRW (its 'speaker' is the word, not a person).
  """
  path = fileio.join(out_dir, MANIFEST)
  if not fileio.exists(path):
    return None
  manifest = fileio.read_json(path)
  splits = manifest.get("splits")
  if manifest.get("dataset") == "lrw" or not isinstance(splits, dict) or not all(
      isinstance(entry, dict) and isinstance(entry.get("speakers"), dict)
      for entry in splits.values()):
    return None
  return {split: sorted(entry["speakers"]) for split, entry in splits.items()}


#

# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m data_prep.build", description=__doc__.split("\n")[0])
  p.add_argument("--dataset", required=True, choices=sorted(readers.SCANNERS))
  p.add_argument("--raw_dir", required=True, help="root of the raw layout (local or gs://...)")
  p.add_argument("--out_dir", required=True, help="shard folder, created (local or gs://...)")
  p.add_argument("--num_workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                 help="worker processes; 0 runs in this process")
  p.add_argument("--runner", default="pool", choices=RUNNERS,
                 help="pool: processes on this machine; beam: an Apache Beam pipeline "
                      "(pip install -e '.[beam]')")
  p.add_argument("--beam_options", default=None,
                 help="Beam pipeline options, e.g. '--runner=FlinkRunner --flink_master=...' "
                      "(default: DirectRunner, multi_processing, --num_workers workers)")
  p.add_argument("--clips_per_shard", type=int, default=BuildConfig.clips_per_shard)
  p.add_argument("--grid_split", "--split_rule", dest="split_rule",
                 default=BuildConfig.split_rule, choices=SPLIT_RULES,
                 help="grid/folder: hold out speakers, or N clips per speaker, or both, as "
                      "'test'")
  p.add_argument("--heldout_speakers", default=None,
                 help="comma-separated 'test' speakers (grid default: the corpus.json's "
                      "heldout_speakers of a synthetic photo corpus, else s1,s2,s20,s22)")
  p.add_argument("--heldout_per_speaker", type=int, default=BuildConfig.heldout_per_speaker,
                 help="with --grid_split=sentences or speakers+sentences: clips per "
                      "(training) speaker held out")
  p.add_argument("--min_frames", type=int, default=BuildConfig.min_frames)
  p.add_argument("--video_max_side", type=int, default=BuildConfig.video_max_side,
                 help="downscale larger videos when decoding (bounds memory)")
  p.add_argument("--max_av_mismatch", type=float, default=BuildConfig.max_av_mismatch,
                 help="skip clips whose audio and video durations differ by more than this "
                      f"fraction (at least {MIN_AV_MISMATCH_SECONDS} s)")
  p.add_argument("--retries", type=int, default=BuildConfig.retries,
                 help="retries of a clip after a transient error (I/O, memory, timeout)")
  # The alignment flags come from AlignConfig, their one home (defaults and help).
  helps = face.AlignConfig.field_help()
  for field in dataclasses.fields(face.AlignConfig):
    kwargs = {"default": field.default, "help": helps.get(field.name)}
    if field.name == "resolution":
      kwargs["choices"] = (64, 128)
    if field.name == "align_on":
      kwargs["choices"] = sorted(face.template.ALIGN_POINTS)
    p.add_argument(f"--{field.name}", type=type(field.default), **kwargs)
  p.add_argument("--no_progress", action="store_true")
  return p


def main(argv: Sequence[str] | None = None) -> dict:
  """The command line; user errors print one ``error:`` line and exit with status 2."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.split_rule == "sentences" and args.heldout_per_speaker <= 0:
    parser.error("--grid_split=sentences needs --heldout_per_speaker=N > 0")
  heldout = None if args.heldout_speakers is None else tuple(
      s for s in args.heldout_speakers.split(",") if s)
  align = {f.name: getattr(args, f.name) for f in dataclasses.fields(face.AlignConfig)}
  try:
    summary = build(
        args.dataset, args.raw_dir, args.out_dir, num_workers=args.num_workers,
        progress=not args.no_progress, runner=args.runner, beam_options=args.beam_options,
        clips_per_shard=args.clips_per_shard, split_rule=args.split_rule,
        heldout_speakers=heldout, heldout_per_speaker=args.heldout_per_speaker,
        min_frames=args.min_frames, video_max_side=args.video_max_side,
        max_av_mismatch=args.max_av_mismatch, retries=args.retries, **align)
  except (BuildError, FileNotFoundError, NotADirectoryError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(format_summary(summary))
  return summary


def format_summary(summary: dict) -> str:
  """Human-readable end-of-run report."""
  run = summary["run"]
  lines = [f"done: {summary['out_dir']}"]
  for split, entry in sorted(summary["splits"].items()):
    lines.append(f"  {split}: {entry['clips']} clips ({entry['frames']} frames) in "
                 f"{entry['shards']} shards from {len(entry['speakers'])} speakers, "
                 f"{entry['skipped']} skipped")
  totals = summary["totals"]
  lines.append(f"  files: {totals['files_found']} found, {totals['files_used']} used, "
               f"{totals['files_of_skipped_clips']} in skipped clips, "
               f"{totals['files_ignored']} ignored")
  for reason, count in summary["skipped_reasons"].items():
    lines.append(f"  skipped {count}: {reason}")
  if run["clips_processed"]:
    lines.append(f"  processed {run['clips_processed']} clips in {run['seconds_processing']} s "
                 f"({run['runner']}): {run['videos_per_second']} videos/s, "
                 f"{run['frames_per_second']} frames/s")
  lines.append(f"  shards written {run['shards_written']}, kept {run['shards_kept']}; "
               f"details in {summary['manifest']}")
  return "\n".join(lines)


if __name__ == "__main__":
  # Run the copy imported under the module's own name: functions and classes pickled for
  # worker processes (Beam's above all) must be data_prep.build's, not __main__'s.
  import data_prep.build  # pylint: disable=g-import-not-at-top,import-self
  data_prep.build.main(sys.argv[1:])
