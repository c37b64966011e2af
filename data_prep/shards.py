"""TFRecord shard writing with TFDS metadata, so ``tfds.builder_from_directory`` loads the output.

File names follow TFDS's template ``{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}``. A shard is
written to a temporary name and renamed into place only when complete (:mod:`data_prep.fileio`),
so a crash never leaves a file that looks finished; ``out_dir`` may be local or a
``tf.io.gfile`` URL (``gs://...``). ``write_metadata`` writes ``dataset_info.json``/``features.json`` for
complete splits, counting the records of the shards on disk.
"""

import functools
import io
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

import tensorflow as tf
import tensorflow_datasets as tfds

from data_prep import fileio
from data_prep import schema


def filename_template(out_dir: str, split: str) -> tfds.core.ShardedFileTemplate:
  """TFDS file-name template of ``split``'s shards under ``out_dir``."""
  return tfds.core.ShardedFileTemplate(
      data_dir=out_dir, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      dataset_name=schema.DATASET_NAME, split=split, filetype_suffix="tfrecord")


def shard_path(out_dir: str, split: str, index: int, num_shards: int) -> str:
  """Final path of shard ``index`` of ``num_shards`` of ``split`` (TFDS's file-name template)."""
  return fileio.join(out_dir, f"{schema.DATASET_NAME}-{split}.tfrecord-"
                              f"{index:05d}-of-{num_shards:05d}")


def write_shard(path: str, serialized_examples: Iterable[bytes]) -> int:
  """Writes one TFRecord shard atomically (temp file + rename); returns its record count."""
  count = 0
  with fileio.atomic_path(path) as tmp_path:
    with tf.io.TFRecordWriter(tmp_path) as writer:
      for record in serialized_examples:
        writer.write(record)
        count += 1
  return count


@functools.lru_cache(maxsize=None)
def _features(resolution: int) -> tfds.features.FeaturesDict:
  return schema.features(resolution)


def encode_png(frames: np.ndarray, compress_level: int = 3) -> list[bytes]:
  """PNG bytes of each frame of uint8 [T, H, W, 3].

  PIL at zlib level 3 is ~3x faster than TFDS's own encoder (TensorFlow's, level 6) for ~4%
  larger files; PNG is lossless either way, so decoded frames are identical.
  """
  encoded = []
  for frame in frames:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=compress_level)
    encoded.append(buffer.getvalue())
  return encoded


def serialize_example(example: Mapping[str, object], resolution: int) -> bytes:
  """One schema example (numpy values, checked) -> serialized tf.train.Example bytes."""
  schema.check_example(example, resolution)
  example = dict(example, frames=encode_png(np.asarray(example["frames"])))
  features = _features(resolution)
  return _deterministic(features.serialize_example(features.encode_example(example)))


def _deterministic(serialized: bytes) -> bytes:
  """The same tf.train.Example with its feature map in sorted order.

  Protobuf writes map entries in hash order, which differs between processes (Python's string
  hashing is randomised), so the same example serialized in two worker processes would give
  different bytes; sorted, every runner and worker count gives byte-identical shards.
  """
  return tf.train.Example.FromString(serialized).SerializeToString(deterministic=True)


def count_records(path: str) -> int:
  """Number of records in one TFRecord file."""
  return sum(1 for _ in tf.data.TFRecordDataset(path))


def split_info(out_dir: str, split: str, num_shards: int,
               shard_lengths: Sequence[int] | None = None) -> tfds.core.SplitInfo:
  """TFDS split info of ``split``'s ``num_shards`` complete shards.

  Args:
    out_dir: the shard folder.
    split: split name.
    num_shards: number of shards of the split.
    shard_lengths: records per shard if the caller knows them (saves reading every shard of
      a large dataset again); counted on disk otherwise.
  """
  paths = [shard_path(out_dir, split, i, num_shards) for i in range(num_shards)]
  missing = [p for p in paths if not fileio.exists(p)]
  if missing:
    raise FileNotFoundError(f"split {split!r} is incomplete: missing {missing[:3]}")
  if shard_lengths is None:
    shard_lengths = [count_records(p) for p in paths]
  elif len(shard_lengths) != num_shards:
    raise ValueError(f"{len(shard_lengths)} shard lengths for {num_shards} shards")
  return tfds.core.SplitInfo(
      name=split, shard_lengths=list(shard_lengths),
      num_bytes=sum(fileio.getsize(p) for p in paths),
      filename_template=filename_template(out_dir, split))


def write_metadata(out_dir: str, resolution: int, split_num_shards: Mapping[str, int],
                   description: str = "",
                   shard_lengths: Mapping[str, Sequence[int]] | None = None) -> None:
  """Writes TFDS metadata (dataset_info.json, features.json) for complete splits.

  TFDS writes through ``etils.epath``, which knows local paths and a few object stores; the
  files are written to a local folder and copied (atomically each) into ``out_dir`` through
  :mod:`data_prep.fileio`, so any filesystem ``tf.io.gfile`` knows works.

  Args:
    out_dir: the shard folder.
    resolution: frame size of the examples.
    split_num_shards: split name -> its number of shards (all must exist).
    description: free text stored in dataset_info.json.
    shard_lengths: optional split name -> records per shard (else counted on disk).
  """
  shard_lengths = shard_lengths or {}
  with tempfile.TemporaryDirectory(prefix="talkface-metadata-") as local:
    split_infos, placeholders = [], set()
    for split, n in split_num_shards.items():
      # TFDS looks for the shard files in its data_dir: empty stand-ins (check_data=False).
      for index in range(n):
        placeholder = shard_path(local, split, index, n)
        open(placeholder, "wb").close()
        placeholders.add(os.path.basename(placeholder))
      info = split_info(out_dir, split, n, shard_lengths.get(split))
      split_infos.append(tfds.core.SplitInfo(
          name=info.name, shard_lengths=info.shard_lengths, num_bytes=info.num_bytes,
          filename_template=filename_template(local, split)))
    tfds.folder_dataset.write_metadata(
        data_dir=local, features=schema.features(resolution), split_infos=split_infos,
        version=schema.SCHEMA_VERSION,
        filename_template=filename_template(local, next(iter(split_num_shards))),
        check_data=False, description=description)
    for name in sorted(set(os.listdir(local)) - placeholders):
      with open(os.path.join(local, name), "rb") as f:
        fileio.write_bytes(fileio.join(out_dir, name), f.read())


def write_dataset(out_dir: str, split_examples: Mapping[str, Sequence[dict]], resolution: int,
                  examples_per_shard: int = 64) -> None:
  """Writes in-memory examples (numpy dicts of the schema) as a complete TFDS folder.

  Args:
    out_dir: output folder, created if missing.
    split_examples: split name -> examples, each a dict of the keys of ``schema.features``.
    resolution: frame size H = W of every example.
    examples_per_shard: at most this many examples per shard.
  """
  fileio.makedirs(out_dir)
  features = schema.features(resolution)
  split_num_shards = {}
  for split, examples in split_examples.items():
    num_shards = split_num_shards[split] = max(1, -(-len(examples) // examples_per_shard))
    for index in range(num_shards):
      chunk = examples[index * examples_per_shard:(index + 1) * examples_per_shard]
      for example in chunk:
        schema.check_example(example, resolution)
      write_shard(shard_path(out_dir, split, index, num_shards),
                  (_deterministic(features.serialize_example(features.encode_example(e)))
                   for e in chunk))
  write_metadata(out_dir, resolution, split_num_shards)
