"""The benchmark scripts: train step and sampling run and count predicted frames (tiny model);
the seeds table marks the stochasticity targets."""

import json
import os

import pytest

from benchmarks import sample as sample_bench
from benchmarks import seeds
from benchmarks import train_step


def _tiny():
  config = train_step.load_config("configs/grid.py:tiny")
  config.train.batch_size, config.data.seq_len = 2, 4
  config.sample.chunk_frames = 3
  return config


@pytest.mark.slow
def test_train_step_counts_predicted_frames():
  config = _tiny()
  assert train_step.predicted_frames(config) == 2 * 3  # Frame 0 of each sequence is given.
  r = train_step.bench(config, steps=1)
  assert r["frames_per_s"] == pytest.approx(6 / r["step_s"])
  assert r["gflop_per_frame"] > 0


def test_release_config_sizes():
  assert train_step.release_config(128).model.encoder_widths == (64, 128, 256, 512, 512)
  assert train_step.release_config(64).model.encoder_widths == (64, 128, 256, 512)
  with pytest.raises(ValueError, match="64 and 128"):
    train_step.release_config(96)


@pytest.mark.slow
def test_sampling_benchmark_counts_generated_frames():
  config = _tiny()
  r = sample_bench.bench(config, num_samples=2, num_frames=5, batch=1, reps=1)
  assert r["frames_per_s"] == pytest.approx(2 * 4 / r["wall_s"])
  assert r["rtf"] == pytest.approx(r["frames_per_s"] / 25)
  assert r["traces"] == 1  # 4 frames in chunks of 3: one compilation, two calls.
  # sample_bench.profile (compiles every part apart) is left to the benchmark's own runs:
  # it took minutes here under load for no check the above lacks.


def _demo_metrics(**evaluation):
  """A demo ``metrics.json`` with the figures ``benchmarks.seeds`` reads (seed 0 / auto of the
  400-step grid in BENCHMARKS.md, "stochasticity"), ``evaluation`` keys overridden."""
  ev = {"blink_overlap": 0.278, "samples_with_blink": 0.969, "truth_with_blink": 0.625,
        "closed_fraction_samples": 0.065, "closed_fraction_truth": 0.0524,
        "diversity_eyes": 0.00989, "diversity_mouth": 0.00882, "agreement_mouth": 0.935,
        "agreement_eyes": 0.355, "mse_eyes_best_of_k": 0.00325, "deterministic_mse_eyes": 0.0035,
        "head_diversity": 0.11, "head_motion_samples": 0.22, "head_motion_truth": 0.19}
  ev.update(evaluation)
  return {"evaluation": ev, "synthetic_lip_sync": {
      "sample_r_mean": 0.922, "sample_r_min": 0.874, "truth_frames_r": 0.778,
      "per_clip": {"a": {"truth_frames_r": 0.917}, "b": {"truth_frames_r": 0.530}}}}


def test_seeds_table_marks_each_target(tmp_path, capsys):
  good = seeds.figures(_demo_metrics())
  assert all(seeds.check(test, good) == "ok" for _, _, test in seeds.TARGETS)
  # Samples blinking together, 4x the data's closed frames, eyes agreeing: three targets fail.
  bad = seeds.figures(_demo_metrics(blink_overlap=0.7, closed_fraction_samples=0.21,
                                    agreement_eyes=0.8))
  marks = {name: seeds.check(test, bad) for name, _, test in seeds.TARGETS}
  assert [n for n, m in marks.items() if m == "NO"] == [
      "blink overlap", "closed frames / data", "agree eyes"]
  # No sample blinks: the overlap is undefined ('?'), not a pass.
  none = seeds.figures(_demo_metrics(blink_overlap=None, samples_with_blink=0.0))
  assert seeds.check(seeds.TARGETS[0][2], none) == "?"
  # The reconstruction's blinks are shown beside the targets ('-' for runs that predate them).
  good = seeds.figures(_demo_metrics(closed_fraction_reconstruction=0.0507,
                                     reconstruction_blink_recall=0.853))
  text = seeds.table([("seed 0, auto", good), ("seed 1, xla", bad), ("seed 2, xla", None)])
  lines = text.splitlines()
  assert len(lines) == 5 and "0.278 ok" in lines[2] and "0.7 NO" in lines[3]
  assert "missing" in lines[4]
  # ... and what the lip-sync measure gives the clips' own ground truth (mean / worst clip).
  assert lines[2].endswith("| 0.0507 / 0.853 | 0.778 / 0.53 |")
  assert lines[3].endswith("| - / - | 0.778 / 0.53 |")
  assert len({line.count("|") for line in lines}) == 1
  # Lip sync over every evaluated clip, where the evaluation measured it, outranks the 3
  # sampled clips' (runs from before have only the latter).
  metrics = _demo_metrics()
  metrics["evaluation"]["synthetic_lip_sync"] = {
      "sample_r_mean": 0.79, "sample_r_min": 0.41, "truth_frames_r": 0.81,
      "per_clip": {c: {"truth_frames_r": 0.81} for c in "abc"}}
  every = seeds.figures(metrics)
  assert (every["sync_r_mean"], every["sync_r_min"], every["sync_clips"]) == (0.79, 0.41, 3)
  assert [n for n, _, t in seeds.TARGETS if seeds.check(t, every) == "NO"] == [
      "sync r mean", "sync r min"]
  # --report_only reads finished runs back from <root>/seed<S>_<impl>/metrics.json.
  (tmp_path / "seed0_auto").mkdir()
  (tmp_path / "seed0_auto" / "metrics.json").write_text(json.dumps(_demo_metrics()))
  seeds.main(["--seeds=0", "--conv_impls=auto,xla", f"--root={tmp_path}", "--report_only"])
  out = capsys.readouterr().out
  assert "| seed 0, xla | missing" in out and "1 of 2 runs finished; 1 hold every target." in out


def test_seeds_max_isa_reaches_the_runs_environment(tmp_path, capsys, monkeypatch):
  """--max_isa adds XLA's ISA cap to the XLA_FLAGS the runs inherit (keeping flags already
  set) and the header names it, so the table says which code the runs were compiled to."""
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  seeds.main(["--seeds=0", "--conv_impls=xla", f"--root={tmp_path}", "--report_only",
              "--max_isa=AVX2"])
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_cpu_max_isa=AVX2"
  header = capsys.readouterr().out.splitlines()[0]
  assert header.startswith("cpu=") and "--xla_cpu_max_isa=AVX2" in header


def test_profile_step_reference_swaps_only_the_named_ops():
  """`--reference=max_pool` builds the parts with nn.max_pool (a reduce-window) and keeps the
  other replaced ops; unknown names are refused; the module's own ops come back after."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  from talkface_jax.models import layers  # pylint: disable=g-import-not-at-top

  x = jnp.ones((1, 4, 4, 2))

  def build():
    return {"pool": (jax.jit(lambda x: layers.max_pool(x, 2, 2)), (x,)),
            "up": (jax.jit(lambda x: layers.upsample_conv3x3(x, jnp.ones((3, 3, 2, 2)))), (x,))}

  def text(parts, name):
    return parts[name][0].as_text()

  own = layers.max_pool
  ours = profile_step.compile_parts(build)
  ref = profile_step.compile_parts(build, reference=["max_pool"])
  assert "reduce-window" in text(ref, "pool:ref") and "reduce-window" not in text(ours, "pool")
  assert "window={size=2x2" in text(ref, "up:ref")  # The fused upsampling conv's 2x2 taps.
  assert layers.max_pool is own
  with pytest.raises(ValueError, match="unknown reference ops"):
    profile_step.compile_parts(build, reference=["nope"])
