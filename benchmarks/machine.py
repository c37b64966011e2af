"""The machine a benchmark ran on, in one line: CPU model, vector ISA, cores, load.

Every benchmark prints ``describe()`` at the top of its output, so a figure copied into
BENCHMARKS.md carries the CPU it was measured on. The ISA matters as much as the model name:
XLA and PyTorch pick different kernels on AVX2 and AVX-512 machines (a 2048^3 f32 matmul is
~3x faster on an AVX-512 Zen 5 than on an AVX2 EPYC of the same core count), so speed ratios
measured on one kind need not hold on the other.
"""

import os
import platform

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


def describe() -> str:
  """One line for a benchmark's header: CPU model, ISA, cores and the load now."""
  return (f"cpu={cpu_model()!r} isa={cpu_isa()} cores={os.cpu_count()} load={load()}")


def _read_cpuinfo() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      return f.read()
  except OSError:  # Not Linux: fall back to platform's strings.
    return ""
