"""The one parallelism path: ``jax.jit`` with ``NamedSharding`` over a 1-D ``data`` mesh.

Parameters are replicated, batches are split along their leading axis over every device of
every process. Each process feeds its own slice of the global batch; ``global_batch`` assembles
the global array without any cross-host copy. The same code runs on one CPU, several GPUs and
a multi-host TPU pod.
"""

import collections
from typing import Iterator, TypeVar

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import talkface_jax.errors as errors

DATA_AXIS = "data"
_Position = TypeVar("_Position")


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Starts multi-process JAX when ``config.distributed`` is set (auto-detects TPU/SLURM)."""
  if config.distributed:
    jax.distributed.initialize()


def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
  """A 1-D data-parallel mesh over ``config.mesh.data`` devices (-1: all)."""
  num = jax.device_count() if config.mesh.data == -1 else config.mesh.data
  if num > jax.device_count() or jax.device_count() % num:
    raise errors.UserError(f"mesh.data={num} does not divide the {jax.device_count()} devices")
  return jax.make_mesh((num,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:num])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of ``global_batch_size``; checks that it splits evenly."""
  devices = mesh.devices.size
  if global_batch_size % devices:
    raise errors.UserError(f"batch size {global_batch_size} is not divisible by the {devices} "
                           "devices of the mesh")
  return global_batch_size // jax.process_count()


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Global arrays from each process's local slice (leading axis = batch)."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def shard_rows(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """A global array split along its leading axis over the data axis, from a host array that
  every process holds whole (e.g. the same evaluation clips). The leading axis must divide
  evenly over the mesh's devices."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, data_sharded(mesh), lambda index: array[index])


def to_host(array: jax.Array) -> np.ndarray:
  """The whole of a (possibly multi-process) global array as numpy, on every process."""
  if array.is_fully_addressable:
    return np.asarray(array)
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def prefetch_to_device(batches: Iterator[tuple[dict[str, np.ndarray], _Position]], mesh: Mesh,
                       size: int) -> Iterator[tuple[dict[str, jax.Array], _Position]]:
  """Keeps ``size`` global batches transferred to the devices ahead of the consumer.

  ``batches`` yields (local batch, position) pairs; the positions pass through unchanged, so
  the one saved with a checkpoint still names the batch that the saved step consumed. The
  transfers are asynchronous, so with ``size`` >= 2 the next batch is on its devices while
  the current step runs; ``size`` 1 transfers each batch when it is asked for.
  """
  queue = collections.deque()

  def enqueue(count: int) -> None:
    for _ in range(count):
      try:
        local, position = next(batches)
      except StopIteration:
        return
      queue.append((global_batch(local, mesh), position))

  enqueue(max(size, 1))
  while queue:
    yield queue.popleft()
    enqueue(1)
