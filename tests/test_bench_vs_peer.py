"""benchmarks.vs_peer: turns, the timed step of each turn, the ratio (skipped without torch)."""

import pytest

pytest.importorskip("torch")
from benchmarks import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import vs_peer  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize("steps_per_turn", [1, 2])
def test_turns_run_each_contestant_back_to_back_and_time_the_last(monkeypatch, capsys,
                                                                  steps_per_turn):
  calls = []
  clock = [0.0]
  durations = {"peer": 2.0, "ours": 1.0}  # Seconds per step: ours twice the peer's speed,
  cold = 3.0  # and 3x slower where the step before was another program's (run 8).

  def contestant(name):
    def run():
      clock[0] += durations[name] * (1.0 if calls and calls[-1] == name else cold)
      calls.append(name)
    return run

  monkeypatch.setattr(vs_peer.time, "perf_counter", lambda: clock[0])
  monkeypatch.setattr(vs_peer, "_peer",
                      lambda *args: vs_peer.Contestant(contestant("peer"), 1e9))
  monkeypatch.setattr(train_step, "prepare", lambda config: (contestant("ours"),
                                                             {"flops": 1e9}))
  monkeypatch.setattr(train_step, "matmul_peak_gflops", lambda *args, **kwargs: 100.0)
  monkeypatch.setattr(vs_peer.machine, "copy_bandwidth_gbs", lambda: 20.0)
  medians = vs_peer.compare(64, 5, 10, ["xla"], [1], reps=3, steps_per_turn=steps_per_turn)
  turn = ["peer"] * steps_per_turn + ["ours"] * steps_per_turn
  # Our warm-up step (the peer's is in _peer), then three rounds of turns.
  assert calls == ["ours"] + turn * 3
  factor = cold if steps_per_turn == 1 else 1.0  # Only the turn's last step is timed.
  assert medians == {"torch peer 1t": 2.0 * factor, "ours xla": 1.0 * factor}
  rows = capsys.readouterr().out
  assert "   2.00x" in rows.splitlines()[-1] and "page faults" in rows


def test_the_peer_in_a_process_of_its_own_gets_its_own_tunables(monkeypatch):
  # --peer_malloc: each program at its own glibc setting. The child starts with the given
  # tunables (none for glibc's defaults) whatever this process runs with, trains, and reports
  # its own usage; this process's environment is left as it was.
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
  for tunables in ("", "glibc.malloc.arena_max=1"):
    peer = vs_peer._peer(64, 2, 2, 1, tunables)  # pylint: disable=protected-access
    try:
      assert peer.flops > 1e9
      before = peer.usage()
      peer.run()
      after = peer.usage()
      assert after[0] > before[0]  # The child's own CPU time grew by the step.
      assert vs_peer.os.environ["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    finally:
      peer.close()
  # A peer that cannot be built (BatchNorm needs two sequences) fails with a clear error,
  # not a wait for ever.
  with pytest.raises(RuntimeError, match="the peer's process failed"):
    vs_peer._peer(64, 1, 2, 1, "")  # pylint: disable=protected-access
