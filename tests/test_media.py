"""Tests for talkface_jax.media: round trips through real ffmpeg files."""

import os
import stat
import subprocess
import wave

import numpy as np
import pytest

from talkface_jax import media


def _gray_ramp_video(num_frames, height=48, width=64, step=4):
  """Frames whose flat gray level encodes the frame index (survives H.264)."""
  levels = (np.arange(num_frames) * step).astype(np.uint8)
  return np.broadcast_to(levels[:, None, None, None],
                         (num_frames, height, width, 3)).copy()


def _frame_indices(frames, step=4):
  return np.round(frames.mean(axis=(1, 2, 3)) / step).astype(int)


def _write_wav(path, samples_int16, sample_rate):
  """samples_int16: [S] or [S, channels]."""
  samples = np.asarray(samples_int16, np.int16)
  channels = 1 if samples.ndim == 1 else samples.shape[1]
  with wave.open(str(path), 'wb') as wav:
    wav.setnchannels(channels)
    wav.setsampwidth(2)
    wav.setframerate(sample_rate)
    wav.writeframes(samples.astype('<i2').tobytes())


def test_write_read_round_trip_with_audio(tmp_path):
  path = tmp_path / 'clip.mp4'
  frames = _gray_ramp_video(50)
  t = np.arange(32000) / 16000
  audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  media.write_video(str(path), frames, fps=25, audio=audio, sample_rate=16000)

  info = media.probe(str(path))
  assert info.video_codec == 'h264'
  assert info.video_fps == 25
  assert info.video_size == (64, 48)
  assert info.audio_codec == 'aac'
  assert info.audio_sample_rate == 16000

  decoded, source_fps = media.read_video(str(path))
  assert source_fps == 25
  assert decoded.shape == (50, 48, 64, 3)
  assert decoded.dtype == np.uint8
  np.testing.assert_array_equal(_frame_indices(decoded), np.arange(50))

  track = media.read_audio(str(path))
  assert track.dtype == np.float32
  # The audio lasts as long as the video: 2 s at 16 kHz, encoder priming
  # trimmed.
  assert abs(len(track) - 32000) <= 16
  assert 0.25 < np.abs(track).max() < 0.35
  # No temporary files remain beside the output.
  assert os.listdir(tmp_path) == ['clip.mp4']


def test_write_video_pads_odd_sizes_and_accepts_int16_audio(tmp_path):
  path = tmp_path / 'odd.mp4'
  frames = np.random.default_rng(0).integers(0, 255, (10, 33, 47, 3), np.uint8)
  audio = np.zeros(6400, np.int16)  # Silence is a valid track.
  media.write_video(str(path), frames, audio=audio)
  decoded, _ = media.read_video(str(path))
  assert decoded.shape == (10, 34, 48, 3)
  track = media.read_audio(str(path))
  assert abs(len(track) - 6400) <= 16
  assert np.abs(track).max() < 1e-3


def test_read_video_resamples_30_to_25_fps_by_timestamps(tmp_path):
  path = tmp_path / 'clip30.mp4'
  media.write_video(str(path), _gray_ramp_video(60), fps=30)
  assert media.probe(str(path)).video_fps == 30

  decoded, source_fps = media.read_video(str(path), fps=25)
  assert source_fps == 30
  assert decoded.shape[0] == 50  # 2 s at 25 fps.
  # Output frame k shows the source frame nearest to time k / 25.
  expected = np.round(np.arange(50) * 30 / 25).astype(int)
  assert np.all(np.abs(_frame_indices(decoded) - expected) <= 1)

  native, _ = media.read_video(str(path), fps=None)
  assert native.shape[0] == 60


def test_read_audio_resamples_stereo_44k_to_16k_mono(tmp_path):
  path = tmp_path / 'stereo.wav'
  num_samples = 44100 * 3 // 2  # 1.5 s.
  stereo = np.zeros((num_samples, 2), np.int16)
  stereo[:, 0] = 16384  # Left at 0.5, right silent: the mono mix is 0.25.
  _write_wav(path, stereo, 44100)
  audio = media.read_audio(str(path), sample_rate=16000)
  assert audio.dtype == np.float32 and audio.ndim == 1
  assert abs(len(audio) - 24000) <= 1
  np.testing.assert_allclose(np.median(audio), 0.25, atol=1e-3)


@pytest.mark.parametrize('extension', ['flac', 'm4a', 'mp3'])
def test_read_audio_decodes_compressed_containers(tmp_path, extension):
  source = tmp_path / 'source.wav'
  _write_wav(source, np.full((48000, 2), 8192, np.int16), 48000)
  encoded = tmp_path / f'clip.{extension}'
  result = subprocess.run(
      [media._ffmpeg(), '-v', 'error', '-i', str(source), str(encoded)],
      capture_output=True, check=False)
  if result.returncode != 0 and extension == 'mp3':
    pytest.skip('this ffmpeg build has no mp3 encoder')
  assert result.returncode == 0, result.stderr
  audio = media.read_audio(str(encoded))
  # Lossy codecs may pad or trim an encoder frame (<= 1152 samples at 48 kHz).
  assert abs(len(audio) - 16000) <= 400
  np.testing.assert_allclose(np.median(audio), 0.25, atol=0.02)


def test_read_audio_keeps_a_tone_at_its_frequency(tmp_path):
  path = tmp_path / 'tone.wav'
  t = np.arange(22050) / 22050
  _write_wav(path, 8000 * np.sin(2 * np.pi * 1000 * t), 22050)
  audio = media.read_audio(str(path), sample_rate=16000)
  spectrum = np.abs(np.fft.rfft(audio))
  peak_hz = np.argmax(spectrum) * 16000 / len(audio)
  assert abs(peak_hz - 1000) < 5


def test_corrupt_empty_and_missing_files_raise_media_error(tmp_path):
  corrupt = tmp_path / 'corrupt.mp4'
  corrupt.write_bytes(b'not a video at all' * 64)
  empty = tmp_path / 'empty.wav'
  empty.write_bytes(b'')
  missing = tmp_path / 'missing.mp4'
  for reader in (media.read_video, media.read_audio, media.probe):
    for path in (corrupt, empty, missing):
      with pytest.raises(media.MediaError) as error:
        reader(str(path))
      assert error.value.path == str(path)
      assert str(path) in str(error.value)


def test_missing_streams_raise_media_error(tmp_path):
  silent_video = tmp_path / 'no_audio.mp4'
  media.write_video(str(silent_video), _gray_ramp_video(5))
  with pytest.raises(media.MediaError, match='no audio stream'):
    media.read_audio(str(silent_video))
  wav = tmp_path / 'only_audio.wav'
  _write_wav(wav, np.zeros(1600), 16000)
  with pytest.raises(media.MediaError, match='no video stream'):
    media.read_video(str(wav))


def test_unwritable_destination_raises_and_leaves_nothing(tmp_path):
  frames = _gray_ramp_video(5)
  # A parent that is a file: fails for every user, root included.
  blocker = tmp_path / 'blocker'
  blocker.write_bytes(b'')
  target = blocker / 'out.mp4'
  with pytest.raises(media.MediaError) as error:
    media.write_video(str(target), frames)
  assert error.value.path == str(target)
  with pytest.raises(media.MediaError):
    media.write_png(str(blocker / 'out.png'), frames[0])


@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0,
                    reason='root ignores directory permissions')
def test_read_only_directory_raises_clear_error(tmp_path):
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
  try:
    with pytest.raises(media.MediaError, match='cannot write to directory'):
      media.write_video(str(locked / 'out.mp4'), _gray_ramp_video(5))
    assert os.listdir(locked) == []
  finally:
    locked.chmod(stat.S_IRWXU)


def test_failed_encode_leaves_no_partial_file(tmp_path, monkeypatch):
  # An "ffmpeg" that writes half a file to its output and then fails, as a
  # crash or full disk would.
  fake = tmp_path / 'fake_ffmpeg.sh'
  fake.write_text('#!/bin/sh\nfor last; do :; done\n'
                  'printf "partial" > "$last"\necho "disk full" >&2\nexit 1\n')
  fake.chmod(stat.S_IRWXU)
  monkeypatch.setattr(media, '_ffmpeg', lambda: str(fake))
  out_dir = tmp_path / 'out'
  out_dir.mkdir()
  target = out_dir / 'clip.mp4'
  with pytest.raises(media.MediaError, match='disk full'):
    media.write_video(str(target), _gray_ramp_video(5),
                      audio=np.zeros(3200, np.float32))
  assert os.listdir(out_dir) == []


def test_existing_file_is_replaced_whole(tmp_path):
  path = tmp_path / 'clip.mp4'
  media.write_video(str(path), _gray_ramp_video(5))
  media.write_video(str(path), _gray_ramp_video(12))
  assert media.read_video(str(path))[0].shape[0] == 12


def test_write_video_rejects_bad_arrays(tmp_path):
  with pytest.raises(ValueError, match='uint8'):
    media.write_video(str(tmp_path / 'a.mp4'),
                      np.zeros((3, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match='mono'):
    media.write_video(str(tmp_path / 'a.mp4'), np.zeros((3, 8, 8, 3), np.uint8),
                      audio=np.zeros((100, 2), np.float32))
  assert os.listdir(tmp_path) == []


def test_contact_sheet_layout_and_png_round_trip(tmp_path):
  truth = _gray_ramp_video(40, height=16, width=12, step=5)
  samples = [_gray_ramp_video(40, height=16, width=12, step=5)
             for _ in range(3)]
  sheet = media.contact_sheet([truth] + samples, max_frames=8, gap=2)
  assert sheet.dtype == np.uint8
  assert sheet.shape == (4 * 18 - 2, 8 * 14 - 2, 3)
  # Columns subsample time evenly from the first to the last frame.
  top_row = [sheet[0, c * 14] for c in range(8)]
  expected = np.round(np.linspace(0, 39, 8)).astype(int) * 5
  np.testing.assert_array_equal(np.array(top_row)[:, 0], expected)

  labelled = media.contact_sheet(
      [truth] + samples, labels=['truth', 's1', 's2', 's3'], max_frames=8)
  assert labelled.shape[0] == sheet.shape[0]
  label_width = labelled.shape[1] - sheet.shape[1]
  assert label_width > 0
  assert labelled[:16, :label_width].max() > 200  # Text was drawn.

  png = tmp_path / 'sheet.png'
  media.write_png(str(png), labelled)
  import imageio.v3 as iio
  np.testing.assert_array_equal(iio.imread(png), labelled)
  assert os.listdir(tmp_path) == ['sheet.png']


def test_contact_sheet_short_rows_leave_blank_cells():
  long_row = np.full((10, 8, 8, 3), 200, np.uint8)
  short_row = np.full((3, 8, 8, 3), 100, np.uint8)
  sheet = media.contact_sheet([long_row, short_row], max_frames=16, gap=0)
  assert sheet.shape == (16, 80, 3)
  assert np.all(sheet[8:, :24] == 100)
  assert np.all(sheet[8:, 24:] == 32)


def test_side_by_side_and_grid():
  a = np.full((4, 8, 6, 3), 10, np.uint8)
  b = np.full((2, 8, 5, 3), 20, np.uint8)
  both = media.side_by_side([a, b])
  assert both.shape == (4, 8, 11, 3)
  assert np.all(both[3, :, 6:] == 20)  # b holds its last frame.
  with pytest.raises(ValueError, match='heights'):
    media.side_by_side([a, np.zeros((4, 7, 6, 3), np.uint8)])

  videos = [np.full((3, 8, 6, 3), 10 * (i + 1), np.uint8) for i in range(5)]
  grid = media.grid_video(videos, cols=2)
  assert grid.shape == (3, 24, 12, 3)
  assert np.all(grid[:, 8:16, 6:12] == 40)  # Video 3 is at row 1, column 1.
  assert np.all(grid[:, 16:, 6:] == 0)  # Empty last cell.


def test_written_video_plays_in_plain_ffmpeg(tmp_path):
  # Independent check that the file is a complete mp4: ffmpeg decodes it to
  # the null muxer without error.
  path = tmp_path / 'clip.mp4'
  media.write_video(str(path), _gray_ramp_video(25),
                    audio=np.zeros(16000, np.float32))
  result = subprocess.run(
      [media._ffmpeg(), '-v', 'error', '-i', str(path), '-f', 'null', '-'],
      capture_output=True, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stderr == b''
