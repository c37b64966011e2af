"""benchmarks.machine: CPU model and ISA from /proc/cpuinfo text."""

from benchmarks import machine

_AVX512 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B45 (Zen 5)
flags\t\t: fpu sse sse2 sse4_2 avx avx2 fma avx512f avx512bw avx512vl
"""
_AVX2 = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 sse4_2 avx avx2 fma
"""


def test_model_and_isa_from_cpuinfo():
  assert machine.cpu_model(_AVX512) == "AMD EPYC 9B45 (Zen 5)"
  assert machine.cpu_isa(_AVX512) == "AVX-512"
  assert machine.cpu_model(_AVX2) == "AMD EPYC 7B13"
  assert machine.cpu_isa(_AVX2) == "AVX2"
  assert machine.cpu_isa(_AVX2.replace(" avx2", "")) == "AVX"


def test_describe_names_this_machine():
  line = machine.describe()
  assert line.startswith("cpu=") and " isa=" in line and " load=" in line
