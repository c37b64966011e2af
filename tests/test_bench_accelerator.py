"""benchmarks/accelerator.py: the stand-ins for packages an accelerator image lacks are never
touched by the timed code (a train step and a generation equal those with the real packages)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import accelerator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENV = dict(os.environ, PYTHONPATH=ROOT)  # Subprocesses import benchmarks/ and tests/.


def figures() -> dict:
  """Two train steps (the second sees the first's update) and a two-chunk generation of the
  tiny model, and the type of the ``tensorflow`` module they ran beside."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import sample as sample_bench  # pylint: disable=g-import-not-at-top
  from benchmarks import train_step  # pylint: disable=g-import-not-at-top
  config = train_step.load_config("configs/grid.py:tiny")
  config.train.batch_size, config.data.seq_len, config.sample.chunk_frames = 2, 4, 3
  run, _ = train_step.prepare(config)
  losses = [float(run()["loss"]) for _ in range(2)]
  generator = sample_bench.make_generator(config)
  frame0, mfcc = sample_bench.random_inputs(config, 1, 5)
  videos = np.asarray(generator.generate_aligned(frame0, mfcc, 2, jax.random.key(3)))
  return {"tensorflow": type(sys.modules.get("tensorflow")).__name__, "losses": losses,
          "video_sum": float(videos.astype(np.float64).sum()), "video_std": float(videos.std())}


# The same with every stand-in, in a process of its own (run from the repository root).
_STOOD_IN = """
import json
from benchmarks import accelerator
stood_in = accelerator.install_stand_ins(force=True)
from tests import test_bench_accelerator
print(json.dumps(dict(test_bench_accelerator.figures(), stood_in=stood_in)))
"""


@pytest.mark.slow
def test_timed_code_never_touches_a_stand_in():
  out = subprocess.run([sys.executable, "-c", _STOOD_IN], cwd=ROOT, env=_ENV, check=True,
                       capture_output=True, text=True, timeout=600).stdout
  stood, real = json.loads(out.strip().splitlines()[-1]), figures()
  assert set(stood["stood_in"]) == set(accelerator.STAND_IN_PACKAGES) | {"tensorboard"}
  assert stood["tensorflow"] == "MagicMock" and real["tensorflow"] == "module"
  assert all(np.isfinite(real["losses"])) and real["video_std"] > 0
  np.testing.assert_allclose(stood["losses"], real["losses"], rtol=1e-6)
  np.testing.assert_allclose([stood["video_sum"], stood["video_std"]],
                             [real["video_sum"], real["video_std"]], rtol=1e-6)


def test_stand_ins_import_as_packages_and_only_where_missing():
  code = ("import sys; from benchmarks import accelerator as a; "
          "print(a.install_stand_ins()); a.install_stand_ins(force=True); "
          "import tensorflow.compat.v2 as tf, dlib; print(type(tf).__name__, type(dlib).__name__)")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_ENV, check=True, text=True,
                       capture_output=True).stdout.split("\n")
  assert out[0] == "[]"  # Everything is installed here: nothing stood in.
  assert out[1] == "MagicMock MagicMock"


def test_parts_run_in_priority_order():
  args = accelerator.argparse.Namespace(batches="16,48", f32_batch=8, sample_batch=4, steps=3,
                                        peak_tflops=989.0, peak_tflops_f32=67.0,
                                        part_timeout=100.0, train_timeout=400.0)
  parts = {name: (command, timeout) for name, command, timeout in accelerator.parts(args)}
  assert list(parts) == ["device", "train_bf16_b16", "sample_b1", "sample_b4", "train_bf16_b48",
                         "train_f32_b8"]
  assert "--dtype=bfloat16" in parts["train_bf16_b48"][0]
  assert parts["train_bf16_b16"][1] == 400.0 and parts["sample_b1"][1] == 100.0


@pytest.mark.parametrize("stand_in", [False, True])
def test_runs_each_part_in_a_process_and_sums_it_up(tmp_path, stand_in):
  argv = [sys.executable, "-m", "benchmarks.accelerator", f"--out={tmp_path}", "--only=device"]
  out = subprocess.run(argv + (["--stand_in_missing"] if stand_in else []), cwd=ROOT,
                       env=_ENV, check=True, capture_output=True, text=True,
                       timeout=300).stdout
  summary = (tmp_path / "summary.txt").read_text()
  assert summary.startswith("== device: rc=0 ") and out.startswith("== device: rc=0 ")
  assert "backend=cpu" in summary and "matmul 2048^3 float32:" in summary
  assert ("stand-ins: none" in summary) == stand_in  # Nothing is missing here.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["device.log", "summary.txt"]
