"""Files on any filesystem, written atomically: the one home of "temp file + rename".

Paths are local paths or URLs that ``tf.io.gfile`` reads and writes (``gs://bucket/...`` for
TPU pods, ``ram://`` in tests, ``s3://``/``hdfs://`` where TensorFlow has the plugin);
``etils.epath.Path`` objects are accepted too (``os.fspath`` gives their URL). Local paths go
through ``os`` (fast, and a local rename is atomic); others through ``tf.io.gfile``, where a
rename within one bucket is a server-side copy that makes the final object appear at once.

Atomic writes go to a sibling named ``<name>.tmp-<host>-<pid>-<n>`` and are renamed over the
final name only when complete, so a crash (kill -9, disk full, preemption) never leaves a
partial file under the final name; :func:`remove_temp_files` clears what a crash left.
Imports no JAX.

API::

  write_bytes(path, data)            # atomic
  write_text(path, text)             # atomic, UTF-8
  write_json(path, obj, **json_kw)   # atomic
  with atomic_path(path, suffix=".mp4") as tmp:  # writers that take a path (ffmpeg, TFRecord)
    write_into(tmp)
  with local_copy(path) as local:    # a local file for tools that need one (ffmpeg)
    decode(local)
  read_bytes / read_text / read_json / exists / isdir / makedirs / listdir / remove /
  getsize / walk / join / is_local / remove_temp_files
"""

import contextlib
import itertools
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

TEMP_MARK = ".tmp-"
_counter = itertools.count()


def is_local(path) -> bool:
  """True for a local path (no ``scheme://``, or ``file://``)."""
  path = os.fspath(path)
  return "://" not in path or path.startswith("file://")


def _local(path) -> str:
  path = os.fspath(path)
  return path[len("file://"):] if path.startswith("file://") else path


def join(path, *parts) -> str:
  """``os.path.join`` that keeps URLs intact (``gs://b/x`` + ``y`` -> ``gs://b/x/y``)."""
  path = os.fspath(path)
  if is_local(path):
    return os.path.join(path, *parts)
  return "/".join([path.rstrip("/"), *(p.strip("/") for p in parts)])


def exists(path) -> bool:
  return os.path.exists(_local(path)) if is_local(path) else tf.io.gfile.exists(os.fspath(path))


def isdir(path) -> bool:
  return os.path.isdir(_local(path)) if is_local(path) else tf.io.gfile.isdir(os.fspath(path))


def makedirs(path) -> None:
  if is_local(path):
    os.makedirs(_local(path), exist_ok=True)
  else:
    tf.io.gfile.makedirs(os.fspath(path))


def listdir(path) -> list[str]:
  """Names (not paths) in the folder ``path``, sorted."""
  if is_local(path):
    return sorted(os.listdir(_local(path)))
  return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(os.fspath(path)))


def remove(path, missing_ok: bool = True) -> None:
  try:
    if is_local(path):
      os.remove(_local(path))
    else:
      tf.io.gfile.remove(os.fspath(path))
  except (FileNotFoundError, tf.errors.NotFoundError):
    if not missing_ok:
      raise


def getsize(path) -> int:
  if is_local(path):
    return os.path.getsize(_local(path))
  return tf.io.gfile.stat(os.fspath(path)).length


def walk(root) -> Iterator[tuple[str, list[str], list[str]]]:
  """``os.walk(root, followlinks=True)`` on any filesystem; prune ``dirnames`` in place."""
  if is_local(root):
    yield from os.walk(_local(root), followlinks=True)
    return
  # tf.io.gfile.walk is top-down too, and honours in-place pruning of the folder list.
  for dirpath, dirnames, filenames in tf.io.gfile.walk(os.fspath(root)):
    yield dirpath, dirnames, filenames


def read_bytes(path) -> bytes:
  if is_local(path):
    with open(_local(path), "rb") as f:
      return f.read()
  with tf.io.gfile.GFile(os.fspath(path), "rb") as f:
    return f.read()


def read_text(path) -> str:
  return read_bytes(path).decode("utf-8")


def read_json(path):
  return json.loads(read_bytes(path))


def _rename(src: str, dst: str) -> None:
  if is_local(dst):
    os.replace(_local(src), _local(dst))
  else:
    tf.io.gfile.rename(src, dst, overwrite=True)


def temp_name(path, suffix: str = "") -> str:
  """A sibling of ``path`` unique to this host, process and call, ending in ``suffix``."""
  path = os.fspath(path)
  host = socket.gethostname().replace("/", "_").replace("-", "_")
  return f"{path}{TEMP_MARK}{host}-{os.getpid()}-{next(_counter)}{suffix}"


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[str]:
  """Yields a temporary path to write; renames it to ``path`` if the block succeeds.

  The temporary file is removed if the block raises (or never created it).

  Args:
    path: the final path.
    suffix: appended to the temporary name, e.g. ``".mp4"`` for tools that choose the format
      by the file extension (ffmpeg).
  """
  path = os.fspath(path)
  tmp = temp_name(path, suffix)
  try:
    yield tmp
    _rename(tmp, path)
  finally:
    if exists(tmp):
      remove(tmp)


def write_bytes(path, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (a reader sees the old file or the new one)."""
  with atomic_path(path) as tmp:
    if is_local(tmp):
      with open(_local(tmp), "wb") as f:
        f.write(data)
    else:
      with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)


def write_text(path, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, **json_kwargs) -> None:
  write_text(path, json.dumps(obj, **json_kwargs))


def json_ready(value):
  """``value`` as strict JSON values: numpy scalars as Python ones, tuples and arrays as
  lists, and every non-finite float (in dicts and lists, too) as None (null)."""
  if isinstance(value, dict):
    return {k: json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [json_ready(v) for v in value]
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def remove_temp_files(folder) -> list[str]:
  """Deletes the temporary files an interrupted :func:`atomic_path` left in ``folder``."""
  removed = []
  if not isdir(folder):
    return removed
  for name in listdir(folder):
    if TEMP_MARK in name:
      remove(join(folder, name))
      removed.append(name)
  return removed


@contextlib.contextmanager
def local_copy(path) -> Iterator[str]:
  """Yields a local path with the content of ``path`` (the path itself when it is local).

  Remote files are copied to a temporary file for tools that only read local files (ffmpeg);
  the copy is deleted afterwards.
  """
  if is_local(path):
    yield _local(path)
    return
  suffix = os.path.splitext(os.fspath(path))[1]
  with tempfile.TemporaryDirectory(prefix="talkface-") as tmp:
    local = os.path.join(tmp, "input" + suffix)
    with tf.io.gfile.GFile(os.fspath(path), "rb") as src, open(local, "wb") as dst:
      shutil.copyfileobj(src, dst, length=1 << 20)
    yield local
