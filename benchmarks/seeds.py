"""Is the demo stochastic in every run? The demo config at several seeds and conv_impl values.

Runs ``run_experiment.py --config=configs/demo.py`` once per (seed, conv_impl) into
``<root>/seed<S>_<conv_impl>`` (a finished run is not repeated: its ``metrics.json`` is read
back) and prints one table of the issue's targets, each figure with its target:

* blinks at different times: overlap of closed-eye frames of two samples that both blink
  (``metrics.blink_overlap``, mean over clips) < 0.5;
* blinks as often as the data: fraction of samples with a blink / fraction of ground-truth
  clips with one, and closed-eye frames samples / ground truth, both within 0.5x-2x;
* diversity at the eyes above the mouth; agreement of the samples' mouths >= 0.9, eyes <= 0.5;
* lip sync: r against the synthetic driving curve >= 0.8 on average, every sample >= 0.6
  (every evaluated clip's K samples; for runs from before the evaluation measured it, the
  3 sampled clips');
* best-of-K eye-region MSE under the deterministic baseline's (z = the prior's mean).

Beside them, not targets: the lip-sync r of the clips' own ground-truth frames (what the
measure gives the data), head diversity / motion, and the teacher-forced reconstruction's
closed-eye fraction and its recall of the data's closed frames (does the model render a blink
when the frame posterior encodes one? If so, samples without blinks are generation's doing:
the prior, or the predictor fed its own frames).

Every figure comes from the evaluation (all held-out clips, K samples each,
``eval_<step>.json`` as copied into ``metrics.json``). Different ``conv_impl`` values give
different float rounding, so together with the seeds they test whether the behaviour is a
property of the system or of one lucky run. The default pair is ``xla,eigen``: ``auto`` picks
one of the two by timing (``train.choose_conv_impl``), so on some CPUs it would repeat
``xla``; the runs of BENCHMARKS.md named ``auto`` before 2026-12-03 (fifth session) used Eigen.

  python -m benchmarks.seeds --seeds=0,1,2 --conv_impls=xla,eigen --root=runs/seeds \\
      [--override=--config.model.prior=learned ...] [--report_only | --remeasure]

``--max_isa=AVX2`` compiles every run's XLA code for at most that instruction set
(``XLA_FLAGS=--xla_cpu_max_isa``): the code another kind of CPU gets, hence its rounding, on
this one (use a root of its own: finished runs are not repeated). The library kernels XLA
calls (Eigen's convolutions and matmuls) are built into jaxlib and do not change with it.

``--remeasure`` samples each finished run again from its checkpoint and measures it with the
code at hand (its stored evaluation is kept): for runs made before a measure changed. It
says whether the videos came out the same as before (they do on the same kind of CPU).

``--generate_from=OTHER_ROOT`` trains nothing: each run of OTHER_ROOT is evaluated and
sampled again into ``<root>/seed<S>_<conv_impl>`` (sharing its checkpoints) with the
``--override`` keys that change generation or evaluation only (``workdir.COMPUTE_ONLY_KEYS``
and any ``eval.*`` key, e.g. ``--override=--config.model.latent_source=posterior_bank`` or
``--override=--config.eval.num_samples=8``).
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

# (column, target text, test on the figures dict) of the targets.
TARGETS = (
    ("blink overlap", "< 0.5", lambda f: f["blink_overlap"] < 0.5),
    ("samples w/ blink / clips", "0.5-2x",
     lambda f: 0.5 <= f["samples_with_blink"] / f["truth_with_blink"] <= 2.0),
    ("closed frames / data", "0.5-2x",
     lambda f: 0.5 <= f["closed_fraction_samples"] / f["closed_fraction_truth"] <= 2.0),
    ("div eyes > mouth", ">", lambda f: f["diversity_eyes"] > f["diversity_mouth"]),
    ("agree mouth", ">= 0.9", lambda f: f["agreement_mouth"] >= 0.9),
    ("agree eyes", "<= 0.5", lambda f: f["agreement_eyes"] <= 0.5),
    ("sync r mean", ">= 0.8", lambda f: f["sync_r_mean"] >= 0.8),
    ("sync r min", ">= 0.6", lambda f: f["sync_r_min"] >= 0.6),
    ("eye MSE best-K < det", "<", lambda f: f["mse_eyes_best_of_k"] < f["deterministic_mse_eyes"]),
)


def figures(metrics: dict) -> dict:
  """The figures the targets need, from a demo's ``metrics.json``."""
  ev = metrics["evaluation"]
  out = {k: ev.get(k) for k in (
      "blink_overlap", "samples_with_blink", "truth_with_blink", "closed_fraction_samples",
      "closed_fraction_truth", "diversity_eyes", "diversity_mouth", "agreement_mouth",
      "agreement_eyes", "mse_eyes_best_of_k", "deterministic_mse_eyes", "head_diversity",
      "head_motion_samples", "head_motion_truth", "closed_with_baseline",
      "closed_fraction_reconstruction", "reconstruction_blink_recall")}
  # Every evaluated clip's samples (24 x K = 4 in the demo) where the evaluation measured it
  # (since 2026-12-03, fourth session); runs from before: the sampled clips' (3 x K = 4).
  sync = ev.get("synthetic_lip_sync") or metrics.get("synthetic_lip_sync") or {}
  out["sync_clips"] = len(sync.get("per_clip", {}))
  out["sync_r_mean"], out["sync_r_min"] = sync.get("sample_r_mean"), sync.get("sample_r_min")
  # Not a target: the same r of the clips' own ground-truth frames, the measure's ceiling
  # (the demo's s1/brwk3p, a small mouth in a swaying head, scores 0.70; 0.53 when the mouth
  # was measured on the 64 px crops themselves).
  out["sync_truth_r"] = sync.get("truth_frames_r")
  out["sync_truth_r_min"] = min((c["truth_frames_r"] for c in sync.get("per_clip", {}).values()),
                                default=None)
  return out


def value_text(name: str, f: dict) -> str:
  """The figure(s) behind a target, as printed in its cell."""
  fmt = lambda v: "-" if v is None else f"{v:.3g}"
  pairs = {"samples w/ blink / clips": ("samples_with_blink", "truth_with_blink"),
           "closed frames / data": ("closed_fraction_samples", "closed_fraction_truth"),
           "div eyes > mouth": ("diversity_eyes", "diversity_mouth"),
           "eye MSE best-K < det": ("mse_eyes_best_of_k", "deterministic_mse_eyes")}
  single = {"blink overlap": "blink_overlap", "agree mouth": "agreement_mouth",
            "agree eyes": "agreement_eyes", "sync r mean": "sync_r_mean",
            "sync r min": "sync_r_min"}
  if name in pairs:
    a, b = pairs[name]
    return f"{fmt(f[a])}/{fmt(f[b])}"
  return fmt(f[single[name]])


def check(test, f: dict) -> str:
  """'ok', 'NO', or '?' when a figure is missing or undefined (e.g. no sample blinks)."""
  try:
    return "ok" if test(f) else "NO"
  except (TypeError, ZeroDivisionError):
    return "?"


def table(rows: list[tuple[str, dict | None]]) -> str:
  """Markdown table: one row per run, a cell per target ('value ok|NO|?')."""
  head = ("| run | " + " | ".join(f"{n} ({t})" for n, t, _ in TARGETS) +
          " | head div / motion (px) | reconstruction closed / recall |"
          " ground truth's sync r mean / min |")
  lines = [head, "|" + "---|" * (len(TARGETS) + 4)]
  fmt = lambda v: "-" if v is None else f"{v:.3g}"
  for name, f in rows:
    if f is None:
      lines.append(f"| {name} | " + " | ".join("missing" for _ in TARGETS) + " | - | - | - |")
      continue
    cells = [f"{value_text(n, f)} {check(test, f)}" for n, _, test in TARGETS]
    head_cell = (f"{f['head_diversity']:.2f} / {f['head_motion_samples']:.2f} (data "
                 f"{f['head_motion_truth']:.2f})" if f.get("head_diversity") is not None else "-")
    # Not a target: whether the model renders the data's blinks when the frame posterior
    # encodes them (teacher-forced), against which the samples' blinks are generation's doing.
    recon_cell = (f"{fmt(f.get('closed_fraction_reconstruction'))} / "
                  f"{fmt(f.get('reconstruction_blink_recall'))}")
    truth_cell = f"{fmt(f.get('sync_truth_r'))} / {fmt(f.get('sync_truth_r_min'))}"
    lines.append(f"| {name} | " + " | ".join(cells) +
                 f" | {head_cell} | {recon_cell} | {truth_cell} |")
  return "\n".join(lines)


def run_one(root: str, seed: int, conv_impl: str, overrides: list[str], log) -> str:
  """Runs (or finds) one demo; returns its workdir."""
  workdir = os.path.join(root, f"seed{seed}_{conv_impl}")
  if os.path.exists(os.path.join(workdir, "metrics.json")):
    print(f"{workdir}: finished earlier, reading it back", flush=True)
    return workdir
  cmd = [sys.executable, "run_experiment.py", "--config=configs/demo.py",
         f"--workdir={workdir}", f"--config.seed={seed}",
         f"--config.model.conv_impl={conv_impl}", *overrides]
  print(f"{workdir}: running ({' '.join(cmd[1:])})", flush=True)
  start = time.time()
  result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
  print(f"{workdir}: rc={result.returncode} in {time.time() - start:.0f} s", flush=True)
  return workdir


def remeasure(workdir: str) -> bool:
  """Samples a finished run's held-out clips again from its checkpoint and rewrites its
  ``metrics.json`` (the demo's outputs, ``experiment.write_demo_outputs``) with the measures
  of this code, keeping the evaluation it stored: for runs made before a measure changed.

  Returns whether the regenerated videos are the ones measured before, as far as a measure
  that did not change says: the closed-eye frames of every sample, measured on the crops as
  they are, must come out the same (the same checkpoint, config, seed and CPU kind).
  """
  # TensorFlow (imported by talkface_jax for tf.data) says nothing at start-up, as in
  # run_experiment.py.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  from talkface_jax import experiment, inference  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "metrics.json")
  with open(path) as f:
    before = json.load(f)
  experiment.write_demo_outputs(inference.load(workdir), workdir, before["evaluation"])
  with open(path) as f:
    after = json.load(f)
  closed = lambda m: {k: c["sample_closed_frames"]
                      for k, c in m["synthetic_blinks"]["per_clip"].items()}
  return closed(before) == closed(after)


def _set_key(config, override: str) -> None:
  """Applies ``--config.a.b=value`` to ``config`` (the value typed like the key's default in
  configs/default.py)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  key, _, text = override.removeprefix("--config.").partition("=")
  *path, name = key.split(".")
  node, reference = config, default.get_config()
  for part in path:
    node, reference = node[part], reference[part]
  kind = type(reference[name]) if name in reference else str
  value = (text.lower() in ("1", "true")) if kind is bool else kind(text)
  with node.unlocked():
    node[name] = value


def regenerate(source: str, workdir: str, overrides: list[str]) -> None:
  """Evaluates and samples the finished run ``source`` again into ``workdir`` (its
  checkpoints linked, not copied) with ``overrides`` of generation-only keys."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  # pylint: disable=g-import-not-at-top
  from talkface_jax import evaluation, experiment, inference
  from talkface_jax import workdir as workdir_lib
  config = workdir_lib.read_config(source)
  for override in overrides:
    _set_key(config, override)
  workdir_lib.check_same_model(workdir_lib.read_config(source), config, source)
  os.makedirs(workdir, exist_ok=True)
  link = os.path.join(workdir, "checkpoints")
  if not os.path.exists(link):
    os.symlink(os.path.abspath(os.path.join(source, "checkpoints")), link)
  workdir_lib.write_config(workdir, config)
  generator = inference.load(workdir)
  experiment.write_demo_outputs(generator, workdir, evaluation.evaluate(generator, workdir))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--conv_impls", default="xla,eigen")
  parser.add_argument("--root", default="runs/seeds", help="One workdir per run under it.")
  parser.add_argument("--override", action="append", default=[],
                      help="Extra run_experiment flag, e.g. --override=--config.model.prior=learned")
  parser.add_argument("--report_only", action="store_true",
                      help="Only tabulate the runs already finished under --root.")
  parser.add_argument("--generate_from", default="",
                      help="A root of finished runs to evaluate and sample again (nothing is "
                      "trained) with --override's generation-only keys.")
  parser.add_argument("--max_isa", default="",
                      help="Compile the runs for at most this ISA (XLA's --xla_cpu_max_isa, "
                      "e.g. AVX2): another CPU kind's generated code on this machine.")
  parser.add_argument("--remeasure", action="store_true",
                      help="Sample every finished run again from its checkpoint and measure "
                      "it with this code (its evaluation is kept), then tabulate.")
  args = parser.parse_args(argv)
  if args.max_isa:  # Read by every run this starts (and by --remeasure, before JAX loads).
    os.environ["XLA_FLAGS"] = " ".join(
        f for f in (os.environ.get("XLA_FLAGS", ""), f"--xla_cpu_max_isa={args.max_isa}") if f)
  print(machine.describe(), flush=True)
  seeds = [int(s) for s in args.seeds.split(",")]
  impls = args.conv_impls.split(",")
  os.makedirs(args.root, exist_ok=True)
  rows = []
  with open(os.path.join(args.root, "runs.log"), "a") as log:
    for seed in seeds:
      for impl in impls:
        workdir = os.path.join(args.root, f"seed{seed}_{impl}")
        path = os.path.join(workdir, "metrics.json")
        if args.generate_from:
          source = os.path.join(args.generate_from, f"seed{seed}_{impl}")
          if not os.path.exists(path) and os.path.exists(os.path.join(source, "metrics.json")):
            regenerate(source, workdir, args.override)
            print(f"{workdir}: generated again from {source}", flush=True)
        elif args.remeasure:
          if os.path.exists(path):
            same = remeasure(workdir)
            print(f"{workdir}: measured again; the same videos as before: {same}", flush=True)
        elif not args.report_only:
          run_one(args.root, seed, impl, args.override, log)
        if os.path.exists(path):
          with open(path) as f:
            rows.append((f"seed {seed}, {impl}", figures(json.load(f))))
        else:
          rows.append((f"seed {seed}, {impl}", None))
  print(table(rows))
  done = sum(f is not None for _, f in rows)
  held = sum(f is not None and all(check(t, f) == "ok" for _, _, t in TARGETS) for _, f in rows)
  print(f"{done} of {len(rows)} runs finished; {held} hold every target.")


if __name__ == "__main__":
  main()
