"""Entry point: ``python run_experiment.py --config=configs/grid.py --workdir=DIR [--mode=...]``.

Modes: ``train`` (resumes from the workdir's checkpoints), ``eval`` (teacher-forced loss of the
latest checkpoint on the eval split) and ``sample`` (K videos for held-out clips into
WORKDIR/samples). Any config key can be overridden, e.g. ``--config.train.batch_size=8``.
Multi-process runs (TPU pods, several GPU hosts) set ``--config.distributed=True``.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries, samples.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Imported here so that --help answers without loading JAX and TensorFlow.
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from talkface_jax import experiment, parallel  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], "GPU")  # tf.data only; keep accelerators for JAX.
  config = _CONFIG.value
  parallel.initialize_distributed(config)
  logging.info("JAX process %d / %d, local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  experiment.run(config, _WORKDIR.value, _MODE.value)


if __name__ == "__main__":
  app.run(main)
