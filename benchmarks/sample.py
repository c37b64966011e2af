"""Sampling speed: frames/s and real-time factor of generation with K latent draws per input.

Generation runs through ``inference.Generator`` (one compiled chunk function, every LSTM state
carried across chunks, the K samples of an input as K rows), as ``--mode=sample``, evaluation
and ``talkface_jax.load`` do. The model has random
weights: speed does not depend on them. The real-time factor is video seconds generated per
wall-clock second for one input (25 fps), so > 1 is faster than real time; with K draws it
counts the K videos of an input together as K x its duration.

  python -m benchmarks.sample --resolutions=64,128 --num_samples=1,8 --seconds=3
"""

import argparse
import os
import time

import jax
import numpy as np

from benchmarks import train_step as train_bench
from talkface_jax import inference
from talkface_jax.models import talkface

FPS = inference.FPS


def bench(config, num_samples: int, num_frames: int, batch: int, reps: int) -> dict:
  model = talkface.build_model(config.model)
  r = config.model.resolution
  rng = np.random.default_rng(0)
  frame0 = rng.integers(0, 256, (batch, r, r, 3), dtype=np.uint8)
  mfcc = rng.normal(size=(batch, num_frames, 28, 12)).astype(np.float32)
  variables = jax.jit(model.init)({"params": jax.random.key(0), "latent": jax.random.key(1)},
                                  frame0[:, None].repeat(2, 1).astype(np.float32) / 255,
                                  mfcc[:, :2])
  generator = inference.Generator(config, variables)
  start = time.perf_counter()
  generator.generate_aligned(frame0, mfcc, num_samples, jax.random.key(2))  # Compiles.
  compile_s = time.perf_counter() - start
  times = []
  for i in range(reps):
    start = time.perf_counter()
    videos = generator.generate_aligned(frame0, mfcc, num_samples, jax.random.key(3 + i))
    times.append(time.perf_counter() - start)
  assert videos.shape == (batch, num_samples, num_frames, r, r, 3), videos.shape
  wall = float(np.median(times))
  generated = batch * num_samples * (num_frames - 1)  # Frame 0 is the input photo.
  return {"wall_s": wall, "frames_per_s": generated / wall,
          "rtf": batch * num_samples * num_frames / FPS / wall, "compile_s": compile_s}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/grid.py")
  parser.add_argument("--resolutions", default="64,128")
  parser.add_argument("--num_samples", default="1,8", help="comma list of K")
  parser.add_argument("--seconds", type=float, default=3.0, help="audio length per input")
  parser.add_argument("--batch_size", type=int, default=1, help="inputs per call")
  parser.add_argument("--chunk_frames", type=int, default=25)
  parser.add_argument("--reps", type=int, default=2)
  args = parser.parse_args()
  num_frames = int(round(args.seconds * FPS))
  print(f"backend={jax.default_backend()} jax={jax.__version__} frames={num_frames} "
        f"batch={args.batch_size} chunk={args.chunk_frames} load={os.getloadavg()}")
  print(f"{'res':>4s} {'widths':24s} {'K':>3s} {'wall s':>8s} {'frames/s':>9s} "
        f"{'RTF':>6s} {'compile s':>9s} {'load':>6s}")
  for res in (int(r) for r in args.resolutions.split(",")):
    for k in (int(k) for k in args.num_samples.split(",")):
      config = train_bench.load_config(args.config)
      config.model.resolution = res
      if res == 64:  # The release's 64x64 widths: one stage fewer.
        config.model.encoder_widths = tuple(config.model.encoder_widths)[:4]
      config.sample.chunk_frames = args.chunk_frames
      r = bench(config, k, num_frames, args.batch_size, args.reps)
      print(f"{res:4d} {str(tuple(config.model.encoder_widths)):24s} {k:3d} "
            f"{r['wall_s']:8.2f} {r['frames_per_s']:9.2f} {r['rtf']:6.2f} "
            f"{r['compile_s']:9.1f} {os.getloadavg()[0]:6.2f}", flush=True)


if __name__ == "__main__":
  main()
