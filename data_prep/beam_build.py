"""The shard build as an Apache Beam pipeline (``python -m data_prep.build --runner=beam``).

The pipeline runs the build's own per-clip and per-shard functions (handed in by
:mod:`data_prep.build`, so both runners share every line of that code)::

  Create(clips) -> Reshuffle -> ParDo(process, retried) -> (shard, info) --+
  Create(shards) -> (shard, job) -------------------------------------------+-> CoGroupByKey
                                                                             -> Map(write shard)

Clips are cached in ``out_dir/_work/clips`` as in the pool path, so a killed pipeline is
resumed by running the build again, and a shard is written (atomically, with its marker) by
the same writer once all its clips are there; a shard with a clip that failed after its
retries is not written, and the build then fails naming the clip. The TFDS metadata and the
manifest are written by the driver afterwards, as in the pool path.

Default options: the DirectRunner in multi-processing mode with ``num_workers`` workers (in
memory for 0). On a cluster pass e.g. ``--beam_options="--runner=FlinkRunner
--flink_master=host:8081 --environment_type=LOOPBACK"`` or Dataflow's options; ``out_dir``
(and its ``_work`` cache) must then be on storage every worker reaches (``gs://...``), and
the workers need this package: add ``--setup_file=./setup.py`` (Dataflow) or a container
image with it installed.
Needs the ``beam`` extra (``pip install -e ".[beam]"``). Imports no JAX.
"""

import shlex
from collections.abc import Callable, Sequence

import apache_beam as beam
from apache_beam.options import pipeline_options


def default_options(num_workers: int) -> list[str]:
  """DirectRunner options: ``num_workers`` processes (0: in this process)."""
  if num_workers <= 0:
    return ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
  return ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
          f"--direct_num_workers={num_workers}"]


class _Process(beam.DoFn):
  """(shard name, clip source, identity) -> (shard name, clip info), with retries."""

  def __init__(self, process: Callable):
    super().__init__()
    self._process = process

  def process(self, element):
    shard_name, source, identity = element
    info = self._process(source, identity=identity)
    beam.metrics.Metrics.counter("talkface", f"clips_{info['status']}").inc()
    yield shard_name, info


def _write(element, write: Callable):
  shard_name, grouped = element
  (job,) = grouped["job"]
  infos = list(grouped["infos"])
  if any(info["status"] == "failed" for info in infos):
    beam.metrics.Metrics.counter("talkface", "shards_not_written").inc()
    return shard_name, False
  write(job, {info["clip_id"]: info for info in infos})
  beam.metrics.Metrics.counter("talkface", "shards_written").inc()
  return shard_name, True


def run_pipeline(process: Callable, write: Callable, clips: Sequence[tuple],
                 jobs: Sequence, beam_options: str | None, num_workers: int) -> None:
  """Runs the build's pipeline to completion.

  Args:
    process: ``process(source, identity=...) -> info`` (the build's retried per-clip work).
    write: ``write(job, infos)`` writes one shard and its marker (the build's writer).
    clips: (shard name, clip source, identity) of every clip to process.
    jobs: the shards to write (``build.ShardJob``, with a ``name``).
    beam_options: pipeline options as one command-line string, or None for the default.
    num_workers: workers of the default DirectRunner.
  """
  argv = shlex.split(beam_options) if beam_options else default_options(num_workers)
  options = pipeline_options.PipelineOptions(argv)
  with beam.Pipeline(options=options) as pipeline:
    shard_jobs = pipeline | "Shards" >> beam.Create([(job.name, job) for job in jobs])
    infos = (pipeline
             | "Clips" >> beam.Create(list(clips))
             | "Spread" >> beam.Reshuffle()
             | "Process" >> beam.ParDo(_Process(process)))
    _ = ({"job": shard_jobs, "infos": infos}
         | "Join" >> beam.CoGroupByKey()
         | "Write" >> beam.Map(_write, write))
