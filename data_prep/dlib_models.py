"""Where Dlib's model files are: the ``face_recognition_models`` package's ``models/`` folder.

The package's own helpers (``pose_predictor_model_location()`` etc.) import ``pkg_resources``,
which setuptools >= 81 no longer ships and Python >= 3.12 venvs do not install, so importing the
package fails on such set-ups (e.g. beside torch, which pulls a new setuptools). This finds the
files from the package's location without importing it. Imports no Dlib.
"""

import importlib.util
import os

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"  # The 68-point landmark predictor.
FACE_DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"  # The 128-D face descriptor.


def path(filename: str) -> str:
  """The path of ``filename`` in ``face_recognition_models/models``; a clear error if absent."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("Dlib's models are missing: pip install face_recognition_models")
  location = os.path.join(list(spec.submodule_search_locations)[0], "models", filename)
  if not os.path.isfile(location):
    raise FileNotFoundError(f"{location}: Dlib model file missing (reinstall "
                            "face_recognition_models)")
  return location
