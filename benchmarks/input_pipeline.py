"""Input pipeline throughput alone: training batches/s and frames/s, no model.

Reads ``--data_dir`` (shards written by ``data_prep``) or, without it, a synthetic dataset
written to a temporary folder with ``tests.shard_fixtures.write_tiny_dataset`` at the given
resolution. Batches are drawn from ``InputPipeline.train_batches`` exactly as training draws
them (shuffle, random crop of ``seq_len`` frames, PNG decoding, batching, prefetch); the
first ``--warmup`` batches are not timed.

  python -m benchmarks.input_pipeline --resolution=128 --batch_size=5 --seq_len=10
"""

import argparse
import os
import tempfile
import time

from benchmarks import machine
from benchmarks import train_step as train_bench
from talkface_jax import input_pipeline


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/grid.py")
  parser.add_argument("--data_dir", default="", help="shards; default: synthetic ones")
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=5)
  parser.add_argument("--seq_len", type=int, default=10)
  parser.add_argument("--num_clips", type=int, default=40, help="synthetic clips")
  parser.add_argument("--clip_frames", type=int, default=75, help="frames per synthetic clip")
  parser.add_argument("--batches", type=int, default=50)
  parser.add_argument("--warmup", type=int, default=5)
  args = parser.parse_args()

  config = train_bench.load_config(args.config)
  config.model.resolution = args.resolution
  config.data.seq_len = args.seq_len
  with tempfile.TemporaryDirectory() as tmp:
    if args.data_dir:
      config.data.dir = args.data_dir
    else:
      from tests import shard_fixtures  # pylint: disable=g-import-not-at-top
      config.data.dir = os.path.join(tmp, "shards")
      start = time.perf_counter()
      shard_fixtures.write_tiny_dataset(config.data.dir, args.resolution, args.num_clips, 4,
                                        args.clip_frames, examples_per_shard=8)
      print(f"wrote {args.num_clips} synthetic clips of {args.clip_frames} frames at "
            f"{args.resolution}x{args.resolution} in {time.perf_counter() - start:.1f} s")
    pipeline = input_pipeline.InputPipeline(config, args.batch_size)
    batches = pipeline.train_batches()
    for _ in range(args.warmup):
      next(batches)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    for _ in range(args.batches):
      batch, _ = next(batches)
    elapsed = time.perf_counter() - start
  assert batch["frames"].shape == (args.batch_size, args.seq_len, args.resolution,
                                   args.resolution, 3), batch["frames"].shape
  frames = args.batches * args.batch_size * args.seq_len
  print(machine.describe())
  print(f"data={args.data_dir or 'synthetic'} res={args.resolution} B={args.batch_size} "
        f"T={args.seq_len}: {args.batches / elapsed:.1f} batches/s, {frames / elapsed:.0f} "
        f"frames/s delivered, frame 0 included (load {load:.2f} -> {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
  main()
