"""What a workdir holds, and the config it carries.

A workdir is everything one run leaves::

  WORKDIR/config.json        the resolved config, written when training starts
  WORKDIR/checkpoints/<step> Orbax checkpoints (``checkpointing``)
  WORKDIR/eval_<step>.json   ``--mode=eval`` results (``evaluation``)
  WORKDIR/samples/           sampled videos
  WORKDIR/log/               library logs (absl INFO and above)
  WORKDIR/events.out.*       TensorBoard summaries

Because the config travels with the checkpoints, evaluation, sampling and
``talkface_jax.load(workdir)`` need nothing but the workdir. A config given anyway (the
command line's ``--config``) must agree with the stored one on every ``model`` key, or the
error names the keys that differ: a checkpoint can only be read by the model that wrote it.
"""

import json
import os

import ml_collections

from data_prep import fileio
import talkface_jax.errors as errors
from talkface_jax.models import talkface

CONFIG_FILE = "config.json"
# Config sections that decide the checkpoint's shapes: they must agree with the stored config,
# except for the keys that only choose how the same model computes or generates
# (``model.latent_correlation`` is the generation noise's AR(1) coefficient, and
# ``model.latent_source`` / ``bank_clips`` where z comes from at generation: training never
# reads them, so one trained model can be sampled with any).
MODEL_SECTIONS = ("model",)
COMPUTE_ONLY_KEYS = ("model.dtype", "model.conv_impl", "model.generation_batch_norm",
                     "model.latent_correlation", "model.latent_source", "model.bank_clips")


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def _plain(value):
  """ConfigDict values as JSON values (tuples as lists)."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  return value


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(_plain(config.to_dict()), indent=2, sort_keys=True)


def _from_json(value):
  """JSON values back as config values (lists as tuples, as the configs write them)."""
  if isinstance(value, dict):
    return {k: _from_json(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_from_json(v) for v in value)
  return value


def write_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Writes ``config`` as ``WORKDIR/config.json`` (atomically); returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = config_path(workdir)
  fileio.write_bytes(path, (config_to_json(config) + "\n").encode())
  return path


def read_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config stored in ``workdir``, or None if it has none.

  Raises:
    UserError: the file exists but is not a config.
  """
  path = config_path(workdir)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      stored = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise errors.UserError(f"{path}: not a readable config ({e})") from e
  if not isinstance(stored, dict) or "model" not in stored:
    raise errors.UserError(f"{path}: not a talkface_jax config (no 'model' section)")
  return ml_collections.ConfigDict(_from_json(stored))


def flatten(tree: dict, prefix: str = "") -> dict:
  """A nested dict (a config's ``to_dict()``) as {"section.key": value}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def model_differences(a: ml_collections.ConfigDict,
                      b: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Keys of the ``MODEL_SECTIONS`` whose values differ: {key: (a's value, b's value)}, less
  the ``COMPUTE_ONLY_KEYS`` (a model trained in bfloat16 can sample in float32, or with
  another ``latent_correlation``)."""
  # A key added to the model after a config was stored means there what the model reads
  # for it when absent (the paper's choice), so an older workdir still resumes.
  added = {f"model.{k}": v for k, v in talkface.ADDED_KEYS.items()}
  flat_a, flat_b = ({**added, **flatten({s: _plain(c[s].to_dict()) for s in MODEL_SECTIONS
                                      if s in c})} for c in (a, b))
  missing = object()
  return {k: (flat_a.get(k), flat_b.get(k)) for k in sorted(set(flat_a) | set(flat_b))
          if k not in COMPUTE_ONLY_KEYS and flat_a.get(k, missing) != flat_b.get(k, missing)}


def resolve_config(workdir: str,
                   given: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
  """The config to evaluate or sample ``workdir`` with.

  The stored config when none is given; the given one when the workdir stores none (a
  workdir from before configs were stored); otherwise the given one, after checking that it
  describes the stored model.

  Raises:
    UserError: no config anywhere, or the given one describes another model.
  """
  stored = read_config(workdir)
  if given is None:
    if stored is None:
      raise errors.UserError(
          f"{config_path(workdir)}: no such file (the workdir was not trained by this version, "
          "or is not a workdir): pass --config")
    return stored
  if stored is not None:
    check_same_model(stored, given, config_path(workdir))
  return given


def check_same_model(stored: ml_collections.ConfigDict, given: ml_collections.ConfigDict,
                     where: str) -> None:
  """Raises UserError naming the model keys on which ``given`` differs from ``stored``."""
  differ = model_differences(stored, given)
  if differ:
    listed = ", ".join(f"{k} (workdir {v[0]!r}, given {v[1]!r})" for k, v in differ.items())
    raise errors.UserError(f"the given config describes another model than {where}: {listed}")
