"""Tests of data_prep.readers and data_prep.build: layouts, bad inputs, shards, resume, CLI."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import build
from data_prep import readers
from tests import fixtures_raw

RESOLUTION = 64


@pytest.fixture(scope="module")
def grid_raw(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("grid_raw"))
  kinds = fixtures_raw.make_grid_tree(root)
  return root, kinds


@pytest.fixture(scope="module")
def grid_built(grid_raw, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("grid_out"))
  summary = build.build("grid", grid_raw[0], out, RESOLUTION, num_workers=0, progress=False,
                        clips_per_shard=3)
  with open(os.path.join(out, build.MANIFEST)) as f:
    manifest = json.load(f)
  return out, summary, manifest


def _shard_bytes(out_dir):
  return {os.path.basename(p): open(p, "rb").read()
          for p in sorted(glob.glob(os.path.join(out_dir, "talkface-*.tfrecord-*")))}


# --- readers -------------------------------------------------------------------------------


def test_grid_scan_pairs_video_audio_alignment(grid_raw):
  root, kinds = grid_raw
  scan = readers.scan("grid", root)
  clips = {c.clip_id: c for c in scan.clips}
  assert sorted(clips) == sorted(kinds)
  assert clips["s1/bbaf2n"].align_path.endswith(os.path.join("align", "s1", "bbaf2n.align"))
  assert clips["s1/bbaf2n"].audio_path.endswith(os.path.join("s1", "bbaf2n.wav"))
  assert clips["s3/lgaz8p"].audio_path.endswith(os.path.join("s3", "audio", "lgaz8p.wav"))
  assert clips["s3/lgaz8p"].align_path.endswith(os.path.join("s3", "align", "lgaz8p.align"))
  assert clips["s3/fps30x"].audio_path is None  # its audio is inside the mp4
  assert scan.ignored == [(os.path.join("s3", "README.txt"), "no matching video")]
  words = readers.read_alignment(clips["s1/bbaf2n"].align_path)
  assert readers.transcript(words) == "bin blue" and words[0][0] == 0.0


def test_grid_alignment_lookup_order(tmp_path):
  for rel in ("s4/x.mpg", "s4/x.align", "align/s4/x.align", "align/x.align", "s4/align/x.align"):
    os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
    (tmp_path / rel).write_text("0 1 sil\n")
  order = ["s4/align/x.align", "s4/x.align", "align/s4/x.align", "align/x.align"]
  for expected in order:
    (clip,) = readers.scan("grid", str(tmp_path)).clips
    assert clip.align_path == str(tmp_path / expected)
    os.remove(tmp_path / expected)
  assert readers.scan("grid", str(tmp_path)).clips[0].align_path is None


@pytest.mark.parametrize("prefix,root_inside", [(True, False), (True, True), (False, False)])
def test_lrw_scan_with_or_without_lipread_mp4(tmp_path, prefix, root_inside):
  # Empty placeholder files: scanning reads no contents.
  base = tmp_path / "lipread_mp4" if prefix else tmp_path
  for split in ("train", "val", "test"):
    os.makedirs(base / "ABOUT" / split)
    (base / "ABOUT" / split / "ABOUT_00001.mp4").write_bytes(b"")
    (base / "ABOUT" / split / "ABOUT_00001.txt").write_text("Word: ABOUT\n")
  (tmp_path / "notes.md").write_text("x")
  root = base if root_inside else tmp_path
  scan = readers.scan("lrw", str(root))
  assert [c.clip_id for c in scan.clips] == [
      "ABOUT/test/ABOUT_00001", "ABOUT/train/ABOUT_00001", "ABOUT/val/ABOUT_00001"]
  assert {c.split for c in scan.clips} == {"train", "val", "test"}
  assert all(c.meta_path and c.speaker == "ABOUT" for c in scan.clips)
  assert [p for p, _ in scan.ignored] == ([] if root_inside else ["notes.md"])


def test_splits_by_speaker_and_by_sentence(grid_raw):
  scan = readers.scan("grid", grid_raw[0])
  config = build.BuildConfig("grid", "", "")
  by_speaker = build.assign_splits(scan.clips, config)
  assert {c for c, s in by_speaker.items() if s == "test"} == {"s1/bbaf2n"}
  sentences = build.BuildConfig("grid", "", "", split_rule="sentences", heldout_per_speaker=2)
  split = build.assign_splits(scan.clips, sentences)
  assert split == build.assign_splits(list(reversed(scan.clips)), sentences)  # deterministic
  held = [c for c, s in split.items() if s == "test"]
  assert sorted(c.split("/")[0] for c in held) == ["s1", "s3", "s3"]  # s1 has only 1 clip


def test_shard_plan_is_balanced_and_deterministic():
  splits = {f"c{i:03d}": "train" if i % 4 else "test" for i in range(50)}
  plan = build.plan_shards(splits, clips_per_shard=8)
  train = [s for s in plan if s.split == "train"]
  assert len(train) == 5 and {len(s.clip_ids) for s in train} <= {7, 8}
  assert sorted(i for s in plan for i in s.clip_ids) == sorted(splits)
  train_ids = sorted(c for c, split in splits.items() if split == "train")
  assert train[1].clip_ids == tuple(train_ids[1::5])  # train clip i -> shard i % 5
  assert plan == build.plan_shards(dict(reversed(list(splits.items()))), 8)


# --- the GRID build: bad inputs, manifest, round trip ---------------------------------------


def test_bad_inputs_are_skipped_or_kept_with_reasons(grid_raw, grid_built):
  _, kinds = grid_raw
  out, summary, manifest = grid_built
  skipped = {s["clip_id"]: s["reason"] for s in manifest["skipped"]}
  assert set(skipped) == {c for c, k in kinds.items() if k.startswith("skip")}
  assert skipped["s3/corrup"].startswith("corrupt or unreadable video")
  assert skipped["s3/noaudx"].startswith("missing audio")
  assert skipped["s3/nofacx"].startswith("no usable face")
  assert skipped["s3/halfau"].startswith("audio and video lengths differ: audio 0.240 s, "
                                         "video 0.480 s")
  warnings = {w["clip_id"]: " ".join(w["warnings"]) for w in manifest["warnings"]}
  assert "silent audio" in warnings["s3/sgbc1a"]
  assert "shorter than the video, zero-padded" in warnings["s3/pbwxzs"]
  assert "2 faces" in warnings["s3/twofac"]
  assert "frame rate 30 resampled to 25" in warnings["s3/fps30x"]
  assert manifest["ignored_files"] == [{"path": os.path.join("s3", "README.txt"),
                                        "reason": "no matching video"}]
  totals = manifest["totals"]
  assert totals["files_found"] == (totals["files_used"] + totals["files_of_skipped_clips"] +
                                   totals["files_ignored"]) == 21
  assert summary["splits"]["test"]["clips"] == 1 and summary["splits"]["train"]["clips"] == 5
  assert manifest["splits"]["train"]["speakers"] == {"s3": 5}
  # What the evaluation reads to tell seen from unseen speakers (no manifest: not known).
  assert build.split_speakers(out) == {split: sorted(entry["speakers"])
                                       for split, entry in manifest["splits"].items()}
  assert build.split_speakers(out)["train"] == ["s3"]
  assert build.split_speakers(os.path.dirname(out)) is None
  assert manifest["versions"]["dlib"] and manifest["parameters"]["resolution"] == RESOLUTION


def test_clip_log_records_every_clip(grid_raw, grid_built):
  out, _, _ = grid_built
  with open(os.path.join(out, build.CLIPS_LOG)) as f:
    records = {r["clip_id"]: r for r in map(json.loads, f)}
  assert set(records) == set(grid_raw[1])
  assert records["s3/fps30x"]["num_frames"] == 12  # 0.48 s at 30 fps -> 12 frames at 25
  assert records["s3/pbwxzs"]["audio_samples_added"] == 2 * 640
  assert records["s1/bbaf2n"]["transcript"] == "bin blue"
  assert records["s1/bbaf2n"]["split"] == "test"


def test_shards_round_trip_through_tfds(grid_raw, grid_built):
  out, _, manifest = grid_built
  builder = tfds.builder_from_directory(out)
  assert set(builder.info.splits) == {"train", "test"}
  assert builder.info.splits["train"].num_shards == 3
  decoded = {}
  for split in ("train", "test"):
    for example in tfds.as_numpy(builder.as_dataset(split=split)):
      decoded[example["clip_id"].decode()] = example
  assert len(decoded) == 6
  config = build.BuildConfig.create(dataset="grid", raw_dir=grid_raw[0], out_dir=out,
                                    resolution=RESOLUTION)
  sources = {c.clip_id: c for c in readers.scan("grid", grid_raw[0]).clips}
  for clip_id in ("s1/bbaf2n", "s3/pbwxzs"):
    expected, _ = build.make_example(sources[clip_id], config)
    got = decoded[clip_id]
    assert got["speaker"].decode() == expected["speaker"]
    for key in ("frames", "mfcc", "mouth_landmarks", "audio"):
      np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  got = decoded["s3/pbwxzs"]
  assert got["frames"].shape == (12, RESOLUTION, RESOLUTION, 3)
  assert got["mfcc"].shape == (12, 28, 12) and got["audio"].shape == (12 * 640,)
  assert not got["audio"][10 * 640:].any()  # the padded end


def test_interrupted_build_resumes_to_identical_shards(grid_raw, grid_built, tmp_path,
                                                       monkeypatch):
  out = str(tmp_path / "out")
  calls = []
  original = build.process_clip

  def crash_after_five(*args):
    if len(calls) == 5:
      raise KeyboardInterrupt("simulated interruption")
    calls.append(args[0].clip_id)
    return original(*args)

  monkeypatch.setattr(build, "process_clip", crash_after_five)
  with pytest.raises(KeyboardInterrupt):
    build.build("grid", grid_raw[0], out, RESOLUTION, num_workers=0, progress=False,
                clips_per_shard=3)
  # Nothing looks complete: no metadata, no manifest, no temp files; some shards finished.
  names = os.listdir(out)
  assert "dataset_info.json" not in names and build.MANIFEST not in names
  assert not any(".tmp-" in n for n in names)
  partial = _shard_bytes(out)
  assert 0 < len(partial) < 4

  monkeypatch.setattr(build, "process_clip", original)
  seen = []
  monkeypatch.setattr(build, "process_clip", lambda *a: seen.append(a[0].clip_id) or original(*a))
  summary = build.build("grid", grid_raw[0], out, RESOLUTION, num_workers=0, progress=False,
                        clips_per_shard=3)
  assert not set(seen) & set(calls)  # finished clips were not redone
  assert len(seen) == 10 - 5
  assert summary["run"]["shards_kept"] == len(partial)
  assert _shard_bytes(out) == _shard_bytes(grid_built[0])
  tfds.builder_from_directory(out)  # complete now
  assert not os.listdir(os.path.join(out, build.WORK_DIR, "clips"))

  seen.clear()
  again = build.build("grid", grid_raw[0], out, RESOLUTION, num_workers=0, progress=False,
                      clips_per_shard=3)
  assert not seen and again["run"]["shards_written"] == 0


def test_changed_plan_or_parameters_rebuild_and_remove_stale_shards(grid_raw, grid_built,
                                                                   tmp_path):
  out = str(tmp_path / "out")
  fixtures_raw.copy_tree(grid_built[0], out)
  summary = build.build("grid", grid_raw[0], out, RESOLUTION, num_workers=0, progress=False,
                        clips_per_shard=10)
  # The test split's single shard is the same under the new plan and is kept.
  assert summary["run"]["clips_processed"] == 9 and summary["run"]["shards_kept"] == 1
  assert sorted(_shard_bytes(out)) == ["talkface-test.tfrecord-00000-of-00001",
                                       "talkface-train.tfrecord-00000-of-00001"]
  assert len(summary["run"]["stale_shards_removed"]) == 3
  # A parameter that changes the examples invalidates every shard.
  summary = build.build("grid", grid_raw[0], out, RESOLUTION, num_workers=0, progress=False,
                        clips_per_shard=10, smooth_sigma=0.0)
  assert summary["run"]["clips_processed"] == 10 and summary["run"]["shards_kept"] == 0


# --- LRW through the worker pool, the folder layout through the CLI -------------------------


@pytest.mark.slow
def test_lrw_build_with_worker_pool(tmp_path):
  raw = str(tmp_path / "raw")
  ids = fixtures_raw.make_lrw_tree(raw, words=("ABOUT",))
  out = str(tmp_path / "out")
  summary = build.build("lrw", raw, out, RESOLUTION, num_workers=2, progress=False)
  builder = tfds.builder_from_directory(out)
  assert set(builder.info.splits) == {"train", "val", "test"}
  got = {split: [e["clip_id"].decode() for e in tfds.as_numpy(builder.as_dataset(split=split))]
         for split in ("train", "val", "test")}
  assert sorted(sum(got.values(), [])) == sorted(ids)
  assert got["val"] == ["ABOUT/val/ABOUT_00002"]
  assert summary["run"]["videos_per_second"] > 0
  with open(os.path.join(out, build.MANIFEST)) as f:
    manifest = json.load(f)
  assert manifest["totals"]["files_used"] == 6  # 3 videos + 3 metadata .txt
  assert build.split_speakers(out) is None  # LRW's 'speaker' is the word: people unknown.


def test_cli_on_a_plain_folder(tmp_path, capsys):
  raw = tmp_path / "raw"
  frames = fixtures_raw.face_frames(10, seed=11)[0]
  fixtures_raw.write_video(str(raw / "alice" / "take1.mp4"), frames,
                           audio=fixtures_raw.tone(0.4))
  fixtures_raw.write_video(str(raw / "alice" / "take2.mp4"), frames[::-1])
  fixtures_raw.write_wav(str(raw / "alice" / "take2.wav"), fixtures_raw.tone(0.4, 22050), 22050)
  (raw / "alice" / "notes.csv").write_text("a,b\n")
  out = tmp_path / "out"
  summary = build.main(["--dataset=folder", f"--raw_dir={raw}", f"--out_dir={out}",
                        "--resolution=64", "--num_workers=0", "--no_progress",
                        "--heldout_speakers=bob"])
  printed = capsys.readouterr().out
  assert "train: 2 clips (20 frames)" in printed and "1 ignored" in printed
  assert summary["splits"]["train"]["speakers"] == {"alice": 2}
  records = [json.loads(line) for line in open(out / build.CLIPS_LOG)]
  assert {r["clip_id"]: r["audio_source"] for r in records} == {"alice/take1": "video",
                                                               "alice/take2": "wav"}
  builder = tfds.builder_from_directory(str(out))
  assert builder.info.splits["train"].num_examples == 2
