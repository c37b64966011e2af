"""Accelerator run (issue 12, item 5): bf16 train step MFU, sampling, and the input pipeline's
budget, in one short command for a lent GPU/TPU machine, each part in its own process.

  python -m benchmarks.accelerator --out=/tmp/accel --peak_tflops=989   # an H100/H200 SXM

Parts, in order of priority (a part that fails or runs past its timeout is reported and the
next one runs): the device and its measured bf16 / f32 matmul rates; the train step of
configs/grid.py (128x128, the release's widths, T = 75) in bfloat16 at the first of
``--batches``, with MFU against ``--peak_tflops`` and against the in-run matmul rate, each
phase (lowering, compiling, every step) logged as it ends; sampling (``benchmarks/sample.py``)
at 64 and 128 px, K = 1 and 8, one input per call and ``--sample_batch`` inputs per call; the
train step at the other batch sizes, then in float32. Each part's output goes to
``<out>/<part>.log`` and a line per part to ``<out>/summary.txt``.

The input pipeline is not timed here (its figures come from ``benchmarks/input_pipeline.py``
on the host that will feed the device). What it must deliver is B x T frames per step (the
identity frame is read too): a train row's predicted frames/s times T / (T - 1).

Accelerator images without this project's CPU-side stack: the timed code (model, train step,
generation) needs JAX, Flax, Optax, Orbax, ml-collections and clu, but modules it imports for
other work (tf.data input, Dlib, librosa, MFCC and video I/O) pull in TensorFlow, Dlib and the
rest, which such an image may lack and which are too large to ship with the run. With
``--stand_in_missing`` each of those packages that is not installed is replaced by a stand-in
module (every attribute a ``MagicMock``) before the part's module is imported, and the part's
log names them. A stand-in that the timed code touched would give a different result:
``tests/test_bench_accelerator.py`` checks that a train step and a generation computed with
every one of them stood in equal those computed with the real packages.
"""

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import os
import runpy
import subprocess
import sys
import time
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Imported by modules beside the timed code (input pipeline, pre-processing, media, summaries),
# never by the step or generation themselves.
STAND_IN_PACKAGES = ("tensorflow", "tensorflow_datasets", "dlib", "librosa",
                     "face_recognition_models", "imageio_ffmpeg", "espeakng_loader",
                     "soundfile", "apache_beam")


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports every module under ``roots`` as a MagicMock (a package, so submodules import)."""

  def __init__(self, roots):
    self.roots = frozenset(roots)

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname.split(".")[0] in self.roots:
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    return None

  def create_module(self, spec):
    module = mock.MagicMock(name=spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    del module


def install_stand_ins(force: bool = False) -> list[str]:
  """Stands in for the packages of ``STAND_IN_PACKAGES`` that are missing (all with ``force``).

  Returns the names stood in for; nothing is installed when none is.
  """
  missing = [name for name in STAND_IN_PACKAGES
             if force or importlib.util.find_spec(name) is None]
  if "tensorflow" in missing:  # TensorBoard's summaries would take a stand-in for the real one.
    missing.append("tensorboard")
  if missing:
    for name in list(sys.modules):
      if name.split(".")[0] in missing:
        del sys.modules[name]
    sys.meta_path.insert(0, _StandInFinder(missing))
  return missing


def _child(argv: list[str]) -> None:
  """``--child [--force] MODULE ARGS...``: runs MODULE as __main__ with stand-ins installed."""
  force = argv[:1] == ["--force"]
  if force:
    argv = argv[1:]
  stood_in = install_stand_ins(force)
  print(f"stand-ins: {', '.join(stood_in) or 'none'}", flush=True)
  module, sys.argv = argv[0], argv
  sys.path.insert(0, ROOT)
  runpy.run_module(module, run_name="__main__", alter_sys=True)


def _matmul_part() -> None:
  """Prints the device, jax's version and the in-run bf16 / f32 matmul rates (n^3: n = 8192
  on an accelerator, 2048 on a CPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import train_step  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  print(f"backend={jax.default_backend()} devices={jax.device_count()} "
        f"device={device.device_kind} jax={jax.__version__}")
  n = train_step.matmul_size()
  for dtype in ("bfloat16", "float32"):
    print(f"matmul {n}^3 {dtype}: {train_step.matmul_peak_gflops(dtype, n) / 1e3:.2f} TFLOP/s",
          flush=True)


def parts(args) -> list[tuple[str, list[str], float]]:
  """(name, module + arguments, timeout in s) of each part, in the order they run."""
  train = ["benchmarks.train_step", "--config=configs/grid.py", "--seq_len=75",
           "--conv_impl=xla", f"--steps={args.steps}", f"--peak_tflops={args.peak_tflops}",
           "--progress"]
  sample = ["benchmarks.sample", "--resolutions=64,128", "--num_samples=1,8", "--seconds=3"]
  batches = args.batches.split(",")
  out = [("device", ["benchmarks.accelerator", "--matmul"], args.part_timeout)]
  out.append((f"train_bf16_b{batches[0]}",
              train + ["--dtype=bfloat16", f"--batch_size={batches[0]}"], args.train_timeout))
  out.append(("sample_b1", sample + ["--batch_size=1"], args.part_timeout))
  out.append((f"sample_b{args.sample_batch}", sample + [f"--batch_size={args.sample_batch}"],
              args.part_timeout))
  for b in batches[1:]:
    out.append((f"train_bf16_b{b}", train + ["--dtype=bfloat16", f"--batch_size={b}"],
                args.train_timeout))
  out.append((f"train_f32_b{args.f32_batch}",
              train + ["--dtype=float32", f"--batch_size={args.f32_batch}",
                       f"--peak_tflops={args.peak_tflops_f32}"], args.train_timeout))
  return out


def main():
  if sys.argv[1:2] == ["--child"]:
    _child(sys.argv[2:])
    return
  if sys.argv[1:2] == ["--matmul"]:
    _matmul_part()
    return
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="folder for the logs and summary.txt")
  parser.add_argument("--batches", default="32,8",
                      help="bf16 train batch sizes: the first right after the device part, the "
                           "others after sampling")
  parser.add_argument("--f32_batch", type=int, default=16)
  parser.add_argument("--sample_batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--peak_tflops", type=float, default=989.0,
                      help="the device's dense bf16 spec peak (989: H100/H200 SXM)")
  parser.add_argument("--peak_tflops_f32", type=float, default=67.0,
                      help="its float32 (non-tensor-core) spec peak, for the f32 row")
  parser.add_argument("--part_timeout", type=float, default=120.0,
                      help="seconds for the device and sampling parts")
  parser.add_argument("--train_timeout", type=float, default=420.0,
                      help="seconds for each train part (its compile included: on an H200 "
                           "with jax 0.11.2 the bf16 T = 75 step had not compiled after 150 s)")
  parser.add_argument("--stand_in_missing", action="store_true")
  parser.add_argument("--only", default="", help="comma list of part names to run")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, (ROOT, env.get("PYTHONPATH"))))
  for name, command, timeout in parts(args):
    if args.only and name not in args.only.split(","):
      continue
    argv = ([sys.executable, "-m", "benchmarks.accelerator", "--child", *command]
            if args.stand_in_missing else [sys.executable, "-m", *command])
    start = time.perf_counter()
    log_path = os.path.join(args.out, f"{name}.log")
    with open(log_path, "w", encoding="utf-8") as log:
      try:
        rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            timeout=timeout, check=False).returncode
      except subprocess.TimeoutExpired:
        rc = "timeout"
    with open(log_path, encoding="utf-8") as log:
      rows = [line.rstrip() for line in log if not line.startswith(("W1", "I1", "E1"))]
    report = "\n".join([f"== {name}: rc={rc} {time.perf_counter() - start:.0f} s", *rows[-12:]])
    print(report, flush=True)
    with open(os.path.join(args.out, "summary.txt"), "a", encoding="utf-8") as summary:
      summary.write(report + "\n")


if __name__ == "__main__":
  main()
