"""The entry point end to end: train on generated shards, SIGKILL, resume, equal result."""

import glob
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import grid
from talkface_jax import checkpointing, parallel, train
from talkface_jax.models import talkface
from tests import shard_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir, data_dir, *flags, env=None):
  cmd = [sys.executable, os.path.join(ROOT, "run_experiment.py"),
         "--config=" + os.path.join(ROOT, "configs/grid.py") + ":tiny",
         f"--workdir={workdir}", f"--config.data.dir={data_dir}",
         "--config.model.conv_impl=xla", "--config.train.num_steps=8",
         "--config.train.checkpoint_every=2", *flags]
  return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                        text=True, timeout=900)


def _final_params(workdir):
  """(step, whole train state: parameters, statistics, optimiser) of the newest checkpoint."""
  config = grid.get_config("tiny")
  config.model.conv_impl = "xla"
  model = talkface.build_model(config.model)
  abstract = train.abstract_train_state(config, model, train.make_optimizer(config),
                                        parallel.make_mesh(config))
  ckpt = checkpointing.Checkpointer(str(workdir), config)
  try:
    state, _ = ckpt.restore(ckpt.latest_step(), abstract)
  finally:
    ckpt.close()
  return int(state.step), jax.device_get(state)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data"))
  shard_fixtures.write_tiny_dataset(path, num_train=12, num_test=2, num_frames=10)
  return path


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(data_dir, tmp_path):
  reference = _run(tmp_path / "reference", data_dir)
  assert reference.returncode == 0, reference.stderr[-3000:]
  killed = _run(tmp_path / "resumed", data_dir, env={"TALKFACE_SIGKILL_AT_STEP": "5"})
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  names = os.listdir(tmp_path / "resumed" / "checkpoints")
  saved = [int(n) for n in names if n.isdigit()]  # Not the tmp dirs of unfinished saves.
  assert saved and max(saved) <= 4  # Killed mid-run: steps 6 and 8 were never reached.
  resumed = _run(tmp_path / "resumed", data_dir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resumed from step" in resumed.stderr

  step_a, state_a = _final_params(tmp_path / "reference")
  step_b, state_b = _final_params(tmp_path / "resumed")
  assert step_a == step_b == 8
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               state_a, state_b)
  # TensorBoard events (losses and sample images) and Orbax checkpoints are on disk.
  assert glob.glob(str(tmp_path / "reference" / "events.out.tfevents.*"))
  assert sorted(os.listdir(tmp_path / "reference" / "checkpoints"))[-1] == "8"

  sample = _run(tmp_path / "reference", data_dir, "--mode=sample")
  assert sample.returncode == 0, sample.stderr[-3000:]
  written = glob.glob(str(tmp_path / "reference" / "samples" / "**" / "*"), recursive=True)
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
    (["--mode=eval", "--face=x.jpg"], "need --mode=sample")])
def test_user_errors_print_one_line_and_exit_2(tmp_path, flags, message):
  cmd = [sys.executable, os.path.join(ROOT, "run_experiment.py"), f"--workdir={tmp_path}",
         *flags]
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert lines and lines[-1].startswith("error: ") and message in lines[-1], lines
  assert "Traceback" not in result.stderr
