"""Training throughput: frames/s, model GFLOP per frame (from XLA's cost analysis), and the
achieved GFLOP/s as a fraction of a matmul peak measured in the same run.

  python -m benchmarks.train_step --config=configs/grid.py --seq_len=10 --steps=3
  python -m benchmarks.train_step --config=configs/grid.py:tiny --seq_len=10
  python -m benchmarks.train_step --config=configs/demo.py --conv_impl=xla,auto
  python -m benchmarks.train_step --config=configs/grid.py --batch_size=40 --seq_len=75 \
      --dtype=bfloat16 --peak_tflops=989     # an H100 SXM: MFU against its bf16 dense peak

Frames/s counts predicted frames per second: B x (T-1) per step, since frame 0 of each sequence
is the identity frame the others are predicted from (the release's loop predicts the same
T-1). GFLOP/frame is per predicted frame. Figures belong in BENCHMARKS.md with the header line
(CPU model, ISA, load) and versions. ``benchmarks/vs_peer.py`` times this step against a PyTorch
peer of the authors' release in the same run.
"""

import argparse
import importlib.util
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import machine  # pylint: disable=g-import-not-at-top,wrong-import-position
from talkface_jax import host_memory, parallel, train  # pylint: disable=g-import-not-at-top,wrong-import-position
from talkface_jax.models import talkface  # pylint: disable=g-import-not-at-top,wrong-import-position


def load_config(spec: str):
  """``path.py[:variant]`` -> config, as ml_collections' config_flags would load it."""
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def release_config(resolution: int, batch_size: int = 5, seq_len: int = 10,
                   conv_impl: str = "auto"):
  """configs/grid.py at the release's sizes: widths (64, 128, 256, 512, 512) at 128x128, the
  first four at 64x64 (one stage fewer); ``batch_size`` sequences of ``seq_len`` frames."""
  config = load_config("configs/grid.py")
  config.model.resolution = resolution
  if resolution == 64:
    config.model.encoder_widths = tuple(config.model.encoder_widths)[:4]
  elif resolution != 128:
    raise ValueError(f"the release has 64 and 128 px models, not {resolution}")
  config.model.conv_impl = conv_impl
  config.train.batch_size = batch_size
  config.data.seq_len = seq_len
  return config


def matmul_size() -> int:
  """The default n of ``matmul_peak_gflops``: 2048 on CPU, 8192 on an accelerator."""
  return 2048 if jax.default_backend() == "cpu" else 8192


def matmul_peak_gflops(dtype: str = "float32", n: int = 0, reps: int = 5) -> float:
  """Achieved GFLOP/s of a jitted n^3 matmul in ``dtype`` (n: ``matmul_size()`` unless given)."""
  n = n or matmul_size()
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / min(times) / 1e9


def predicted_frames(config) -> int:
  """Frames a training step predicts: B x (T-1) (frame 0 of each sequence is the identity)."""
  return config.train.batch_size * (config.data.seq_len - 1)


def _no_progress(message: str) -> None:
  del message


def prepare(config, progress=_no_progress):
  """Compiles the train step of ``config`` on a random batch (``progress`` is told each phase).

  Returns:
    ``(run, info)``: ``run()`` runs one step, waits for it and returns its metrics (the
    state advances, as in training); ``info`` holds ``flops`` per step (XLA's cost analysis
    of the compiled step) and ``compile_s``.
  """
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  tx = train.make_optimizer(config)
  state = train.create_train_state(config, model, tx, mesh)
  step_fn = train.jit_train_step(config, model, tx, mesh, jax.tree.map(lambda x: x.sharding,
                                                                       state))
  batch = train.random_batch(config, mesh)
  progress("state and batch made; lowering")
  start = time.perf_counter()
  lowered = step_fn.lower(state, batch)
  progress(f"lowered in {time.perf_counter() - start:.1f} s; compiling")
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  progress(f"compiled in {compile_s:.1f} s (lowering included)")
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], batch)
    return jax.block_until_ready(metrics)

  return run, {"flops": float(cost.get("flops", float("nan"))), "compile_s": compile_s}


def bench(config, steps: int, progress=_no_progress) -> dict:
  """Median step time of ``steps`` steps after one warm-up step, and the derived rates."""
  run, info = prepare(config, progress)
  start = time.perf_counter()
  run()  # Warm-up.
  progress(f"warm-up step {time.perf_counter() - start:.2f} s")
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
    progress(f"step {len(times)}: {times[-1]:.3f} s")
  step_s = float(np.median(times))
  frames = predicted_frames(config)
  return {"step_s": step_s, "frames_per_s": frames / step_s,
          "gflop_per_frame": info["flops"] / frames / 1e9,
          "gflops": info["flops"] / step_s / 1e9, "compile_s": info["compile_s"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/grid.py")
  parser.add_argument("--batch_size", type=int, default=5)
  parser.add_argument("--seq_len", type=int, default=10)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--conv_impl", default="auto", help="comma-separated: xla,fast_wgrad,auto")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--resolution", type=int, default=0, help="override model.resolution")
  parser.add_argument("--encoder_widths", default="",
                      help="override, e.g. 64,128,256,512 (the release's widths at 64x64)")
  parser.add_argument("--peak_tflops", type=float, default=0.0,
                      help="the device's spec peak in --dtype (e.g. 989 for an H100 SXM in "
                           "bfloat16, dense): adds an MFU column, achieved / spec peak")
  parser.add_argument("--malloc", default="default", choices=("default", "hugepages", "retain"),
                      help="run again with glibc tunables (talkface_jax/host_memory.py): "
                           "hugepages: transparent huge pages for malloc's big blocks; "
                           "retain: keep freed memory (BENCHMARKS.md, run 8 and 'Host memory in "
                           "training')")
  parser.add_argument("--progress", action="store_true",
                      help="print each phase (lowering, compiling, every step) as it ends, "
                           "on lines starting with '#': where a slow compile spends its time")
  args = parser.parse_args()
  if args.malloc != "default":
    host_memory.exec_with_tunables(host_memory.TUNABLES[args.malloc])

  peak = matmul_peak_gflops(args.dtype)
  print(machine.describe())
  print(f"backend={jax.default_backend()} devices={jax.device_count()} "
        f"device={jax.devices()[0].device_kind} jax={jax.__version__} "
        f"matmul_peak({args.dtype})={peak:.1f} GFLOP/s load={os.getloadavg()[0]:.2f}")
  print(f"{'config':28s} {'conv':10s} {'B':>3s} {'T':>3s} {'res':>4s} {'step s':>8s} "
        f"{'pred fr/s':>9s} {'GFLOP/pr fr':>12s} {'GFLOP/s':>8s} {'% peak':>7s} {'compile s':>9s}"
        + (f" {'MFU':>6s}" if args.peak_tflops else ""))
  for impl in args.conv_impl.split(","):
    config = load_config(args.config)
    config.model.conv_impl = impl
    config.model.dtype = args.dtype
    config.train.batch_size = args.batch_size
    config.data.seq_len = args.seq_len
    if args.resolution:
      config.model.resolution = args.resolution
    if args.encoder_widths:
      config.model.encoder_widths = tuple(int(w) for w in args.encoder_widths.split(","))
    start = time.perf_counter()
    progress = ((lambda message: print(f"# {time.perf_counter() - start:7.1f} s  {message}",
                                       flush=True)) if args.progress else _no_progress)
    r = bench(config, args.steps, progress)
    print(f"{args.config:28s} {impl:10s} {args.batch_size:3d} {args.seq_len:3d} "
          f"{config.model.resolution:4d} {r['step_s']:8.3f} {r['frames_per_s']:9.2f} "
          f"{r['gflop_per_frame']:12.2f} {r['gflops']:8.1f} {100 * r['gflops'] / peak:6.1f}% "
          f"{r['compile_s']:9.1f}"
          + (f" {100 * r['gflops'] / (1e3 * args.peak_tflops * jax.device_count()):5.1f}%"
             if args.peak_tflops else "")
          + f"  load={os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
  main()
