"""benchmarks.machine: CPU model and ISA from /proc/cpuinfo text; the host-state probes."""

import os
import subprocess
import sys

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


def test_describe_names_this_machine(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  line = machine.describe()
  assert line.startswith("cpu=") and " isa=" in line and " load=" in line
  assert "XLA_FLAGS" not in line
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
  assert machine.describe().endswith(" XLA_FLAGS='--xla_cpu_max_isa=AVX2'")


def test_steal_share_from_proc_stat_lines():
  # user nice system idle iowait irq softirq steal guest guest_nice
  before = machine.cpu_ticks("cpu  100 0 50 800 10 0 5 35 20 0\n")
  after = machine.cpu_ticks("cpu  400 0 100 1300 10 0 5 185 90 0\n")
  assert before == (35, 1000) and after == (185, 2000)  # Guest time is inside user.
  assert machine.steal_share(before, after) == 0.15
  assert machine.cpu_ticks("intr 1 2 3") == (0, 0)
  assert machine.steal_share((0, 0), (0, 0)) == 0.0


def test_copy_bandwidth_is_a_plausible_rate():
  assert 0.1 < machine.copy_bandwidth_gbs(megabytes=8, reps=2) < 10_000


def test_free_page_reporting_reads_the_balloon_feature_bit(tmp_path):
  drivers = tmp_path / "drivers"
  devices = tmp_path / "devices"
  for name in ("virtio_balloon", "virtio_net"):
    (drivers / name).mkdir(parents=True)

  def device(index, driver, features):
    path = devices / f"virtio{index}"
    path.mkdir(parents=True)
    (path / "driver").symlink_to(drivers / driver)
    (path / "features").write_text(features + "\n")

  device(0, "virtio_net", "11000101")  # Bit 5 set, but not a balloon.
  device(1, "virtio_balloon", "01100001")  # Firecracker's balloon without reporting.
  assert not machine.free_page_reporting(str(devices))
  (devices / "virtio1" / "features").write_text("01100101\n")  # Bit 5: reporting.
  assert machine.free_page_reporting(str(devices))
  assert not machine.free_page_reporting(str(tmp_path / "absent"))


def test_tunables_command_adds_once_and_keeps_other_tunables():
  argv = ["python", "-m", "benchmarks.vs_peer", "--malloc=retain"]
  environ, again = machine.tunables_command(machine.RETAIN_TUNABLES, {"A": "1"}, argv)
  assert environ == {"A": "1", "GLIBC_TUNABLES": machine.RETAIN_TUNABLES} and again == argv
  # Already in force (the re-executed process): nothing to do, so no loop of execs.
  assert machine.tunables_command(machine.RETAIN_TUNABLES, environ, argv) is None
  environ, _ = machine.tunables_command(machine.RETAIN_TUNABLES,
                                        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, argv)
  assert environ["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1:" + machine.RETAIN_TUNABLES


def test_retained_memory_is_not_faulted_in_again():
  # The mechanism the tunables exist for (BENCHMARKS.md, run 8): a large buffer freed and
  # allocated again faults every page in afresh under glibc's defaults (it is unmapped),
  # and not at all under RETAIN_TUNABLES. Checked in fresh processes, as tunables apply
  # only from a process's start.
  script = (
      "import ctypes, resource, threading\n"
      "libc = ctypes.CDLL(None)\n"
      "libc.malloc.restype = ctypes.c_void_p\n"
      "libc.free.argtypes = [ctypes.c_void_p]\n"
      "def step():\n"  # 100 MB: over a thread arena's 64 MB heaps; every page written.
      "  p = libc.malloc(100 * 2**20)\n"
      "  ctypes.memset(p, 1, 100 * 2**20)\n"
      "  libc.free(p)\n"
      "def work(out):\n"  # On a thread, as XLA runs its steps.
      "  step(); step()\n"
      "  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
      "  step(); step(); step()\n"
      "  out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
      "out = []\n"
      "t = threading.Thread(target=work, args=(out,)); t.start(); t.join()\n"
      "print(out[0])\n")

  def faults(tunables):  # Minor page faults of the last three of five steps.
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
      env["GLIBC_TUNABLES"] = tunables
    result = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                            capture_output=True, text=True)
    return int(result.stdout.strip())

  # Each 100 MB written afresh is >= 50 faults even where transparent huge pages are always
  # on (2 MB each; 25,600 with 4 kB pages); kept memory needs none.
  assert faults("") >= 3 * 50
  assert faults(machine.RETAIN_TUNABLES) < 50
