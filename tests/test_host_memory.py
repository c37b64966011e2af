"""talkface_jax.host_memory: glibc keeps freed memory (in-process or by tunables), only where
it can and, by default, only where JAX runs on the CPU."""

import os
import subprocess
import sys

import pytest

from talkface_jax import host_memory

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A large buffer freed and allocated again on a thread (as XLA runs its steps): prints the
# minor page faults of the last three of five rounds. Under glibc's defaults every round
# faults its pages in afresh (the block is unmapped on free); kept memory needs none.
_ROUNDS = """
import ctypes, resource, threading
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def step():  # 100 MB: over a thread arena's 64 MB heaps; every page written.
  p = libc.malloc(100 * 2**20)
  ctypes.memset(p, 1, 100 * 2**20)
  libc.free(p)
def work(out):
  step(); step()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  step(); step(); step()
  out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
out = []
t = threading.Thread(target=work, args=(out,)); t.start(); t.join()
print(out[0])
"""


def _run(script: str, tunables: str = "", env=None) -> str:
  env = {**{k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}, **(env or {})}
  env["PYTHONPATH"] = _ROOT
  if tunables:
    env["GLIBC_TUNABLES"] = tunables
  result = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                          capture_output=True, text=True, cwd=_ROOT)
  return result.stdout.strip()


_LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


@_LINUX
def test_each_setting_removes_the_faults_it_is_for():
  # BENCHMARKS.md, run 8. Each 100 MB written afresh is 25,600 faults with 4 kB pages, and
  # >= 50 even where transparent huge pages are always on (2 MB each).
  default = int(_run(_ROUNDS))
  assert default >= 3 * 50
  # Kept memory is not faulted in at all: glibc tunables, read at a process's start (the
  # benchmarks re-execute with them), or in-process, before any other thread allocates.
  assert int(_run(_ROUNDS, host_memory.RETAIN_TUNABLES)) < 50
  retain = ("from talkface_jax import host_memory\n"
            "assert host_memory.retain_freed_memory() == ''\n")
  assert int(_run(retain + _ROUNDS)) < 50
  if host_memory.thp_mode() == "madvise":  # Where huge pages are asked for, 512x fewer.
    assert default >= 3 * 25_000
    assert int(_run(_ROUNDS, host_memory.HUGEPAGE_TUNABLES)) < 3 * 25_000 // 50


@_LINUX
def test_hugepages_runs_the_command_again_with_the_tunable():
  script = ("import os\n"
            "from talkface_jax import host_memory\n"
            "print('start', repr(os.environ.get('GLIBC_TUNABLES', '')), flush=True)\n"
            "print(*host_memory.configure('auto'), sep=', ')\n")
  env = {"JAX_PLATFORMS": "cpu"}
  if host_memory.thp_mode() == "madvise":
    assert _run(script, env=env).splitlines() == [
        "start ''", "start 'glibc.malloc.hugetlb=1'",
        "True, host_malloc=auto: GLIBC_TUNABLES=glibc.malloc.hugetlb=1"]
  else:  # Huge pages always or never: nothing to ask for, so no second start.
    assert _run(script, env=env).splitlines()[0::2] == ["start ''"]
  # Already in force (as after the re-execution): no loop of starts.
  assert _run(script, "glibc.malloc.hugetlb=1", env=env).splitlines()[0] == (
      "start 'glibc.malloc.hugetlb=1'")


def test_tunables_command_adds_once_and_keeps_other_tunables():
  argv = ["python", "run_experiment.py", "--config=configs/grid.py"]
  environ, again = host_memory.tunables_command(host_memory.RETAIN_TUNABLES, {"A": "1"}, argv)
  assert environ == {"A": "1", "GLIBC_TUNABLES": host_memory.RETAIN_TUNABLES} and again == argv
  assert host_memory.tunables_command(host_memory.RETAIN_TUNABLES, environ, argv) is None
  environ, _ = host_memory.tunables_command(host_memory.HUGEPAGE_TUNABLES,
                                            {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"},
                                            argv)
  assert environ["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"


def test_thp_mode(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert host_memory.thp_mode(str(path)) == "madvise"
  path.write_text("[always] madvise never\n")
  assert host_memory.thp_mode(str(path)) == "always"
  assert host_memory.thp_mode(str(tmp_path / "absent")) == ""


@_LINUX
def test_too_late_once_other_threads_run():
  # Threads that already allocated keep their own arenas, so the call declines and says why;
  # importing the package itself starts none (it does not import JAX).
  script = ("import threading, time\n"
            "import talkface_jax\n"
            "from talkface_jax import host_memory\n"
            "import sys\n"
            "assert 'jax' not in sys.modules\n"
            "e = threading.Event()\n"
            "t = threading.Thread(target=e.wait); t.start()\n"
            "print(host_memory.retain_freed_memory())\n"
            "e.set(); t.join()\n")
  assert _run(script) == "2 threads already run (call it before importing JAX)"


def test_jax_runs_on_cpu_from_environment():
  assert host_memory.jax_runs_on_cpu({"JAX_PLATFORMS": "cpu"})
  assert not host_memory.jax_runs_on_cpu({"JAX_PLATFORMS": "cuda"})
  assert not host_memory.jax_runs_on_cpu({"JAX_PLATFORMS": "tpu,cpu"})
  assert not host_memory.jax_runs_on_cpu({"JAX_PLATFORM_NAME": "gpu"})


def test_jax_runs_on_cpu_sees_an_installed_plugin(tmp_path, monkeypatch):
  # Unset JAX_PLATFORMS: an accelerator plugin module under jax_plugins (CUDA's is one)
  # means JAX may run elsewhere, so "auto" leaves glibc's defaults.
  monkeypatch.delitem(sys.modules, "jax_plugins", raising=False)
  plugins = tmp_path / "jax_plugins"
  plugins.mkdir()
  monkeypatch.syspath_prepend(str(tmp_path))
  assert host_memory.jax_runs_on_cpu({})  # An empty namespace folder: no plugin.
  (plugins / "xla_cuda12").mkdir()
  (plugins / "xla_cuda12" / "__init__.py").write_text("")
  assert not host_memory.jax_runs_on_cpu({})


def test_configure(monkeypatch):
  with pytest.raises(ValueError, match="host_malloc must be one of auto, hugepages, retain, "
                     "system, not 'keep'"):
    host_memory.configure("keep")
  assert host_memory.configure("system") == (True, "host_malloc=system: glibc's defaults")
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  assert host_memory.configure("auto") == (
      True, "host_malloc=auto: glibc's defaults (JAX runs on an accelerator)")
  # pytest runs threads of its own (and JAX may be imported): too late to retain.
  if sys.platform.startswith("linux") and host_memory._threads() > 1:  # pylint: disable=protected-access
    applied, line = host_memory.configure("retain")
    assert not applied and "threads already run" in line
