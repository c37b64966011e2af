"""Orbax checkpoints of the train state and of each process's input position.

Saves are periodic (``train.checkpoint_every``), asynchronous, atomic (Orbax commits a step
directory only when it is complete) and keep the latest ``train.keep_checkpoints``. A run
restarted with the same workdir restores the newest usable step onto the current mesh, and
the input pipeline continues where the checkpointed step left it.

What a restore does with what it finds (``Checkpointer.restore_latest``):

* a step saved by another model (different parameter names or shapes): a
  :class:`CheckpointMismatchError` naming the arrays that differ; older steps are not tried,
  since they hold the same model;
* a damaged step (a truncated or corrupted file, a missing item, a partial copy): a warning
  naming it, then the previous step; training moves the damaged step to
  ``WORKDIR/checkpoints_damaged/<step>`` (nothing is deleted) so it can save that step again;
  if no step is usable, a :class:`CheckpointError` listing each step and why;
* a different number of devices: the state is replicated, so it restores onto any mesh;
* a different number of processes: see :func:`resumed_position`.

A failed save (full disk, file size limit, unwritable folder) raises :class:`CheckpointError`;
Orbax's atomic commit leaves the previous steps intact.
"""

import os
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

import talkface_jax.errors as errors
import talkface_jax.input_pipeline as input_pipeline

DAMAGED_DIR = "checkpoints_damaged"


class CheckpointError(errors.UserError):
  """No usable checkpoint, or one could not be written; the message names the folder."""


class CheckpointMismatchError(CheckpointError):
  """A checkpoint holds another model than the config describes."""


def _first_line(error: BaseException, limit: int = 200) -> str:
  text = str(error).strip().splitlines()
  line = text[0] if text else type(error).__name__
  return line if len(line) <= limit else line[:limit] + "..."


def tree_difference(saved, expected, limit: int = 5) -> str:
  """What differs between two trees of arrays (shape and dtype), as one line; '' if nothing.

  Args:
    saved: a tree of Orbax ``ArrayMetadata`` (or anything with ``shape``), keyed as saved.
    expected: a tree of ``jax.ShapeDtypeStruct`` or arrays (e.g. the abstract train state).
    limit: names listed per kind of difference.
  """
  saved = ocp.tree.to_flat_dict(saved, sep="/")
  expected = ocp.tree.to_flat_dict(ocp.tree.serialize_tree(expected, keep_empty_nodes=True),
                                   sep="/")
  # Parameters first: the optimiser state and BatchNorm statistics follow their shapes.
  order = lambda names: sorted(names, key=lambda k: (not k.startswith("params/"), k))
  parts = []
  shapes = [f"{k} {tuple(saved[k].shape)} vs {tuple(expected[k].shape)}"
            for k in order(saved.keys() & expected.keys())
            if tuple(saved[k].shape) != tuple(expected[k].shape)]
  for label, names in (("shape (checkpoint vs config)", shapes),
                       ("only in the checkpoint", order(saved.keys() - expected.keys())),
                       ("only in the config", order(expected.keys() - saved.keys()))):
    if names:
      more = f" and {len(names) - limit} more" if len(names) > limit else ""
      parts.append(f"{len(names)} {label}: {', '.join(names[:limit])}{more}")
  return "; ".join(parts)


def resumed_position(positions: list[list[int]], process_index: int,
                     process_count: int) -> input_pipeline.Position:
  """This process's input position from the positions that every process saved.

  With the same number of processes each continues exactly where it stopped. With another
  number, each process reads another slice of the split, so no per-process position carries
  over: every process starts epoch ``max(saved epochs) + 1`` from its beginning. Some
  examples of the interrupted epoch are then not seen in it (never more than one epoch's
  worth), and none is seen twice within an epoch.

  Args:
    positions: [[epoch, examples], ...], one per process of the saving run.
    process_index: this process.
    process_count: processes of this run.
  """
  if len(positions) != process_count:
    return input_pipeline.Position(max(int(p[0]) for p in positions) + 1, 0)
  epoch, examples = positions[process_index]
  return input_pipeline.Position(int(epoch), int(examples))


class _CheckpointManager(ocp.CheckpointManager):
  """Orbax's manager, except that only ``Checkpointer.reached_preemption`` asks JAX's
  preemption service whether a step is the agreed stop; the manager reads its answer.

  JAX's service keeps the step of the latest question and, on a preemption notice, agrees on
  "the furthest step any process has asked about, plus one". Orbax's manager also asks from
  its background finalize thread, about the step it has just saved: that moves the latest step
  back behind the training loop's. A notice arriving then can agree on a step that one
  process has already passed: the other stops and saves, this one trains on, and each waits
  for the other (Orbax's barriers time out after 20 minutes; the train step's collectives
  never). Asked only by the training loop, in step order, the agreed step is ahead of every
  process. (A two-process SIGTERM test hung in CI on 2 cores; this is the race found.)
  """

  preemption_step: int | None = None

  def reached_preemption(self, step: int) -> bool:
    return step == self.preemption_step


class Checkpointer:
  """The checkpoints of one workdir (``WORKDIR/checkpoints/<step>``)."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=config.train.checkpoint_every,
        preservation_policy=ocp.checkpoint_managers.LatestN(config.train.keep_checkpoints),
        enable_async_checkpointing=config.train.async_checkpoints)
    self._saving = None  # The step of the latest save started (its write may be pending).
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    try:
      # Registered handlers let ``item_metadata`` read a step's tree without restoring it.
      self.manager = _CheckpointManager(
          self.directory, options=options,
          item_handlers={"state": ocp.StandardCheckpointHandler(),
                         "input": ocp.JsonCheckpointHandler()})
    except OSError as e:
      raise CheckpointError(f"checkpoints {self.directory}: cannot use the folder "
                            f"({e.strerror or _first_line(e)})") from e

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self.manager.should_save(step)

  def reached_preemption(self, step: int) -> bool:
    """True at the step where every process agreed to stop for a preemption notice.

    This is JAX's preemption service (multi-process runs started with
    ``jax.distributed.initialize``, whose notifier listens for SIGTERM); single-process
    runs catch SIGTERM themselves (``train.StopSignals``). Call it once per step, in step
    order, from the training loop only (``_CheckpointManager`` says why).
    """
    try:
      reached = multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # The service is off (jax_enable_preemption_service).
      return False
    if reached:
      logging.warning("All processes reached the preemption sync point, step %d.", step)
      self.manager.preemption_step = step
    return reached

  def save(self, step: int, state, position: input_pipeline.Position, force: bool = False) -> bool:
    """Saves ``state`` and every process's input ``position`` (a collective call).

    Raises:
      CheckpointError: this save or the previous asynchronous one could not be written.
    """
    positions = multihost_utils.process_allgather(
        np.array([position.epoch, position.examples], np.int64))
    positions = np.asarray(positions).reshape(-1, 2).tolist()
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          input=ocp.args.JsonSave({"positions": positions})), force=force)
    except Exception as e:  # Orbax re-raises the background save's error type; all are fatal.
      # The error may be the previous asynchronous save's, surfacing now.
      raise self._write_error(self._saving or step, e) from e
    if saved:
      self._saving = step
    return saved

  def _write_error(self, step: int, error: BaseException) -> CheckpointError:
    intact = self.manager.latest_step()
    return CheckpointError(
        f"checkpoints {self.directory}: cannot write step {step} "
        f"({getattr(error, 'strerror', None) or _first_line(error)}); the last complete "
        f"checkpoint is {'none' if intact is None else f'step {intact}'}, left intact. Free "
        "space or fix the folder's permissions, then run the same command to resume.")

  def _check_model(self, step: int, abstract_state) -> None:
    """Raises CheckpointMismatchError if ``step`` holds arrays of other names or shapes."""
    saved = self.manager.item_metadata(step)["state"]
    if saved is None:
      raise ValueError("its state metadata is missing")
    difference = tree_difference(saved.tree, abstract_state)
    if difference:
      raise CheckpointMismatchError(
          f"checkpoint {self.directory}/{step} holds another model than the config "
          f"(model.* keys, optimiser): {difference}. Use the config it was trained with, or "
          "another --workdir.")

  def restore(self, step: int, abstract_state):
    """Restores (state, this process's input position) of ``step`` onto ``abstract_state``'s
    shardings; no checks (see ``restore_latest``)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), input=ocp.args.JsonRestore()))
    position = resumed_position(restored["input"]["positions"], jax.process_index(),
                                jax.process_count())
    return restored["state"], position

  def restore_latest(self, abstract_state, set_aside_damaged: bool = False):
    """The newest usable step, skipping damaged ones with a warning.

    Args:
      abstract_state: the tree to restore onto (``jax.ShapeDtypeStruct`` with shardings).
      set_aside_damaged: move damaged steps to ``WORKDIR/checkpoints_damaged/`` (training
        does, so that it can save those steps again; read-only users such as sampling don't).

    Returns:
      (step, state, input position), or None if the workdir has no checkpoint.

    Raises:
      CheckpointMismatchError: the newest readable step holds another model.
      CheckpointError: there are steps, but none is usable.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    damaged = []
    for step in steps:
      try:
        self._check_model(step, abstract_state)
        state, position = self.restore(step, abstract_state)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # TensorStore, JSON and Orbax errors alike: the step is unusable.
        reason = _first_line(e)
        logging.warning("Checkpoint %s/%d is damaged (%s); trying the previous one.",
                        self.directory, step, reason)
        damaged.append((step, reason))
        continue
      if damaged and set_aside_damaged:
        self._set_aside([s for s, _ in damaged])
      return step, state, position
    if not steps:
      return None
    listed = "; ".join(f"step {s}: {r}" for s, r in damaged)
    raise CheckpointError(f"checkpoints {self.directory}: no usable checkpoint ({listed}). "
                          "Move the folder away to train from scratch.")

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged ``steps`` out of the checkpoint folder (process 0), then rescans."""
    if jax.process_index() == 0:
      target = os.path.join(self.workdir, DAMAGED_DIR)
      os.makedirs(target, exist_ok=True)
      for step in steps:
        destination = os.path.join(target, str(step))
        if os.path.exists(destination):
          shutil.rmtree(destination)
        shutil.move(os.path.join(self.directory, str(step)), destination)
        logging.warning("Moved damaged checkpoint step %d to %s.", step, destination)
    multihost_utils.sync_global_devices("checkpoints_set_aside")
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are committed.

    Raises:
      CheckpointError: the pending save could not be written.
    """
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._write_error(self._saving, e) from e

  def close(self) -> None:
    self.manager.close()


def restore_variables(workdir: str, abstract_variables, step: int | None = None):
  """Restores only the model's variables of a checkpoint: (variables, step).

  Inference needs the parameters and BatchNorm statistics, not the optimiser state, so this
  reads those two items of the saved train state (an Orbax partial restore) onto the
  shardings of ``abstract_variables``. Without ``step``, a damaged newest step is skipped with
  a warning for the previous one, as training does (nothing is moved: this only reads).

  Args:
    workdir: the run's workdir.
    abstract_variables: shapes, dtypes and shardings of {'params', 'batch_stats'}.
    step: the step to read; the newest usable one if None.

  Raises:
    CheckpointMismatchError: the checkpoint holds another model (names the arrays).
    CheckpointError: no checkpoint, no such step, or none usable.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise CheckpointError(f"{directory}: no checkpoint; train first with --mode=train "
                          f"--workdir={workdir}")
  manager = ocp.CheckpointManager(directory,
                                  item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                                                 "input": ocp.JsonCheckpointHandler()})
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f"{directory}: no checkpoint; train first with --mode=train "
                            f"--workdir={workdir}")
    if step is not None and step not in steps:
      raise CheckpointError(f"{directory}: no checkpoint of step {step} (has {sorted(steps)})")
    damaged = []
    for candidate in [step] if step is not None else steps:
      try:
        saved = manager.item_metadata(candidate)["state"]
        saved = getattr(saved, "tree", saved)
        difference = tree_difference({k: saved[k] for k in abstract_variables if k in saved},
                                     abstract_variables)
        if difference:
          raise CheckpointMismatchError(
              f"checkpoint {directory}/{candidate} holds another model than the config "
              f"(model.* keys): {difference}")
        restored = manager.restore(candidate, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                abstract_variables, partial_restore=True,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_variables))))
        return restored["state"], candidate
      except CheckpointMismatchError:
        raise
      except Exception as e:  # TensorStore, JSON and Orbax errors alike: the step is unusable.
        logging.warning("Checkpoint %s/%d is damaged (%s); trying the previous one.",
                        directory, candidate, _first_line(e))
        damaged.append(f"step {candidate}: {_first_line(e)}")
    raise CheckpointError(f"checkpoints {directory}: no usable checkpoint ({'; '.join(damaged)})")
  finally:
    manager.close()
