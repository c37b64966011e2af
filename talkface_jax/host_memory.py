"""Host memory: how glibc serves the gigabytes XLA's CPU step allocates and frees every step.

XLA:CPU takes each step's temporary buffers from ``malloc`` (3.7 GB for the 128 px
release-size train step) and frees them when the step ends. glibc serves blocks that big with
``mmap`` and unmaps them on ``free`` (on a worker thread's arena anything over 64 MB, whatever
its thresholds say), so every step faults the same memory in again, one 4 kB page at a time:
about 900,000 minor page faults and 1.5-6 s of system time per 128 px step on a 2-core VM,
more where the hypervisor takes freed pages back (free page reporting). ``config.host_malloc``
chooses what to do about it, once, at process start (BENCHMARKS.md, "Host memory in training"):

- ``hugepages``: glibc asks for transparent huge pages for its big blocks (the tunable
  ``glibc.malloc.hugetlb=1``; it matters where the kernel's THP mode is ``madvise``, as on
  the project's development VMs; with ``always`` the pages are huge already). The memory is still returned after each step, but faulted back 2 MB at a time:
  512x fewer faults, memory use unchanged. Tunables are read only when a process starts, so
  ``configure`` re-executes the command with ``GLIBC_TUNABLES`` set (before JAX is imported;
  the same process id, nothing done yet).
- ``retain``: glibc keeps freed memory (one arena, no ``mmap``, no trimming; set in-process
  with ``mallopt``): no faults at all, the fastest step, but the heap fragments and the process
  holds far more than the step's peak (13-20 GB against 6 GB at 128 px).
- ``system``: glibc's defaults; the small 64 px configs (demo, synthetic, ``tiny``) use it,
  as huge pages double their system time and one arena slows them too.
- ``auto``: ``hugepages`` where JAX runs on the CPU, else ``system`` (an accelerator's step
  keeps its buffers on the device).

Settings of glibc's allocator hold only for threads that have not allocated yet, so all of
this happens before JAX, TensorFlow or torch are imported: ``run_experiment.py`` calls
``configure`` right after parsing its flags. This module imports neither JAX nor anything that
starts threads.
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import sys

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# (parameter, value): one arena, no mmap, never trim (-1 becomes SIZE_MAX in glibc; a positive
# int would cap the threshold at 2 GB, below the 128 px step's 3.7 GB of temporaries).
_RETAIN = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))

# glibc tunables (``GLIBC_TUNABLES``, read when a process starts): huge pages for malloc's
# mmaps and heap; the retain setting for a process not yet started (trim threshold 64 GiB).
# Retain's cost is one lock for every allocation and a heap that fragments (BENCHMARKS.md,
# run 8 and "Host memory in training": the demo's 64 px step ~10 % slower, its compilation
# 1.7x longer; the 128 px training process at 13-20 GB instead of 6).
HUGEPAGE_TUNABLES = "glibc.malloc.hugetlb=1"
RETAIN_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                   "glibc.malloc.trim_threshold=68719476736")
TUNABLES = {"hugepages": HUGEPAGE_TUNABLES, "retain": RETAIN_TUNABLES}  # For benchmarks.

CHOICES = ("auto", "hugepages", "retain", "system")
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _is_glibc() -> bool:
  return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _threads() -> int:
  try:
    return len(os.listdir("/proc/self/task"))
  except OSError:
    return 0


def retain_freed_memory() -> str:
  """Makes glibc keep freed memory for reuse (``retain`` in the module docstring). Returns ''
  when done, else why not (not glibc; other threads already run, so their arenas exist)."""
  if not _is_glibc():
    return "the C library is not glibc"
  threads = _threads()
  if threads != 1:
    return (f"{threads} threads already run (call it before importing JAX)" if threads
            else "/proc/self/task is unreadable")
  libc = ctypes.CDLL(None)
  for parameter, value in _RETAIN:
    if libc.mallopt(parameter, value) != 1:
      return f"glibc refused mallopt({parameter}, {value})"
  return ""


def thp_mode(path: str = _THP_MODE_FILE) -> str:
  """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``), '' where
  unknown."""
  try:
    with open(path, encoding="ascii") as f:
      text = f.read()
  except OSError:
    return ""
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else ""


def tunables_command(tunables: str, environ=None, argv=None):
  """The (environment, argv) that run this command again with ``GLIBC_TUNABLES`` holding
  ``tunables`` (joined to any already set), or None where they are already in force."""
  environ = dict(os.environ if environ is None else environ)
  argv = list(sys.orig_argv if argv is None else argv)
  current = environ.get("GLIBC_TUNABLES", "")
  if tunables in current:
    return None
  environ["GLIBC_TUNABLES"] = f"{current}:{tunables}" if current else tunables
  return environ, argv


def exec_with_tunables(tunables: str) -> None:
  """Replaces this process by the same command with glibc ``tunables`` (read only at a
  process's start); returns where they are already in force. Call it before any work."""
  command = tunables_command(tunables)
  if command is not None:
    environ, argv = command
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, environ)


def jax_runs_on_cpu(environ=None) -> bool:
  """Whether JAX will compute on the CPU, decided without importing it (importing JAX starts
  threads): ``JAX_PLATFORMS`` names only ``cpu``, or it is unset and no accelerator plugin
  (a ``jax_plugins`` module or entry point, such as CUDA's, or ``libtpu``) is installed."""
  environ = os.environ if environ is None else environ
  platforms = environ.get("JAX_PLATFORMS", "") or environ.get("JAX_PLATFORM_NAME", "")
  if platforms:
    return all(p.strip() == "cpu" for p in platforms.split(",") if p.strip())
  if any(importlib.util.find_spec(name) for name in ("libtpu", "libtpu_nightly")):
    return False
  if importlib.metadata.entry_points(group="jax_plugins"):
    return False
  spec = importlib.util.find_spec("jax_plugins")
  if spec is not None and spec.submodule_search_locations:
    for location in spec.submodule_search_locations:
      if any(not n.startswith(("_", ".")) for n in os.listdir(location)):
        return False
  return True


def configure(choice: str) -> tuple[bool, str]:
  """Applies ``config.host_malloc`` (see the module docstring); may re-execute the process
  (``hugepages``). Returns False where an explicit ``hugepages`` or ``retain`` could not be
  applied (``auto`` falls back to glibc's defaults quietly) and one line saying what was
  done, for the log (written by the process that runs, after any re-execution).

  Raises:
    ValueError: an unknown choice.
  """
  if choice not in CHOICES:
    raise ValueError(f"host_malloc must be one of {', '.join(CHOICES)}, not {choice!r}")
  prefix = f"host_malloc={choice}"
  setting = choice
  if choice == "auto":
    if not jax_runs_on_cpu():
      return True, f"{prefix}: glibc's defaults (JAX runs on an accelerator)"
    setting = "hugepages"
  if setting == "system":
    return True, f"{prefix}: glibc's defaults"
  if not _is_glibc():
    return choice == "auto", f"{prefix}: glibc's defaults (the C library is not glibc)"
  if setting == "retain":
    why_not = retain_freed_memory()
    if why_not:
      return False, f"{prefix}: not applied, {why_not}"
    return True, f"{prefix}: freed memory is retained (one arena, no mmap, no trim)"
  mode = thp_mode()
  if mode != "madvise":  # 'always': huge pages already; 'never' or unknown: none to have.
    return True, f"{prefix}: glibc's defaults (transparent huge pages: {mode or 'unknown'})"
  exec_with_tunables(HUGEPAGE_TUNABLES)  # Returns only once in force.
  return True, f"{prefix}: GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']}"
