"""Faults and awkward inputs in pre-processing: retries, kill -9, locks, any filesystem, video
edge cases (rotation, variable frame rate, 4K, audio only), moved corpora, face tracking."""

import glob
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tracemalloc

from etils.epath import register as epath_register
import imageio_ffmpeg
import ml_collections
import numpy as np
import pytest

from data_prep import build
from data_prep import errors
from data_prep import fileio
from data_prep import prepare
from data_prep import video
from tests import fixtures_raw

RESOLUTION = 64
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# pylint: disable=redefined-outer-name


def _shard_bytes(out_dir):
  return {os.path.basename(p): open(p, "rb").read()
          for p in sorted(glob.glob(os.path.join(out_dir, "talkface-*.tfrecord-*")))}


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
  """Four good GRID clips of two speakers (10 frames each, audio in .wav)."""
  root = str(tmp_path_factory.mktemp("small_raw"))
  for i, (speaker, stem) in enumerate([("s1", "aaaa1a"), ("s1", "bbbb2b"), ("s3", "cccc3c"),
                                       ("s3", "dddd4d")]):
    frames = fixtures_raw.face_frames(10, seed=20 + i)[0]
    fixtures_raw.write_video(os.path.join(root, speaker, f"{stem}.mpg"), frames)
    fixtures_raw.write_wav(os.path.join(root, speaker, f"{stem}.wav"),
                           fixtures_raw.tone(0.4, seed=i), 16000)
  return root


@pytest.fixture(scope="module")
def small_clean(small_raw, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("small_clean"))
  build.build("grid", small_raw, out, RESOLUTION, num_workers=0, progress=False,
              clips_per_shard=2)
  return out


# --- transient errors are retried, never cached --------------------------------------------


def test_transient_error_is_retried_and_the_clip_lands_in_the_shards(small_raw, small_clean,
                                                                     tmp_path, monkeypatch):
  original = build.make_example
  calls = []

  def flaky(source, config):
    calls.append(source.clip_id)
    if source.clip_id == "s3/cccc3c" and calls.count("s3/cccc3c") == 1:
      raise OSError(28, "No space left on device (simulated)")
    return original(source, config)

  monkeypatch.setattr(build, "make_example", flaky)
  out = str(tmp_path / "out")
  summary = build.build("grid", small_raw, out, RESOLUTION, num_workers=0, progress=False,
                        clips_per_shard=2, retry_delay=0.0)
  assert calls.count("s3/cccc3c") == 2
  assert summary["totals"]["clips_skipped"] == 0
  assert _shard_bytes(out) == _shard_bytes(small_clean)


def test_persistent_transient_error_fails_naming_the_clip_and_a_rerun_finishes(
    small_raw, small_clean, tmp_path, monkeypatch):
  original = build.make_example

  def broken(source, config):
    if source.clip_id == "s1/bbbb2b":
      raise MemoryError("simulated")
    return original(source, config)

  monkeypatch.setattr(build, "make_example", broken)
  out = str(tmp_path / "out")
  with pytest.raises(build.BuildError, match=r"1 clips failed.*s1/bbbb2b: MemoryError"):
    build.build("grid", small_raw, out, RESOLUTION, num_workers=0, progress=False,
                clips_per_shard=2, retries=1, retry_delay=0.0)
  assert not os.path.exists(os.path.join(out, build.MANIFEST))
  assert not os.path.exists(os.path.join(out, build.WORK_DIR, build.LOCK_FILE))
  monkeypatch.setattr(build, "make_example", original)
  summary = build.build("grid", small_raw, out, RESOLUTION, num_workers=0, progress=False,
                        clips_per_shard=2)
  assert summary["run"]["clips_processed"] == 1  # Only the failed clip: nothing was cached.
  assert _shard_bytes(out) == _shard_bytes(small_clean)


def test_timeout_and_killed_ffmpeg_are_transient(tmp_path):
  path = fixtures_raw.write_video(str(tmp_path / "a.mpg"), fixtures_raw.face_frames(10)[0])
  with pytest.raises(TimeoutError):
    video.read_video(path, timeout=1e-4)
  assert errors.is_transient(TimeoutError()) and errors.is_transient(errors.TransientError())
  assert not errors.is_transient(video.VideoError("corrupt"))


# --- kill -9, locks, empty scans ------------------------------------------------------------


def test_kill_9_mid_build_then_rerun_equals_a_clean_build(small_raw, small_clean, tmp_path):
  out = str(tmp_path / "out")
  clip_dir = os.path.join(out, build.WORK_DIR, "clips")
  command = [sys.executable, "-m", "data_prep.build", "--dataset=grid", f"--raw_dir={small_raw}",
             f"--out_dir={out}", f"--resolution={RESOLUTION}", "--num_workers=0",
             "--clips_per_shard=2", "--no_progress"]
  proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(clip_dir) and any(n.endswith(".json") for n in os.listdir(clip_dir)):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the build finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(out, build.MANIFEST))
  # The dead build's lock is stale (same host, process gone) and is taken over.
  build.build("grid", small_raw, out, RESOLUTION, num_workers=0, progress=False,
              clips_per_shard=2)
  assert _shard_bytes(out) == _shard_bytes(small_clean)
  assert not any(".tmp-" in n for n in os.listdir(out))


def test_a_second_build_into_the_same_folder_is_refused(small_raw, tmp_path):
  out = tmp_path / "out"
  (out / build.WORK_DIR).mkdir(parents=True)
  lock = out / build.WORK_DIR / build.LOCK_FILE
  # A live process on this host holds the folder.
  lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.time()}))
  with pytest.raises(build.BuildError, match="being written by another build"):
    build.build("grid", small_raw, str(out), RESOLUTION, num_workers=0, progress=False)
  # Another host's lock is never taken over (its process cannot be checked from here).
  lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
  with pytest.raises(build.BuildError, match="elsewhere"):
    build.build("grid", small_raw, str(out), RESOLUTION, num_workers=0, progress=False)
  assert lock.exists()


def test_a_scan_without_clips_is_an_error_with_exit_status_2(tmp_path, capsys):
  raw = tmp_path / "raw"
  (raw / "videos").mkdir(parents=True)
  (raw / "videos" / "clip.mp4").write_bytes(b"")  # Not in sN/: outside GRID's layout.
  with pytest.raises(SystemExit) as exit_info:
    build.main(["--dataset=grid", f"--raw_dir={raw}", f"--out_dir={tmp_path / 'out'}",
                "--num_workers=0", "--no_progress"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: no clips found in")
  assert "speaker folders sN/" in err[0]
  assert not (tmp_path / "out").exists()


# --- any filesystem -------------------------------------------------------------------------


def test_atomic_writes_on_local_and_in_memory_filesystems(tmp_path):
  for root in (str(tmp_path), f"ram://{tmp_path.name}"):
    folder = fileio.join(root, "a")
    fileio.makedirs(folder)
    path = fileio.join(folder, "x.json")
    fileio.write_json(path, {"v": 1})
    fileio.write_json(path, {"v": 2})
    assert fileio.read_json(path) == {"v": 2}
    with pytest.raises(RuntimeError):
      with fileio.atomic_path(path) as tmp:
        fileio.write_bytes(tmp, b"half")  # A writer that dies half way ...
        raise RuntimeError("crash")
    assert fileio.read_json(path) == {"v": 2}  # ... leaves the old file and no temp file.
    assert fileio.listdir(folder) == ["x.json"]
    with fileio.local_copy(path) as local:
      with open(local) as f:
        assert json.load(f) == {"v": 2}


def test_build_reads_and_writes_another_filesystem(small_raw, small_clean, monkeypatch):
  """raw_dir and out_dir on TensorFlow's in-memory filesystem (as gs:// would be)."""
  # TFDS writes its metadata through etils.epath, which knows gs:// but not ram://; give ram://
  # the class gs:// has (tf.io.gfile underneath).
  monkeypatch.setitem(epath_register._URI_PREFIXES_TO_CLS, "ram://",  # pylint: disable=protected-access
                      epath_register._URI_PREFIXES_TO_CLS["gs://"])  # pylint: disable=protected-access
  raw = "ram://raw_small"
  for path in glob.glob(os.path.join(small_raw, "**", "*.*"), recursive=True):
    target = fileio.join(raw, os.path.relpath(path, small_raw))
    fileio.makedirs(os.path.dirname(target))
    fileio.write_bytes(target, open(path, "rb").read())
  out = "ram://out_small"
  summary = build.build("grid", raw, out, RESOLUTION, num_workers=0, progress=False,
                        clips_per_shard=2)
  assert summary["totals"]["clips_used"] == 4
  for name, data in _shard_bytes(small_clean).items():
    assert fileio.read_bytes(fileio.join(out, name)) == data
  assert fileio.exists(fileio.join(out, "dataset_info.json"))


# --- video edge cases -----------------------------------------------------------------------


def _ffmpeg(*args):
  subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", *args], check=True,
                 capture_output=True)


def test_phone_video_with_rotation_metadata_comes_out_upright(tmp_path):
  frames = fixtures_raw.face_frames(10, size=(240, 200))[0]
  plain = fixtures_raw.write_video(str(tmp_path / "plain.mp4"), frames)
  rotated = str(tmp_path / "rotated.mp4")
  _ffmpeg("-display_rotation", "90", "-i", plain, "-c", "copy", rotated)
  decoded = video.read_video(rotated)
  assert decoded.frames.shape == (10, 240, 200, 3) and decoded.rotation == 90
  # Upright: the stored frame turned by 90 degrees counter-clockwise.
  reference = video.read_video(plain).frames
  np.testing.assert_allclose(decoded.frames[3].astype(float),
                             np.rot90(reference[3]).astype(float), atol=3)


def test_variable_frame_rate_is_resampled_by_timestamps(tmp_path):
  # 1 s at 30 fps then 2 s at 10 fps, concatenated without re-encoding: variable frame rate.
  parts = []
  for i, rate in enumerate((30, 10)):
    part = str(tmp_path / f"p{i}.mp4")
    _ffmpeg("-f", "lavfi", "-i", f"testsrc=size=64x48:rate={rate}", "-t", str(1 + i),
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-video_track_timescale", "30000", part)
    parts.append(part)
  listing = tmp_path / "list.txt"
  listing.write_text("".join(f"file '{p}'\n" for p in parts))
  vfr = str(tmp_path / "vfr.mp4")
  _ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", vfr)
  decoded = video.read_video(vfr)
  assert abs(len(decoded.frames) - 75) <= 1  # 3 s at 25 fps, not 50 frames at the first rate


def test_4k_video_is_downscaled_with_bounded_memory(tmp_path):
  path = str(tmp_path / "uhd.mp4")
  _ffmpeg("-f", "lavfi", "-i", "testsrc=size=3840x2160:rate=25", "-t", "0.4", "-c:v",
          "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path)
  tracemalloc.start()
  decoded = video.read_video(path, max_side=1280)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert decoded.frames.shape == (10, 720, 1280, 3)
  assert decoded.source_size == (3840, 2160)
  # Frames are streamed one at a time: the peak is the 1280 px clip (twice, while stacked),
  # far under the 4K clip's 249 MB.
  assert peak < 2.5 * decoded.frames.nbytes


def test_audio_only_mp4_is_a_recorded_skip(tmp_path):
  raw = tmp_path / "raw"
  fixtures_raw.write_video(str(raw / "alice" / "take1.mp4"), fixtures_raw.face_frames(10)[0],
                           audio=fixtures_raw.tone(0.4))
  wav = fixtures_raw.write_wav(str(tmp_path / "a.wav"), fixtures_raw.tone(0.4), 16000)
  _ffmpeg("-i", wav, "-c:a", "aac", str(raw / "alice" / "voice.mp4"))
  with pytest.raises(video.VideoError, match="no video stream"):
    video.read_video(str(raw / "alice" / "voice.mp4"))
  summary = build.build("folder", str(raw), str(tmp_path / "out"), RESOLUTION, num_workers=0,
                        progress=False)
  manifest = json.load(open(tmp_path / "out" / build.MANIFEST))
  assert summary["totals"]["clips_used"] == 1
  assert manifest["skipped"][0]["clip_id"] == "alice/voice"
  assert "has no video stream" in manifest["skipped"][0]["reason"]


# --- moved corpora --------------------------------------------------------------------------


def _config(raw_dir, out_dir):
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict({"resolution": RESOLUTION})
  config.data = ml_collections.ConfigDict({
      "dataset": "grid", "raw_dir": raw_dir, "dir": out_dir, "num_workers": 0,
      "clips_per_shard": 2, "grid_split": "speakers"})
  return config


def test_shards_stay_usable_when_the_corpus_is_moved_or_symlinked(small_raw, small_clean,
                                                                  tmp_path):
  out = str(tmp_path / "shards")
  shutil.copytree(small_clean, out)
  assert prepare.existing_build(_config(small_raw, out)) is not None  # built from here
  link = str(tmp_path / "link")
  os.symlink(small_raw, link)
  assert prepare.existing_build(_config(link, out)) is not None
  moved = str(tmp_path / "moved")
  shutil.copytree(small_raw, moved)
  assert prepare.existing_build(_config(moved, out)) is not None
  # A rebuild from the moved corpus keeps every shard.
  summary = build.build("grid", moved, out, RESOLUTION, num_workers=0, progress=False,
                        clips_per_shard=2)
  assert summary["run"]["clips_processed"] == 0 and summary["run"]["shards_written"] == 0
  # Other content under the same names is another corpus.
  with open(os.path.join(moved, "s3", "cccc3c.wav"), "ab") as f:
    f.write(b"\0" * 64)
  with pytest.raises(ValueError, match="corpus"):
    prepare.existing_build(_config(moved, out))


# --- face tracking over a clip --------------------------------------------------------------


def test_frame_0_always_shows_a_detected_face(tmp_path):
  frames = np.concatenate([np.zeros((6, 200, 240, 3), np.uint8),  # black, like a fade-in
                           fixtures_raw.face_frames(14, seed=3)[0]])
  raw = tmp_path / "raw"
  fixtures_raw.write_video(str(raw / "bob" / "film.mp4"), frames,
                           audio=fixtures_raw.tone(20 / 25))
  build.build("folder", str(raw), str(tmp_path / "out"), RESOLUTION, num_workers=0,
              progress=False)
  record = json.loads(open(tmp_path / "out" / build.CLIPS_LOG).readline())
  assert record["status"] == "used" and record["num_frames"] == 14
  assert record["face"]["kept_frames"] == [6, 20]
  assert "kept frames 6-19 of 20 (no face in frames 0-5)" in record["warnings"]


def test_another_face_after_a_cut_is_not_mixed_in(tmp_path):
  first = fixtures_raw.face_frames(16, seed=4)[0]
  # After the cut another shot: the face mirrored, smaller, elsewhere in the frame.
  second = fixtures_raw.face_frames(12, seed=5, face_px=80, motion=2)[0][:, :, ::-1]
  raw = tmp_path / "raw"
  fixtures_raw.write_video(str(raw / "bob" / "film.mp4"), np.concatenate([first, second]),
                           audio=fixtures_raw.tone(28 / 25))
  build.build("folder", str(raw), str(tmp_path / "out"), RESOLUTION, num_workers=0,
              progress=False)
  record = json.loads(open(tmp_path / "out" / build.CLIPS_LOG).readline())
  assert record["status"] == "used"
  assert record["face"]["kept_frames"] == [0, 16]
  assert any("shot cut or other face" in w for w in record["warnings"])


def test_atomic_path_keeps_an_extension_for_tools_that_need_one(tmp_path):
  target = str(tmp_path / "clip.mp4")
  with fileio.atomic_path(target, suffix=".mp4") as tmp:
    assert tmp.endswith(".mp4") and ".tmp-" in tmp
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=25", "-t", "0.2", "-pix_fmt",
            "yuv420p", tmp)
  assert os.listdir(tmp_path) == ["clip.mp4"]
  assert video.read_video(target).frames.shape == (5, 32, 32, 3)


def test_json_ready_gives_strict_json():
  value = {"a": np.float32(0.5), "b": [1.0, math.nan, np.inf], "c": (np.int64(3), "s"),
           "d": np.array([[1.0, np.nan]]), "e": {"f": -math.inf, "g": None}}
  ready = fileio.json_ready(value)
  assert ready == {"a": 0.5, "b": [1.0, None, None], "c": [3, "s"], "d": [[1.0, None]],
                   "e": {"f": None, "g": None}}
  json.dumps(ready, allow_nan=False)  # Strict JSON: would raise on a NaN left behind.
