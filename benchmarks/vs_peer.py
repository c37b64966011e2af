"""Our jitted train step against a PyTorch peer of the authors' release, timed in one run.

  pip install -e .[bench]          # torch (CPU build is enough); only benchmarks need it
  python -m benchmarks.vs_peer                                   # 64 and 128 px, B 5 x T 10
  python -m benchmarks.vs_peer --resolutions=128 --reps=5 --conv_impl=xla,auto

For each resolution the contestants (the peer, ``benchmarks/torch_peer.py``, at each
``--peer_threads`` count, and our step with each ``--conv_impl``) are compiled / built, run
once to warm up (not timed), then timed in turns, A B C A B C ..., so a change of load on a
shared machine hits all of them alike (each turn runs two steps back to back and times the
second, as training runs them: ``--steps_per_turn``); the medians are compared. Both train on
the same shapes: the release's batch of 5 sequences of 10 frames and its widths
(``train_step.release_config``), predicting B x (T-1) frames a step. Printed per contestant:
step time, predicted frames/s, GFLOP per predicted frame (ours: XLA's cost analysis of the
compiled step, every op; the peer: torch's FlopCounterMode, convolutions and matmuls of
forward and backward) and the achieved share of a jitted f32 2048^3 matmul timed in every
round beside the steps; then the ratio of the fastest peer's step time to each contestant's
(above 1: faster than the peer). Each round also records the host's state (``machine``): a
one-thread memory copy's bandwidth and the share of CPU time stolen by the hypervisor; each
step, its system time and page faults (``--malloc=retain`` runs every contestant with glibc
keeping freed memory: no faults; ``--peer_malloc`` runs the peer in a process of its own with
other glibc settings, e.g. each program as it ships: ``--malloc=hugepages
--peer_malloc=default``, since huge pages speed our step and slow the peer's). The peer runs
with one torch thread per core and with one thread: on a machine that other jobs share,
torch's OpenMP threads wait on each other and one thread can be 2-4x faster than two, so the
peer's best is the fair reference.

At 64x64 the two models differ: the release's 64 px net is SVG-LP's (2-3 convs per scale),
ours is the 128 px net with one stage fewer, so the ratio there compares the two programs as
released, not equal work; the GFLOP column says how much each does.
"""

import argparse
from collections.abc import Callable
import dataclasses
import multiprocessing
import os
import sys
import time

import jax
import numpy as np

try:
  import torch
except ImportError:
  sys.exit("benchmarks/vs_peer.py needs torch (the bench extra): pip install -e '.[bench]'")

from benchmarks import machine  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position
from talkface_jax import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position


@dataclasses.dataclass
class Contestant:
  """One program's train step, as the turns call it."""
  run: Callable[[], None]  # One train step.
  flops: float  # Per step.
  usage: Callable[[], tuple] = machine.process_usage  # (user s, system s, minor faults) so far.
  close: Callable[[], None] = lambda: None


def _peer(resolution: int, batch: int, seq_len: int, threads: int,
          tunables: str | None = None) -> Contestant:
  """The peer in this process, or with ``tunables`` (glibc's, '' for its defaults) in a
  process of its own, so that each program runs at its own malloc setting."""
  if tunables is not None:
    return _peer_process(resolution, batch, seq_len, threads, tunables)
  peer = torch_peer.ReleasePeer(resolution)
  frames, mfcc = torch_peer.random_batch(resolution, batch, seq_len)
  torch_peer.set_threads(threads)
  flops = torch_peer.step_flops(peer, frames, mfcc)  # Also the warm-up step.

  def run():
    torch_peer.set_threads(threads)  # Thread counts are process-wide: set per contestant.
    peer.train_step(frames, mfcc)

  return Contestant(run, flops)


def _peer_process(resolution, batch, seq_len, threads, tunables: str) -> Contestant:
  context = multiprocessing.get_context("spawn")  # A fresh process: tunables apply at start.
  conn, child_conn = context.Pipe()
  saved = os.environ.pop("GLIBC_TUNABLES", None)
  if tunables:
    os.environ["GLIBC_TUNABLES"] = tunables
  try:
    process = context.Process(target=torch_peer.serve, daemon=True,
                              args=(child_conn, resolution, batch, seq_len, threads))
    process.start()
    child_conn.close()  # The child's end: a child that dies makes recv raise EOFError.
  finally:
    os.environ.pop("GLIBC_TUNABLES", None)
    if saved is not None:
      os.environ["GLIBC_TUNABLES"] = saved
  try:
    flops, child_tunables = conn.recv()  # After its warm-up step.
  except EOFError:
    process.join()
    raise RuntimeError(f"the peer's process failed (exit code {process.exitcode}); its "
                       "traceback is above") from None
  if child_tunables != tunables:
    raise RuntimeError(f"the peer's process runs with GLIBC_TUNABLES={child_tunables!r}, "
                       f"not {tunables!r}")

  def call(command):
    conn.send(command)
    return conn.recv()

  def close():
    conn.send("stop")
    process.join()

  return Contestant(lambda: call("step"), flops, lambda: call("usage"), close)


def compare(resolution: int, batch: int, seq_len: int, conv_impls, peer_threads, reps: int,
            steps_per_turn: int = 2, peer_tunables: str | None = None):
  """Times the peer (per thread count) and our step (per ``conv_impls``) interleaved; prints
  one row each, with the fastest peer's step time over each contestant's.

  Each round also times the jitted f32 2048^3 matmul (best of 3), so the peak that the
  "%peak" column divides by is measured under the same load as the steps (median of rounds).
  A contestant's turn runs ``steps_per_turn`` steps back to back and times the last, as
  training runs them: a step right after another of the same program reuses the pages the
  one before freed, while after the other contestants' turns they may have gone back to a
  VM's host (free page reporting) and fault in afresh at the host's cost (run 8).
  """
  contestants = {}
  for threads in peer_threads:
    print(f"  {resolution} px: building the peer ({threads} threads) and its warm-up step",
          file=sys.stderr, flush=True)
    contestants[f"torch peer {threads}t"] = _peer(resolution, batch, seq_len, threads,
                                                  peer_tunables)
  for impl in conv_impls:
    print(f"  {resolution} px: compiling ours ({impl}) and its warm-up step", file=sys.stderr,
          flush=True)
    run, info = train_step.prepare(train_step.release_config(resolution, batch, seq_len, impl))
    run()  # Warm-up.
    contestants[f"ours {impl}"] = Contestant(run, info["flops"])
  times = {name: [] for name in contestants}
  system_s = {name: [] for name in contestants}  # Kernel time: page faults, mostly.
  faults = {name: [] for name in contestants}
  peaks, bandwidths, steals = [], [], []
  for rep in range(reps):
    print(f"  {resolution} px: timed round {rep + 1}/{reps}", file=sys.stderr, flush=True)
    ticks = machine.cpu_ticks()
    peaks.append(train_step.matmul_peak_gflops("float32", reps=3))
    bandwidths.append(machine.copy_bandwidth_gbs())
    for name, contestant in contestants.items():
      for _ in range(steps_per_turn - 1):
        contestant.run()
      usage = contestant.usage()
      start = time.perf_counter()
      contestant.run()
      times[name].append(time.perf_counter() - start)
      after = contestant.usage()
      system_s[name].append(after[1] - usage[1])
      faults[name].append(after[2] - usage[2])
    steals.append(machine.steal_share(ticks, machine.cpu_ticks()))
  for contestant in contestants.values():
    contestant.close()
  frames = batch * (seq_len - 1)
  medians = {name: float(np.median(t)) for name, t in times.items()}
  peer_s = min(t for name, t in medians.items() if name.startswith("torch"))
  peak = float(np.median(peaks))
  print(f"{resolution:4d} {'f32 matmul 2048^3':18s} {'':8s} {'':10s} {'':12s} {peak:8.1f} "
        f"{100.0:6.1f}%  {'':8s} [{', '.join(f'{p:.0f}' for p in peaks)} GFLOP/s]", flush=True)
  # The host's state in each round: a VM's speed changes with its neighbours (machine.py).
  print(f"{resolution:4d} {'host per round':18s} memory copy "
        f"[{', '.join(f'{b:.1f}' for b in bandwidths)}] GB/s, steal "
        f"[{', '.join(f'{100 * s:.1f}' for s in steals)}] %", flush=True)
  for name, contestant in contestants.items():
    flops = contestant.flops
    step_s = medians[name]
    gflops = flops / step_s / 1e9
    print(f"{resolution:4d} {name:18s} {step_s:8.3f} {frames / step_s:10.2f} "
          f"{flops / frames / 1e9:12.2f} {gflops:8.1f} {100 * gflops / peak:6.1f}% "
          f"{peer_s / step_s:7.2f}x  [{', '.join(f'{t:.2f}' for t in times[name])}] "
          f"sys [{', '.join(f'{t:.1f}' for t in system_s[name])}] s, page faults "
          f"[{', '.join(f'{n / 1e3:.0f}k' for n in faults[name])}] load={machine.load()}",
          flush=True)
  return medians


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--resolutions", default="64,128")
  parser.add_argument("--batch_size", type=int, default=5)
  parser.add_argument("--seq_len", type=int, default=10)
  parser.add_argument("--conv_impl", default="xla,auto", help="ours: comma list")
  parser.add_argument("--reps", type=int, default=3, help="timed steps per contestant")
  parser.add_argument("--steps_per_turn", type=int, default=2,
                      help="steps a contestant runs back to back in its turn; the last is "
                           "timed (1: each timed step follows the other contestants')")
  parser.add_argument("--peer_threads", default="",
                      help="comma list of torch thread counts, each a peer contestant (default: "
                           "the core count and 1: on a busy machine one thread can be the faster)")
  parser.add_argument("--malloc", default="default", choices=("default", "hugepages", "retain"),
                      help="run again with glibc tunables (talkface_jax/host_memory.py): "
                           "hugepages: transparent huge pages for malloc's big blocks; "
                           "retain: keep freed memory; for every contestant alike, unless "
                           "--peer_malloc gives the peer its own")
  parser.add_argument("--peer_malloc", default="same",
                      choices=("same", "default", "hugepages", "retain"),
                      help="same: the peer runs in this process, at --malloc; else in a "
                           "process of its own with these glibc tunables (default: none), so "
                           "each program runs at its own setting, e.g. as each ships: "
                           "--malloc=hugepages --peer_malloc=default")
  args = parser.parse_args()
  if args.malloc != "default":
    host_memory.exec_with_tunables(host_memory.TUNABLES[args.malloc])
  peer_threads = ([int(t) for t in args.peer_threads.split(",")] if args.peer_threads
                  else sorted({os.cpu_count() or 1, 1}, reverse=True))
  peer_tunables = (None if args.peer_malloc == "same"
                   else host_memory.TUNABLES.get(args.peer_malloc, ""))
  print(machine.describe())
  if peer_tunables is not None:
    print(f"the peer in a process of its own, GLIBC_TUNABLES={peer_tunables!r}")
  print(f"jax={jax.__version__} torch={torch.__version__} "
        f"(cpu capability {torch.backends.cpu.get_cpu_capability()}) "
        f"B={args.batch_size} T={args.seq_len}: "
        f"{args.batch_size * (args.seq_len - 1)} predicted frames per step")
  print(f"{'res':>4s} {'contestant':18s} {'step s':>8s} {'pred fr/s':>10s} "
        f"{'GFLOP/pr fr':>12s} {'GFLOP/s':>8s} {'%peak':>7s} {'peer/x':>8s}  [steps]  (peer/x: the fastest peer's step time / this one's)")
  for res in (int(r) for r in args.resolutions.split(",")):
    compare(res, args.batch_size, args.seq_len, args.conv_impl.split(","), peer_threads,
            args.reps, args.steps_per_turn, peer_tunables)
  print(f"done, load={machine.load()}")


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  main()
