"""LRW at 128x128 with the release's settings; clips are 29 frames (1.16 s)."""

from configs import default


def get_config():
  """Returns the LRW config."""
  config = default.get_config()
  config.data.dir = "data/lrw_128"
  config.data.raw_dir = "data/raw/lrw"
  config.data.dataset = "lrw"
  config.data.eval_split = "val"
  config.data.seq_len = 29
  # On CPU the faster of XLA's and Eigen's convolutions in a probe of whole steps at start-up
  # (train.choose_conv_impl; Eigen by 2.4x at these widths on every CPU measured); native
  # convolutions on GPU/TPU.
  config.model.conv_impl = "auto"
  config.train.num_steps = 100 * 488_766 // 5  # 100 epochs of LRW's training clips at batch 5.
  config.eval.every = 20_000
  return config
