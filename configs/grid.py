"""GRID at 128x128 with the release's settings (z 24, beta 1e-6, RMSprop 2e-4, 75 frames).

Variants: ``--config=configs/grid.py:tiny`` is a seconds-per-step model for smoke tests of the
full system on generated shards (same code path, small widths, 64x64, short sequences).
"""

from configs import default


def get_config(variant: str = ""):
  """Returns the GRID config, or its ``tiny`` variant."""
  config = default.get_config()
  config.data.dir = "data/grid_128"
  config.data.raw_dir = "data/raw/grid"
  config.data.dataset = "grid"
  config.data.seq_len = 75
  # On CPU the faster of XLA's and Eigen's convolutions in a probe of whole steps at start-up
  # (train.choose_conv_impl; Eigen by 2.4x at these widths on every CPU measured); native
  # convolutions on GPU/TPU.
  config.model.conv_impl = "auto"
  if variant == "tiny":
    apply_tiny(config)
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of configs/grid.py (known: tiny)")
  return config


def apply_tiny(config):
  """Shrinks ``config`` in place to a model that trains in seconds on one CPU core."""
  config.data.dir = "data/grid_64"
  config.data.seq_len = 6
  config.model.conv_impl = "xla"
  config.data.shuffle_buffer = 16
  config.model.resolution = 64
  config.host_malloc = "system"  # A small model: as configs/demo.py.
  default.apply_tiny_model(config.model)
  config.train.batch_size = 4
  config.train.num_steps = 6
  config.train.log_every = 2
  config.train.checkpoint_every = 2
  config.eval.every = 0
  config.eval.num_batches = 1
  config.eval.batch_size = 2
  config.eval.num_clips = 2
  config.eval.num_samples = 2
  config.sample.num_samples = 2
  config.sample.num_clips = 1
