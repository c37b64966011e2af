"""Raw dataset layouts on disk -> a sorted list of clips, and decoding a clip's video.

Layouts (``LAYOUTS`` says each in one line, for errors; docs/REFERENCE.md, "Raw dataset
layouts"):

* ``grid``: speaker folders ``sN`` holding ``*.mpg`` videos (searched recursively, so
  ``sN/video/mpg_6000/`` works too); audio as a same-named ``.wav`` found anywhere under a
  ``sN`` folder (``sN/``, ``sN/audio/``, ``audio/sN/`` ...) at any rate, else the video's own
  audio stream; word alignments ``<clip>.align`` looked up in ``sN/align/``, ``sN/``,
  ``align/sN/``, ``align/`` (also ``alignments/``), in that order.
* ``lrw``: ``[lipread_mp4/]WORD/{train,val,test}/WORD_00001.mp4`` with audio inside; the
  ``.txt`` beside each clip is its metadata.
* ``folder``: every video below the root is a clip, its audio inside or in a same-named
  ``.wav`` beside it; the speaker is the clip's parent folder.

Every file found is accounted for: it belongs to a clip (video, audio, alignment, metadata)
or is returned as ignored with the reason. Roots may be local or ``tf.io.gfile`` URLs
(:mod:`data_prep.fileio`). Videos are decoded by :mod:`data_prep.video`. Imports no JAX.
"""

import dataclasses
import os
import re

from data_prep import fileio

VIDEO_EXTENSIONS = frozenset({".mpg", ".mpeg", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v",
                              ".flv", ".wmv"})
LRW_SPLITS = ("train", "val", "test")
_GRID_SPEAKER = re.compile(r"^s\d+$")
_ALIGN_DIRS = ("align", "alignments")
LAYOUTS = {
    "grid": "speaker folders sN/ holding *.mpg videos (e.g. s1/bbaf2n.mpg), audio as a "
            "same-named .wav under sN/ or inside the video",
    "lrw": "[lipread_mp4/]WORD/{train,val,test}/WORD_00001.mp4 (audio inside)",
    "folder": "video files (" + ", ".join(sorted(VIDEO_EXTENSIONS)) + ") anywhere below "
              "the root, audio inside or in a same-named .wav",
}


@dataclasses.dataclass(frozen=True)
class ClipSource:
  """Where one raw clip lives. Paths are absolute.

  Attributes:
    clip_id: unique, e.g. ``"s3/bbaf2n"``, ``"ABOUT/train/ABOUT_00001"``, ``"alice/take1"``.
    speaker: GRID speaker, LRW word or folder name (the unit of speaker splits).
    video_path: the video file.
    audio_path: a separate audio file, or None to use the video's audio stream.
    align_path: GRID word alignment, if found.
    meta_path: LRW metadata .txt, if present.
    split: the split fixed by the layout (LRW), else None (decided by the build's split rule).
  """
  clip_id: str
  speaker: str
  video_path: str
  audio_path: str | None = None
  align_path: str | None = None
  meta_path: str | None = None
  split: str | None = None

  def files(self) -> list[str]:
    return [p for p in (self.video_path, self.audio_path, self.align_path, self.meta_path) if p]


@dataclasses.dataclass
class Scan:
  """Result of scanning a raw folder.

  Attributes:
    clips: sorted by clip_id.
    ignored: (path, reason) for every file that is not part of a clip.
    num_files: all files found below the root.
  """
  clips: list[ClipSource]
  ignored: list[tuple[str, str]]
  num_files: int


def relpath(path: str, root: str) -> str:
  """``path`` relative to ``root``, with the platform's separator; works for URLs too."""
  if fileio.is_local(root):
    return os.path.relpath(path, root)
  return path[len(root.rstrip("/")) + 1:].replace("/", os.sep)


def _walk(root: str) -> list[str]:
  """All files below ``root`` (absolute paths, sorted, hidden files and folders skipped)."""
  paths = []
  for dirpath, dirnames, filenames in fileio.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "_work")
    paths.extend(fileio.join(dirpath, f) for f in filenames if not f.startswith("."))
  return sorted(paths)


def _ext(path: str) -> str:
  return os.path.splitext(path)[1].lower()


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _finish(root: str, clips: list[ClipSource], all_files: list[str],
            reasons: dict[str, str]) -> Scan:
  """Marks every file not used by a clip as ignored (with a reason) and sorts."""
  used = {p for clip in clips for p in clip.files()}
  ignored = []
  for path in all_files:
    if path in used:
      continue
    if path in reasons:
      reason = reasons[path]
    elif _ext(path) in VIDEO_EXTENSIONS:
      reason = "video outside the dataset layout"
    elif _ext(path) in (".wav", ".align", ".txt"):
      reason = "no matching video"
    else:
      reason = "not a video"
    ignored.append((relpath(path, root), reason))
  clips.sort(key=lambda c: c.clip_id)
  ids = [c.clip_id for c in clips]
  if len(set(ids)) != len(ids):
    raise ValueError("duplicate clip ids in the scan; rename the clashing files")
  return Scan(clips=clips, ignored=ignored, num_files=len(all_files))


def _grid_speaker(rel_parts: tuple[str, ...]) -> str | None:
  """The innermost ``sN`` folder of a relative path's directories."""
  for part in reversed(rel_parts[:-1]):
    if _GRID_SPEAKER.match(part):
      return part
  return None


def scan_grid(root: str) -> Scan:
  """Scans a GRID tree (see the module docstring)."""
  root = _absolute(root)
  all_files = _walk(root)
  videos, wavs, aligns = {}, {}, {}
  reasons = {}
  for path in all_files:
    parts = tuple(relpath(path, root).split(os.sep))
    speaker = _grid_speaker(parts)
    ext = _ext(path)
    if ext in VIDEO_EXTENSIONS:
      if speaker is None:
        reasons[path] = "video not inside a speaker folder sN"
      elif (speaker, _stem(path)) in videos:
        reasons[path] = "duplicate video of the same clip"
      else:
        videos[(speaker, _stem(path))] = path
    elif ext == ".wav" and speaker is not None:
      wavs.setdefault((speaker, _stem(path)), path)
    elif ext == ".align":
      aligns[parts] = path
  clips = []
  for (speaker, stem), video in sorted(videos.items()):
    candidates = [(speaker, "align", f"{stem}.align"), (speaker, f"{stem}.align")]
    for align_dir in _ALIGN_DIRS:
      candidates += [(align_dir, speaker, f"{stem}.align"), (align_dir, f"{stem}.align")]
    candidates.append(tuple(relpath(video, root).split(os.sep))[:-1] + (f"{stem}.align",))
    align = next((aligns[c] for c in candidates if c in aligns), None)
    clips.append(ClipSource(clip_id=f"{speaker}/{stem}", speaker=speaker, video_path=video,
                            audio_path=wavs.get((speaker, stem)), align_path=align))
  return _finish(root, clips, all_files, reasons)


def lrw_root(root: str) -> str:
  """The folder holding LRW's word folders: ``root/lipread_mp4`` if it exists, else ``root``."""
  inner = fileio.join(root, "lipread_mp4")
  return inner if fileio.isdir(inner) else root


def scan_lrw(root: str) -> Scan:
  """Scans an LRW tree (``WORD/{train,val,test}/WORD_NNNNN.mp4``), root with or without
  ``lipread_mp4/``."""
  root = _absolute(root)
  words_root = lrw_root(root)
  all_files = _walk(root)
  present = set(all_files)
  clips, reasons = [], {}
  for path in all_files:
    if _ext(path) not in VIDEO_EXTENSIONS:
      continue
    parts = relpath(path, words_root).split(os.sep)
    if len(parts) != 3 or parts[1] not in LRW_SPLITS or parts[0].startswith(".."):
      reasons[path] = "video outside WORD/{train,val,test}/"
      continue
    word, split, _ = parts
    meta = os.path.splitext(path)[0] + ".txt"
    clips.append(ClipSource(
        clip_id=f"{word}/{split}/{_stem(path)}", speaker=word, video_path=path,
        meta_path=meta if meta in present else None, split=split))
  return _finish(root, clips, all_files, reasons)


def scan_folder(root: str) -> Scan:
  """Scans a plain folder of videos (audio inside, or a same-named .wav beside)."""
  root = _absolute(root)
  all_files = _walk(root)
  present = set(all_files)
  clips, reasons = [], {}
  seen = {}
  for path in all_files:
    if _ext(path) not in VIDEO_EXTENSIONS:
      continue
    rel = os.path.splitext(relpath(path, root))[0].replace(os.sep, "/")
    if rel in seen:
      reasons[path] = f"same name as {relpath(seen[rel], root)}"
      continue
    seen[rel] = path
    parent = os.path.dirname(rel) or os.path.basename(root.rstrip("/"))
    wav = os.path.splitext(path)[0] + ".wav"
    clips.append(ClipSource(clip_id=rel, speaker=parent, video_path=path,
                            audio_path=wav if wav in present else None))
  return _finish(root, clips, all_files, reasons)


SCANNERS = {"grid": scan_grid, "lrw": scan_lrw, "folder": scan_folder}


def scan(dataset: str, root: str) -> Scan:
  """Scans ``root`` in the layout of ``dataset`` ('grid', 'lrw' or 'folder')."""
  if dataset not in SCANNERS:
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SCANNERS)}")
  if not fileio.isdir(root):
    raise FileNotFoundError(f"raw_dir {root!r} is not a folder")
  return SCANNERS[dataset](root)


def _absolute(root: str) -> str:
  return os.path.abspath(root) if fileio.is_local(root) else root.rstrip("/")


def read_alignment(path: str) -> list[tuple[float, float, str]]:
  """GRID word alignment of the file ``path`` (see :func:`parse_alignment`)."""
  return parse_alignment(fileio.read_text(path))


def parse_alignment(text: str) -> list[tuple[float, float, str]]:
  """GRID word alignment: (start s, end s, word) per line; times are in 1/25000 s units.

  Raises:
    ValueError: a line is not ``start end word``.
  """
  words = []
  for line in text.splitlines():
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 3:
      raise ValueError(f"bad alignment line {line!r}")
    words.append((int(fields[0]) / 25000.0, int(fields[1]) / 25000.0, fields[2]))
  return words


def transcript(words: list[tuple[float, float, str]]) -> str:
  """The spoken words of an alignment, silences (``sil``, ``sp``) removed."""
  return " ".join(w for _, _, w in words if w not in ("sil", "sp"))
