"""Reliability catalogue (docs/RELIABILITY.md): training faults.

Fast tests drive ``checkpointing``, ``input_pipeline`` and ``train`` in process; the slow ones
run ``run_experiment.py`` on generated shards with the seconds-per-step model, interrupt it
(SIGKILL, SIGTERM, damaged files, another device count) and check that the resumed run ends
with the parameters of an uninterrupted one.
"""

import glob
import json
import logging as py_logging
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils

from configs import grid
from talkface_jax import checkpointing, errors, input_pipeline, parallel, train
from talkface_jax.models import talkface
from tests import shard_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 8


def _tiny_config(**model):
  config = grid.get_config("tiny")
  config.model.conv_impl = "xla"
  config.train.checkpoint_every = 2
  for key, value in model.items():
    setattr(config.model, key, value)
  return config


def _abstract(config):
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  tx = train.make_optimizer(config)
  return train.abstract_train_state(config, model, tx, mesh), (model, tx, mesh)


@pytest.fixture(scope="module")
def saved_workdir(tmp_path_factory):
  """A workdir with checkpoints at steps 2 and 4 (state.step set to the step saved)."""
  config = _tiny_config()
  abstract, (model, tx, mesh) = _abstract(config)
  state = train.create_train_state(config, model, tx, mesh)
  workdir = str(tmp_path_factory.mktemp("saved"))
  ckpt = checkpointing.Checkpointer(workdir, config)
  for step, examples in ((2, 8), (4, 16)):
    ckpt.save(step, state.replace(step=jax.numpy.asarray(step, jax.numpy.int32)),
              input_pipeline.Position(0, examples), force=True)
  ckpt.wait()
  ckpt.close()
  return workdir


def _copy(workdir, tmp_path):
  return shutil.copytree(workdir, str(tmp_path / "work"))


def _damage_data(step_dir):
  """Truncates every data file of a step's state (a bad disk or a partial copy). Truncating
  only the largest one was not always enough: which file holds what varies from run to run,
  and the restore sometimes read none of the truncated part."""
  files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
  assert files, step_dir
  for path in files:
    _truncate(path)


def _truncate(path):
  os.truncate(path, os.path.getsize(path) // 2)


# -------------------------------------------------------------------------------------------------
# Checkpoints (fast).
# -------------------------------------------------------------------------------------------------


def test_damaged_latest_checkpoint_warns_and_resumes_from_the_previous(saved_workdir, tmp_path,
                                                                       caplog):
  workdir = _copy(saved_workdir, tmp_path)
  _damage_data(os.path.join(workdir, "checkpoints", "4"))
  config = _tiny_config()
  abstract, _ = _abstract(config)
  ckpt = checkpointing.Checkpointer(workdir, config)
  with caplog.at_level(py_logging.WARNING):
    step, state, position = ckpt.restore_latest(abstract, set_aside_damaged=True)
  assert step == 2 and int(state.step) == 2 and position == input_pipeline.Position(0, 8)
  assert re.search(r"checkpoints/4 is damaged", caplog.text), caplog.text
  # Set aside, not deleted, so that step 4 can be saved again.
  assert os.path.isdir(os.path.join(workdir, checkpointing.DAMAGED_DIR, "4"))
  assert ckpt.manager.all_steps() == [2]
  ckpt.close()


@pytest.mark.parametrize("damage", ["truncated", "metadata", "missing_item"])
def test_no_usable_checkpoint_is_one_clear_error(saved_workdir, tmp_path, damage):
  workdir = _copy(saved_workdir, tmp_path)
  for step in ("2", "4"):
    step_dir = os.path.join(workdir, "checkpoints", step)
    if damage == "truncated":
      _damage_data(step_dir)
    elif damage == "metadata":
      _truncate(os.path.join(step_dir, "state", "_METADATA"))
    else:
      shutil.rmtree(os.path.join(step_dir, "input"))
  config = _tiny_config()
  ckpt = checkpointing.Checkpointer(workdir, config)
  with pytest.raises(checkpointing.CheckpointError) as error:
    ckpt.restore_latest(_abstract(config)[0])
  message = str(error.value)
  assert isinstance(error.value, errors.UserError) and "\n" not in message
  assert "no usable checkpoint" in message and "step 4:" in message and "step 2:" in message
  ckpt.close()


def test_checkpoint_of_another_model_names_the_differing_arrays(saved_workdir):
  config = _tiny_config(g_dim=24)  # The saved model has g_dim 16.
  ckpt = checkpointing.Checkpointer(saved_workdir, config)
  with pytest.raises(checkpointing.CheckpointMismatchError) as error:
    ckpt.restore_latest(_abstract(config)[0], set_aside_damaged=True)
  message = str(error.value)
  assert "checkpoints/4 holds another model" in message and "\n" not in message
  # Parameters are listed first, with both shapes.
  assert re.search(r"shape \(checkpoint vs config\): params/\S+ \([\d, ]+\) vs \([\d, ]+\)",
                   message), message
  assert ckpt.manager.all_steps() == [2, 4]  # Nothing set aside: the checkpoints are fine.
  ckpt.close()


def test_checkpoint_with_another_optimizer_names_its_state(saved_workdir):
  config = _tiny_config()
  config.optim.name = "adam"  # RMSprop's 'nu' only; Adam adds 'mu' and a count.
  ckpt = checkpointing.Checkpointer(saved_workdir, config)
  with pytest.raises(checkpointing.CheckpointMismatchError, match="only in the config: .*opt_state"):
    ckpt.restore_latest(_abstract(config)[0])
  ckpt.close()


def test_resume_with_another_process_count_starts_the_next_epoch(saved_workdir, tmp_path):
  # Same count: each process continues exactly; another count: every process starts the
  # epoch after the furthest one saved, from its start.
  saved = [[3, 40], [4, 8]]
  assert checkpointing.resumed_position(saved, 1, 2) == input_pipeline.Position(4, 8)
  assert checkpointing.resumed_position(saved, 0, 1) == input_pipeline.Position(5, 0)
  assert checkpointing.resumed_position(saved, 3, 4) == input_pipeline.Position(5, 0)
  # A checkpoint written by two processes (two saved positions) restores in one.
  workdir = _copy(saved_workdir, tmp_path)
  with open(os.path.join(workdir, "checkpoints", "4", "input", "metadata"), "w") as f:
    f.write('{"positions": [[3, 40], [4, 8]]}')
  config = _tiny_config()
  ckpt = checkpointing.Checkpointer(workdir, config)
  step, _, position = ckpt.restore_latest(_abstract(config)[0])
  assert step == 4 and position == input_pipeline.Position(5, 0)
  ckpt.close()


def test_full_disk_during_a_save_is_a_clear_error_and_keeps_the_last_checkpoint(saved_workdir,
                                                                                tmp_path):
  workdir = _copy(saved_workdir, tmp_path)
  config = _tiny_config()
  abstract, _ = _abstract(config)
  ckpt = checkpointing.Checkpointer(workdir, config)
  _, state, _ = ckpt.restore_latest(abstract)
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))  # Files over 16 KB: EFBIG.
  try:
    with pytest.raises(checkpointing.CheckpointError) as error:
      ckpt.save(6, state, input_pipeline.Position(0, 24), force=True)
      ckpt.wait()
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
  message = str(error.value)
  assert "cannot write step 6" in message and "step 4, left intact" in message, message
  assert "\n" not in message
  ckpt.close()
  ckpt = checkpointing.Checkpointer(workdir, config)  # A rerun resumes from step 4.
  step, state, _ = ckpt.restore_latest(abstract)
  assert step == 4 and int(state.step) == 4
  ckpt.close()


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(errors.UserError, match=r"workdir .*a_file/run: cannot write there"):
    train.check_writable(str(blocker / "run"))


# -------------------------------------------------------------------------------------------------
# Shards and signals (fast).
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_shards_damaged_mid_run_are_a_clear_error(tmp_path, damage):
  data_dir = str(tmp_path / "data")
  shard_fixtures.write_tiny_dataset(data_dir, num_train=12, num_test=2, num_frames=10)
  config = _tiny_config()
  config.data.dir = data_dir
  pipeline = input_pipeline.InputPipeline(config, 4)
  batches = pipeline.train_batches()
  next(batches)  # Reading has started (the first epoch is buffered whole).
  for path in glob.glob(os.path.join(data_dir, "*train.tfrecord*")):
    if damage == "deleted":
      os.remove(path)
    else:
      _truncate(path)
  with pytest.raises(input_pipeline.DataError) as error:
    for _ in range(6):  # Into the next epoch, which reads the files again.
      next(batches)
  message = str(error.value)
  assert message.startswith(f"shards in {data_dir}: cannot be read") and "\n" not in message
  assert isinstance(error.value, errors.UserError)


def test_training_stopped_by_unreadable_shards_keeps_the_steps_trained(tmp_path, monkeypatch):
  data_dir = str(tmp_path / "data")
  shard_fixtures.write_tiny_dataset(data_dir, num_train=12, num_test=2, num_frames=10)
  config = _tiny_config()
  config.data.dir = data_dir
  config.train.checkpoint_every = 100  # No periodic save before the failure.
  config.train.num_steps = 10
  config.data.device_prefetch = 1  # The failing read comes right after the third step.
  real_batches = input_pipeline.InputPipeline.train_batches

  def failing_after_three(self, start=input_pipeline.Position()):
    stream = real_batches(self, start)
    for _ in range(3):
      yield next(stream)
    raise input_pipeline.DataError(f"shards in {data_dir}: cannot be read (test)")

  monkeypatch.setattr(input_pipeline.InputPipeline, "train_batches", failing_after_three)
  with pytest.raises(input_pipeline.DataError):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  step, state, position = _final_state(tmp_path / "work", config)
  # Step 1 is Orbax's initial save; step 3, the last one trained, is saved on the way out.
  assert step == 3 and int(state.step) == 3 and position == input_pipeline.Position(0, 12)


def test_a_failure_after_the_last_step_still_commits_its_checkpoint(tmp_path, monkeypatch):
  # The last step's save is asynchronous; an error in the final evaluation must not let the
  # process end before it is written.
  data_dir = str(tmp_path / "data")
  shard_fixtures.write_tiny_dataset(data_dir, num_train=12, num_test=2, num_frames=10)
  config = _tiny_config()
  config.data.dir = data_dir
  config.train.num_steps = 3

  def failing_evaluation(*args):
    raise RuntimeError("evaluation failed")

  monkeypatch.setattr(train, "evaluate_loss", failing_evaluation)
  with pytest.raises(RuntimeError, match="evaluation failed"):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  # Committed by the time the error propagates (not still a temporary folder being written).
  checkpoints = os.listdir(tmp_path / "work" / "checkpoints")
  assert "3" in checkpoints and not [n for n in checkpoints if "tmp" in n], checkpoints
  step, state, _ = _final_state(tmp_path / "work", config)
  assert step == 3 and int(state.step) == 3


def test_only_the_training_loop_asks_for_the_preemption_step_in_step_order(tmp_path,
                                                                          monkeypatch):
  # JAX's service agrees on (furthest step asked about) + 1. Orbax's finalize thread used to
  # ask about the step it had saved, behind the loop: a notice then could agree on a step one
  # process had passed, and a two-process job hung (checkpointing._CheckpointManager).
  data_dir = str(tmp_path / "data")
  shard_fixtures.write_tiny_dataset(data_dir, num_train=12, num_test=2, num_frames=10)
  config = _tiny_config()
  config.data.dir = data_dir
  config.train.num_steps = 8
  config.train.async_checkpoints = True  # Saves finalize in Orbax's background thread.
  asked = []

  def agreed_at_five(step):
    asked.append((threading.current_thread().name, step))
    return step == 5

  monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", agreed_at_five)
  with pytest.raises(train.TrainingInterrupted) as stopped:
    train.train_and_evaluate(config, str(tmp_path / "work"))
  assert stopped.value.signum == signal.SIGTERM and stopped.value.step == 5
  assert asked == [("MainThread", step) for step in range(1, 6)]
  assert _final_state(tmp_path / "work", config)[0] == 5  # The agreed step is saved.


def test_stop_signals_turn_sigterm_and_sigint_into_a_request():
  previous = signal.getsignal(signal.SIGTERM)
  with train.StopSignals() as signals:
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.received == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):  # A second Ctrl-C interrupts at once.
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGTERM) is previous
  stopped = train.TrainingInterrupted(signal.SIGTERM, 7, "/w/checkpoints")
  assert stopped.code == 143 and "SIGTERM after step 7" in str(stopped)


# -------------------------------------------------------------------------------------------------
# The command line, interrupted and resumed (slow).
# -------------------------------------------------------------------------------------------------


def _run(workdir, data_dir, *flags, env=None, preexec_fn=None):
  cmd = [sys.executable, os.path.join(ROOT, "run_experiment.py"),
         "--config=" + os.path.join(ROOT, "configs/grid.py") + ":tiny",
         f"--workdir={workdir}", f"--config.data.dir={data_dir}",
         "--config.model.conv_impl=xla", f"--config.train.num_steps={NUM_STEPS}",
         "--config.train.checkpoint_every=2", *flags]
  return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                        text=True, timeout=900, preexec_fn=preexec_fn)


def _final_state(workdir, config=None):
  config = config or _tiny_config()
  abstract, _ = _abstract(config)
  ckpt = checkpointing.Checkpointer(str(workdir), config)
  step, state, position = ckpt.restore_latest(abstract)
  ckpt.close()
  return step, jax.device_get(state), position


def _assert_same_training(workdir_a, workdir_b):
  step_a, state_a, position_a = _final_state(workdir_a)
  step_b, state_b, position_b = _final_state(workdir_b)
  assert step_a == step_b == NUM_STEPS and position_a == position_b
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               state_a, state_b)


def _steps_saved(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data"))
  shard_fixtures.write_tiny_dataset(path, num_train=12, num_test=2, num_frames=10)
  return path


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """An uninterrupted run of NUM_STEPS steps."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  result = _run(workdir, data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.mark.slow
def test_sigkill_and_sigterm_at_random_steps_resume_to_the_uninterrupted_result(
    reference, data_dir, tmp_path):
  # Steps drawn afresh each run (printed on failure): between checkpoints, and right after
  # one, while its asynchronous save is still being written.
  rng = random.Random()
  kill_1, term = rng.randint(1, 3), rng.randint(4, 5)
  kill_2 = rng.randint(term + 2, 7)  # After the step that the SIGTERM run saved (term + 1).
  drawn = f"SIGKILL at {kill_1}, SIGTERM at {term}, SIGKILL at {kill_2}"
  workdir = str(tmp_path / "interrupted")

  killed = _run(workdir, data_dir, env={"TALKFACE_SIGKILL_AT_STEP": str(kill_1)})
  assert killed.returncode == -signal.SIGKILL, (drawn, killed.stderr[-3000:])
  assert all(s <= kill_1 for s in _steps_saved(workdir)), drawn

  stopped = _run(workdir, data_dir, env={"TALKFACE_SIGTERM_AT_STEP": str(term)})
  # The step after the signal completes, is saved (and waited for), and the exit is clean.
  assert stopped.returncode == 128 + signal.SIGTERM, (drawn, stopped.stderr[-3000:])
  assert f"stopped by SIGTERM after step {term + 1}" in stopped.stderr, drawn
  assert "Traceback" not in stopped.stderr, (drawn, stopped.stderr[-3000:])
  assert max(_steps_saved(workdir)) == term + 1, drawn

  killed = _run(workdir, data_dir, env={"TALKFACE_SIGKILL_AT_STEP": str(kill_2)})
  assert killed.returncode == -signal.SIGKILL, (drawn, killed.stderr[-3000:])

  resumed = _run(workdir, data_dir)
  assert resumed.returncode == 0, (drawn, resumed.stderr[-3000:])
  _assert_same_training(reference, workdir)


@pytest.mark.slow
def test_damaged_latest_checkpoint_resumes_from_the_previous_to_the_same_result(
    reference, data_dir, tmp_path):
  workdir = shutil.copytree(reference, str(tmp_path / "damaged"))
  _damage_data(os.path.join(workdir, "checkpoints", str(NUM_STEPS)))
  resumed = _run(workdir, data_dir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"checkpoints/{NUM_STEPS} is damaged" in resumed.stderr
  assert f"Resumed from step {NUM_STEPS - 2}" in resumed.stderr
  assert os.path.isdir(os.path.join(workdir, checkpointing.DAMAGED_DIR, str(NUM_STEPS)))
  _assert_same_training(reference, workdir)


@pytest.mark.slow
def test_full_disk_while_training_stops_clearly_and_keeps_the_last_checkpoint(
    reference, data_dir, tmp_path):
  workdir = shutil.copytree(reference, str(tmp_path / "full"))
  limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
  result = _run(workdir, data_dir, f"--config.train.num_steps={NUM_STEPS + 2}",
                preexec_fn=limit)
  assert result.returncode not in (0, -signal.SIGKILL, -signal.SIGXFSZ), result.stderr[-3000:]
  assert f"cannot write step {NUM_STEPS + 2}" in result.stderr, result.stderr[-3000:]
  assert f"step {NUM_STEPS}, left intact" in result.stderr
  assert max(_steps_saved(workdir)) == NUM_STEPS
  _assert_same_training(reference, workdir)  # The checkpoint left is whole and unchanged.


@pytest.mark.slow
def test_resume_on_another_device_count_continues_from_the_saved_position(tmp_path):
  data_dir = str(tmp_path / "data")
  shard_fixtures.write_tiny_dataset(data_dir, num_train=12, num_test=8, num_frames=10)
  workdir = str(tmp_path / "devices")
  # Train and eval batches divisible by 8 and by 4 devices.
  batch = ["--config.train.batch_size=8", "--config.eval.batch_size=8"]
  eight = _run(workdir, data_dir, *batch, "--config.train.num_steps=4",
               env={"JAX_NUM_CPU_DEVICES": "8"})
  assert eight.returncode == 0, eight.stderr[-3000:]
  _, _, saved_position = _final_state(workdir)
  four = _run(workdir, data_dir, *batch, "--config.train.num_steps=6",
              env={"JAX_NUM_CPU_DEVICES": "4"})
  assert four.returncode == 0, four.stderr[-3000:]
  # One process in both runs: its input stream continues exactly where it stopped.
  assert f"Resumed from step 4 of {workdir}/checkpoints (input at {saved_position})" in four.stderr
  step, state, _ = _final_state(workdir)
  assert step == 6 and all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, data_dir, num_steps, tmp_path, env=None, timeout=600):
  """``tests/train_worker.py`` as a 2-process job; returns (exit statuses, logs)."""
  port = _free_port()
  paths = [tmp_path / f"worker_{i}.log" for i in range(2)]
  logs = [open(path, "w") for path in paths]  # pylint: disable=consider-using-with
  workers = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "tests", "train_worker.py"), workdir, data_dir,
       str(num_steps), "--num_processes=2", f"--process_id={i}", f"--port={port}"],
      cwd=ROOT, stdout=logs[i], stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
             for i in range(2)]
  try:
    for worker in workers:
      worker.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    for worker in workers:  # Every thread's stack into the logs (train_worker's faulthandler).
      if worker.poll() is None:
        worker.send_signal(signal.SIGUSR1)
    time.sleep(2)
    for worker in workers:
      worker.kill()
      worker.wait()
    raise AssertionError(f"the 2-process job did not end within {timeout} s; its logs:\n" +
                         "\n".join(f"--- process {i}\n{path.read_text()[-6000:]}"
                                    for i, path in enumerate(paths))) from None
  finally:
    for log in logs:
      log.close()
  return [w.returncode for w in workers], [path.read_text() for path in paths]


@pytest.mark.slow
def test_sigterm_to_a_two_process_job_saves_one_agreed_step_that_one_process_resumes(
    data_dir, tmp_path):
  # Each process gets SIGTERM after step 3 (as a scheduler signals every task); JAX's
  # preemption service picks one step for both, which is saved before both exit 143.
  workdir = str(tmp_path / "preempted")
  statuses, logs = _run_two_processes(workdir, data_dir, NUM_STEPS, tmp_path,
                                      env={"TALKFACE_SIGTERM_AT_STEP": "3"})
  assert statuses == [128 + signal.SIGTERM] * 2, [log[-3000:] for log in logs]
  stopped = [re.search(r"stopped by SIGTERM after step (\d+)", log) for log in logs]
  assert all(stopped), [log[-3000:] for log in logs]
  step = int(stopped[0].group(1))
  assert int(stopped[1].group(1)) == step and 3 < step < NUM_STEPS
  assert max(_steps_saved(workdir)) == step
  assert _final_state(workdir)[0] == step

  # Resumed on fewer processes (one, on this job's checkpoint rather than a second two-process
  # job): it starts the epoch after the furthest one that the two processes saved.
  with open(os.path.join(workdir, "checkpoints", str(step), "input", "metadata")) as f:
    positions = json.load(f)["positions"]
  assert len(positions) == 2  # One input position per process of the saving job.
  expected = input_pipeline.Position(max(p[0] for p in positions) + 1, 0)
  one = _run(workdir, data_dir)
  assert one.returncode == 0, one.stderr[-3000:]
  assert f"Resumed from step {step} of {workdir}/checkpoints (input at {expected})" in one.stderr
  assert _final_state(workdir)[0] == NUM_STEPS
