"""Data parallelism: 8 devices and 2 processes train exactly like 1 device on the same batch."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "parallel_worker.py")


def _run(out, env_extra=None, args=()):
  env = {**os.environ, **(env_extra or {})}
  return subprocess.Popen([sys.executable, WORKER, str(out), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc):
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out.decode()[-3000:]


def _assert_same_training(a_path, b_path, param_atol):
  a, b = np.load(a_path), np.load(b_path)
  np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
  assert a["losses"][-1] < a["losses"][0]  # The steps did train.
  names = [k for k in a.files if k.startswith("p")]
  assert names and names == [k for k in b.files if k.startswith("p")]
  for name in names:
    # param_atol: some runs differ run to run by more than float noise after 3 SGD steps
    # (8 devices: up to 2.5e-5 on 6 of 4096 elements of a 4x4 kernel; 2 processes over gloo:
    # up to 2.5e-4 on the first conv kernel); the cause is not found yet. The losses above
    # match to 1e-5, and a sharding error (e.g. per-device BatchNorm statistics) moves
    # parameters by orders of magnitude more.
    np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=param_atol, err_msg=name)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  out = tmp_path_factory.mktemp("one") / "out.npz"
  _finish(_run(out, {"JAX_NUM_CPU_DEVICES": "1"}))
  assert int(np.load(out)["devices"]) == 1
  return out


@pytest.mark.slow
def test_eight_devices_equal_one(one_device, tmp_path):
  out = tmp_path / "out.npz"
  _finish(_run(out, {"JAX_NUM_CPU_DEVICES": "8"}))
  assert int(np.load(out)["devices"]) == 8
  _assert_same_training(one_device, out, param_atol=1e-4)


@pytest.mark.slow
def test_two_processes_equal_one(one_device, tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  out = tmp_path / "out.npz"
  env = {"JAX_NUM_CPU_DEVICES": "1"}
  procs = [_run(out, env, ["--num_processes=2", f"--process_id={i}", f"--port={port}"])
           for i in range(2)]
  for proc in procs:
    _finish(proc)
  assert int(np.load(out)["devices"]) == 2
  _assert_same_training(one_device, out, param_atol=1e-3)
