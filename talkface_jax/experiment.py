"""The three modes of ``run_experiment.py``: train, eval and sample a workdir."""

import json
import os

import jax
import ml_collections
from absl import logging

from talkface_jax import checkpointing, input_pipeline, parallel, sampling, train
from talkface_jax.models import talkface


def run(config: ml_collections.ConfigDict, workdir: str, mode: str) -> None:
  """Runs ``mode`` ('train', 'eval' or 'sample') on ``workdir``."""
  if mode == "train":
    if config.data.prepare:
      # Imported here: only runs that build their own data need Dlib and the corpus generator.
      from data_prep import prepare  # pylint: disable=g-import-not-at-top
      prepare.ensure_shards(config)
    train.train_and_evaluate(config, workdir)
    if config.eval.after_training:
      from talkface_jax import evaluation  # pylint: disable=g-import-not-at-top
      evaluation.evaluate(config, workdir)
    return
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  state = restore_latest(config, workdir, model, mesh)
  step = int(state.step)
  if mode == "eval":
    pipeline = input_pipeline.InputPipeline(config, parallel.local_batch_size(
        config.train.batch_size, mesh))
    eval_fn = train.jit_eval_step(config, model, mesh,
                                  jax.tree.map(lambda x: x.sharding, state))
    results = train.evaluate_loss(config, eval_fn, state, pipeline, mesh)
    path = os.path.join(workdir, f"eval_{step}.json")
    if jax.process_index() == 0:
      with open(path, "w") as f:
        json.dump({"step": step, **results}, f, indent=2)
    logging.info("Eval at step %d: %s (written to %s)", step, results, path)
  elif mode == "sample":
    paths = sampling.write_sample_files(config, model, train.variables_of(state),
                                        os.path.join(workdir, "samples"), step)
    logging.info("Wrote %d files under %s", len(paths), os.path.join(workdir, "samples"))
  else:
    raise ValueError(f"unknown mode {mode!r}")


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
