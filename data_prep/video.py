"""Decoding a video file to RGB frames at 25 fps: the project's one video reader.

Used by the shard build (:mod:`data_prep.build`) and by inference (``talkface_jax.media``).
ffmpeg (the binary shipped with imageio-ffmpeg) runs as a subprocess and streams raw RGB
frames through a pipe, one frame at a time, so memory holds the decoded clip once:

* the frame rate is resampled by ffmpeg's ``fps`` filter, which keeps, per output time slot,
  the source frame whose timestamp is nearest (variable frame rate video included: the
  timestamps decide, not the declared rate); no blending, which would smear the lips;
* a phone video's rotation (display matrix) is applied by ffmpeg, and the frame size read
  from ffmpeg's description of its output, so rotated videos come out upright;
* ``max_side`` downscales larger videos in ffmpeg (a 4K clip is 25 MB per frame; at 1280 px,
  3.3 MB) -- the face crops are at most 128 px, so nothing the model sees is lost;
* every call has a timeout; a timeout or an ffmpeg killed by a signal is a transient error
  (:mod:`data_prep.errors`), a file ffmpeg rejects is a :class:`VideoError` (content).

Imports no JAX.
"""

import dataclasses
import os
import re
import subprocess
import tempfile
import threading

import imageio_ffmpeg
import numpy as np

from data_prep import errors
from data_prep import schema

DEFAULT_TIMEOUT = 600.0  # seconds per ffmpeg call; a 3 s clip takes well under one


class VideoError(errors.ContentError):
  """The file is not a decodable video (no video stream, corrupt, empty, no frames)."""


@dataclasses.dataclass
class Video:
  """A decoded video.

  Attributes:
    frames: uint8 [T, H, W, 3] RGB at the requested fps (upright, at most ``max_side``).
    source_fps: the frame rate the container declares (0 if unknown).
    source_size: (width, height) of the stored frames before rotation and scaling.
    rotation: display rotation in degrees that ffmpeg applied (0 if none).
    decode_errors: the decoder's error lines if it complained (truncated or corrupt file:
      the frames decoded up to the damage are kept), else ''.
  """
  frames: np.ndarray
  source_fps: float
  source_size: tuple[int, int] | None = None
  rotation: float = 0.0
  decode_errors: str = ""


def ffmpeg_exe() -> str:
  return imageio_ffmpeg.get_ffmpeg_exe()


def log_section(log: str, marker: str) -> str:
  """The part of ffmpeg's log describing the input (``Input #0``) or output (``Output #0``)."""
  start = log.find(marker)
  if start < 0:
    return ""
  end = log.find("Output #", start + 1) if marker.startswith("Input") else -1
  return log[start:end] if end >= 0 else log[start:]


def _video_line(section: str) -> str | None:
  for line in section.splitlines():
    if re.search(r"Stream #\S+.*?: Video: \w+", line) and "attached pic" not in line:
      return line
  return None


def _size(line: str) -> tuple[int, int] | None:
  match = re.search(r"[ ,](\d{1,5})x(\d{1,5})[ ,\[]", line + " ")
  return (int(match.group(1)), int(match.group(2))) if match else None


def _fps(line: str) -> float:
  match = re.search(r"([\d.]+)(k?) fps", line) or re.search(r"([\d.]+)(k?) tbr", line)
  if not match:
    return 0.0
  return float(match.group(1)) * (1000 if match.group(2) else 1)


def _strip_levels(log: str) -> tuple[str, str]:
  """Splits a ``-loglevel level+info`` log into (plain text, error lines)."""
  plain, errs = [], []
  for line in log.splitlines():
    match = re.match(r"^((?:\[[^\]]*\] )*?)\[(\w+)\] ?(.*)$", line)
    if match:
      prefix, level, text = match.groups()
      plain.append(prefix + text)
      if level in ("error", "fatal", "panic"):
        errs.append(prefix + text)
    else:
      plain.append(line)
  return "\n".join(plain), "\n".join(errs)


def _last_line(text: str) -> str:
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return lines[-1][:300] if lines else "ffmpeg failed without a message"


def read_video(path: str, fps: float | None = schema.FPS, max_side: int | None = None,
               timeout: float | None = DEFAULT_TIMEOUT) -> Video:
  """Decodes a video file to upright RGB frames at ``fps``.

  Args:
    path: any video ffmpeg decodes (mp4, mpg, avi, mov, webm, ...), local.
    fps: output frame rate (frames dropped or repeated by timestamp); None keeps the
      source's frames as they are.
    max_side: if set, videos whose longer side exceeds it are downscaled (aspect kept).
    timeout: seconds before ffmpeg is killed (then ``TimeoutError``); None waits.

  Returns:
    The decoded :class:`Video`.

  Raises:
    FileNotFoundError: no such file (an OSError: the build retries, it may be a hiccup).
    VideoError: not a file, empty, no video stream, undecodable, or no frame decoded.
    TimeoutError: ffmpeg ran longer than ``timeout``.
    errors.TransientError: ffmpeg was killed by a signal (e.g. the OOM killer).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file")
  if not os.path.isfile(path):
    raise VideoError("not a regular file")
  if os.path.getsize(path) == 0:
    raise VideoError("file is empty")
  filters = []
  if fps is not None:
    filters.append(f"fps={fps:g}")
  if max_side:
    filters.append(f"scale='min(iw,{max_side})':'min(ih,{max_side})'"
                   ":force_original_aspect_ratio=decrease")
  command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info",
             "-i", path, "-map", "0:v:0", "-an", "-sn", "-dn"]
  if filters:
    command += ["-vf", ",".join(filters)]
  command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
  # stderr goes to a file, not a pipe: ffmpeg writes its output description there before the
  # first frame, and a file cannot fill up and block it while frames are read from stdout.
  with tempfile.TemporaryFile() as log_file:
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=log_file)
    timed_out = threading.Event()

    def kill():
      timed_out.set()
      proc.kill()

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
      timer.daemon = True
      timer.start()
    frames = []
    try:
      first = proc.stdout.read(1)
      log_file.seek(0)
      log, _ = _strip_levels(log_file.read().decode("utf-8", "replace"))
      size = _size(_video_line(log_section(log, "Output #0")) or "")
      if first and size:
        width, height = size
        frame_bytes = width * height * 3
        buffer = first + proc.stdout.read(frame_bytes - 1)
        while len(buffer) == frame_bytes:
          frames.append(np.frombuffer(buffer, np.uint8).reshape(height, width, 3))
          buffer = proc.stdout.read(frame_bytes)
      else:
        proc.stdout.read()
      returncode = proc.wait()
    finally:
      if timer:
        timer.cancel()
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      proc.stdout.close()
    log_file.seek(0)
    log, error_lines = _strip_levels(log_file.read().decode("utf-8", "replace"))
  if timed_out.is_set():
    raise TimeoutError(f"{path}: ffmpeg did not finish decoding within {timeout:g} s")
  if returncode < 0:
    raise errors.TransientError(f"{path}: ffmpeg was killed by signal {-returncode}")
  source = _video_line(log_section(log, "Input #0"))
  if not log_section(log, "Input #0"):
    raise VideoError(f"unreadable video: {_last_line(error_lines or log)}")
  if source is None:
    raise VideoError("has no video stream")
  if not frames:
    reason = _last_line(error_lines) if error_lines else "no frames decoded"
    raise VideoError(f"no frames decoded: {reason}" if error_lines else reason)
  rotation = re.search(r"rotation of (-?[\d.]+) degrees", log_section(log, "Input #0"))
  return Video(frames=np.stack(frames), source_fps=_fps(source), source_size=_size(source),
               rotation=float(rotation.group(1)) if rotation else 0.0,
               decode_errors=error_lines.strip()[-300:])
