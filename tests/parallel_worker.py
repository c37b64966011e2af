"""Runs a few train steps of the tiny config on a fixed global batch; saves the result.

Used by test_parallel.py in subprocesses, because the device count and the process group of
JAX are fixed at start-up:

  python tests/parallel_worker.py OUT.npz [--num_processes=2 --process_id=I --port=P]

The device count comes from JAX_NUM_CPU_DEVICES. ``--dtype=float64`` (the default) runs the
model, its parameters and the optimiser in float64 (``jax_enable_x64``), where the order of a
sum changes results by ~1e-16 relative instead of ~1e-7. With several processes each one feeds its own
slice of the same global batch, as in multi-host training.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GLOBAL_BATCH = 8
NUM_STEPS = 3


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("out")
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  if args.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  if args.num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{args.port}", args.num_processes, args.process_id)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import grid  # pylint: disable=g-import-not-at-top
  from talkface_jax import parallel, train  # pylint: disable=g-import-not-at-top
  from talkface_jax.models import talkface  # pylint: disable=g-import-not-at-top

  config = grid.get_config("tiny")
  config.model.conv_impl = "xla"
  config.train.batch_size = GLOBAL_BATCH
  # Plain SGD: RMSprop's first steps are sign-like (g / |g|), so float-level differences in
  # near-zero gradients would show up as whole learning-rate steps and hide real mismatches.
  config.optim.name = "sgd"
  config.optim.learning_rate = 0.5
  config.model.dtype = args.dtype
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  tx = train.make_optimizer(config)
  state = train.create_train_state(config, model, tx, mesh)
  if args.dtype == "float64":  # Parameters, statistics and optimiser state in float64 too.
    wide = lambda x: x.astype(np.float64) if x.dtype == np.float32 else x
    state = state.replace(params=jax.tree.map(wide, state.params),
                          batch_stats=jax.tree.map(wide, state.batch_stats),
                          opt_state=jax.tree.map(wide, state.opt_state))
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  step_fn = train.jit_train_step(config, model, tx, mesh, state_sharding)

  local = parallel.local_batch_size(GLOBAL_BATCH, mesh)
  rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
  losses = []
  for step in range(NUM_STEPS):
    rng = np.random.default_rng(step)
    frames = rng.integers(0, 256, (GLOBAL_BATCH, 4, 64, 64, 3), dtype=np.uint8)
    mfcc = rng.normal(size=(GLOBAL_BATCH, 4, 28, 12)).astype(args.dtype)
    batch = parallel.global_batch({"frames": frames[rows], "mfcc": mfcc[rows]}, mesh)
    state, metrics = step_fn(state, batch)
    losses.append(float(metrics["loss"]))
  if jax.process_index() == 0:
    leaves = jax.tree.leaves(jax.device_get(state.params))
    np.savez(args.out, losses=np.array(losses), devices=jax.device_count(),
             **{f"p{i}": leaf for i, leaf in enumerate(leaves)})


if __name__ == "__main__":
  main()
