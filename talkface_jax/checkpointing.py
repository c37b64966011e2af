"""Orbax checkpoints of the train state and of each process's input position.

Saves are periodic (``train.checkpoint_every``), asynchronous, atomic (Orbax commits a step
directory only when it is complete) and keep the latest ``train.keep_checkpoints``. A run
restarted with the same workdir restores the newest complete step onto the current mesh, and
the input pipeline continues where the checkpointed step left it.
"""

import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

import talkface_jax.errors as errors
import talkface_jax.input_pipeline as input_pipeline


class Checkpointer:
  """The checkpoints of one workdir (``WORKDIR/checkpoints/<step>``)."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=config.train.checkpoint_every,
        preservation_policy=ocp.checkpoint_managers.LatestN(config.train.keep_checkpoints),
        enable_async_checkpointing=config.train.async_checkpoints)
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "input"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self.manager.should_save(step)

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def save(self, step: int, state, position: input_pipeline.Position, force: bool = False) -> bool:
    """Saves ``state`` and every process's input ``position`` (a collective call)."""
    positions = multihost_utils.process_allgather(
        np.array([position.epoch, position.examples], np.int64))
    positions = np.asarray(positions).reshape(-1, 2).tolist()
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        input=ocp.args.JsonSave({"positions": positions})), force=force)

  def restore(self, step: int, abstract_state):
    """Restores (state, this process's input position) of ``step`` onto ``abstract_state``'s
    shardings."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), input=ocp.args.JsonRestore()))
    positions = restored["input"]["positions"]
    if len(positions) != jax.process_count():
      # A different process count reads a different slice per process: start a fresh epoch
      # after the furthest one rather than replay or skip examples unevenly.
      position = input_pipeline.Position(max(p[0] for p in positions) + 1, 0)
    else:
      epoch, examples = positions[jax.process_index()]
      position = input_pipeline.Position(int(epoch), int(examples))
    return restored["state"], position

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are committed."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def restore_variables(workdir: str, abstract_variables, step: int | None = None):
  """Restores only the model's variables of a checkpoint: (variables, step).

  Inference needs the parameters and BatchNorm statistics, not the optimiser state, so this
  reads those two items of the saved train state (an Orbax partial restore) onto the
  shardings of ``abstract_variables`` ({'params', 'batch_stats'} of ``jax.ShapeDtypeStruct``).

  Args:
    workdir: the run's workdir.
    abstract_variables: shapes, dtypes and shardings of {'params', 'batch_stats'}.
    step: the step to read; the newest one if None.

  Raises:
    UserError: no checkpoint (at that step), or one of another model (the message names
      the differing keys).
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  manager = ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  try:
    steps = manager.all_steps()
    if not steps:
      raise errors.UserError(f"{directory}: no checkpoint; train first with --mode=train "
                             f"--workdir={workdir}")
    step = max(steps) if step is None else step
    if step not in steps:
      raise errors.UserError(f"{directory}: no checkpoint of step {step} (has {sorted(steps)})")
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_variables)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          abstract_variables, restore_args=restore_args, partial_restore=True)))
    except (ValueError, KeyError) as e:
      raise errors.UserError(f"{directory}/{step} holds another model than the config's "
                             f"(resolution, widths, sizes): {_first_line(e)}") from e
  finally:
    manager.close()
  return restored["state"], step


def _first_line(error: Exception) -> str:
  lines = [line for line in str(error).splitlines() if line.strip()]
  return " ".join(lines[:6]) if lines else type(error).__name__
