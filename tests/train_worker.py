"""Runs ``train.train_and_evaluate`` of the tiny config as one process of a multi-process job.

Used by test_reliability_training.py in subprocesses (JAX's process group is fixed at start-up):

  python tests/train_worker.py WORKDIR DATA_DIR NUM_STEPS --num_processes=2 --process_id=I --port=P
"""

import argparse
import faulthandler
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("data_dir")
  parser.add_argument("num_steps", type=int)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  args = parser.parse_args()
  # A test that finds this process hung sends SIGUSR1 for every thread's stack in its log.
  faulthandler.register(signal.SIGUSR1, all_threads=True)

  import jax  # pylint: disable=g-import-not-at-top  (the process group is set before any use)
  if args.num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{args.port}", args.num_processes, args.process_id)
  from configs import grid  # pylint: disable=g-import-not-at-top
  from talkface_jax import train  # pylint: disable=g-import-not-at-top

  config = grid.get_config("tiny")
  config.model.conv_impl = "xla"
  config.data.dir = args.data_dir
  config.train.num_steps = args.num_steps
  config.train.checkpoint_every = 2
  train.train_and_evaluate(config, args.workdir)


if __name__ == "__main__":
  main()
