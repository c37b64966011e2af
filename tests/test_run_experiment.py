"""The entry point end to end: train on generated shards, then sample; user errors."""

import glob
import os
import subprocess
import sys

import pytest

from talkface_jax import host_memory
from tests import shard_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir, data_dir, *flags):
  cmd = [sys.executable, os.path.join(ROOT, "run_experiment.py"),
         "--config=" + os.path.join(ROOT, "configs/grid.py") + ":tiny",
         f"--workdir={workdir}", f"--config.data.dir={data_dir}",
         "--config.model.conv_impl=xla", "--config.train.num_steps=8",
         "--config.train.checkpoint_every=2", *flags]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data"))
  shard_fixtures.write_tiny_dataset(path, num_train=12, num_test=2, num_frames=10)
  return path


@pytest.mark.slow
def test_run_trains_checkpoints_and_samples(data_dir, tmp_path):
  # Killed and resumed runs ending with the uninterrupted run's parameters: test_reliability_
  # training.py (SIGKILL at random steps, SIGTERM, a damaged checkpoint, a full disk).
  workdir = tmp_path / "work"
  # config.host_malloc=auto on a CPU: where the kernel's THP mode is madvise, the run starts
  # itself again with glibc's huge-page tunable (talkface_jax/host_memory.py) and trains as
  # usual.
  run = _run(workdir, data_dir, "--config.host_malloc=auto")
  assert run.returncode == 0, run.stderr[-3000:]
  with open(workdir / "log" / "talkface.INFO", encoding="utf-8") as f:
    log = f.read()
  expected = ("host_malloc=auto: GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
              if host_memory.thp_mode() == "madvise" else "host_malloc=auto: glibc's defaults")
  assert expected in log
  # TensorBoard events (losses and sample images) and Orbax checkpoints are on disk.
  assert glob.glob(str(workdir / "events.out.tfevents.*"))
  assert sorted(os.listdir(workdir / "checkpoints"))[-1] == "8"

  sample = _run(workdir, data_dir, "--mode=sample")
  assert sample.returncode == 0, sample.stderr[-3000:]
  written = glob.glob(str(workdir / "samples" / "**" / "*"), recursive=True)
  assert any(p.endswith(".mp4") for p in written) and any(p.endswith(".png") for p in written)


def test_missing_data_stops_with_a_clear_error(tmp_path):
  result = _run(tmp_path / "work", str(tmp_path / "no_shards_here"))
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.startswith("error: ") and "no pre-processed shards" in result.stderr
  assert "python -m data_prep.build" in result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--mode=sample", "--face=/no/such/photo.jpg", "--audio=/no/such.wav"],
     "config.json: no such file"),
    (["--mode=bogus"], "flag --mode"),
    (["--mode=eval", "--face=x.jpg"], "need --mode=sample"),
    (["--config=" + os.path.join(ROOT, "configs/grid.py") + ":tiny",
      "--config.host_malloc=keep"], "config.host_malloc must be one of auto, hugepages")])
def test_user_errors_print_one_line_and_exit_2(tmp_path, flags, message):
  cmd = [sys.executable, os.path.join(ROOT, "run_experiment.py"), f"--workdir={tmp_path}",
         *flags]
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert lines and lines[-1].startswith("error: ") and message in lines[-1], lines
  assert "Traceback" not in result.stderr
