"""Reliability catalogue (docs/RELIABILITY.md): face photos and audio files a user may give.

Every input is generated here (scikit-image's astronaut photo for faces; tones and noise
encoded with imageio-ffmpeg's ffmpeg for audio): no binary fixtures in the repository.
"""

import logging as py_logging
import os
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import scipy.io.wavfile
import skimage.data
from PIL import Image

from data_prep import audio, face, photo, schema, template
from data_prep.errors import UserError
from talkface_jax import media
from tests import fixtures_raw

_FACE_BOX = 87.0  # Dlib's face box in the 512 px astronaut photo (tests/fixtures_raw.py).


@pytest.fixture(scope="module")
def aligner():
  return face.FaceAligner(face.AlignConfig(resolution=64))


def _astronaut() -> Image.Image:
  return Image.fromarray(skimage.data.astronaut())


def _face_on_canvas(face_px: float, canvas=(640, 480), at=(0.5, 0.5)) -> np.ndarray:
  """The astronaut scaled so its face box is ``face_px``, pasted on a grey canvas."""
  scale = face_px / _FACE_BOX
  person = _astronaut().resize((round(512 * scale), round(512 * scale)),
                               Image.Resampling.BICUBIC)
  image = Image.new("RGB", canvas, (90, 90, 90))
  # The face centre (222.5, 126.5) of the photo lands at the requested point of the canvas.
  image.paste(person, (round(canvas[0] * at[0] - 222.5 * scale),
                       round(canvas[1] * at[1] - 126.5 * scale)))
  return np.asarray(image)


def _on_template(crop: np.ndarray) -> float:
  """Mean distance (px) of the crop's refitted stable landmarks from the template's."""
  points = face.landmarks_on_aligned(crop[None])[0]
  size = crop.shape[0]
  return float(np.abs(points[template.STABLE_POINTS]
                      - template.mean_face(size)[template.STABLE_POINTS]).mean())


def _assert_one_line(error: pytest.ExceptionInfo, path, *fragments):
  message = str(error.value)
  assert isinstance(error.value, UserError)
  assert "\n" not in message and str(path) in message, message
  for fragment in fragments:
    assert fragment in message, message


# -------------------------------------------------------------------------------------------------
# Photos.
# -------------------------------------------------------------------------------------------------


def test_photo_exif_rotated_jpeg_is_turned_upright(tmp_path, aligner):
  # A phone stores the sensor's pixels (here turned 90 degrees) and EXIF orientation 6
  # ("rotate 90 clockwise to display"): the face is found only if the tag is applied.
  upright = _astronaut()
  stored = upright.rotate(90, expand=True)
  exif = Image.Exif()
  exif[0x0112] = 6
  path = tmp_path / "phone.jpg"
  stored.save(path, quality=95, exif=exif)
  pixels = photo.read_photo(str(path))
  assert pixels.shape == (512, 512, 3)
  assert np.abs(pixels.astype(int) - np.asarray(upright, int)).mean() < 4
  assert _on_template(photo.load_face_photo(str(path), aligner)) < 2.0


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "RGB16"])
def test_photo_pixel_formats_become_rgb(tmp_path, aligner, mode):
  rgb = np.asarray(_astronaut())
  if mode == "RGB16":  # 16 bits per channel: Pillow cannot write it, ffmpeg can.
    path = tmp_path / "rgb48.png"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo",
                    "-pix_fmt", "rgb48le", "-s", "512x512", "-i", "-", "-frames:v", "1",
                    "-pix_fmt", "rgb48be", str(path)],
                   input=(rgb.astype("<u2") * 257).tobytes(), check=True)
    expected = rgb
  elif mode == "I;16":
    grey = np.asarray(_astronaut().convert("L"))
    path = tmp_path / "grey16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    expected = np.repeat(grey[..., None], 3, -1)
  else:
    converted = _astronaut().convert(mode)
    path = tmp_path / f"photo_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    converted.save(path, **({"quality": 95} if mode == "CMYK" else {}))
    expected = np.asarray(converted.convert("RGB"))
  pixels = photo.read_photo(str(path))
  assert pixels.dtype == np.uint8 and pixels.shape == (512, 512, 3)
  assert np.abs(pixels.astype(int) - expected.astype(int)).mean() < 3  # Scaled, not clipped.
  assert _on_template(photo.align_photo(pixels, aligner)) < 2.5


def test_photo_4000px_with_a_300px_face_is_found(aligner):
  # Shrunk to 640 px for detection, this face would be 48 px: under Dlib's 80 px minimum.
  image = _face_on_canvas(300, canvas=(4000, 3000), at=(0.3, 0.6))
  assert _on_template(photo.align_photo(image, aligner)) < 2.0


def test_photo_face_under_dlibs_minimum_is_too_small(aligner):
  with pytest.raises(photo.PhotoError) as error:
    photo.align_photo(_face_on_canvas(36), aligner, name="face photo small.png")
  _assert_one_line(error, "small.png", "the face is too small (", f"at least {photo.MIN_FACE_PX})")
  size = int(str(error.value).split("too small (")[1].split(" px")[0])
  assert 30 <= size < photo.MIN_FACE_PX  # Its box in the upsampled pass: ~1.1x the face.
  # Just above the minimum, the face is used.
  assert _on_template(photo.align_photo(_face_on_canvas(56), aligner)) < 3.0


def test_photo_without_a_face_says_so(aligner):
  with pytest.raises(photo.PhotoError) as error:
    photo.align_photo(fixtures_raw.noise_frames(1, size=(320, 240))[0], aligner,
                      name="face photo noise.png")
  _assert_one_line(error, "noise.png", "no face found")


def test_photo_two_faces_largest_by_default_or_by_index(aligner, caplog):
  image = fixtures_raw.face_frames(1, size=(320, 240), second_face_px=70.0)[0][0]
  with caplog.at_level(py_logging.WARNING):
    largest = photo.align_photo(image, aligner, name="face photo two.png")
  assert "two.png: 2 faces found; using the largest" in caplog.text
  second = photo.align_photo(image, aligner, face_index=1)
  # Both are aligned faces, and they are different crops (the small face is blurrier and
  # sits elsewhere in the photo: its crop is not the large one's).
  assert _on_template(largest) < 2.5 and _on_template(second) < 3.5
  assert np.abs(largest.astype(int) - second.astype(int)).mean() > 3
  with pytest.raises(photo.PhotoError) as error:
    photo.align_photo(image, aligner, face_index=2, name="face photo two.png")
  _assert_one_line(error, "two.png", "face_index 2", "2 face(s) found")


@pytest.mark.parametrize("case, fragment", [
    ("missing", "no such file"), ("folder", "is a folder"), ("empty", "file is empty"),
    ("text", "cannot read it as an image"), ("truncated", "cannot read it as an image")])
def test_photo_bad_files_are_one_line_errors(tmp_path, case, fragment):
  path = tmp_path / f"{case}.jpg"
  if case == "folder":
    path.mkdir()
  elif case == "empty":
    path.write_bytes(b"")
  elif case == "text":
    path.write_text("not an image\n")
  elif case == "truncated":
    _astronaut().save(path, quality=90)
    path.write_bytes(path.read_bytes()[:600])
  with pytest.raises(photo.PhotoError) as error:
    photo.read_photo(str(path))
  _assert_one_line(error, path, fragment)


def test_antialiased_warp_averages_detail_finer_than_a_crop_pixel():
  # A 1-px checkerboard shrunk 4x: a plain bilinear warp samples it (aliasing: black and
  # white crop pixels); the prefiltered warp gives its mean, grey.
  board = ((np.indices((800, 800)).sum(0) % 2) * 255).astype(np.uint8)
  board = np.repeat(board[..., None], 3, -1)
  a = 0.25 * np.exp(0.1j)
  b = -a * (200 + 150j)  # Crop pixel (0, 0) samples the board at (200, 150): inside it.
  aliased = face.warp(board, a, b, 64)
  filtered = face.warp(board, a, b, 64, antialias=True)
  assert aliased.std() > 40
  assert filtered.std() < 6 and abs(filtered.mean() - 127.5) < 6
  # No shrinking, no prefilter: identical to the plain warp.
  np.testing.assert_array_equal(face.warp(board, 1.5, b, 64, antialias=True),
                                face.warp(board, 1.5, b, 64))


# -------------------------------------------------------------------------------------------------
# Audio.
# -------------------------------------------------------------------------------------------------


def _tone(seconds, rate, channels=1, freq=440.0):
  t = np.arange(int(round(seconds * rate))) / rate
  mono = 0.5 * np.sin(2 * np.pi * freq * t)
  return np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono


def _encode(tmp_path, name, samples, rate, *codec_args):
  """Writes float samples as a wav, then re-encodes it with ffmpeg to ``name``'s format."""
  wav = tmp_path / f"{name}.source.wav"
  scipy.io.wavfile.write(wav, rate, (samples * 32767).astype(np.int16))
  if name.endswith(".wav"):
    os.replace(wav, tmp_path / name)
    return str(tmp_path / name)
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(wav),
                  *codec_args, str(tmp_path / name)], check=True)
  return str(tmp_path / name)


def _peak_hz(samples, rate=16000):
  spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
  return np.argmax(spectrum) * rate / len(samples)


@pytest.mark.parametrize("name, rate, channels, codec_args", [
    ("8k_mono.wav", 8000, 1, ()),
    ("96k_6ch.wav", 96000, 6, ()),
    ("clip.mp3", 44100, 2, ("-c:a", "libmp3lame")),
    ("clip.ogg", 48000, 2, ("-c:a", "libvorbis")),
    ("clip.flac", 22050, 1, ()),
    ("clip.m4a", 44100, 2, ("-c:a", "aac")),
])
def test_audio_formats_rates_and_channels_decode_to_16k_mono(tmp_path, name, rate, channels,
                                                              codec_args):
  path = _encode(tmp_path, name, _tone(1.2, rate, channels), rate, *codec_args)
  samples, windows = audio.load_speech(path)
  # Lossy codecs pad or trim up to an encoder frame; the tone keeps its pitch and level
  # (channels averaged, not summed).
  assert windows.shape[1:] == (28, 12) and abs(len(windows) - 30) <= 1
  assert samples.dtype == np.float32 and len(samples) == len(windows) * 640
  assert abs(_peak_hz(samples[1600:-1600]) - 440) < 5
  assert 0.3 < np.abs(samples[1600:-1600]).max() < 0.6


def test_audio_track_of_a_video_is_used(tmp_path):
  frames = fixtures_raw.noise_frames(20, (64, 48))
  path = fixtures_raw.write_video(str(tmp_path / "talk.mp4"), frames,
                                  audio=(_tone(0.8, 16000, freq=300) * 32767).astype(np.int16))
  samples, windows = audio.load_speech(path)
  assert abs(len(windows) - 20) <= 1 and abs(_peak_hz(samples[1600:-1600]) - 300) < 5


def test_audio_silence_is_valid_input(tmp_path):
  path = _encode(tmp_path, "silence.wav", np.zeros(16000), 16000)
  samples, windows = audio.load_speech(path)
  assert windows.shape == (25, 28, 12) and np.isfinite(windows).all()
  assert not samples.any()
  # Digital silence gives one constant window (log of the floor energy), not NaNs.
  np.testing.assert_array_equal(windows, np.broadcast_to(windows[0], windows.shape))


@pytest.mark.parametrize("case, fragment", [
    ("blip", "too short"), ("text", "cannot decode audio"), ("empty", "file is empty"),
    ("folder", "is a folder"), ("missing", "no such file"), ("video_only", "no audio stream")])
def test_audio_bad_files_are_one_line_errors(tmp_path, case, fragment):
  path = tmp_path / f"{case}.wav"
  if case == "blip":  # 30 ms: under one 40 ms video frame.
    scipy.io.wavfile.write(path, 16000, np.full(480, 1000, np.int16))
  elif case == "text":
    path.write_text("these are words, not sound\n" * 20)
  elif case == "empty":
    path.write_bytes(b"")
  elif case == "folder":
    path.mkdir()
  elif case == "video_only":
    path = tmp_path / "silent_film.mp4"
    fixtures_raw.write_video(str(path), fixtures_raw.noise_frames(5, (64, 48)))
  with pytest.raises(audio.AudioError) as error:
    audio.load_speech(str(path))
  _assert_one_line(error, path, fragment)


def test_audio_decoder_timeout_is_a_clear_error(tmp_path):
  fifo = tmp_path / "nobody_writes_here.wav"
  os.mkfifo(fifo)  # ffmpeg blocks opening it: the timeout must stop it.
  with pytest.raises(audio.AudioError) as error:
    audio.load_audio(str(fifo), timeout=1)
  _assert_one_line(error, fifo, "did not finish decoding within 1 s")


def test_audio_samples_in_memory_any_rate_and_channels():
  stereo_22k = _tone(1.0, 22050, channels=2)
  samples, windows = audio.speech_features(stereo_22k, sample_rate=22050)
  assert len(windows) == 25 and abs(_peak_hz(samples[1600:-1600]) - 440) < 5
  with pytest.raises(audio.AudioError, match="too short"):
    audio.speech_features(np.zeros(100, np.float32), name="array")
  with pytest.raises(audio.AudioError, match="not all finite"):
    audio.speech_features(np.full(16000, np.nan, np.float32), name="array")


def test_one_audio_decoder_serves_the_shards_and_the_user(tmp_path):
  # media.read_audio (user inputs) is data_prep.audio.load_audio (shards) in float32.
  path = _encode(tmp_path, "x.wav", _tone(0.5, 44100, 2), 44100)
  as_int = audio.load_audio(path)
  as_float = media.read_audio(path, schema.SAMPLE_RATE)
  assert as_int.dtype == np.int16 and as_float.dtype == np.float32
  np.testing.assert_allclose(as_float, as_int / 32768.0, atol=2 / 32768)
