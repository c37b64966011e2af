"""benchmarks.machine: CPU model and ISA from /proc/cpuinfo text; the host-state probes."""

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
