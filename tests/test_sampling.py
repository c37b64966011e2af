"""Sampling: chunked generation, user files in, videos out, errors that leave nothing behind."""

import logging
import os
import subprocess

import imageio.v3 as iio
import imageio_ffmpeg
import jax
import numpy as np
import pytest
import scipy.io.wavfile
import skimage.data

from configs import grid
from talkface_jax import checkpointing, experiment, input_pipeline, media, parallel, sampling
from talkface_jax import train
from talkface_jax.models import talkface
from tests import fixtures_raw


def _tiny_config():
  config = grid.get_config("tiny")
  config.model.conv_impl = "xla"
  config.sample.chunk_frames = 8
  return config


@pytest.fixture(scope="module")
def tiny_state():
  """(config, model, train state) of a freshly initialised tiny model."""
  config = _tiny_config()
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  return config, model, train.create_train_state(config, model, train.make_optimizer(config),
                                                 mesh)


@pytest.fixture(scope="module")
def tiny(tiny_state):
  """(config, model, variables) of a freshly initialised tiny model."""
  config, model, state = tiny_state
  return config, model, train.variables_of(state)


@pytest.fixture(scope="module")
def workdir(tiny_state, tmp_path_factory):
  """A workdir holding a checkpoint of the tiny model."""
  config, _, state = tiny_state
  path = str(tmp_path_factory.mktemp("work"))
  ckpt = checkpointing.Checkpointer(path, config)
  ckpt.save(0, state, input_pipeline.Position(), force=True)
  ckpt.wait()
  ckpt.close()
  return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """Paths of a face photo, a second photo with two faces, a photo with none, and audio."""
  root = tmp_path_factory.mktemp("inputs")
  paths = {name: str(root / name) for name in (
      "face.png", "two_faces.png", "no_face.png", "speech.wav", "silence.wav", "empty.wav",
      "garbage.mp3", "blip.wav", "not_an_image.jpg")}
  iio.imwrite(paths["face.png"], skimage.data.astronaut())
  iio.imwrite(paths["two_faces.png"],
              fixtures_raw.face_frames(1, size=(320, 240), second_face_px=60.0)[0][0])
  iio.imwrite(paths["no_face.png"], fixtures_raw.noise_frames(1)[0])
  # 0.7 s of a tone with noise, 44.1 kHz stereo: any rate and channel count is accepted.
  tone = fixtures_raw.tone(0.7, rate=44100)
  scipy.io.wavfile.write(paths["speech.wav"], 44100, np.stack([tone, tone[::-1]], axis=1))
  scipy.io.wavfile.write(paths["silence.wav"], 16000, np.zeros(8000, np.int16))
  open(paths["empty.wav"], "wb").close()
  with open(paths["garbage.mp3"], "wb") as f:
    f.write(np.random.default_rng(0).bytes(4000))
  scipy.io.wavfile.write(paths["blip.wav"], 16000, np.zeros(160, np.int16))  # 10 ms
  with open(paths["not_an_image.jpg"], "w") as f:
    f.write("not an image")
  return paths


def _leftovers(folder):
  """Hidden staging folders or temporary files left in ``folder``."""
  return [n for n in os.listdir(folder) if n.startswith(".")]


# -------------------------------------------------------------------------------------------------
# Chunked generation.
# -------------------------------------------------------------------------------------------------


def test_chunked_generation_equals_one_call(tiny):
  config, model, variables = tiny
  rng = np.random.default_rng(0)
  frame0 = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
  mfcc = rng.normal(size=(2, 19, 28, 12)).astype(np.float32)
  key = jax.random.key(3)
  whole = np.asarray(sampling.make_generate_fn(model, 3, "running")(variables, frame0, mfcc, key))
  assert np.abs(whole[:, 0, 1:] - whole[:, 1, 1:]).max() > 0  # The K samples differ.
  for chunk_frames in (4, 40):  # 5 chunks, the last one padded; one padded chunk.
    generator = sampling.ChunkedGenerator(model, 3, chunk_frames)
    chunked = generator(variables, frame0, mfcc, key, quantize=False)
    np.testing.assert_allclose(chunked, whole, atol=1e-6, err_msg=f"chunk {chunk_frames}")
    assert generator.num_traces == 1
  quantized = generator(variables, frame0, mfcc, key)
  assert quantized.dtype == np.uint8
  np.testing.assert_array_equal(quantized, sampling.to_uint8(whole))


def test_one_minute_of_audio_runs_in_fixed_chunks(tiny, tmp_path, monkeypatch):
  config, model, variables = tiny
  wav, path = str(tmp_path / "minute.wav"), str(tmp_path / "minute.flac")
  scipy.io.wavfile.write(wav, 22050, fixtures_raw.tone(60.0, rate=22050))
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", wav, path], check=True)
  audio, mfcc = sampling.load_speech(path)
  assert mfcc.shape == (1500, 28, 12) and audio.shape == (1500 * 640,)
  generator = sampling.ChunkedGenerator(model, 1, 100)
  shapes = []
  chunk_fn = generator._chunk  # pylint: disable=protected-access

  def recording_chunk(variables, state, windows, key, quantize):
    shapes.append(windows.shape)
    return chunk_fn(variables, state, windows, key, quantize=quantize)

  monkeypatch.setattr(generator, "_chunk", recording_chunk)
  face = np.full((1, 64, 64, 3), 128, np.uint8)
  videos = generator(variables, face, mfcc[None], jax.random.key(0))
  assert videos.shape == (1, 1, 1500, 64, 64, 3)
  # 1499 generated frames in 15 calls of the same static shape, compiled once: what runs on the
  # device at any time is one chunk, whatever the audio length.
  assert shapes == [(1, 100, 28, 12)] * 15
  assert generator.num_traces == 1


# -------------------------------------------------------------------------------------------------
# Inputs.
# -------------------------------------------------------------------------------------------------


def test_load_face_aligns_like_the_training_data(files):
  crop = sampling.load_face(files["face.png"], 64)
  assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
  from data_prep import face, template  # pylint: disable=g-import-not-at-top
  # The refitted landmarks of the crop sit on the template, as for aligned training clips.
  points = face.landmarks_on_aligned(crop[None])[0]
  error = np.abs(points[template.STABLE_POINTS] - template.mean_face(64)[template.STABLE_POINTS])
  assert error.mean() < 2.0


def test_two_faces_use_the_largest_and_warn(files, caplog):
  with caplog.at_level(logging.WARNING):
    crop = sampling.load_face(files["two_faces.png"], 64)
  assert crop.shape == (64, 64, 3)
  assert "2 faces found" in caplog.text and "largest" in caplog.text


def test_load_speech_any_rate_and_stereo(files):
  audio, mfcc = sampling.load_speech(files["speech.wav"])
  assert mfcc.shape == (round(0.7 * 25), 28, 12)
  assert audio.shape == (len(mfcc) * 640,) and audio.dtype == np.float32
  assert np.abs(audio).max() > 0.01
  silent_audio, silent_mfcc = sampling.load_speech(files["silence.wav"])  # Silence is valid.
  assert silent_mfcc.shape == (13, 28, 12) and np.isfinite(silent_mfcc).all()
  assert not silent_audio.any()


@pytest.mark.parametrize("name, pattern", [
    ("empty.wav", "empty"), ("garbage.mp3", "cannot decode"), ("blip.wav", "too short"),
    ("missing.wav", "no such file")])
def test_bad_audio_is_a_clear_error(files, name, pattern):
  path = files.get(name, os.path.join(os.path.dirname(files["face.png"]), name))
  with pytest.raises(sampling.InputError, match=pattern):
    sampling.load_speech(path)


# -------------------------------------------------------------------------------------------------
# Writing outputs.
# -------------------------------------------------------------------------------------------------


def test_face_and_audio_give_k_videos_with_sound(tiny, files, tmp_path):
  config, model, variables = tiny
  sampler = sampling.FileSampler(config, model, variables, num_samples=3)
  out = str(tmp_path / "out" / "result")
  paths = sampler.sample(sampling.FileRequest(files["face.png"], files["speech.wav"], out))
  assert sorted(os.path.basename(p) for p in paths) == sorted(sampling.output_names(3))
  for path in (p for p in paths if p.endswith(".mp4")):
    info = media.probe(path)
    assert info.has_audio and abs(info.duration - 0.7) < 0.1
  grid_frames, _ = media.read_video(os.path.join(out, "grid.mp4"))
  assert grid_frames.shape[1:3] == (128, 128)  # 3 samples in a 2 x 2 grid of 64 px cells.
  assert iio.imread(os.path.join(out, "contact_sheet.png")).shape[0] == 3 * 64 + 2 * 2
  assert not _leftovers(str(tmp_path / "out"))
  umask = os.umask(0)
  os.umask(umask)
  # Not left private (0700/0600) like temporary files: the usual permissions of new files.
  assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask
  assert os.stat(paths[0]).st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("face_name, audio_name, pattern", [
    ("no_face.png", "speech.wav", "no face detected"),
    ("not_an_image.jpg", "speech.wav", "cannot read it as an image"),
    ("face.png", "empty.wav", "empty"),
    ("face.png", "garbage.mp3", "cannot decode audio")])
def test_bad_input_raises_and_writes_nothing(tiny, files, tmp_path, face_name, audio_name,
                                              pattern):
  config, model, variables = tiny
  sampler = sampling.FileSampler(config, model, variables, num_samples=2)
  out = tmp_path / "out"
  with pytest.raises(sampling.InputError, match=pattern):
    sampler.sample(sampling.FileRequest(files[face_name], files[audio_name], str(out)))
  assert not out.exists() and not _leftovers(str(tmp_path))
  assert sampler.generator.num_traces == 0  # Rejected before generating.


def test_unwritable_output_is_rejected_before_generating(tiny, files, tmp_path):
  config, model, variables = tiny
  sampler = sampling.FileSampler(config, model, variables, num_samples=2)
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  for out, pattern in ((blocker, "not a folder"), (blocker / "sub", "cannot write there")):
    with pytest.raises(sampling.InputError, match=pattern):
      sampler.sample(sampling.FileRequest(files["face.png"], files["speech.wav"], str(out)))
  assert sampler.generator.num_traces == 0
  assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_encoding_failure_leaves_no_partial_outputs(tiny, files, tmp_path, monkeypatch):
  config, model, variables = tiny
  sampler = sampling.FileSampler(config, model, variables, num_samples=2)

  def failing_png(path, image):
    raise media.MediaError(path, "disk full")

  monkeypatch.setattr(media, "write_png", failing_png)  # The last file of the set fails.
  out = tmp_path / "out"
  with pytest.raises(media.MediaError, match="disk full"):
    sampler.sample(sampling.FileRequest(files["face.png"], files["speech.wav"], str(out)))
  assert not out.exists() and os.listdir(tmp_path) == []


# -------------------------------------------------------------------------------------------------
# Batch mode and the command line.
# -------------------------------------------------------------------------------------------------


def test_csv_batch_reuses_the_compiled_function(tiny, files, tmp_path):
  config, model, variables = tiny
  table = tmp_path / "jobs.csv"
  inputs = os.path.dirname(files["face.png"])
  table.write_text(
      "face,audio,out\n"
      f"{files['face.png']},{files['speech.wav']},a\n"
      f"{files['no_face.png']},{files['speech.wav']},b\n"
      f"# a comment\n"
      f"{os.path.relpath(files['two_faces.png'], tmp_path)},{files['silence.wav']},c\n")
  requests = sampling.read_csv(str(table))
  assert [r.out for r in requests] == [str(tmp_path / n) for n in "abc"]
  assert os.path.dirname(requests[2].face) == inputs
  report = sampling.sample_files(config, model, variables, requests, num_samples=2)
  assert sorted(report.written) == [str(tmp_path / "a"), str(tmp_path / "c")]
  assert list(report.failed) == [str(tmp_path / "b")]
  assert "no face" in report.failed[str(tmp_path / "b")]
  assert report.compilations == 1  # 0.7 s and 0.5 s of audio: same chunk shape.
  assert not (tmp_path / "b").exists() and not _leftovers(str(tmp_path))


def test_bad_csv_rows_are_reported_with_their_line(tmp_path):
  table = tmp_path / "jobs.csv"
  table.write_text("face.png,speech.wav\n")
  with pytest.raises(sampling.InputError, match="line 1"):
    sampling.read_csv(str(table))


@pytest.mark.parametrize("request_kwargs, pattern", [
    (dict(face="f.png"), "go together"), (dict(audio="a.wav"), "go together"),
    (dict(csv="x.csv", face="f.png", audio="a.wav"), "drop --face"),
    (dict(out="dir"), "--out needs"), (dict(face="f.png", audio="a.wav", num_samples=0), ">= 1")])
def test_inconsistent_flags_are_rejected(request_kwargs, pattern):
  with pytest.raises(sampling.InputError, match=pattern):
    sampling.SampleRequest(**request_kwargs).file_requests("work")


def test_sample_mode_with_files_restores_and_writes(tiny, workdir, files, tmp_path):
  config = _tiny_config()
  request = sampling.SampleRequest(face=files["face.png"], audio=files["speech.wav"],
                                   out=str(tmp_path / "clip"), num_samples=2)
  experiment.run(config, workdir, "sample", request)
  assert sorted(os.listdir(tmp_path / "clip")) == sorted(sampling.output_names(2))
  table = tmp_path / "jobs.csv"
  table.write_text(f"{files['face.png']},{files['speech.wav']},x\n"
                   f"{files['face.png']},{files['empty.wav']},y\n")
  with pytest.raises(sampling.InputError, match="1 of 2 inputs failed"):
    experiment.run(config, workdir, "sample", sampling.SampleRequest(csv=str(table)))
  assert (tmp_path / "x" / "grid.mp4").exists() and not (tmp_path / "y").exists()


def test_checkpoint_that_does_not_match_the_config(workdir, tmp_path):
  config = _tiny_config()
  config.model.encoder_widths = (8, 8, 16, 32)
  model = talkface.build_model(config.model)
  mesh = parallel.make_mesh(config)
  with pytest.raises(ValueError, match="does not match the config"):
    experiment.restore_latest(config, workdir, model, mesh)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    experiment.restore_latest(config, str(tmp_path), model, mesh)
