"""Sampling K videos per input from a trained model, and writing them out.

All K latent draws of all inputs run in one jitted call of ``models.talkface.generate``.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from talkface_jax import input_pipeline, media
from talkface_jax.models import talkface


def make_generate_fn(model: talkface.TalkFace, num_samples: int, batch_norm: str,
                     deterministic: bool = False):
  """Jitted ``(variables, frame0 [B,H,W,3] float, mfcc [B,T,28,12], key) -> [B,K,T,H,W,3]``."""
  return jax.jit(functools.partial(talkface.generate, model, num_samples=num_samples,
                                   batch_norm=batch_norm, deterministic=deterministic))


def sample_clips(config: ml_collections.ConfigDict, model: talkface.TalkFace, variables,
                 clips: list[dict], num_samples: int, key: jax.Array) -> np.ndarray:
  """K videos for each clip's first frame and audio: uint8 [N, K, T, H, W, 3].

  Clips of different lengths are generated one by one; clip i uses ``fold_in(key, i)``.
  """
  generate_fn = make_generate_fn(model, num_samples, config.model.generation_batch_norm)
  videos = []
  for i, clip in enumerate(clips):
    frame0 = jnp.asarray(clip["frames"][None, 0], jnp.float32) / 255.0
    frames = generate_fn(variables, frame0, jnp.asarray(clip["mfcc"][None]),
                         jax.random.fold_in(key, i))
    videos.append(to_uint8(np.asarray(frames[0])))
  return np.stack(videos) if len({v.shape for v in videos}) == 1 else videos


def to_uint8(frames: np.ndarray) -> np.ndarray:
  """[0, 1] floats -> uint8."""
  return np.clip(np.round(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)


def write_sample_summaries(config, model, variables, writer, step: int) -> None:
  """Contact sheets (ground truth row, then K sample rows) of held-out clips to TensorBoard."""
  clips = input_pipeline.load_clips(config, config.data.eval_split, config.sample.num_clips)
  key = jax.random.key(config.sample.seed)
  videos = sample_clips(config, model, variables, clips, config.sample.num_samples, key)
  images = {}
  for clip, samples in zip(clips, videos):
    sheet = media.contact_sheet([clip["frames"], *samples], max_frames=16)
    images[f"samples/{clip['clip_id']}"] = sheet[None]
  writer.write_images(step, images)


def write_sample_files(config, model, variables, out_dir: str, step: int) -> list[str]:
  """``--mode=sample`` on held-out clips: per clip, one mp4 per sample (audio muxed), a
  side-by-side mp4 (ground truth | samples) and a contact-sheet PNG. Returns the paths."""
  clips = input_pipeline.load_clips(config, config.data.eval_split, config.sample.num_clips)
  key = jax.random.key(config.sample.seed)
  videos = sample_clips(config, model, variables, clips, config.sample.num_samples, key)
  paths = []
  for clip, samples in zip(clips, videos):
    stem = os.path.join(out_dir, f"step_{step}", clip["clip_id"].replace("/", "_"))
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    audio = clip["audio"]
    for k, sample in enumerate(samples):
      paths.append(f"{stem}_sample{k}.mp4")
      media.write_video(paths[-1], sample, audio=audio)
    paths.append(f"{stem}_side_by_side.mp4")
    media.write_video(paths[-1], media.side_by_side([clip["frames"], *samples]), audio=audio)
    paths.append(f"{stem}_contact_sheet.png")
    media.write_png(paths[-1], media.contact_sheet([clip["frames"], *samples]))
  return paths
