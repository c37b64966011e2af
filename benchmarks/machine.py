"""The machine a benchmark ran on, in one line: CPU model, vector ISA, cores, load.

Every benchmark prints ``describe()`` at the top of its output, so a figure copied into
BENCHMARKS.md carries the CPU it was measured on. The ISA matters as much as the model name:
XLA and PyTorch pick different kernels on AVX2 and AVX-512 machines (a 2048^3 f32 matmul is
~3x faster on an AVX-512 Zen 5 than on an AVX2 EPYC of the same core count), so speed ratios
measured on one kind need not hold on the other.

A virtual machine's speed also changes with its host's state: the same Intel Xeon VM ran our
128 px step 1.84x slower six hours after a first run, its matmul 1.32x (BENCHMARKS.md, run 6).
``cpu_ticks`` / ``steal_share`` (time the hypervisor gave to other guests) and
``copy_bandwidth_gbs`` (memory bandwidth, shared with the host's other guests) let a
benchmark record that state beside its figures.

Memory returned to the kernel is the other part of that state. Our 128 px train step
allocates a 3.7 GB temporary buffer and ~3 GB of outputs per step; glibc serves each from a
fresh ``mmap`` (allocations over 64 MB on a thread's arena always are) and unmaps it
afterwards, so every step touches ~900,000 new pages (BENCHMARKS.md, run 8). Where the VM's
balloon device reports freed pages to the host (``free_page_reporting``), the host discards
them and each step's page faults cost it work too: 3-37 s of system time per step on the
Xeon VM of runs 5-8, depending on the host. ``process_usage`` counts a step's faults and
system time; ``talkface_jax.host_memory`` has the glibc settings that avoid the faults
(``config.host_malloc`` in training, ``--malloc`` in vs_peer and train_step).
"""

import os
import platform
import resource
import time

import numpy as np

# Flag names as /proc/cpuinfo (and lscpu) spell them, best first.
_ISA_LEVELS = (
    ("amx_tile", "AVX-512+AMX"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
    ("avx", "AVX"),
    ("sse4_2", "SSE4.2"),
)


def cpu_model(cpuinfo: str | None = None) -> str:
  """The CPU's model name (``lscpu``'s "Model name"), or the platform's processor string."""
  cpuinfo = _read_cpuinfo() if cpuinfo is None else cpuinfo
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == "model name":
      return value.strip()
  return platform.processor() or platform.machine() or "unknown CPU"


def cpu_isa(cpuinfo: str | None = None) -> str:
  """The widest x86 vector ISA the CPU reports ("AVX-512", "AVX2", ...), else the machine."""
  cpuinfo = _read_cpuinfo() if cpuinfo is None else cpuinfo
  flags = set()
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == "flags":
      flags = set(value.split())
      break
  for flag, name in _ISA_LEVELS:
    if flag in flags:
      return name
  return platform.machine() or "unknown ISA"


def load() -> str:
  """The 1-, 5- and 15-minute load averages ("2.01 1.50 0.90"); ~core count = machine busy."""
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_ticks(stat: str | None = None) -> tuple[int, int]:
  """(steal, total) jiffies of all CPUs since boot, from /proc/stat's "cpu" line ((0, 0)
  where there is none). Two readings bracket an interval: ``steal_share``."""
  if stat is None:
    try:
      with open("/proc/stat", encoding="ascii") as f:
        stat = f.readline()
    except OSError:
      return 0, 0
  fields = stat.split()
  if not fields or fields[0] != "cpu":
    return 0, 0
  # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
  # already counted in user and nice, so the total is the first eight.
  values = [int(v) for v in fields[1:9]]
  return (values[7] if len(values) > 7 else 0), sum(values)


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
  """Share of the CPUs' time between two ``cpu_ticks`` readings that the hypervisor gave to
  other guests (0 on bare metal; a few % is a busy host)."""
  total = after[1] - before[1]
  return (after[0] - before[0]) / total if total > 0 else 0.0


def copy_bandwidth_gbs(megabytes: int = 256, reps: int = 3) -> float:
  """Best-of-``reps`` memory bandwidth of a one-thread copy of ``megabytes`` of float32, in
  GB/s counting the bytes read and written."""
  src = np.ones(megabytes * 2**20 // 4, np.float32)
  dst = np.empty_like(src)
  np.copyto(dst, src)  # Fault the pages in before timing.
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    np.copyto(dst, src)
    best = min(best, time.perf_counter() - start)
  return 2 * src.nbytes / best / 1e9


def process_usage() -> tuple[float, float, int]:
  """(user s, system s, minor page faults) of this process so far; two readings bracket a
  step: a step that faults in fresh pages shows them here."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime, usage.ru_stime, usage.ru_minflt


def free_page_reporting(devices: str = "/sys/bus/virtio/devices") -> bool:
  """Whether a virtio balloon reports freed guest pages to the host (feature bit 5,
  VIRTIO_BALLOON_F_REPORTING): then memory freed and touched again costs the host a fault."""
  try:
    names = os.listdir(devices)
  except OSError:
    return False
  for name in names:
    path = os.path.join(devices, name)
    try:
      driver = os.path.basename(os.readlink(os.path.join(path, "driver")))
      with open(os.path.join(path, "features"), encoding="ascii") as f:
        features = f.read().strip()
    except OSError:
      continue
    if driver == "virtio_balloon" and len(features) > 5 and features[5] == "1":
      return True
  return False


def describe() -> str:
  """One line for a benchmark's header: CPU model, ISA, cores, the load now, the memory
  state that changes step times (free page reporting, glibc tunables in force) and XLA's flags
  where set (``--xla_cpu_max_isa`` changes the code XLA generates, hence rounding and speed)."""
  line = (f"cpu={cpu_model()!r} isa={cpu_isa()} cores={os.cpu_count()} load={load()} "
          f"free_page_reporting={free_page_reporting()} "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  xla_flags = os.environ.get("XLA_FLAGS", "")
  return f"{line} XLA_FLAGS={xla_flags!r}" if xla_flags else line


def _read_cpuinfo() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      return f.read()
  except OSError:  # Not Linux: fall back to platform's strings.
    return ""
