"""The one definition of a pre-processed clip, shared by the shard writer and the input pipeline.

A clip is one talking-face video after alignment: ``T`` frames at the model resolution, one
28x12 MFCC window per frame (audio and frame streams have equal length by construction), the
aligned mouth landmarks (Dlib points 48-67) per frame for the LMD metric, and the 16 kHz mono
waveform so that evaluation videos can be written with their sound.

Shards are TFRecord files of serialized ``tf.train.Example`` written through TFDS features, so
``tfds.builder_from_directory(out_dir)`` loads them with their splits and
``talkface_jax.input_pipeline`` decodes them with :func:`features`. Imports no JAX.
"""

import numpy as np
import tensorflow_datasets as tfds

SCHEMA_VERSION = "1.0.0"
DATASET_NAME = "talkface"

FPS = 25
SAMPLE_RATE = 16000
MFCC_WINDOW_ROWS = 28  # 7 video frames x 4 MFCC rows of 10 ms
MFCC_NUM_COEFFS = 12   # 13 cepstra with c0 dropped
NUM_MOUTH_LANDMARKS = 20  # Dlib 68-point indices 48..67
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


def audio_features(energy: bool) -> int:
  """Features per MFCC row the model hears: the shards' 12 cepstra, and with ``energy``
  (``config.model.audio_energy``, beyond the paper) the row's loudness before them
  (``data_prep.audio.model_windows``)."""
  return MFCC_NUM_COEFFS + int(bool(energy))


def features(resolution: int) -> tfds.features.FeaturesDict:
  """TFDS features of one clip at ``resolution`` x ``resolution``.

  Keys:
    clip_id: unique id, e.g. ``"s3/bbaf2n"`` or ``"ABOUT/train/ABOUT_00001"``.
    speaker: speaker (GRID), word (LRW) or folder name; the unit of speaker splits.
    frames: uint8 [T, H, W, 3], aligned face crops, PNG-encoded per frame (lossless).
    mfcc: float32 [T, 28, 12], one centred MFCC window per video frame.
    mouth_landmarks: float32 [T, 20, 2], aligned (x, y) pixel coordinates of points 48-67.
    audio: int16 [S], 16 kHz mono waveform of the clip (S ~= T * 640).
  """
  return tfds.features.FeaturesDict({
      "clip_id": tfds.features.Text(),
      "speaker": tfds.features.Text(),
      "frames": tfds.features.Video(
          shape=(None, resolution, resolution, 3), encoding_format="png"),
      "mfcc": tfds.features.Tensor(
          shape=(None, MFCC_WINDOW_ROWS, MFCC_NUM_COEFFS), dtype=np.float32),
      "mouth_landmarks": tfds.features.Tensor(
          shape=(None, NUM_MOUTH_LANDMARKS, 2), dtype=np.float32),
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
  })


def check_example(example: dict, resolution: int) -> None:
  """Raises ValueError if ``example`` (numpy values) breaks the schema's invariants."""
  frames = np.asarray(example["frames"])
  t = frames.shape[0]
  if frames.shape[1:] != (resolution, resolution, 3) or frames.dtype != np.uint8:
    raise ValueError(f"{example.get('clip_id')}: frames {frames.shape} {frames.dtype}, "
                     f"expected [T, {resolution}, {resolution}, 3] uint8")
  mfcc = np.asarray(example["mfcc"])
  if mfcc.shape != (t, MFCC_WINDOW_ROWS, MFCC_NUM_COEFFS):
    raise ValueError(f"{example.get('clip_id')}: mfcc {mfcc.shape}, expected "
                     f"[{t}, {MFCC_WINDOW_ROWS}, {MFCC_NUM_COEFFS}] (one window per frame)")
  landmarks = np.asarray(example["mouth_landmarks"])
  if landmarks.shape != (t, NUM_MOUTH_LANDMARKS, 2):
    raise ValueError(f"{example.get('clip_id')}: mouth_landmarks {landmarks.shape}, "
                     f"expected [{t}, {NUM_MOUTH_LANDMARKS}, 2]")
