"""Video, audio and image files: reading inputs and writing results.

This module owns every file a user or the demo hands us or gets back:

* `read_video` / `read_audio`: decode anything ffmpeg reads into the model's
  frame rate (25 fps) and sample rate (16 kHz mono).
* `write_video`: H.264 mp4 with the audio muxed as AAC; `write_png`.
* `contact_sheet`, `side_by_side`, `grid_video`: layouts for comparing ground
  truth with K samples.
* `probe`: what streams a file has (used by tests and to explain failures).

It uses numpy and the ffmpeg binary shipped with imageio-ffmpeg, run as a
subprocess; it imports no JAX. Every writer writes to a temporary file in the
target directory and renames it into place, so a crash never leaves a partial
file under the final name. Every failure to read or write a file raises
`MediaError`, which names the file.
"""

import dataclasses
import io
import os
import re
import subprocess
import tempfile
import wave
from typing import Optional, Sequence, Tuple

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np

from data_prep import audio as audio_prep
from data_prep import errors as errors_lib
from data_prep import video as video_lib

# Quality of the H.264 encode: 18 is visually lossless for faces at 64-256 px,
# which matters when the sheets and videos are used to judge small lip motion.
_H264_CRF = 18
_AAC_BITRATE = '128k'


class MediaError(Exception):
  """A media file could not be read or written.

  Attributes:
    path: the file concerned.
    reason: what went wrong, in words.
  """

  def __init__(self, path: str, reason: str):
    super().__init__(f'{path}: {reason}')
    self.path = str(path)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class MediaInfo:
  """Streams of a media file, as ffmpeg reports them.

  Attributes:
    duration: container duration in seconds, or None when unknown.
    video_size: (width, height) of the first video stream, or None.
    video_fps: frame rate of the first video stream, or None.
    video_codec: codec name of the first video stream, or None.
    audio_sample_rate: sample rate of the first audio stream, or None.
    audio_codec: codec name of the first audio stream, or None.
    audio_channels: channel layout of the first audio stream ('mono',
      'stereo', ...), or None.
  """
  duration: Optional[float]
  video_size: Optional[Tuple[int, int]]
  video_fps: Optional[float]
  video_codec: Optional[str]
  audio_sample_rate: Optional[int]
  audio_codec: Optional[str]
  audio_channels: Optional[str]

  @property
  def has_video(self) -> bool:
    return self.video_codec is not None

  @property
  def has_audio(self) -> bool:
    return self.audio_codec is not None


# --------------------------------------------------------------------------
# ffmpeg plumbing
# --------------------------------------------------------------------------


def _ffmpeg() -> str:
  return imageio_ffmpeg.get_ffmpeg_exe()


def _last_error_line(stderr: bytes) -> str:
  lines = [l.strip() for l in stderr.decode('utf-8', 'replace').splitlines()]
  lines = [l for l in lines if l]
  return lines[-1] if lines else 'ffmpeg failed without a message'


def _check_readable(path: str) -> str:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise MediaError(path, 'no such file')
  if not os.path.isfile(path):
    raise MediaError(path, 'not a regular file')
  if os.path.getsize(path) == 0:
    raise MediaError(path, 'file is empty')
  return path


def _parse_rate(text: str) -> float:
  """'25', '29.97', '30k' (ffmpeg's shorthand for thousands) -> float."""
  if text.endswith('k'):
    return float(text[:-1]) * 1000
  return float(text)


def _parse_streams(section: str) -> MediaInfo:
  """Parses one 'Input #0' or 'Output #0' section of ffmpeg's log."""
  duration = None
  match = re.search(r'Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)', section)
  if match:
    hours, minutes, seconds = match.groups()
    duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)

  video_size = video_fps = video_codec = None
  for line in section.splitlines():
    match = re.search(r'Stream #\S+.*?: Video: (\w+)', line)
    if match and 'attached pic' not in line:
      video_codec = match.group(1)
      size = re.search(r'[ ,](\d{1,5})x(\d{1,5})[ ,\[]', line + ' ')
      if size:
        video_size = (int(size.group(1)), int(size.group(2)))
      rate = (re.search(r'([\d.]+k?) fps', line) or
              re.search(r'([\d.]+k?) tbr', line))
      if rate:
        video_fps = _parse_rate(rate.group(1))
      break

  audio_rate = audio_codec = audio_channels = None
  for line in section.splitlines():
    match = re.search(r'Stream #\S+.*?: Audio: (\w+)', line)
    if match:
      audio_codec = match.group(1)
      rate = re.search(r'(\d+) Hz, ([^,]+)', line)
      if rate:
        audio_rate = int(rate.group(1))
        audio_channels = rate.group(2).strip()
      break
  return MediaInfo(duration, video_size, video_fps, video_codec, audio_rate,
                   audio_codec, audio_channels)


def probe(path: str) -> MediaInfo:
  """Reports the streams of a media file (an ffprobe stand-in).

  Args:
    path: any file ffmpeg can open.

  Returns:
    The file's `MediaInfo`.

  Raises:
    MediaError: the file is missing, empty or not a media file.
  """
  path = _check_readable(path)
  # With no output file ffmpeg prints the input's streams and exits non-zero;
  # only a missing 'Input #0' section means the file could not be opened.
  result = subprocess.run([_ffmpeg(), '-hide_banner', '-nostdin', '-i', path],
                          capture_output=True, check=False)
  log = result.stderr.decode('utf-8', 'replace')
  section = video_lib.log_section(log, 'Input #0')
  if not section:
    raise MediaError(
        path, f'ffmpeg cannot open it ({_last_error_line(result.stderr)})')
  return _parse_streams(section)


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


def read_video(path: str,
               fps: Optional[float] = 25.0) -> Tuple[np.ndarray, float]:
  """Decodes a video file into RGB frames at the model's frame rate.

  The decoding is `data_prep.video.read_video` (the project's one video
  reader: frames resampled by timestamp, phone rotation applied, a timeout);
  this wrapper turns its failures into `MediaError`.

  Args:
    path: any video ffmpeg can decode (mp4, mpg, avi, mov, webm, ...).
    fps: output frame rate; None keeps the source's frames as they are.

  Returns:
    (frames, source_fps): frames is uint8 [T, H, W, 3]; source_fps is the
    frame rate the file declares.

  Raises:
    MediaError: the file is missing, unreadable, corrupt, has no video stream
      or decodes to no frames.
  """
  path = os.fspath(path)
  try:
    decoded = video_lib.read_video(path, fps=fps)
  except FileNotFoundError:
    raise MediaError(path, 'no such file') from None
  except video_lib.VideoError as e:
    raise MediaError(path, str(e)) from None
  except (TimeoutError, errors_lib.TransientError) as e:
    raise MediaError(path, f'cannot decode video ({e})') from None
  return decoded.frames, decoded.source_fps


def read_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
  """``data_prep.audio.load_audio`` as float32 in [-1, 1], its errors as `MediaError`.

  Args:
    path: audio file, or video file with an audio track.
    sample_rate: output rate in Hz.

  Returns:
    float32 [S] samples in [-1, 1]. Silence is valid and returned as zeros.

  Raises:
    MediaError: the file is missing, unreadable, has no audio stream, or
      decodes to no samples.
  """
  try:
    return audio_prep.load_audio(path, sample_rate, np.float32)
  except audio_prep.AudioError as error:
    raise MediaError(error.path, error.reason) from error


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _temporary_sibling(path: str, suffix: str) -> str:
  """Creates an empty hidden temp file next to `path`, for an atomic rename."""
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise MediaError(path, f'directory {directory} does not exist')
  try:
    handle, temp_path = tempfile.mkstemp(
        prefix=f'.{os.path.basename(path)}.', suffix=f'.tmp{suffix}',
        dir=directory)
  except OSError as error:
    raise MediaError(
        path, f'cannot write to directory {directory} ({error.strerror})'
    ) from error
  os.close(handle)
  return temp_path


def _remove_quietly(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
  """Encodes mono samples (float in [-1, 1] or int16) as a 16-bit wav."""
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise ValueError(f'audio must be mono [S], got shape {audio.shape}.')
  if np.issubdtype(audio.dtype, np.floating):
    audio = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype('<i2')
  elif audio.dtype == np.int16:
    audio = audio.astype('<i2')
  else:
    raise ValueError(f'audio must be float or int16, got {audio.dtype}.')
  buffer = io.BytesIO()
  with wave.open(buffer, 'wb') as wav:
    wav.setnchannels(1)
    wav.setsampwidth(2)
    wav.setframerate(int(sample_rate))
    wav.writeframes(audio.tobytes())
  return buffer.getvalue()


def _as_video(frames: np.ndarray, name: str = 'frames') -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise ValueError(
        f'{name} must be [T, H, W, 3] with T >= 1, got {frames.shape}.')
  if frames.dtype != np.uint8:
    raise ValueError(f'{name} must be uint8, got {frames.dtype}.')
  return frames


class VideoWriter:
  """An H.264 mp4 (yuv420p) written chunk by chunk, with the audio muxed as AAC when given.

  Frames go to ffmpeg as they come, so a video of any length needs memory for one chunk only.
  The file appears under `path` only when `close` has finished it; `abort` (or leaving a
  `with` block by an exception) removes everything. yuv420p needs even sizes, so odd heights
  or widths are scaled up by one pixel. Video and audio keep their own lengths.

  Raises (from any method):
    MediaError: the directory cannot be written or ffmpeg fails (it names the file).
  """

  def __init__(self, path: str, height: int, width: int, fps: float = 25.0,
               audio: Optional[np.ndarray] = None, sample_rate: int = 16000,
               timeout: float = 600.0):
    self.path = os.fspath(path)
    self.num_frames = 0
    self._size = (height, width)
    self._timeout = timeout
    wav = None if audio is None else _wav_bytes(audio, sample_rate)
    self._temp_video = _temporary_sibling(self.path, '.mp4')
    self._temp_audio = None
    self._log = tempfile.TemporaryFile()
    command = [_ffmpeg(), '-hide_banner', '-nostdin', '-y',
               '-loglevel', 'error', '-f', 'rawvideo', '-pix_fmt', 'rgb24',
               '-s', f'{width}x{height}', '-r', str(fps), '-i', '-']
    if wav is not None:
      self._temp_audio = _temporary_sibling(self.path, '.wav')
      with open(self._temp_audio, 'wb') as f:
        f.write(wav)
      command += ['-i', self._temp_audio]
    command += ['-map', '0:v:0', '-c:v', 'libx264', '-crf', str(_H264_CRF),
                '-preset', 'medium', '-pix_fmt', 'yuv420p',
                '-vf', 'scale=trunc((iw+1)/2)*2:trunc((ih+1)/2)*2',
                '-r', str(fps)]
    if wav is not None:
      command += ['-map', '1:a:0', '-c:a', 'aac', '-b:a', _AAC_BITRATE]
    # faststart puts the index first so browsers can play while downloading.
    command += ['-movflags', '+faststart', '-f', 'mp4', self._temp_video]
    self._process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=self._log)

  def write(self, frames: np.ndarray) -> None:
    """Appends uint8 [T, H, W, 3] RGB frames."""
    frames = _as_video(frames)
    if frames.shape[1:3] != self._size:
      raise ValueError(f'frames are {frames.shape[1:3]}, the video {self._size}.')
    try:
      self._process.stdin.write(np.ascontiguousarray(frames).tobytes())
    except OSError as error:  # A broken pipe: ffmpeg has exited.
      message = self._error_message(str(error))
      self.abort()
      raise MediaError(self.path, f'ffmpeg stopped taking frames ({message})') from error
    self.num_frames += len(frames)

  def close(self) -> None:
    """Finishes the file and moves it to `path`."""
    try:
      self._process.stdin.close()
      returncode = self._process.wait(timeout=self._timeout)
      if returncode != 0 or self.num_frames == 0:
        raise MediaError(self.path, f'ffmpeg could not encode {self.num_frames} frames '
                         f'({self._error_message("no frames")})')
      os.replace(self._temp_video, self.path)
    except subprocess.TimeoutExpired as error:
      raise MediaError(self.path, f'ffmpeg did not finish in {self._timeout:.0f} s') from error
    finally:
      self.abort()

  def _error_message(self, fallback: str) -> str:
    """ffmpeg's last error line, once it has exited; ``fallback`` if it said nothing."""
    try:
      self._process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      return fallback
    self._log.seek(0)
    text = self._log.read()
    return _last_error_line(text) if text.strip() else fallback

  def abort(self) -> None:
    """Stops ffmpeg and removes the temporary files (the final file is left as it was)."""
    if self._process.poll() is None:
      self._process.kill()
      self._process.wait()
    for temp in (self._temp_video, self._temp_audio):
      if temp is not None:
        _remove_quietly(temp)
    self._log.close()

  def __enter__(self) -> 'VideoWriter':
    return self

  def __exit__(self, error_type, error, traceback) -> None:
    if error_type is None:
      self.close()
    else:
      self.abort()


def write_video(path: str,
                frames: np.ndarray,
                fps: float = 25.0,
                audio: Optional[np.ndarray] = None,
                sample_rate: int = 16000) -> None:
  """Writes an H.264 mp4 (yuv420p) of all `frames` at once; see `VideoWriter`.

  Args:
    path: destination .mp4 file; overwritten if it exists.
    frames: uint8 [T, H, W, 3] RGB frames.
    fps: frame rate of `frames`.
    audio: optional mono samples [S], float in [-1, 1] or int16.
    sample_rate: rate of `audio` in Hz.

  Raises:
    ValueError: frames or audio have the wrong shape or type.
    MediaError: the directory cannot be written or ffmpeg fails.
  """
  frames = _as_video(frames)
  with VideoWriter(path, frames.shape[1], frames.shape[2], fps, audio, sample_rate) as writer:
    writer.write(frames)


def write_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] (or [H, W]) image as PNG, atomically.

  Raises:
    ValueError: the image is not uint8.
    MediaError: the directory cannot be written.
  """
  path = os.fspath(path)
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim not in (2, 3):
    raise ValueError(
        f'image must be uint8 [H, W(, C)], got {image.dtype} {image.shape}.')
  temp_path = _temporary_sibling(path, '.png')
  try:
    try:
      iio.imwrite(temp_path, image, extension='.png')
    except OSError as error:
      raise MediaError(path, f'cannot write PNG ({error})') from error
    os.replace(temp_path, path)
  finally:
    _remove_quietly(temp_path)


# --------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------


def _draw_label(strip: np.ndarray, text: str) -> None:
  """Writes `text` in white onto a dark uint8 [H, W, 3] strip, in place."""
  from PIL import Image, ImageDraw  # Pillow ships with imageio.
  canvas = Image.fromarray(strip)
  draw = ImageDraw.Draw(canvas)
  draw.text((3, 3), text, fill=(255, 255, 255))
  strip[...] = np.asarray(canvas)


def contact_sheet(rows: Sequence[np.ndarray],
                  labels: Optional[Sequence[str]] = None,
                  max_frames: int = 16,
                  gap: int = 2) -> np.ndarray:
  """Lays out videos as rows of frames, one row per video.

  Typical rows are the ground truth followed by K samples for the same input;
  the same columns then show the same moments, so differences between samples
  (blinks, lip shape) line up vertically.

  Args:
    rows: videos, each uint8 [T_i, H, W, 3] with the same H and W.
    labels: optional one label per row, written in a strip on the left.
    max_frames: most columns; longer videos are subsampled evenly over time,
      always keeping the first and last frame. Shorter videos leave their
      remaining cells blank.
    gap: pixels of dark background between cells.

  Returns:
    uint8 [R * (H + gap) - gap, label_width + C * (W + gap) - gap, 3] image
    with C = min(max_frames, max_i T_i).
  """
  if not rows:
    raise ValueError('contact_sheet needs at least one row.')
  rows = [_as_video(row, f'rows[{i}]') for i, row in enumerate(rows)]
  height, width = rows[0].shape[1:3]
  for i, row in enumerate(rows):
    if row.shape[1:3] != (height, width):
      raise ValueError(
          f'rows[{i}] is {row.shape[1:3]}, rows[0] is {(height, width)}.')
  if labels is not None and len(labels) != len(rows):
    raise ValueError(f'{len(labels)} labels for {len(rows)} rows.')
  if max_frames < 1:
    raise ValueError('max_frames must be at least 1.')
  num_columns = min(max_frames, max(row.shape[0] for row in rows))
  label_width = 0
  if labels is not None:
    label_width = max(8 + 6 * max(len(label) for label in labels), 24)
  sheet_height = len(rows) * (height + gap) - gap
  sheet_width = label_width + num_columns * (width + gap) - gap
  background = 32
  sheet = np.full((sheet_height, sheet_width, 3), background, np.uint8)
  for r, row in enumerate(rows):
    top = r * (height + gap)
    count = min(num_columns, row.shape[0])
    picks = np.round(np.linspace(0, row.shape[0] - 1, count)).astype(int)
    for c, frame_index in enumerate(picks):
      left = label_width + c * (width + gap)
      sheet[top:top + height, left:left + width] = row[frame_index]
    if labels is not None:
      _draw_label(sheet[top:top + height, :label_width], str(labels[r]))
  return sheet


def _hold_last_frame(video: np.ndarray, num_frames: int) -> np.ndarray:
  if video.shape[0] == num_frames:
    return video
  padding = np.repeat(video[-1:], num_frames - video.shape[0], axis=0)
  return np.concatenate([video, padding], axis=0)


def side_by_side(videos: Sequence[np.ndarray]) -> np.ndarray:
  """Places videos next to each other.

  Args:
    videos: n videos uint8 [T_i, H, W_i, 3] with the same height. Shorter ones
      hold their last frame until the longest ends.

  Returns:
    uint8 [max T_i, H, sum W_i, 3].
  """
  if not videos:
    raise ValueError('side_by_side needs at least one video.')
  videos = [_as_video(v, f'videos[{i}]') for i, v in enumerate(videos)]
  heights = {v.shape[1] for v in videos}
  if len(heights) != 1:
    raise ValueError(
        f'side_by_side: videos have different heights {sorted(heights)}.')
  num_frames = max(v.shape[0] for v in videos)
  return np.concatenate([_hold_last_frame(v, num_frames) for v in videos],
                        axis=2)


def grid_video(videos: Sequence[np.ndarray], cols: int) -> np.ndarray:
  """Tiles videos row by row into a grid with `cols` columns.

  Args:
    videos: n videos uint8 [T_i, H, W, 3] of the same frame size. Shorter ones
      hold their last frame; cells after the last video stay black.
    cols: number of columns (>= 1).

  Returns:
    uint8 [max T_i, ceil(n / cols) * H, cols * W, 3].
  """
  if not videos:
    raise ValueError('grid_video needs at least one video.')
  if cols < 1:
    raise ValueError(f'cols must be at least 1, got {cols}.')
  videos = [_as_video(v, f'videos[{i}]') for i, v in enumerate(videos)]
  height, width = videos[0].shape[1:3]
  for i, v in enumerate(videos):
    if v.shape[1:3] != (height, width):
      raise ValueError(
          f'videos[{i}] is {v.shape[1:3]}, videos[0] is {(height, width)}.')
  num_frames = max(v.shape[0] for v in videos)
  num_rows = -(-len(videos) // cols)
  grid = np.zeros((num_frames, num_rows * height, cols * width, 3), np.uint8)
  for i, v in enumerate(videos):
    r, c = divmod(i, cols)
    grid[:, r * height:(r + 1) * height, c * width:(c + 1) * width] = (
        _hold_last_frame(v, num_frames))
  return grid
