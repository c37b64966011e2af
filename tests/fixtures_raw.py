"""Small raw-dataset fixtures for the data_prep tests: real-face videos in GRID/LRW layouts.

The face is scikit-image's astronaut photo, moved and scaled by a known similarity per frame
(so alignment quality can be measured against the truth), written with the ffmpeg binary of
imageio-ffmpeg; audio is synthetic (tones plus noise) at any rate, as a .wav or muxed in.
"""

import importlib.util
import os
import shutil
import subprocess
import tempfile

import imageio_ffmpeg
import numpy as np
import scipy.io.wavfile
import skimage.data
from PIL import Image

# Centre and box size of the astronaut's face in the 512x512 photo (Dlib's detection).
_FACE_CENTRE = 222.5 + 126.5j
_FACE_BOX = 87.0


def face_frames(num_frames: int, size=(240, 200), face_px: float = 100.0, seed: int = 0,
                motion: float = 6.0, second_face_px: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Frames of the astronaut face drifting, zooming and rolling smoothly.

  Args:
    num_frames: T.
    size: (width, height) of the frames.
    face_px: approximate Dlib face-box size in the frames.
    seed: the random walk of the face.
    motion: amplitude (pixels) of the drift.
    second_face_px: if set, a second, smaller copy of the face is pasted in the top-left.

  Returns:
    (frames uint8 [T, H, W, 3], a complex [T], b complex [T]) where a photo point z maps to
    ``a z + b`` in frame t.
  """
  width, height = size
  photo = Image.fromarray(skimage.data.astronaut())
  phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
  centre = width / 2 + height / 2 * 1j + 5j
  frames, scales, shifts = [], [], []
  for t in range(num_frames):
    # A smooth head path (as in real video): drift, zoom and roll along slow sinusoids.
    s_t = np.sin(2 * np.pi * t / 20 + phase)
    scale = face_px / _FACE_BOX * (1 + 0.05 * s_t[0])
    a = scale * np.exp(1j * np.deg2rad(3 * s_t[1]))
    b = centre + motion * (s_t[2] + 1j * s_t[0]) - a * _FACE_CENTRE
    frame = _render(photo, a, b, size)
    if second_face_px:
      small_a = second_face_px / _FACE_BOX
      small_b = (second_face_px * 0.75 + second_face_px * 0.8j) - small_a * _FACE_CENTRE
      small = _render(photo, small_a, small_b, size)
      mask = np.zeros((height, width), bool)
      mask[:int(second_face_px * 1.6), :int(second_face_px * 1.5)] = True
      frame = frame.copy()
      frame[mask] = small[mask]
    frames.append(frame)
    scales.append(a)
    shifts.append(b)
  return np.stack(frames), np.array(scales), np.array(shifts)


def grace_hopper() -> np.ndarray:
  """uint8 [600, 512, 3]: Grace Hopper's portrait from matplotlib's sample data, a second real
  person beside the astronaut (matplotlib is in setup.py's 'test' extra; found without
  importing it)."""
  spec = importlib.util.find_spec("matplotlib")
  assert spec is not None, "matplotlib (setup.py's 'test' extra) is needed for its sample photo"
  path = os.path.join(spec.submodule_search_locations[0], "mpl-data", "sample_data",
                      "grace_hopper.jpg")
  return np.asarray(Image.open(path).convert("RGB"))


def _render(photo: Image.Image, a: complex, b: complex, size) -> np.ndarray:
  """The photo under ``z -> a z + b`` (continuous coordinates), grey outside."""
  inv_a, inv_b = 1 / a, -b / a
  data = (inv_a.real, -inv_a.imag, inv_b.real, inv_a.imag, inv_a.real, inv_b.imag)
  return np.asarray(photo.transform(size, Image.Transform.AFFINE, data=data,
                                    resample=Image.Resampling.BILINEAR, fillcolor=(90, 90, 90)))


def noise_frames(num_frames: int, size=(240, 200), seed: int = 0) -> np.ndarray:
  """Smooth random blobs without a face, uint8 [T, H, W, 3]."""
  rng = np.random.default_rng(seed)
  width, height = size
  coarse = rng.integers(0, 255, (num_frames, height // 20 + 1, width // 20 + 1, 3), np.uint8)
  return np.stack([np.asarray(Image.fromarray(c).resize(size, Image.Resampling.BILINEAR))
                   for c in coarse])


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, seed: int = 0,
         silent: bool = False) -> np.ndarray:
  """A tone with a syllable-rate envelope plus noise, int16 [seconds * rate]."""
  n = int(round(seconds * rate))
  if silent:
    return np.zeros(n, np.int16)
  t = np.arange(n) / rate
  rng = np.random.default_rng(seed)
  envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
  signal = envelope * np.sin(2 * np.pi * freq * t) * 0.3 + 0.02 * rng.standard_normal(n)
  return (np.clip(signal, -1, 1) * 32767).astype(np.int16)


def write_wav(path: str, audio: np.ndarray, rate: int) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  scipy.io.wavfile.write(path, rate, audio)
  return path


def write_video(path: str, frames: np.ndarray, fps: float = 25, audio: np.ndarray | None = None,
                audio_rate: int = 16000) -> str:
  """Writes frames (and optional int16 mono audio muxed in) with ffmpeg; codec by extension."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  height, width = frames.shape[1:3]
  ext = os.path.splitext(path)[1]
  codec, audio_codec = {".mpg": ("mpeg1video", "mp2"), ".mp4": ("libx264", "aac")}[ext]
  cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
  with tempfile.TemporaryDirectory() as tmp:
    if audio is not None:
      wav = write_wav(os.path.join(tmp, "a.wav"), audio, audio_rate)
      cmd += ["-i", wav, "-c:a", audio_codec, "-ar", "44100" if ext == ".mpg" else "16000"]
    cmd += ["-c:v", codec, "-q:v", "2", "-pix_fmt", "yuv420p", "-r", str(fps)]
    if codec == "libx264":
      cmd += ["-crf", "12", "-preset", "ultrafast"]
    cmd += [path]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
  return path


def write_align(path: str, words: list[str], seconds: float = 3.0) -> str:
  """A GRID alignment file: ``start end word`` in 1/25000 s, with sil at both ends."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  total = int(seconds * 25000)
  edges = np.linspace(0, total, len(words) + 3).astype(int)
  lines = [f"{edges[i]} {edges[i + 1]} {w}" for i, w in enumerate(["sil"] + words + ["sil"])]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def make_grid_tree(root: str, num_frames: int = 12, size=(240, 200)) -> dict[str, str]:
  """A GRID-layout tree with good clips and every kind of bad input.

  Returns:
    clip id -> what the clip exercises (clips that must be kept start with 'ok').
  """
  seconds = num_frames / 25
  kinds = {}

  def face_clip(speaker, stem, seed, **kwargs):
    frames = face_frames(num_frames, size, seed=seed, **kwargs)[0]
    return write_video(os.path.join(root, speaker, f"{stem}.mpg"), frames)

  # s1 (held out by default): wav at 50 kHz beside the video, alignment in align/s1/.
  face_clip("s1", "bbaf2n", 1)
  write_wav(os.path.join(root, "s1", "bbaf2n.wav"), tone(seconds, 50000, seed=1), 50000)
  write_align(os.path.join(root, "align", "s1", "bbaf2n.align"), ["bin", "blue"], seconds)
  kinds["s1/bbaf2n"] = "ok: 50 kHz wav, align/s1/"
  # s3: wav in s3/audio/, alignment in s3/align/.
  face_clip("s3", "lgaz8p", 2)
  write_wav(os.path.join(root, "s3", "audio", "lgaz8p.wav"), tone(seconds, 44100, 330, 2), 44100)
  write_align(os.path.join(root, "s3", "align", "lgaz8p.align"), ["lay", "green"], seconds)
  kinds["s3/lgaz8p"] = "ok: wav in s3/audio, align in s3/align"
  # Audio 2 frames shorter than the video (within the bound): padded and recorded.
  face_clip("s3", "pbwxzs", 3)
  write_wav(os.path.join(root, "s3", "pbwxzs.wav"), tone(seconds - 0.08, 16000, seed=3), 16000)
  kinds["s3/pbwxzs"] = "ok: short audio (padded)"
  # Audio half as long as the video: not silence under talking frames, a recorded skip.
  face_clip("s3", "halfau", 8)
  write_wav(os.path.join(root, "s3", "halfau.wav"), tone(seconds / 2, 16000, seed=8), 16000)
  kinds["s3/halfau"] = "skip: audio and video lengths differ"
  # Silent audio is valid input.
  face_clip("s3", "sgbc1a", 4)
  write_wav(os.path.join(root, "s3", "sgbc1a.wav"), tone(seconds, silent=True), 16000)
  kinds["s3/sgbc1a"] = "ok: silent audio"
  # Two faces: the larger one is taken.
  face_clip("s3", "twofac", 5, second_face_px=50.0)
  write_wav(os.path.join(root, "s3", "twofac.wav"), tone(seconds, seed=5), 16000)
  kinds["s3/twofac"] = "ok: two faces"
  # 30 fps video with its audio inside (no wav): resampled to 25 fps.
  frames30 = face_frames(int(round(seconds * 30)), size, seed=6)[0]
  write_video(os.path.join(root, "s3", "fps30x.mp4"), frames30, fps=30,
              audio=tone(seconds, seed=6))
  kinds["s3/fps30x"] = "ok: 30 fps, audio inside"
  # Bad inputs.
  write_video(os.path.join(root, "s3", "nofacx.mpg"), noise_frames(num_frames, size))
  write_wav(os.path.join(root, "s3", "nofacx.wav"), tone(seconds), 16000)
  kinds["s3/nofacx"] = "skip: no face"
  face_clip("s3", "noaudx", 7)
  kinds["s3/noaudx"] = "skip: missing audio"
  with open(os.path.join(root, "s3", "corrup.mpg"), "wb") as f:
    f.write(np.random.default_rng(0).integers(0, 255, 5000, np.uint8).tobytes())
  write_wav(os.path.join(root, "s3", "corrup.wav"), tone(seconds), 16000)
  kinds["s3/corrup"] = "skip: corrupt video"
  with open(os.path.join(root, "s3", "README.txt"), "w") as f:
    f.write("not a video\n")
  return kinds


def make_lrw_tree(root: str, words=("ABOUT", "HOUSE"), num_frames: int = 10,
                  size=(200, 200), prefix: bool = True) -> list[str]:
  """An LRW-layout tree: one clip per word and split, audio inside, metadata .txt beside.

  Returns:
    the clip ids written.
  """
  base = os.path.join(root, "lipread_mp4") if prefix else root
  ids = []
  for w, word in enumerate(words):
    for s, split in enumerate(("train", "val", "test")):
      stem = f"{word}_0000{s + 1}"
      frames = face_frames(num_frames, size, face_px=110, seed=10 * w + s)[0]
      write_video(os.path.join(base, word, split, f"{stem}.mp4"), frames,
                  audio=tone(num_frames / 25, 16000, seed=s))
      with open(os.path.join(base, word, split, f"{stem}.txt"), "w") as f:
        f.write(f"Word: {word}\nDuration: 0.40 seconds\n")
      ids.append(f"{word}/{split}/{stem}")
  return ids


def copy_tree(src: str, dst: str) -> str:
  shutil.copytree(src, dst)
  return dst
