"""The Beam runner of data_prep.build: equal shards and manifest to the pool runner, retries.

Needs the ``beam`` extra (CI installs it); skipped where apache-beam is not installed.
"""

import glob
import json
import os
import subprocess
import sys

import pytest

from data_prep import build
from tests import fixtures_raw

beam = pytest.importorskip("apache_beam")

RESOLUTION = 64

# pylint: disable=redefined-outer-name


def _shard_bytes(out_dir):
  return {os.path.basename(p): open(p, "rb").read()
          for p in sorted(glob.glob(os.path.join(out_dir, "talkface-*.tfrecord-*")))}


def _records(out_dir):
  """The per-clip log without timings (which differ from run to run)."""
  records = {}
  for line in open(os.path.join(out_dir, build.CLIPS_LOG)):
    record = json.loads(line)
    record.pop("seconds")
    records[record["clip_id"]] = record
  return records


@pytest.fixture(scope="module")
def grid_tree(tmp_path_factory):
  """GRID layout with good clips and every kind of broken file."""
  root = str(tmp_path_factory.mktemp("grid_raw"))
  fixtures_raw.make_grid_tree(root, num_frames=10)
  return root


@pytest.fixture(scope="module")
def grid_pool(grid_tree, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("grid_pool"))
  build.build("grid", grid_tree, out, RESOLUTION, num_workers=0, progress=False,
              clips_per_shard=3)
  return out


def test_beam_gives_the_pool_path_s_shards_and_manifest(grid_tree, grid_pool, tmp_path):
  out = str(tmp_path / "beam")
  summary = build.build("grid", grid_tree, out, RESOLUTION, num_workers=0, progress=False,
                        clips_per_shard=3, runner="beam")
  assert summary["run"]["runner"] == "beam"
  assert summary["run"]["shards_written"] == 4
  assert _shard_bytes(out) == _shard_bytes(grid_pool)
  assert _records(out) == _records(grid_pool)
  pool_manifest = json.load(open(os.path.join(grid_pool, build.MANIFEST)))
  beam_manifest = json.load(open(os.path.join(out, build.MANIFEST)))
  for key in ("splits", "totals", "skipped", "warnings", "ignored_files", "corpus_identity",
              "fingerprint"):
    assert beam_manifest[key] == pool_manifest[key], key
  # A second run finds everything done.
  again = build.build("grid", grid_tree, out, RESOLUTION, num_workers=0, progress=False,
                      clips_per_shard=3, runner="beam")
  assert again["run"]["clips_processed"] == 0 and again["run"]["shards_written"] == 0


def test_beam_retries_a_transient_error(grid_tree, grid_pool, tmp_path, monkeypatch):
  original = build.make_example
  calls = []

  def flaky(source, config):
    calls.append(source.clip_id)
    if source.clip_id == "s3/lgaz8p" and calls.count(source.clip_id) == 1:
      raise OSError("network filesystem hiccup (simulated)")
    return original(source, config)

  # The in-memory DirectRunner runs the DoFns in this process, so the patch is seen.
  monkeypatch.setattr(build, "make_example", flaky)
  out = str(tmp_path / "beam")
  build.build("grid", grid_tree, out, RESOLUTION, num_workers=0, progress=False,
              clips_per_shard=3, runner="beam", retry_delay=0.0)
  assert calls.count("s3/lgaz8p") == 2
  assert _shard_bytes(out) == _shard_bytes(grid_pool)


@pytest.mark.slow
def test_beam_multiprocessing_on_an_lrw_tree(tmp_path):
  raw = str(tmp_path / "raw")
  fixtures_raw.make_lrw_tree(raw, words=("ABOUT", "HOUSE"), num_frames=10)
  with open(os.path.join(raw, "lipread_mp4", "HOUSE", "val", "HOUSE_00002.mp4"), "r+b") as f:
    f.truncate(1500)  # A broken file among them.
  pool = str(tmp_path / "pool")
  build.build("lrw", raw, pool, RESOLUTION, num_workers=2, progress=False)
  out = str(tmp_path / "beam")
  summary = build.build("lrw", raw, out, RESOLUTION, num_workers=2, progress=False,
                        runner="beam")
  assert _shard_bytes(out) == _shard_bytes(pool)
  assert _records(out) == _records(pool)
  assert summary["totals"]["clips_skipped"] == 1


@pytest.mark.slow
def test_command_line_beam_with_worker_processes(grid_tree, grid_pool, tmp_path):
  """``python -m data_prep.build --runner=beam``: worker processes unpickle data_prep.build's
  functions and classes (not __main__'s)."""
  out = str(tmp_path / "beam")
  subprocess.run([sys.executable, "-m", "data_prep.build", "--dataset=grid",
                  f"--raw_dir={grid_tree}", f"--out_dir={out}", f"--resolution={RESOLUTION}",
                  "--clips_per_shard=3", "--num_workers=1", "--runner=beam", "--no_progress"],
                 check=True, capture_output=True)
  assert _shard_bytes(out) == _shard_bytes(grid_pool)


@pytest.mark.slow
def test_beam_equals_pool_on_the_demo_s_synthetic_corpus(tmp_path):
  raw = str(tmp_path / "raw")
  # The corpus is written in a fresh process: once in-process Beam pipelines have run (the
  # tests above), this process hosts gRPC's pollers, and in one CI run an ffmpeg writer's
  # pipe broke here (EPIPE) right after gRPC logged "epoll_wait error: Bad file descriptor".
  subprocess.run([sys.executable, "-m", "data_prep.synthetic", f"--out_dir={raw}",
                  "--num_speakers=1", "--clips_per_speaker=3", "--seed=0"],
                 check=True, capture_output=True)
  outs = {}
  for runner in ("pool", "beam"):
    outs[runner] = str(tmp_path / runner)
    build.build("grid", raw, outs[runner], RESOLUTION, num_workers=0, progress=False,
                runner=runner, split_rule="sentences", heldout_per_speaker=1)
  assert len(_shard_bytes(outs["pool"])) == 2
  assert _shard_bytes(outs["beam"]) == _shard_bytes(outs["pool"])
  assert _records(outs["beam"]) == _records(outs["pool"])
