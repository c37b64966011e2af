"""Shared pytest set-up: markers, quiet TensorFlow and one XLA compilation cache per session."""

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# With the bench extra's torch from PyPI (its CUDA build), torch.utils.flop_counter imports
# triton, and importing triton after TensorFlow is loaded crashes the process (segmentation
# fault; measured with tensorflow-cpu 2.21 and torch 2.14.1 / triton: the other order works).
# Test modules import TensorFlow long before tests/test_bench_torch_peer.py imports the
# counter, so triton, where installed, is loaded first, here. Nothing else needs it.
try:
  import triton  # pylint: disable=unused-import,g-import-not-at-top
except ImportError:
  pass

# Dozens of tests, and the `run_experiment.py` runs that the slow ones start, compile the same
# tiny model's functions; compiling them is most of a test's time on 2 CPU cores. JAX's
# persistent cache (keyed by the computation, the compile options, the device count and the
# jax/XLA versions) lets a second compilation of the same computation load the executable the
# first one wrote. One cache per session: made here by the controlling process (before
# pytest-xdist starts its workers) and passed through the environment to the workers and to
# every subprocess that the tests start; removed when the session ends. A cache named by the
# caller's own JAX_COMPILATION_CACHE_DIR is used as is and kept.
_SESSION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
  _SESSION_CACHE = tempfile.mkdtemp(prefix="talkface_jax_test_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: takes over ~30 s on 2 CPU cores (still run in CI)")


def pytest_unconfigure(config):
  del config
  if _SESSION_CACHE is not None:
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
