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
  config.model.conv_impl = "auto"  # Eigen convolutions on CPU (ops/conv.py); native on GPU/TPU.
  config.train.num_steps = 100 * 488_766 // 5  # 100 epochs of LRW's training clips at batch 5.
  config.eval.every = 20_000
  return config
