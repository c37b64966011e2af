"""The three modes of ``run_experiment.py``: train, eval and sample a workdir."""

import os

import ml_collections
from absl import logging

from talkface_jax import checkpointing, parallel, sampling, train
from talkface_jax.models import talkface


def run(config: ml_collections.ConfigDict, workdir: str, mode: str,
        sample_request: sampling.SampleRequest | None = None) -> None:
  """Runs ``mode`` ('train', 'eval' or 'sample') on ``workdir``.

  ``sample_request`` (the command line's --face/--audio/--csv/--out/--num_samples) makes
  sample mode use the user's files instead of held-out clips.
  """
  if mode == "train":
    if config.data.prepare:
      # Imported here: only runs that build their own data need Dlib and the corpus generator.
      from data_prep import prepare  # pylint: disable=g-import-not-at-top
      prepare.ensure_shards(config)
    state = train.train_and_evaluate(config, workdir)
    eval_results = None
    if config.eval.after_training:
      from talkface_jax import evaluation  # pylint: disable=g-import-not-at-top
      eval_results = evaluation.evaluate(config, workdir)
    if config.sample.after_training:
      from talkface_jax import demo  # pylint: disable=g-import-not-at-top  (Dlib)
      demo.write_outputs(config, workdir, state, eval_results)
    return
  if mode == "eval":
    from talkface_jax import evaluation  # pylint: disable=g-import-not-at-top  (Dlib)
    evaluation.evaluate(config, workdir)
    return
  if mode != "sample":
    raise ValueError(f"unknown mode {mode!r}")
  request = sample_request or sampling.SampleRequest()
  file_requests = request.file_requests(workdir)  # Bad flags fail before the restore.
  num_samples = request.num_samples or config.sample.num_samples
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  state = restore_latest(config, workdir, model, mesh)
  variables = train.variables_of(state)
  if file_requests:
    report = sampling.sample_files(config, model, variables, file_requests, num_samples)
    if report.failed:
      raise sampling.InputError(
          f"{len(report.failed)} of {len(file_requests)} inputs failed (the others were "
          "written): " + "; ".join(report.failed.values()))
    return
  out_dir = os.path.join(workdir, "samples")
  paths = sampling.write_sample_files(config, model, variables, out_dir, int(state.step),
                                      num_samples)
  logging.info("Wrote %d files under %s", len(paths), out_dir)


def restore_latest(config, workdir: str, model, mesh) -> train.TrainState:
  """The newest checkpoint of ``workdir``; a clear error if there is none."""
  tx = train.make_optimizer(config)
  ckpt = checkpointing.Checkpointer(workdir, config)
  step = ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}: train first with "
                            f"--mode=train --workdir={workdir}")
  try:
    state, _ = ckpt.restore(step, train.abstract_train_state(config, model, tx, mesh))
  except (ValueError, KeyError) as e:
    raise ValueError(f"checkpoint {ckpt.directory}/{step} does not match the config's model "
                     f"(resolution, widths, sizes): {e}") from e
  finally:
    ckpt.close()
  return state
