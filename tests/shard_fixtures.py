"""Small pre-processed datasets written straight in the shard schema, for core tests."""

import collections
import json
import os

import numpy as np

from data_prep import build, schema, shards


def make_clip(index: int, num_frames: int, resolution: int, speaker: str = "s9") -> dict:
  """A deterministic clip whose frames follow its audio: a bar whose height is the MFCC energy."""
  rng = np.random.default_rng(index)
  mfcc = rng.normal(size=(num_frames, 28, 12)).astype(np.float32)
  level = (np.tanh(mfcc[:, 12:16, 0].mean(axis=1)) + 1) / 2  # [T] in (0, 1)
  frames = np.full((num_frames, resolution, resolution, 3), 90, np.uint8)
  frames[..., 0] = 60 + 10 * (index % 5)
  y0 = resolution // 2
  for t in range(num_frames):
    frames[t, y0:y0 + max(1, int(level[t] * resolution / 4)), resolution // 4:-resolution // 4] = 230
  landmarks = rng.uniform(0, resolution, size=(num_frames, 20, 2)).astype(np.float32)
  audio = (rng.normal(size=num_frames * schema.SAMPLES_PER_FRAME) * 1000).astype(np.int16)
  return dict(clip_id=f"{speaker}/clip{index:03d}", speaker=speaker, frames=frames, mfcc=mfcc,
              mouth_landmarks=landmarks, audio=audio)


def write_tiny_dataset(out_dir: str, resolution: int = 64, num_train: int = 12,
                       num_test: int = 4, num_frames: int = 10, examples_per_shard: int = 4):
  """Writes a 'train' and a 'test' split of synthetic clips; returns the examples by split."""
  splits = {
      "train": [make_clip(i, num_frames, resolution) for i in range(num_train)],
      "test": [make_clip(1000 + i, num_frames, resolution, speaker="s1")
               for i in range(num_test)],
  }
  shards.write_dataset(out_dir, splits, resolution, examples_per_shard=examples_per_shard)
  return splits


def write_manifest(out_dir: str, splits: dict[str, list[dict]], dataset: str = "grid") -> None:
  """Writes the part of ``data_prep.build``'s manifest that the evaluation reads: each split's
  clip count per speaker (``build.split_speakers``)."""
  entries = {split: {"clips": len(clips),
                     "speakers": dict(collections.Counter(c["speaker"] for c in clips))}
             for split, clips in splits.items()}
  with open(os.path.join(out_dir, build.MANIFEST), "w") as f:
    json.dump({"dataset": dataset, "splits": entries}, f)
