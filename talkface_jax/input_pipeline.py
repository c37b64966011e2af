"""Reads the TFRecord shards of ``data_prep`` (schema: ``data_prep.schema``) as training batches.

Each process reads its own even slice of the split (``tfds.split_for_jax_process``) and yields
numpy batches of ``global_batch / process_count`` sequences:

* ``frames``: uint8 [b, L, H, W, 3] (converted to float on the device, which keeps the host to
  device copy 4x smaller), ``mfcc``: float32 [b, L, 28, 12]; L = ``config.data.seq_len``;
  with ``config.model.audio_energy`` [b, L, 28, 13], each row's loudness from the clip's
  stored waveform first (``data_prep.audio.model_windows``); normalised per clip as
  ``config.data.audio_norm`` says (``data_prep.audio.normalize_windows``: here, in
  ``load_clips`` and in ``inference.prepare_speech``, every path into the model).
  With ``config.data.audio_augment`` > 0, training clips' windows are recomputed from their
  stored waveform after ``data_prep.audio_augment`` (warp, reverberation, noise, frequency
  mask), before the normalisation; evaluation reads the stored windows.

Training order is a pure function of (seed, epoch, position): every epoch shuffles its files
and examples with seeds derived from ``(config.seed, epoch)`` and crops each clip at an offset
derived from (seed, epoch, example index). A ``Position`` (epoch, examples consumed in it)
restores the exact stream after a restart; PNG decoding happens after the skip, so resuming
costs only reading the skipped records. Clips shorter than L are dropped (filtered after the
position count, so positions stay valid).
"""

import atexit
import dataclasses
import functools
import weakref
from collections.abc import Iterator, Sequence

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data_prep import audio as audio_prep
from data_prep import audio_augment
from data_prep import fileio
from data_prep import schema
import talkface_jax.errors as errors


class DataNotFoundError(FileNotFoundError, errors.UserError):
  """The configured shard folder does not exist or holds no TFDS metadata."""


class DataError(errors.UserError):
  """The shards could not be read while training (a file deleted, truncated or corrupted)."""


def _read_guarded(dataset: tf.data.Dataset, data_dir: str) -> Iterator:
  """Iterates ``dataset`` as numpy, turning TensorFlow's read errors into one-line DataErrors.

  tf.data reports a deleted shard as NotFoundError, a truncated or corrupted record as
  DataLossError and an undecodable frame as InvalidArgumentError, each with a long trace.
  The reader is closed at interpreter exit at the latest (``_close_open_readers``).
  """
  reader = _read(dataset, data_dir)
  _OPEN_READERS.add(reader)
  return reader


# Readers not yet closed. A tf.data iterator deleted while its map's calls into Python
# (tf.numpy_function: audio normalisation, augmentation) are in flight waits for them, and
# during interpreter finalization they can never take the GIL: a process whose training
# iterator outlived it (an error, a preemption stop, a script that just ends) hung at exit
# (measured with data.audio_augment = 1). Closing them while Python still runs threads avoids it.
_OPEN_READERS = weakref.WeakSet()


@atexit.register
def _close_open_readers() -> None:
  for reader in list(_OPEN_READERS):
    reader.close()


def _read(dataset: tf.data.Dataset, data_dir: str) -> Iterator:
  iterator = dataset.as_numpy_iterator()
  while True:
    try:
      item = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      message = (e.message or str(e)).strip().splitlines()[0][:300]
      raise DataError(f"shards in {data_dir}: cannot be read ({type(e).__name__}: {message}); "
                      f"rebuild them with python -m data_prep.build") from e
    yield item


@dataclasses.dataclass(frozen=True)
class Position:
  """Where a process's training stream stands: ``examples`` read of epoch ``epoch``."""
  epoch: int = 0
  examples: int = 0


def load_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder of ``config.data.dir``; a clear error if the shards are not there."""
  data_dir = config.data.dir
  # Any filesystem TFDS reads (local, gs://, ...): TPU pods read their shards from buckets.
  if not data_dir or not fileio.exists(fileio.join(data_dir, "dataset_info.json")):
    raise DataNotFoundError(
        f"no pre-processed shards in data.dir={data_dir!r} (expected dataset_info.json and "
        f"*.tfrecord-* files there). Build them from the raw corpus with:\n"
        f"  python -m data_prep.build --dataset={config.data.dataset} "
        f"--raw_dir={config.data.raw_dir or 'RAW_DIR'} --out_dir={data_dir or 'OUT_DIR'} "
        f"--resolution={config.model.resolution}\n"
        f"or point --config.data.dir at an existing shard folder.")
  builder = tfds.builder_from_directory(data_dir)
  shape = builder.info.features["frames"].shape
  if shape[1] != config.model.resolution:
    raise errors.UserError(f"shards in {data_dir} are {shape[1]}x{shape[2]}, but "
                     f"model.resolution={config.model.resolution}")
  return builder


def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % (2**31 - 1))


class InputPipeline:
  """Training and evaluation batches of one process."""

  def __init__(self, config: ml_collections.ConfigDict, local_batch_size: int):
    self.config = config
    self.local_batch_size = local_batch_size
    self.seq_len = config.data.seq_len
    audio_prep.audio_norm(config)  # A clear error for an unknown value before anything is read.
    audio_augment.augment_probability(config)
    audio_augment.augment_kinds(config)
    audio_augment.augment_warp(config)
    self.builder = load_builder(config)
    self.check_split(config.data.train_split)

  def check_split(self, split: str) -> None:
    """Raises UserError if the shards have no split ``split``."""
    check_split(self.builder, self.config.data.dir, split)

  # -- reading ----------------------------------------------------------------------------------

  def _records(self, split: str, shuffle_seed: int | None) -> tf.data.Dataset:
    """This process's examples of ``split`` with undecoded frames, in a deterministic order."""
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = 0
    read_config = tfds.ReadConfig(
        options=options, shuffle_seed=shuffle_seed, interleave_cycle_length=4,
        interleave_block_length=1)
    return self.builder.as_dataset(
        split=tfds.split_for_jax_process(split), shuffle_files=shuffle_seed is not None,
        read_config=read_config, decoders={"frames": tfds.decode.SkipDecoding()})

  def _crop_and_decode(self, example, offset, augment_seed=None):
    """The window of L frames at ``offset``; with ``augment_seed`` ([2] int64) and
    ``data.audio_augment`` > 0, its MFCC from the clip's augmented waveform."""
    length = self.seq_len
    mfcc = example["mfcc"]
    augment = audio_augment.augment_probability(self.config)
    energy = audio_prep.audio_energy(self.config)
    if augment_seed is not None and augment > 0:
      mfcc = tf.numpy_function(
          functools.partial(audio_augment.augmented_windows, probability=augment,
                            kinds=audio_augment.augment_kinds(self.config),
                            warp=audio_augment.augment_warp(self.config), energy=energy),
          [example["audio"], tf.shape(mfcc)[0], augment_seed], tf.float32, stateful=False)
    elif energy:
      mfcc = tf.numpy_function(functools.partial(audio_prep.model_windows, energy=True),
                               [example["audio"], mfcc], tf.float32, stateful=False)
    norm = audio_prep.audio_norm(self.config)
    if norm != "none":  # The whole clip's statistics, before the crop.
      mfcc = tf.numpy_function(lambda m: audio_prep.normalize_windows(m, norm), [mfcc],
                               tf.float32, stateful=False)
    png = example["frames"][offset:offset + length]
    frames = tf.map_fn(lambda x: tf.io.decode_png(x, channels=3), png,
                       fn_output_signature=tf.uint8)
    res = self.config.model.resolution
    return {"frames": tf.ensure_shape(frames, (length, res, res, 3)),
            "mfcc": tf.ensure_shape(mfcc[offset:offset + length],
                                    (length, schema.MFCC_WINDOW_ROWS,
                                     schema.audio_features(energy)))}

  def _long_enough(self, example) -> tf.Tensor:
    return tf.shape(example["frames"])[0] >= self.seq_len

  # -- training ---------------------------------------------------------------------------------

  def _epoch(self, epoch: int, skip: int) -> tf.data.Dataset:
    seed = _epoch_seed(self.config.seed, epoch)
    ds = self._records(self.config.data.train_split, seed)
    ds = ds.shuffle(self.config.data.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    ds = ds.enumerate().skip(skip)
    ds = ds.filter(lambda i, ex: self._long_enough(ex))

    def crop(index, example):
      span = tf.shape(example["frames"])[0] - self.seq_len + 1
      draws = tf.stack([tf.cast(seed, tf.int64), index])
      offset = tf.random.stateless_uniform([], seed=draws, maxval=span, dtype=tf.int32)
      return {**self._crop_and_decode(example, offset, augment_seed=draws), "index": index}

    ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch_size, drop_remainder=True)
    return ds.prefetch(self.config.data.prefetch)

  def train_batches(self, start: Position = Position()
                    ) -> Iterator[tuple[dict[str, np.ndarray], Position]]:
    """Yields (local batch, position after it) forever, from ``start``."""
    epoch, skip = start.epoch, start.examples
    while True:
      produced = 0
      for batch in _read_guarded(self._epoch(epoch, skip), self.config.data.dir):
        produced += 1
        position = Position(epoch, int(batch.pop("index")[-1]) + 1)
        yield batch, position
      if produced == 0 and skip == 0:
        raise errors.UserError(
            f"split {self.config.data.train_split!r} of {self.config.data.dir} gives no batch of "
            f"{self.local_batch_size} clips of >= {self.seq_len} frames for process "
            f"{jax.process_index()}")
      epoch, skip = epoch + 1, 0

  # -- evaluation -------------------------------------------------------------------------------

  def eval_batches(self, num_batches: int, local_batch_size: int
                   ) -> Iterator[dict[str, np.ndarray]]:
    """The first ``num_batches`` batches of the eval split, in file order, from frame 0."""
    ds = self._records(self.config.data.eval_split, None).filter(self._long_enough)
    ds = ds.map(lambda ex: self._crop_and_decode(ex, 0))
    ds = ds.batch(local_batch_size, drop_remainder=True).take(num_batches)
    count = 0
    for batch in _read_guarded(ds, self.config.data.dir):
      count += 1
      yield batch
    if count == 0:
      raise errors.UserError(f"eval split {self.config.data.eval_split!r} of {self.config.data.dir} "
                       f"has fewer than {local_batch_size} clips of >= {self.seq_len} frames "
                       f"for this process")


def check_split(builder: tfds.core.DatasetBuilder, data_dir: str, split: str) -> None:
  """Raises UserError if the shards in ``data_dir`` (``builder``) have no split ``split``."""
  if split not in builder.info.splits:
    raise errors.UserError(f"{data_dir}: no split {split!r} (has {list(builder.info.splits)})")


def example_speakers(config: ml_collections.ConfigDict, split: str) -> list[str]:
  """The speaker of every example of ``split``, in the order ``load_clips`` reads them.

  Only the speaker feature is decoded (no frames), so this is cheap next to loading clips.
  """
  builder = load_builder(config)
  check_split(builder, config.data.dir, split)
  dataset = builder.as_dataset(split=split,
                               decoders=tfds.decode.PartialDecoding({"speaker": True}))
  return [example["speaker"].decode() for example in dataset.as_numpy_iterator()]


def load_clips(config: ml_collections.ConfigDict, split: str, num_clips: int,
               seed: int | None = None, strata: Sequence[str] | None = None
               ) -> list[dict[str, np.ndarray]]:
  """Whole clips (all frames, decoded) of ``split`` for sampling and evaluation.

  Every process gets the same clips, in the split's order. With ``seed`` the clips are a
  seeded random choice of the split (the paper evaluates 256 random test clips); otherwise
  the first ones.

  Args:
    config: the experiment config (``data.dir``).
    split: TFDS split name.
    num_clips: clips to load (per stratum with ``strata``).
    seed: seeds the random choice; None takes the first clips.
    strata: optional label of every example of the split (e.g. 'seen' / 'unseen' speakers,
      in ``example_speakers`` order): ``num_clips`` clips are chosen from each label, so
      every label is represented however few examples it has. With one label the choice is
      the same as without ``strata``.
  """
  builder = load_builder(config)
  check_split(builder, config.data.dir, split)
  total = builder.info.splits[split].num_examples
  if strata is not None and len(strata) != total:
    raise ValueError(f"{len(strata)} strata for the {total} examples of {split!r}")
  groups = [np.arange(total)]
  if strata is not None and len(set(strata)) > 1:
    labels = np.asarray(strata)
    groups = [np.flatnonzero(labels == label) for label in sorted(set(strata))]
  chosen = set()
  rng = None if seed is None else np.random.default_rng(seed)
  for group in groups:
    count = min(num_clips, len(group))
    picked = group[:count] if rng is None else rng.choice(group, count, replace=False)
    chosen.update(np.asarray(picked).tolist())
  clips = []
  for index, example in enumerate(builder.as_dataset(split=split).as_numpy_iterator()):
    if index in chosen:
      example["clip_id"] = example["clip_id"].decode()
      example["speaker"] = example["speaker"].decode()
      windows = audio_prep.model_windows(example["audio"], example["mfcc"],
                                         audio_prep.audio_energy(config))
      example["mfcc"] = audio_prep.normalize_windows(windows, audio_prep.audio_norm(config))
      clips.append(example)
      if len(clips) == len(chosen):  # The rest of the split is not read (or decoded).
        break
  return clips
