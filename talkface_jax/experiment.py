"""The three modes of ``run_experiment.py`` on a workdir: train, eval and sample.

Data flows one way: ``run_experiment.py`` -> ``run`` here -> ``train`` / ``evaluation`` /
``sampling`` (the last two through ``inference.Generator``) -> ``models``. Each mode prints
one short summary; progress bars show while it works; library logs go to the workdir's log.

``train`` also runs what the config asks for after training: the full evaluation
(``eval.after_training``) and the demo's outputs (``sample.after_training``: held-out sample
videos and ``WORKDIR/metrics.json``, with the synthetic corpus's own checks when
``config.data.synthetic`` is set).
"""

import math
import os

import jax
import ml_collections
from absl import logging

from data_prep import face, fileio, prepare, synthetic_checks
import talkface_jax.errors as errors
import talkface_jax.evaluation as evaluation
import talkface_jax.inference as inference
import talkface_jax.sampling as sampling
import talkface_jax.train as train
import talkface_jax.workdir as workdir_lib

METRICS_FILE = "metrics.json"


def run(config: ml_collections.ConfigDict | None, workdir: str, mode: str,
        sample_request: sampling.SampleRequest | None = None) -> dict | None:
  """Runs ``mode`` ('train', 'eval' or 'sample') on ``workdir``.

  Args:
    config: the config; for 'eval' and 'sample' None means the workdir's own.
    workdir: the run's folder.
    mode: what to run.
    sample_request: the command line's --face/--audio/--csv/--out/--num_samples.

  Returns:
    'train': the demo's metrics (None without ``sample.after_training``); 'eval': the
    results; 'sample': None.

  Raises:
    UserError: bad config, flags, files or workdir (one line naming the problem).
  """
  if mode == "train":
    return _train(config, workdir)
  if mode not in ("eval", "sample"):
    raise ValueError(f"unknown mode {mode!r}")
  request = sample_request or sampling.SampleRequest()
  requests = request.file_requests(workdir) if mode == "sample" else None  # Before the restore.
  generator = inference.load(workdir, config=config)
  if mode == "eval":
    results = evaluation.evaluate(generator, workdir)
    if results is not None:
      print(evaluation.format_table(results), flush=True)
    return results
  summary = sampling.run(generator, workdir, request, requests)
  if jax.process_index() == 0:
    print(summary, flush=True)
  return None


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  if config is None:
    config = workdir_lib.read_config(workdir)
    if config is None:
      raise errors.UserError("--mode=train needs --config (or a workdir that stores one)")
  evaluation.check_config(config)
  if config.data.prepare:
    try:
      prepare.ensure_shards(config)
    except (ValueError, FileNotFoundError) as e:  # data_prep's errors: the config's data.
      raise errors.UserError(str(e)) from e
  # 'auto': timed here (whole steps), the choice kept by the workdir's stored config.
  config, train_fn = train.choose_conv_impl(config, workdir)
  state = train.train_and_evaluate(config, workdir, train_fn)
  if int(state.step) < config.train.num_steps:
    logging.info("Training stopped at step %d of %d: evaluation and samples come when it "
                 "resumes and finishes.", int(state.step), config.train.num_steps)
    return None
  if not (config.eval.after_training or config.sample.after_training):
    return None
  generator = inference.Generator(config, train.variables_of(state), step=int(state.step),
                                  workdir=workdir)
  eval_results = None
  if config.eval.after_training:
    eval_results = evaluation.evaluate(generator, workdir)
    if eval_results is not None:
      print(evaluation.format_table(eval_results), flush=True)
  if config.sample.after_training:
    return write_demo_outputs(generator, workdir, eval_results)
  return None


def write_demo_outputs(generator: inference.Generator, workdir: str,
                       eval_results: dict | None) -> dict:
  """Held-out sample files and ``WORKDIR/metrics.json`` of a finished run; returns the metrics.

  ``metrics.json`` holds the evaluation's figures and, for a synthetic corpus
  (``config.data.synthetic``), lip sync and blinks of the sampled clips against the curves
  that drove the faces (``data_prep.synthetic_checks``; the evaluation holds the same lip
  sync over all its clips).
  """
  config, step = generator.config, generator.step
  samples_dir = os.path.join(workdir, "samples")
  # Clips of seen and of unseen speakers when the eval split has both.
  _, strata = evaluation.speaker_strata(config)
  clips, videos = sampling.sample_heldout(generator, strata=strata)
  paths = sampling.write_clip_videos(clips, videos, samples_dir, step)
  results = {"step": step, "evaluation": eval_results,
             "samples": [os.path.relpath(p, workdir) for p in paths]}
  if jax.process_index() != 0:
    return results
  if "synthetic" in config.data and config.data.synthetic:
    checks = synthetic_checks.synthetic_checks(config.data.raw_dir, clips, videos)
    results["synthetic_lip_sync"] = checks["lip_sync"]
    results["synthetic_blinks"] = checks["blinks"]
  fileio.write_json(os.path.join(workdir, METRICS_FILE), fileio.json_ready(results))
  print(format_summary(results, workdir), flush=True)
  return results


def format_summary(results: dict, workdir: str) -> str:
  """The headline figures of ``metrics.json`` and where the outputs are."""
  lines = [f"Finished at step {results['step']}: outputs in {workdir}"]
  ev = results.get("evaluation") or {}
  for name in ("ssim", "psnr", "lipsync_r"):
    if f"{name}_mean_of_k" in ev:
      lines.append(f"  {name:<10} mean of K {_fmt(ev[f'{name}_mean_of_k'])}   best of K "
                   f"{_fmt(ev[f'{name}_best_of_k'])}   deterministic "
                   f"{_fmt(ev.get(f'deterministic_{name}'))}")
  if "still_frame_ssim" in ev:
    lines.append(f"  frame 0 held still: ssim {_fmt(ev['still_frame_ssim'])}, psnr "
                 f"{_fmt(ev['still_frame_psnr'])}")
  if "identity_distance_median" in ev:
    lines.append(f"  identity (face-descriptor distance to frame 0): median "
                 f"{_fmt(ev['identity_distance_median'])} (ground truth "
                 f"{_fmt(ev['truth_identity_distance_median'])}), frames under "
                 f"{face.SAME_PERSON_DISTANCE} "
                 f"{_fmt(ev['identity_under_threshold'])}, face found "
                 f"{_fmt(ev['identity_face_found'])}")
  for kind in evaluation.KINDS:
    if (ev.get(kind) or {}).get("num_clips"):
      figures = ev[kind]
      lines.append(f"  {kind} speakers ({figures['num_clips']} clips): ssim best of K "
                   f"{_fmt(figures['ssim_best_of_k'])}, lip sync r "
                   f"{_fmt(figures['lipsync_r_mean_of_k'])} (worst clip "
                   f"{_fmt(figures.get('lipsync_r_worst_clip'))}), identity median "
                   f"{_fmt(figures.get('identity_distance_median'))}")
  for name in ("diversity", "diversity_eyes", "diversity_mouth", "agreement_mouth",
               "agreement_eyes"):
    if name in ev:
      lines.append(f"  {name:<16} {_fmt(ev[name])}")
  if "blink_overlap" in ev:  # metrics.sample_variation, averaged over the evaluated clips.
    lines.append(
        f"  eval blinks: samples with one {_fmt(ev['samples_with_blink'])} (clips "
        f"{_fmt(ev['truth_with_blink'])}); closed-eye frames {_fmt(ev['closed_fraction_samples'])}"
        f" (clips {_fmt(ev['closed_fraction_truth'])}); overlap of two samples' blinks "
        f"{_fmt(ev['blink_overlap'])}; closed frames shared with the deterministic video "
        f"{_fmt(ev.get('closed_with_baseline'))}; teacher-forced reconstruction: closed-eye "
        f"frames {_fmt(ev.get('closed_fraction_reconstruction'))}, of the clips' closed frames "
        f"{_fmt(ev.get('reconstruction_blink_recall'))}\n  head: diversity "
        f"{_fmt(ev['head_diversity'])} px, motion {_fmt(ev['head_motion_samples'])} px "
        f"(clips {_fmt(ev['head_motion_truth'])}); eye "
        f"MSE best of K {_fmt(ev['mse_eyes_best_of_k'])} vs deterministic "
        f"{_fmt(ev['deterministic_mse_eyes'])}")
  for sync, which in ((ev.get("synthetic_lip_sync"), "evaluated"),
                      (results.get("synthetic_lip_sync"), "sampled")):
    if sync:
      lines.append(f"  lip sync r vs the synthetic curve ({which} clips: "
                   f"{len(sync['per_clip'])}): samples mean {_fmt(sync['sample_r_mean'])}, worst "
                   f"{_fmt(sync['sample_r_min'])}; ground-truth frames "
                   f"{_fmt(sync['truth_frames_r'])}")
  blinks = results.get("synthetic_blinks")
  if blinks:
    lines.append(f"  blinks: samples with a closed-eye frame {_fmt(blinks['samples_with_blink'])}"
                 f" (ground-truth clips {_fmt(blinks['truth_clips_with_blink'])}); frames "
                 f"with closed eyes {_fmt(blinks['closed_fraction_samples'])} (ground truth "
                 f"{_fmt(blinks['closed_fraction_truth'])}); eye measure r vs the synthetic "
                 f"curve on ground-truth frames {_fmt(blinks['truth_frames_r'])}")
  lines.append(f"  {len(results['samples'])} sample files under "
               f"{os.path.join(workdir, 'samples')}; figures in "
               f"{os.path.join(workdir, METRICS_FILE)}")
  return "\n".join(lines)


def _fmt(value) -> str:
  return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"
