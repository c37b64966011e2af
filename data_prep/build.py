"""Raw GRID / LRW / folder videos -> TFDS-loadable TFRecord shards: the offline pipeline.

Usage::

  python -m data_prep.build --dataset=grid --raw_dir=/data/GRID --out_dir=/data/grid128 \\
      --resolution=128 --num_workers=16

The run is planned up front and deterministically: clips are scanned and sorted by id, given a
split, and clip i of a split goes to shard i % num_shards, so the same inputs always give the
same shards (contents and order). Worker processes (each loading the Dlib models once) decode,
align and featurise clips; each finished clip is cached in ``out_dir/_work/clips/`` and each
shard is written atomically as soon as its clips are done, followed by a marker in
``out_dir/_work/shards/``. An interrupted run is simply started again: finished shards are kept,
finished clips of unfinished shards are not redone. TFDS metadata (``dataset_info.json``) and
``manifest.json`` are written last, so a folder that has them is complete.

Bad input never stops the run: each clip that cannot be used is skipped with its reason, every
file found is accounted for in the manifest (used by a clip, part of a skipped clip, or
ignored with a reason), and recoverable problems (audio padded or trimmed, silent audio,
resampled frame rate, decode errors, interpolated face gaps) are recorded per clip.
Imports no JAX.
"""

import argparse
import collections
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Sequence

import numpy as np
import tqdm

from data_prep import audio as audio_lib
from data_prep import readers
from data_prep import schema
from data_prep import shards

DEFAULT_GRID_HELDOUT = ("s1", "s2", "s20", "s22")
WORK_DIR = "_work"
MANIFEST = "manifest.json"
CLIPS_LOG = "clips.jsonl"
# Bump when a change alters the examples produced (2: nose-only alignment).
PIPELINE_VERSION = "2"


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  """Everything that decides the output of a build.

  Attributes:
    dataset: 'grid', 'lrw' or 'folder'.
    raw_dir: root of the raw layout.
    out_dir: shard folder.
    resolution: crop size (64 or 128).
    num_workers: worker processes; 0 processes in this process.
    clips_per_shard: target clips per shard (shards of a split differ by at most one clip).
    split_rule: 'speakers' (held-out speakers -> 'test') or 'sentences' (held-out clips per
      speaker -> 'test'); LRW always uses its own train/val/test.
    heldout_speakers: speakers of the 'test' split under the 'speakers' rule.
    heldout_per_speaker: clips per speaker in 'test' under the 'sentences' rule.
    detect_every: face detector stride in frames.
    detect_max_side: longest side of the downscaled copy the detector sees.
    detect_upsample: Dlib detector upsampling.
    max_gap: longest run of faceless frames filled by interpolation.
    smooth_sigma: temporal smoothing (frames) of the alignment track.
    track_min_correlation: tracked frames whose face patch correlates less than this with the
      nearest detection are re-detected.
    align_on: the landmarks the crop is aligned on: 'nose' or 'nose_eyes' (``AlignConfig``).
    min_frames: clips shorter than this (after resampling to 25 fps) are skipped.
  """
  dataset: str
  raw_dir: str
  out_dir: str
  resolution: int = 128
  num_workers: int = 1
  clips_per_shard: int = 64
  split_rule: str = "speakers"
  heldout_speakers: tuple[str, ...] | None = None
  heldout_per_speaker: int = 0
  detect_every: int = 5
  detect_max_side: int = 640
  detect_upsample: int = 0
  max_gap: int = 5
  smooth_sigma: float = 1.0
  track_min_correlation: float = 0.5
  align_on: str = "nose"
  min_frames: int = 8

  def align_config(self):
    from data_prep import face  # pylint: disable=g-import-not-at-top
    return face.AlignConfig(
        resolution=self.resolution, detect_every=self.detect_every,
        detect_max_side=self.detect_max_side, detect_upsample=self.detect_upsample,
        max_gap=self.max_gap, smooth_sigma=self.smooth_sigma,
        track_min_correlation=self.track_min_correlation, align_on=self.align_on)

  def clip_parameters(self) -> dict:
    """The parameters that change a clip's example (the key of the per-clip cache)."""
    return {"pipeline_version": PIPELINE_VERSION, "schema_version": schema.SCHEMA_VERSION,
            "resolution": self.resolution, "detect_every": self.detect_every,
            "detect_max_side": self.detect_max_side, "detect_upsample": self.detect_upsample,
            "max_gap": self.max_gap, "smooth_sigma": self.smooth_sigma,
            "track_min_correlation": self.track_min_correlation, "align_on": self.align_on,
            "min_frames": self.min_frames, "fps": schema.FPS,
            "sample_rate": schema.SAMPLE_RATE, "mfcc_pad_samples": audio_lib.PAD_SAMPLES}

  def fingerprint(self) -> str:
    text = json.dumps(self.clip_parameters(), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Planning: splits and shards
# ---------------------------------------------------------------------------------------------


def _heldout_hash(clip_id: str) -> str:
  # A hash rather than the sorted order, so held-out sentences spread over the corpus.
  return hashlib.sha1(clip_id.encode()).hexdigest()


def assign_splits(clips: Sequence[readers.ClipSource], config: BuildConfig) -> dict[str, str]:
  """clip_id -> split name, by the layout (LRW) or the configured rule."""
  if config.dataset == "lrw":
    return {c.clip_id: c.split for c in clips}
  if config.split_rule == "speakers":
    heldout = config.heldout_speakers
    if heldout is None:
      heldout = DEFAULT_GRID_HELDOUT if config.dataset == "grid" else ()
    return {c.clip_id: "test" if c.speaker in set(heldout) else "train" for c in clips}
  if config.split_rule == "sentences":
    by_speaker = collections.defaultdict(list)
    for c in clips:
      by_speaker[c.speaker].append(c.clip_id)
    splits = {}
    for ids in by_speaker.values():
      ranked = sorted(ids, key=_heldout_hash)
      held = set(ranked[:config.heldout_per_speaker])
      splits.update({i: "test" if i in held else "train" for i in ids})
    return splits
  raise ValueError(f"unknown split_rule {config.split_rule!r}")


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
# One clip: decode, align, featurise, serialise (runs in a worker)
# ---------------------------------------------------------------------------------------------


def _cache_key(clip_id: str, fingerprint: str) -> str:
  return hashlib.sha1(f"{fingerprint}:{clip_id}".encode()).hexdigest()[:24]


def _atomic_write(path: str, data: bytes) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


@functools.lru_cache(maxsize=None)
def _aligner(align_config):
  from data_prep import face  # pylint: disable=g-import-not-at-top
  return face.FaceAligner(align_config)


def make_example(source: readers.ClipSource, config: BuildConfig) -> tuple[dict | None, dict]:
  """Decodes, aligns and featurises one clip.

  Returns:
    (example of the schema or None if skipped, info for the manifest: status, reason,
    warnings and measurements).
  """
  from data_prep import face  # pylint: disable=g-import-not-at-top
  info = {"status": "skipped", "warnings": []}
  warnings = info["warnings"]
  try:
    video = readers.read_video(source.video_path)
  except readers.VideoError as e:
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
  if len(frames) < config.min_frames:
    info["reason"] = f"too short: {len(frames)} frames < min_frames {config.min_frames}"
    return None, info

  audio_path = source.audio_path or source.video_path
  info["audio_source"] = "wav" if source.audio_path else "video"
  try:
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
  waveform, change = audio_lib.fit_to_frames(waveform, len(frames))
  info["audio_samples_added"] = int(change)
  if abs(change) >= schema.SAMPLES_PER_FRAME:
    verb = "shorter" if change > 0 else "longer"
    action = "zero-padded" if change > 0 else "trimmed"
    warnings.append(f"audio {abs(change) / schema.SAMPLE_RATE:.3f} s {verb} than the video, "
                    f"{action} to its length")

  if source.align_path:
    try:
      info["transcript"] = readers.transcript(readers.read_alignment(source.align_path))
    except (ValueError, OSError) as e:
      warnings.append(f"unreadable alignment: {e}")

  try:
    aligned = _aligner(config.align_config()).align(frames)
  except face.NoFaceError as e:
    info["reason"] = f"no usable face: {e}"
    return None, info
  info["face"] = aligned.stats
  if aligned.stats["max_faces"] > 1:
    warnings.append(f"{aligned.stats['max_faces']} faces in a frame, the largest was taken")
  if aligned.stats["interpolated_frames"]:
    warnings.append(f"face missed in {aligned.stats['interpolated_frames']} frames, "
                    "interpolated")

  example = {
      "clip_id": source.clip_id,
      "speaker": source.speaker,
      "frames": aligned.frames,
      "mfcc": audio_lib.mfcc_windows(waveform, len(frames)),
      "mouth_landmarks": aligned.mouth_landmarks.astype(np.float32),
      "audio": waveform,
  }
  schema.check_example(example, config.resolution)
  info["status"] = "used"
  return example, info


def process_clip(source: readers.ClipSource, config: BuildConfig, work_dir: str) -> dict:
  """Processes one clip and caches the result in ``work_dir`` (survives interruption).

  Writes ``<key>.rec`` (the serialized tf.train.Example) for a used clip, then ``<key>.json``
  (the manifest info) for every clip; the .json is the commit point.

  Returns:
    the clip's manifest info.
  """
  start = time.perf_counter()
  key = _cache_key(source.clip_id, config.fingerprint())
  try:
    example, info = make_example(source, config)
    if example is not None:
      record = shards.serialize_example(example, config.resolution)
      _atomic_write(os.path.join(work_dir, f"{key}.rec"), record)
  except Exception as e:  # pylint: disable=broad-except
    # Whatever a broken file does inside a decoder, the run goes on; the reason is kept.
    info = {"status": "skipped", "reason": f"error: {type(e).__name__}: {e}"[:500],
            "warnings": []}
  info["clip_id"] = source.clip_id
  info["seconds"] = round(time.perf_counter() - start, 3)
  _atomic_write(os.path.join(work_dir, f"{key}.json"), json.dumps(info).encode())
  return info


def _worker_process(args):
  source, config, work_dir = args
  return process_clip(source, config, work_dir)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _versions() -> dict:
  import dlib  # pylint: disable=g-import-not-at-top
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  import librosa  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return {"python": platform.python_version(), "numpy": np.__version__,
          "dlib": dlib.__version__, "librosa": librosa.__version__,
          "tensorflow": tf.__version__, "tensorflow_datasets": tfds.__version__,
          "ffmpeg": imageio_ffmpeg.get_ffmpeg_version(), "pipeline": PIPELINE_VERSION}


class _Run:
  """State of one build: the plan, the cache and the shard writer."""

  def __init__(self, config: BuildConfig, scan: readers.Scan):
    self.config = config
    self.scan = scan
    self.fingerprint = config.fingerprint()
    self.sources = {c.clip_id: c for c in scan.clips}
    self.splits = assign_splits(scan.clips, config)
    self.plan = plan_shards(self.splits, config.clips_per_shard)
    self.work_dir = os.path.join(config.out_dir, WORK_DIR)
    self.clip_dir = os.path.join(self.work_dir, "clips")
    self.marker_dir = os.path.join(self.work_dir, "shards")
    os.makedirs(self.clip_dir, exist_ok=True)
    os.makedirs(self.marker_dir, exist_ok=True)

  def shard_file(self, shard: ShardPlan) -> str:
    return shards.shard_path(self.config.out_dir, shard.split, shard.index, shard.num_shards)

  def marker_path(self, shard: ShardPlan) -> str:
    return os.path.join(self.marker_dir, f"{shard.name}.json")

  def finished(self, shard: ShardPlan) -> dict | None:
    """The shard's marker if the shard on disk is exactly this plan's shard, else None."""
    try:
      with open(self.marker_path(shard)) as f:
        marker = json.load(f)
    except (OSError, ValueError):
      return None
    if (marker.get("fingerprint") != self.fingerprint or
        tuple(marker.get("clip_ids", ())) != shard.clip_ids or
        not os.path.exists(self.shard_file(shard))):
      return None
    return marker

  def cache_path(self, clip_id: str, suffix: str) -> str:
    return os.path.join(self.clip_dir, f"{_cache_key(clip_id, self.fingerprint)}.{suffix}")

  def cached_info(self, clip_id: str) -> dict | None:
    try:
      with open(self.cache_path(clip_id, "json")) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def write_shard(self, shard: ShardPlan, infos: dict[str, dict]) -> dict:
    """Writes the shard from cached records (atomically), then its marker; drops the cache."""
    used = [i for i in shard.clip_ids if infos[i]["status"] == "used"]

    def records():
      for clip_id in used:
        with open(self.cache_path(clip_id, "rec"), "rb") as f:
          yield f.read()

    count = shards.write_shard(self.shard_file(shard), records())
    marker = {"fingerprint": self.fingerprint, "clip_ids": list(shard.clip_ids),
              "records": count, "infos": [infos[i] for i in shard.clip_ids]}
    _atomic_write(self.marker_path(shard), json.dumps(marker).encode())
    for clip_id in shard.clip_ids:
      for suffix in ("rec", "json"):
        if os.path.exists(self.cache_path(clip_id, suffix)):
          os.remove(self.cache_path(clip_id, suffix))
    return marker


def _remove_incomplete_outputs(out_dir: str) -> None:
  """Removes what would make a folder under construction look complete, and temp files."""
  for name in ("dataset_info.json", "features.json", MANIFEST, CLIPS_LOG):
    if os.path.exists(os.path.join(out_dir, name)):
      os.remove(os.path.join(out_dir, name))
  for folder in (out_dir, os.path.join(out_dir, WORK_DIR, "clips"),
                 os.path.join(out_dir, WORK_DIR, "shards")):
    if os.path.isdir(folder):
      for name in os.listdir(folder):
        if ".tmp-" in name:
          os.remove(os.path.join(folder, name))


def _remove_stale_shards(out_dir: str, plan: Sequence[ShardPlan], run: _Run) -> list[str]:
  """Deletes shard files and markers of earlier plans (other inputs or parameters)."""
  keep = {os.path.basename(run.shard_file(s)) for s in plan}
  keep_markers = {f"{s.name}.json" for s in plan}
  removed = []
  prefix = f"{schema.DATASET_NAME}-"
  for name in sorted(os.listdir(out_dir)):
    if name.startswith(prefix) and ".tfrecord-" in name and name not in keep:
      os.remove(os.path.join(out_dir, name))
      removed.append(name)
  for name in os.listdir(run.marker_dir):
    if name not in keep_markers:
      os.remove(os.path.join(run.marker_dir, name))
  return removed


def _process_all(run: _Run, jobs: list[str], on_clip) -> None:
  """Runs ``process_clip`` over ``jobs`` (clip ids), inline or in a spawned worker pool."""
  config = run.config
  if config.num_workers <= 0 or len(jobs) <= 1:
    for clip_id in jobs:
      on_clip(clip_id, process_clip(run.sources[clip_id], config, run.clip_dir))
    return
  # spawn, not fork: the parent has TensorFlow's threads running, which fork does not survive.
  context = multiprocessing.get_context("spawn")
  args = [(run.sources[i], config, run.clip_dir) for i in jobs]
  with context.Pool(min(config.num_workers, len(jobs))) as pool:
    for info in pool.imap_unordered(_worker_process, args, chunksize=1):
      on_clip(info["clip_id"], info)


def build(dataset: str, raw_dir: str, out_dir: str, resolution: int = 128,
          num_workers: int = 1, progress: bool = True, **options) -> dict:
  """Builds (or finishes building) the shards of ``raw_dir`` in ``out_dir``.

  Args:
    dataset: 'grid', 'lrw' or 'folder'.
    raw_dir: root of the raw layout.
    out_dir: output folder (created).
    resolution: crop size, 64 or 128.
    num_workers: worker processes (0: in this process).
    progress: show a tqdm progress bar.
    **options: other :class:`BuildConfig` fields (clips_per_shard, split_rule,
      heldout_speakers, heldout_per_speaker, detect_every, max_gap, ...).

  Returns:
    summary: clips used and skipped per split and reason, shards written or kept, throughput
    of the clips processed in this run (videos/s, frames/s), paths of the outputs.
  """
  start = time.perf_counter()
  config = BuildConfig(dataset=dataset, raw_dir=os.path.abspath(raw_dir),
                       out_dir=os.path.abspath(out_dir), resolution=resolution,
                       num_workers=num_workers, **options)
  os.makedirs(config.out_dir, exist_ok=True)
  scan = readers.scan(dataset, raw_dir)
  run = _Run(config, scan)
  markers = {s.name: run.finished(s) for s in run.plan}
  pending = [s for s in run.plan if markers[s.name] is None]
  if pending or not os.path.exists(os.path.join(config.out_dir, MANIFEST)):
    _remove_incomplete_outputs(config.out_dir)

  # Cached clips of unfinished shards are reused; the rest are processed in shard order.
  infos = {}
  for shard in pending:
    for clip_id in shard.clip_ids:
      cached = run.cached_info(clip_id)
      if cached is not None and (cached["status"] != "used" or
                                 os.path.exists(run.cache_path(clip_id, "rec"))):
        infos[clip_id] = cached
  jobs = [i for s in pending for i in s.clip_ids if i not in infos]
  shard_of = {i: s for s in pending for i in s.clip_ids}
  remaining = {s.name: sum(i not in infos for i in s.clip_ids) for s in pending}
  written = []

  def flush(shard):
    markers[shard.name] = run.write_shard(shard, infos)
    written.append(shard.name)

  for shard in pending:
    if remaining[shard.name] == 0:
      flush(shard)
  bar = tqdm.tqdm(total=len(jobs), disable=not progress, unit="clip", dynamic_ncols=True,
                  desc=f"{dataset} -> {os.path.basename(config.out_dir)}")
  processed_frames, skipped_now = 0, 0

  def on_clip(clip_id, info):
    nonlocal processed_frames, skipped_now
    infos[clip_id] = info
    processed_frames += info.get("num_frames", 0)
    skipped_now += info["status"] != "used"
    bar.update(1)
    bar.set_postfix(skipped=skipped_now, shards=len(written), refresh=False)
    shard = shard_of[clip_id]
    remaining[shard.name] -= 1
    if remaining[shard.name] == 0:
      flush(shard)

  process_start = time.perf_counter()
  try:
    _process_all(run, jobs, on_clip)
  finally:
    bar.close()
  process_seconds = time.perf_counter() - process_start

  stale = _remove_stale_shards(config.out_dir, run.plan, run)
  manifest = _finish(run, markers)
  manifest["run"] = {
      "clips_processed": len(jobs), "frames_processed": processed_frames,
      "seconds_processing": round(process_seconds, 2),
      "seconds_total": round(time.perf_counter() - start, 2),
      "videos_per_second": round(len(jobs) / process_seconds, 3) if jobs else None,
      "frames_per_second": round(processed_frames / process_seconds, 2) if jobs else None,
      "shards_written": len(written), "shards_kept": len(run.plan) - len(written),
      "stale_shards_removed": stale}
  _atomic_write(os.path.join(config.out_dir, MANIFEST),
                json.dumps(manifest, indent=1, sort_keys=True).encode())
  summary = {k: manifest[k] for k in ("splits", "totals", "skipped_reasons", "run")}
  summary.update(out_dir=config.out_dir, manifest=os.path.join(config.out_dir, MANIFEST))
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

  rel = lambda p: os.path.relpath(p, config.raw_dir)
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
  with open(os.path.join(config.out_dir, CLIPS_LOG) + ".tmp-w", "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(os.path.join(config.out_dir, CLIPS_LOG) + ".tmp-w",
             os.path.join(config.out_dir, CLIPS_LOG))
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
      "fingerprint": run.fingerprint,
      "parameters": dict(dataclasses.asdict(config), **config.clip_parameters()),
      "versions": _versions(), "splits": splits, "totals": totals,
      "skipped_reasons": dict(sorted(reasons.items())), "skipped": skipped,
      "warnings": warned, "ignored_files": ignored, "clips_log": CLIPS_LOG,
  }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m data_prep.build", description=__doc__.split("\n")[0])
  p.add_argument("--dataset", required=True, choices=sorted(readers.SCANNERS))
  p.add_argument("--raw_dir", required=True, help="root of the raw layout")
  p.add_argument("--out_dir", required=True, help="shard folder (created)")
  p.add_argument("--resolution", type=int, default=128, choices=(64, 128))
  p.add_argument("--num_workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                 help="worker processes; 0 runs in this process")
  p.add_argument("--clips_per_shard", type=int, default=64)
  p.add_argument("--grid_split", "--split_rule", dest="split_rule", default="speakers",
                 choices=("speakers", "sentences"),
                 help="grid/folder: hold out speakers, or N clips per speaker, as 'test'")
  p.add_argument("--heldout_speakers", default=None,
                 help="comma-separated 'test' speakers (grid default: s1,s2,s20,s22)")
  p.add_argument("--heldout_per_speaker", type=int, default=0,
                 help="with --grid_split=sentences: clips per speaker held out")
  p.add_argument("--detect_every", type=int, default=5, help="face detector stride (frames)")
  p.add_argument("--detect_max_side", type=int, default=640,
                 help="downscale frames for detection to this longer side")
  p.add_argument("--detect_upsample", type=int, default=0)
  p.add_argument("--max_gap", type=int, default=5,
                 help="longest run of faceless frames filled by interpolation")
  p.add_argument("--smooth_sigma", type=float, default=1.0,
                 help="temporal smoothing of the alignment track (frames)")
  p.add_argument("--track_min_correlation", type=float, default=0.5,
                 help="re-detect tracked frames whose face patch correlates less than this")
  p.add_argument("--align_on", default="nose", choices=("nose", "nose_eyes"),
                 help="landmarks the crops are aligned on; nose_eyes is the release's "
                      "choice, which lets blinks move the crop (README, design choices)")
  p.add_argument("--min_frames", type=int, default=8)
  p.add_argument("--no_progress", action="store_true")
  return p


def main(argv: Sequence[str] | None = None) -> dict:
  args = _parser().parse_args(argv)
  if args.split_rule == "sentences" and args.heldout_per_speaker <= 0:
    _parser().error("--grid_split=sentences needs --heldout_per_speaker=N > 0")
  heldout = None if args.heldout_speakers is None else tuple(
      s for s in args.heldout_speakers.split(",") if s)
  summary = build(
      args.dataset, args.raw_dir, args.out_dir, args.resolution, args.num_workers,
      progress=not args.no_progress, clips_per_shard=args.clips_per_shard,
      split_rule=args.split_rule, heldout_speakers=heldout,
      heldout_per_speaker=args.heldout_per_speaker, detect_every=args.detect_every,
      detect_max_side=args.detect_max_side, detect_upsample=args.detect_upsample,
      max_gap=args.max_gap, smooth_sigma=args.smooth_sigma,
      track_min_correlation=args.track_min_correlation, align_on=args.align_on,
      min_frames=args.min_frames)
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
    lines.append(f"  processed {run['clips_processed']} clips in {run['seconds_processing']} s: "
                 f"{run['videos_per_second']} videos/s, {run['frames_per_second']} frames/s")
  lines.append(f"  shards written {run['shards_written']}, kept {run['shards_kept']}; "
               f"details in {summary['manifest']}")
  return "\n".join(lines)


if __name__ == "__main__":
  main(sys.argv[1:])
