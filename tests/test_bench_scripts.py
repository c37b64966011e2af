"""The train-step and sampling benchmarks run and count predicted frames (tiny model)."""

import pytest

from benchmarks import sample as sample_bench
from benchmarks import train_step


def _tiny():
  config = train_step.load_config("configs/grid.py:tiny")
  config.train.batch_size, config.data.seq_len = 2, 4
  config.sample.chunk_frames = 3
  return config


@pytest.mark.slow
def test_train_step_counts_predicted_frames():
  config = _tiny()
  assert train_step.predicted_frames(config) == 2 * 3  # Frame 0 of each sequence is given.
  r = train_step.bench(config, steps=1)
  assert r["frames_per_s"] == pytest.approx(6 / r["step_s"])
  assert r["gflop_per_frame"] > 0


def test_release_config_sizes():
  assert train_step.release_config(128).model.encoder_widths == (64, 128, 256, 512, 512)
  assert train_step.release_config(64).model.encoder_widths == (64, 128, 256, 512)
  with pytest.raises(ValueError, match="64 and 128"):
    train_step.release_config(96)


@pytest.mark.slow
def test_sampling_benchmark_counts_generated_frames():
  config = _tiny()
  r = sample_bench.bench(config, num_samples=2, num_frames=5, batch=1, reps=1)
  assert r["frames_per_s"] == pytest.approx(2 * 4 / r["wall_s"])
  assert r["rtf"] == pytest.approx(r["frames_per_s"] / 25)
  assert r["traces"] == 1  # 4 frames in chunks of 3: one compilation, two calls.
  # sample_bench.profile (compiles every part apart) is left to the benchmark's own runs:
  # it took minutes here under load for no check the above lacks.
