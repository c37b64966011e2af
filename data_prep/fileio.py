"""Atomic file writes: a file appears under its name complete, or not at all.

Every writer of the project that leaves a file for later use (JSON results, configs,
manifests) writes a hidden temporary file in the destination folder and renames it into
place, so a crash, a full disk or a kill never leaves a half-written file under the final
name. Imports no JAX.
"""

import json
import os
import tempfile


def write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (temporary sibling, then rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  handle, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                  dir=directory)
  try:
    with os.fdopen(handle, "wb") as f:
      f.write(data)
    os.replace(temp, path)
  finally:
    if os.path.exists(temp):
      os.remove(temp)


def write_json(path: str, data, indent: int = 2) -> None:
  """Writes ``data`` as JSON to ``path`` atomically."""
  write_bytes(path, (json.dumps(data, indent=indent) + "\n").encode())
