"""Inference and sampling: the Python API, chunked generation, user files in, videos out, errors
that leave nothing behind."""

import copy
import functools
import json
import logging
import os
import subprocess
import sys

import imageio.v3 as iio
import imageio_ffmpeg
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io.wavfile
import skimage.data

from configs import grid
from data_prep import audio as audio_prep
import talkface_jax
from talkface_jax import checkpointing, errors, experiment, inference, input_pipeline, media
from talkface_jax import parallel, sampling, train
from talkface_jax import workdir as workdir_lib
from talkface_jax.models import talkface
from tests import fixtures_raw, shard_fixtures


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
def generator(tiny):
  config, _, variables = tiny
  return inference.Generator(config, variables)


def _sample(generator, face, audio, out, num_samples):
  """One input through ``sampling.sample_files``; returns the written paths."""
  report = sampling.sample_files(generator, [sampling.FileRequest(face, audio, out)],
                                 num_samples)
  return report.written[out]


@pytest.fixture(scope="module")
def workdir(tiny_state, tmp_path_factory):
  """A workdir holding a checkpoint of the tiny model and its config."""
  config, _, state = tiny_state
  path = str(tmp_path_factory.mktemp("work"))
  workdir_lib.write_config(path, config)
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


def _aligner():
  from data_prep import face  # pylint: disable=g-import-not-at-top
  return face.FaceAligner(face.AlignConfig(resolution=64))


def _leftovers(folder):
  """Hidden staging folders or temporary files left in ``folder``."""
  return [n for n in os.listdir(folder) if n.startswith(".")]


# -------------------------------------------------------------------------------------------------
# Chunked generation.
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_learned():
  """(config, model, variables) of a freshly initialised tiny model with the learned prior."""
  config = _tiny_config()
  config.model.prior = "learned"
  model = talkface.build_model(config.model)
  return config, model, jax.jit(functools.partial(talkface.init_variables, model))(
      jax.random.key(0), jax.random.key(1))


@pytest.mark.parametrize("prior, deterministic, chunk_sizes", [
    ("audio", False, (4, 40)), ("audio", True, (4,)), ("learned", False, (4,)),
    ("learned", True, (4,))])
def test_chunked_generation_equals_one_call(tiny, tiny_learned, prior, deterministic,
                                            chunk_sizes):
  """The Generator's videos equal one ``talkface.generate`` call on the B * K rows, each with
  its own copy of the input's audio: encoding the audio (and running the audio prior) once
  per input for its K rows changes nothing."""
  config, model, variables = tiny if prior == "audio" else tiny_learned
  assert model.prior == prior
  rng = np.random.default_rng(0)
  frame0 = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  mfcc = rng.normal(size=(2, 19, 28, 12)).astype(np.float32)
  key = jax.random.key(3)
  # Sample (b, k) is an independent row with key fold_in(fold_in(key, b), k).
  row_keys = jax.vmap(lambda b: jax.vmap(lambda k: jax.random.fold_in(
      jax.random.fold_in(key, b), k))(np.arange(3)))(np.arange(2)).reshape(-1)
  whole = np.asarray(talkface.generate(
      model, variables, np.repeat(frame0, 3, axis=0).astype(np.float32) / 255.0,
      np.repeat(mfcc, 3, axis=0), row_keys, num_samples=1,
      deterministic=deterministic)).reshape(2, 3, 19, 64, 64, 3)
  differ = np.abs(whole[:, 0, 1:] - whole[:, 1, 1:]).max()
  assert (differ > 0) != deterministic, differ  # The K samples differ unless deterministic.
  expected = np.clip(np.round(whole * 255.0), 0, 255).astype(np.uint8)
  expected[:, :, 0] = frame0[:, None]
  for chunk_frames in chunk_sizes:  # 5 chunks, the last one padded; one padded chunk.
    config = copy.deepcopy(config)
    config.sample.chunk_frames = chunk_frames
    generator = inference.Generator(config, variables)
    chunked = generator.generate_aligned(frame0, mfcc, 3, key, deterministic)
    assert chunked.dtype == np.uint8 and chunked.shape == expected.shape
    # Rounding to uint8 may flip a value sitting at a half step: at most one level.
    assert np.abs(chunked.astype(int) - expected).max() <= 1, f"chunk {chunk_frames}"
    generator.generate_aligned(frame0[::-1], mfcc[::-1], 3, key, deterministic)
    assert generator.num_traces == 1  # One per (inputs, samples, frame size).


# -------------------------------------------------------------------------------------------------
# Latent bank (model.latent_source = 'posterior_bank').
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank_setup(tiny_learned, tmp_path_factory):
  """(config, model, variables, training clips) of the tiny learned-prior model with a latent
  bank of 4 of the 5 training clips of a shard dataset (12 frames each)."""
  config, model, variables = tiny_learned
  data_dir = str(tmp_path_factory.mktemp("bank_data"))
  splits = shard_fixtures.write_tiny_dataset(data_dir, num_train=5, num_test=1, num_frames=12)
  config = copy.deepcopy(config)
  config.data.dir = data_dir
  config.model.latent_source = "posterior_bank"
  config.model.bank_clips = 4
  return config, model, variables, splits["train"]


def test_latent_bank_is_the_posterior_means_of_training_clips(bank_setup, tmp_path):
  """The bank is the frame posterior's mean trajectories of the first ``bank_clips`` training
  clips, stored in the workdir and read back from there without the shards."""
  config, model, variables, train_clips = bank_setup
  bank = inference.latent_bank(config, model, variables, step=7, workdir=str(tmp_path))
  assert bank.shape == (4, 11, model.z_dim) and bank.dtype == np.float32
  loaded = input_pipeline.load_clips(config, "train", 4)
  frames = np.stack([c["frames"] for c in loaded]) / np.float32(255.0)
  expected = np.asarray(talkface.posterior_means(model, variables, frames))
  np.testing.assert_allclose(bank, expected, rtol=1e-5, atol=1e-6)
  assert np.abs(bank[0] - bank[1]).max() > 0  # Different clips, different trajectories.
  assert os.path.exists(tmp_path / "latent_bank_7.npz")
  elsewhere = copy.deepcopy(config)
  elsewhere.data.dir = str(tmp_path / "no_shards")
  np.testing.assert_array_equal(
      inference.latent_bank(elsewhere, model, variables, step=7, workdir=str(tmp_path)), bank)
  with pytest.raises(errors.UserError, match="posterior_bank needs the training clips"):
    inference.latent_bank(elsewhere, model, variables, step=8, workdir=str(tmp_path))
  elsewhere.model.bank_clips = 3  # Another bank than the stored one: built again.
  with pytest.raises(errors.UserError, match="posterior_bank needs the training clips"):
    inference.latent_bank(elsewhere, model, variables, step=7, workdir=str(tmp_path))
  elsewhere.model.latent_source = "posterior"
  with pytest.raises(errors.UserError, match="model.latent_source='posterior'"):
    inference.latent_bank(elsewhere, model, variables)
  elsewhere.model.latent_source = "prior"
  assert inference.latent_bank(elsewhere, model, variables) is None


def test_bank_latents_replay_one_trajectory_per_segment():
  """Frame t of sample k replays position (t - 1) mod L of the trajectory drawn for segment
  (t - 1) // L: whole trajectories in order, another one (drawn) every L frames."""
  bank = jnp.arange(5 * 3 * 2, dtype=jnp.float32).reshape(5, 3, 2)
  keys = talkface.input_keys(jax.random.key(0), 2)
  got = np.stack([np.asarray(talkface.bank_latents(bank, keys, t, 4)) for t in range(1, 31)])
  rows = np.stack([np.asarray(talkface.bank_rows(keys, s, 4, 5)) for s in range(10)])  # [10,B,K]
  for t in range(1, 31):
    np.testing.assert_array_equal(got[t - 1], np.asarray(bank)[rows[(t - 1) // 3], (t - 1) % 3])
  assert len(np.unique(rows)) > 1 and (rows[:, 0] != rows[:, 1]).any()  # Draws differ.
  # The K samples of an input replay K different trajectories (K <= N), and rows that are
  # samples of one input (``sample_index``) replay what those samples do.
  assert all(len(set(r)) == 4 for r in rows.reshape(-1, 4))
  repeated = jnp.repeat(keys, 4)
  for s in range(3):
    single = talkface.bank_rows(repeated, s, 1, 5, jnp.tile(jnp.arange(4), 2))
    np.testing.assert_array_equal(np.asarray(single).reshape(2, 4), rows[s])
  # Beyond N samples the draw repeats the permutation: 7 samples of a bank of 5.
  many = np.asarray(talkface.bank_rows(keys, 0, 7, 5))
  assert sorted(many[0, :5]) == list(range(5)) and (many[:, 5:] == many[:, :2]).all()


def test_bank_draws_are_uniform():
  """Each sample's trajectory is uniform over the bank: 4000 inputs' sample 2 of a bank of 8."""
  keys = talkface.input_keys(jax.random.key(1), 4000)
  counts = np.bincount(np.asarray(talkface.bank_rows(keys, 0, 3, 8))[:, 2], minlength=8)
  assert (np.abs(counts / 4000 - 1 / 8) < 0.02).all(), counts


def test_bank_generation_chunked_equals_one_call(bank_setup):
  """Generation from the bank: the Generator's chunked videos equal one ``generate`` call with
  the same bank; the K samples differ (different trajectories), and a bank of one trajectory
  repeated makes them equal (z is all that differs between samples); the deterministic
  baseline ignores the bank."""
  config, model, variables, _ = bank_setup
  config = copy.deepcopy(config)
  config.sample.chunk_frames = 4  # 19 frames: 5 chunks, over the bank's 11-frame trajectories.
  generator = inference.Generator(config, variables)
  assert generator.bank.shape == (4, 11, model.z_dim)
  # An untrained posterior's means are ~1e-5, too close to move its frames: a bank of unit
  # scale in their place.
  rng = np.random.default_rng(0)
  generator.bank = jnp.asarray(rng.normal(size=generator.bank.shape).astype(np.float32))
  frame0 = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  mfcc = rng.normal(size=(2, 19, 28, 12)).astype(np.float32)
  key = jax.random.key(3)

  def one_call(bank, deterministic=False):
    whole = np.asarray(talkface.generate(
        model, variables, frame0.astype(np.float32) / 255.0, mfcc, key, num_samples=3,
        deterministic=deterministic, bank=bank))
    return whole  # Floats: an untrained model's frames differ by less than a uint8 level.

  whole = one_call(generator.bank)
  assert np.abs(whole[:, 0, 1:] - whole[:, 1, 1:]).max() > 0
  expected = np.clip(np.round(whole * 255.0), 0, 255).astype(int)
  chunked = generator.generate_aligned(frame0, mfcc, 3, key)
  assert np.abs(chunked[:, :, 1:].astype(int) - expected[:, :, 1:]).max() <= 1  # uint8 rounding.
  same = one_call(jnp.repeat(generator.bank[:1], 4, axis=0))
  np.testing.assert_array_equal(same[:, 0], same[:, 1])
  np.testing.assert_array_equal(one_call(generator.bank, True), one_call(None, True))


def test_reconstruction_is_the_teacher_forced_posterior_mean_pass(tiny, generator):
  """``reconstruct_clips`` = the training pass with z = the posterior's mean, on each clip
  unpadded (its padding to 25 frames changes nothing), frame 0 the identity frame."""
  _, model, variables = tiny
  rng = np.random.default_rng(2)
  clips = [{"frames": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
            "mfcc": rng.normal(size=(n, 28, 12)).astype(np.float32)} for n in (7, 12)]
  videos = generator.reconstruct_clips(clips)
  for clip, video in zip(clips, videos):
    out = model.apply(variables, clip["frames"][None] / np.float32(255.0), clip["mfcc"][None],
                      train=False, posterior_mean=True)
    expected = np.clip(np.round(np.asarray(out.frames[0]) * 255.0), 0, 255)
    assert video.shape == clip["frames"].shape and video.dtype == np.uint8
    np.testing.assert_array_equal(video[0], clip["frames"][0])
    assert np.abs(video[1:].astype(int) - expected).max() <= 1  # uint8 rounding.
  # The posterior sees the true frames: other frames, another reconstruction.
  other = generator.reconstruct_clips([{**clips[0], "frames": 255 - clips[0]["frames"]}])[0]
  assert np.abs(other[1:].astype(int) - videos[0][1:].astype(int)).max() > 0


def test_a_sample_does_not_depend_on_its_batch(generator):
  rng = np.random.default_rng(1)
  frame0 = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  mfcc = rng.normal(size=(3, 9, 28, 12)).astype(np.float32)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(np.arange(3))
  together = generator.generate_aligned(frame0, mfcc, 2, keys)
  alone = generator.generate_aligned(frame0[1:2], mfcc[1:2], 2, keys[1:2])
  np.testing.assert_array_equal(together[1], alone[0])


def test_one_minute_of_audio_runs_in_fixed_chunks(tiny, tmp_path, monkeypatch):
  _, _, variables = tiny
  wav, path = str(tmp_path / "minute.wav"), str(tmp_path / "minute.flac")
  scipy.io.wavfile.write(wav, 22050, fixtures_raw.tone(60.0, rate=22050))
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", wav, path], check=True)
  speech = inference.prepare_speech(path)
  assert speech.mfcc.shape == (1500, 28, 12) and speech.samples.shape == (1500 * 640,)
  config = _tiny_config()
  config.sample.chunk_frames = 100
  generator = inference.Generator(config, variables)
  shapes = []
  chunk_fn = generator._chunk  # pylint: disable=protected-access

  def recording_chunk(variables, state, windows, *args, deterministic):
    shapes.append(windows.shape)
    return chunk_fn(variables, state, windows, *args, deterministic=deterministic)

  monkeypatch.setattr(generator, "_chunk", recording_chunk)
  face = np.full((1, 64, 64, 3), 128, np.uint8)
  videos = generator.generate_aligned(face, speech.mfcc[None], 1, jax.random.key(0))
  assert videos.shape == (1, 1, 1500, 64, 64, 3)
  # 1499 generated frames in 15 calls of the same static shape, compiled once: what runs on the
  # device at any time is one chunk, whatever the audio length.
  assert shapes == [(1, 100, 28, 12)] * 15
  assert generator.num_traces == 1


# -------------------------------------------------------------------------------------------------
# Inputs.
# -------------------------------------------------------------------------------------------------


def test_load_face_aligns_like_the_training_data(files):
  crop = inference.align_face(files["face.png"], _aligner())
  assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
  from data_prep import face, template  # pylint: disable=g-import-not-at-top
  # The refitted landmarks of the crop sit on the template, as for aligned training clips.
  points = face.landmarks_on_aligned(crop[None])[0]
  error = np.abs(points[template.STABLE_POINTS] - template.mean_face(64)[template.STABLE_POINTS])
  assert error.mean() < 2.0


def test_two_faces_use_the_largest_and_warn(files, caplog):
  with caplog.at_level(logging.WARNING):
    crop = inference.align_face(files["two_faces.png"], _aligner())
  assert crop.shape == (64, 64, 3)
  assert "2 faces found" in caplog.text and "largest" in caplog.text


def test_load_speech_any_rate_and_stereo(files):
  speech = inference.prepare_speech(files["speech.wav"])
  audio, mfcc = speech.samples, speech.mfcc
  assert mfcc.shape == (round(0.7 * 25), 28, 12)
  assert audio.shape == (len(mfcc) * 640,) and audio.dtype == np.float32
  assert np.abs(audio).max() > 0.01
  silent = inference.prepare_speech(files["silence.wav"])  # Silence is valid.
  silent_audio, silent_mfcc = silent.samples, silent.mfcc
  assert silent_mfcc.shape == (13, 28, 12) and np.isfinite(silent_mfcc).all()
  assert not silent_audio.any()
  # A model trained with data.audio_norm='clip' hears the recording's own normalised windows.
  normalised = inference.prepare_speech(files["speech.wav"], "clip")
  np.testing.assert_array_equal(normalised.samples, audio)
  np.testing.assert_array_equal(normalised.mfcc, audio_prep.normalize_windows(mfcc, "clip"))
  assert not np.allclose(normalised.mfcc, mfcc)
  # With model.audio_energy, the recording's loudness before the cepstra.
  loud = inference.prepare_speech(files["speech.wav"], "clip", energy=True)
  np.testing.assert_array_equal(loud.mfcc[..., 1:], normalised.mfcc)
  np.testing.assert_array_equal(loud.mfcc, audio_prep.normalize_windows(
      audio_prep.mfcc_windows(audio, len(mfcc), energy=True), "clip"))


@pytest.mark.parametrize("name, pattern", [
    ("empty.wav", "empty"), ("garbage.mp3", "cannot decode"), ("blip.wav", "too short"),
    ("missing.wav", "no such file")])
def test_bad_audio_is_a_clear_error(files, name, pattern):
  path = files.get(name, os.path.join(os.path.dirname(files["face.png"]), name))
  with pytest.raises(errors.UserError, match=pattern):
    inference.prepare_speech(path)


# -------------------------------------------------------------------------------------------------
# Writing outputs.
# -------------------------------------------------------------------------------------------------


def test_face_and_audio_give_k_videos_with_sound(generator, files, tmp_path):
  out = str(tmp_path / "out" / "result")
  paths = _sample(generator, files["face.png"], files["speech.wav"], out, 3)
  assert sorted(os.path.basename(p) for p in paths) == sorted(inference.output_names(3))
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
    ("no_face.png", "speech.wav", "no face found"),
    ("not_an_image.jpg", "speech.wav", "cannot read it as an image"),
    ("face.png", "empty.wav", "empty"),
    ("face.png", "garbage.mp3", "cannot decode audio")])
def test_bad_input_raises_and_writes_nothing(tiny, files, tmp_path, face_name, audio_name,
                                              pattern):
  config, _, variables = tiny
  generator = inference.Generator(config, variables)
  out = tmp_path / "out"
  with pytest.raises(errors.UserError, match=pattern):
    _sample(generator, files[face_name], files[audio_name], str(out), 2)
  assert not out.exists() and not _leftovers(str(tmp_path))
  assert generator.num_traces == 0  # Rejected before generating.


def test_unwritable_output_is_rejected_before_generating(tiny, files, tmp_path):
  config, _, variables = tiny
  generator = inference.Generator(config, variables)
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  others = tmp_path / "my_documents"
  others.mkdir()
  (others / "thesis.txt").write_text("precious")
  for out, pattern in ((blocker, "not a folder"), (blocker / "sub", "cannot write there"),
                       (others, "a folder of other files")):
    with pytest.raises(errors.UserError, match=pattern):
      _sample(generator, files["face.png"], files["speech.wav"], str(out), 2)
  assert generator.num_traces == 0
  assert sorted(os.listdir(tmp_path)) == ["a_file", "my_documents"]
  assert os.listdir(others) == ["thesis.txt"]


def test_rerun_into_an_output_folder_replaces_it_whole(generator, files, tmp_path):
  out = str(tmp_path / "out")
  _sample(generator, files["face.png"], files["speech.wav"], out, 3)
  _sample(generator, files["two_faces.png"], files["silence.wav"], out, 2)
  # No sample_02.mp4 of the first person is left beside the second person's two samples.
  assert sorted(os.listdir(out)) == sorted(inference.output_names(2))
  with open(os.path.join(out, inference.OUTPUT_MANIFEST)) as f:
    manifest = json.load(f)
  assert manifest["face"] == files["two_faces.png"] and manifest["num_samples"] == 2
  assert not _leftovers(str(tmp_path))


def test_encoding_failure_leaves_no_partial_outputs(generator, files, tmp_path, monkeypatch):

  def failing_png(path, image):
    raise media.MediaError(path, "disk full")

  monkeypatch.setattr(media, "write_png", failing_png)  # The last file of the set fails.
  out = tmp_path / "out"
  with pytest.raises(errors.UserError, match="disk full"):
    _sample(generator, files["face.png"], files["speech.wav"], str(out), 2)
  assert not out.exists() and os.listdir(tmp_path) == []


# -------------------------------------------------------------------------------------------------
# Batch mode and the command line.
# -------------------------------------------------------------------------------------------------


def test_csv_batch_reuses_the_compiled_function(tiny, files, tmp_path):
  config, _, variables = tiny
  generator = inference.Generator(config, variables)
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
  report = sampling.sample_files(generator, requests, num_samples=2)
  assert sorted(report.written) == [str(tmp_path / "a"), str(tmp_path / "c")]
  assert list(report.failed) == [str(tmp_path / "b")]
  assert "no face" in report.failed[str(tmp_path / "b")]
  assert report.compilations == 1  # 0.7 s and 0.5 s of audio: same chunk shape.
  assert not (tmp_path / "b").exists() and not _leftovers(str(tmp_path))


def test_bad_csv_rows_are_reported_with_their_line(tmp_path):
  table = tmp_path / "jobs.csv"
  table.write_text("face.png,speech.wav\n")
  with pytest.raises(errors.UserError, match="line 1"):
    sampling.read_csv(str(table))


@pytest.mark.parametrize("request_kwargs, pattern", [
    (dict(face="f.png"), "go together"), (dict(audio="a.wav"), "go together"),
    (dict(csv="x.csv", face="f.png", audio="a.wav"), "drop --face"),
    (dict(out="dir"), "--out needs"), (dict(face="f.png", audio="a.wav", num_samples=0), ">= 1"),
    (dict(face="f.png", audio="a.wav", out="f.png"), "also an input")])
def test_inconsistent_flags_are_rejected(request_kwargs, pattern):
  with pytest.raises(errors.UserError, match=pattern):
    sampling.SampleRequest(**request_kwargs).file_requests("work")


def test_sample_mode_with_files_restores_and_writes(tiny, workdir, files, tmp_path):
  config = _tiny_config()
  request = sampling.SampleRequest(face=files["face.png"], audio=files["speech.wav"],
                                   out=str(tmp_path / "clip"), num_samples=2)
  experiment.run(config, workdir, "sample", request)
  assert sorted(os.listdir(tmp_path / "clip")) == sorted(inference.output_names(2))
  table = tmp_path / "jobs.csv"
  table.write_text(f"{files['face.png']},{files['speech.wav']},x\n"
                   f"{files['face.png']},{files['empty.wav']},y\n")
  with pytest.raises(errors.UserError, match="1 of 2 inputs failed"):
    experiment.run(config, workdir, "sample", sampling.SampleRequest(csv=str(table)))
  assert (tmp_path / "x" / "grid.mp4").exists() and not (tmp_path / "y").exists()


def test_sample_mode_needs_only_the_workdir(workdir, files, tmp_path):
  request = sampling.SampleRequest(face=files["face.png"], audio=files["speech.wav"],
                                   out=str(tmp_path / "clip"), num_samples=1)
  experiment.run(None, workdir, "sample", request)  # The workdir's own config.
  assert sorted(os.listdir(tmp_path / "clip")) == sorted(inference.output_names(1))


def test_python_api_paths_and_arrays_give_the_same_videos(workdir, files):
  generator = talkface_jax.load(workdir)
  assert generator.step == 0 and generator.config.model.resolution == 64
  videos = generator.generate(files["face.png"], files["speech.wav"], num_samples=2, seed=7)
  assert videos.dtype == np.uint8 and videos.shape == (2, round(0.7 * 25), 64, 64, 3)
  rate, samples = scipy.io.wavfile.read(files["speech.wav"])
  again = generator.generate(iio.imread(files["face.png"]), (samples, rate), num_samples=2,
                             seed=7)
  # The array path resamples with librosa, the file path with ffmpeg: the MFCC windows differ
  # by resampling noise, so the generated frames agree closely but not bit for bit.
  assert again.shape == videos.shape
  assert np.abs(again.astype(int) - videos.astype(int)).mean() < 2.0
  np.testing.assert_array_equal(
      videos, generator.generate(files["face.png"], files["speech.wav"], 2, seed=7))


def test_checkpoint_that_does_not_match_the_config(workdir, tmp_path):
  config = _tiny_config()
  config.model.encoder_widths = (8, 8, 16, 32)
  with pytest.raises(errors.UserError, match=r"model.encoder_widths \(workdir \[8, 8, 16, 16\], "
                     r"given \[8, 8, 16, 32\]\)"):
    talkface_jax.load(workdir, config=config)
  os.remove(workdir_lib.config_path(workdir))
  try:  # A workdir without its config (an older version's): the checkpoint itself refuses.
    with pytest.raises(errors.UserError, match="holds another model"):
      talkface_jax.load(workdir, config=config)
    with pytest.raises(errors.UserError, match="pass --config"):
      talkface_jax.load(workdir)
  finally:
    workdir_lib.write_config(workdir, _tiny_config())
  with pytest.raises(errors.UserError, match="no checkpoint"):
    talkface_jax.load(str(tmp_path), config=_tiny_config())


_STREAM_PEAK_MEMORY = """
import resource, sys
import numpy as np, scipy.io.wavfile
sys.path.insert(0, {root!r})
from talkface_jax import inference
from tests import test_sampling
config, _, variables = test_sampling._tiny_state_for_subprocess()
generator = inference.Generator(config, variables)
scipy.io.wavfile.write({wav!r}, 16000, (np.random.default_rng(0).normal(
    size=int({seconds} * 16000)) * 1000).astype(np.int16))
generator.generate_to_files({face!r}, {wav!r}, {out!r}, num_samples=2)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _tiny_state_for_subprocess():
  config = _tiny_config()
  config.sample.chunk_frames = 75
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  state = train.create_train_state(config, model, train.make_optimizer(config), mesh)
  return config, model, train.variables_of(state)


@pytest.mark.slow
def test_long_audio_is_streamed_in_bounded_memory(files, tmp_path):
  peaks = {}
  for seconds in (60, 600):
    out = tmp_path / f"out_{seconds}"
    script = _STREAM_PEAK_MEMORY.format(
        root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        wav=str(tmp_path / f"{seconds}.wav"), seconds=seconds, face=files["face.png"],
        out=str(out))
    # Without the session's compilation cache (tests/conftest.py): the second run would load
    # the executables that the first one compiled, and the memory its compilation took off
    # its peak could hide a growth.
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=1200, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    peaks[seconds] = int(run.stdout.split("PEAK")[-1])
    assert media.probe(str(out / "sample_01.mp4")).duration == pytest.approx(seconds, abs=0.1)
  # ru_maxrss is in KiB. Ten times the audio: holding the K = 2 videos would add
  # 2 x 13500 x 64 x 64 x 3 bytes (332 MB) and their grid as much again; streamed, only the
  # audio, its MFCC windows and the decoder's buffers grow (measured: 60 s 1.6 GB peak).
  held = 2 * (600 - 60) * 25 * 64 * 64 * 3 / 1024
  assert peaks[600] - peaks[60] < 0.5 * held, peaks
  assert peaks[600] < 1.3 * peaks[60], peaks


def test_paths_with_spaces_and_non_ascii_characters(generator, files, tmp_path):
  folder = tmp_path / "mes fichiers é ü 音"
  folder.mkdir()
  face, audio = folder / "photo de moi.png", folder / "voix ç.wav"
  face.write_bytes(open(files["face.png"], "rb").read())
  audio.write_bytes(open(files["speech.wav"], "rb").read())
  out = str(folder / "sortie à faire")
  paths = _sample(generator, str(face), str(audio), out, 2)
  assert sorted(os.path.basename(p) for p in paths) == sorted(inference.output_names(2))
  assert media.probe(os.path.join(out, "grid.mp4")).has_audio


def test_photos_are_aligned_like_the_shards(tiny):
  config, _, variables = tiny
  assert inference.align_config(config).align_on == "nose"  # The build's default.
  config = _tiny_config()
  config.data.align_on = "nose_eyes"  # Shards built with --align_on=nose_eyes.
  assert inference.align_config(config).align_on == "nose_eyes"
  generator = inference.Generator(config, variables)
  generator.prepare_face(skimage.data.astronaut())
  assert generator._aligner.config.align_on == "nose_eyes"  # pylint: disable=protected-access


def test_sampling_skips_a_damaged_latest_checkpoint(tiny_state, tmp_path, caplog):
  config, _, state = tiny_state
  workdir = str(tmp_path / "work")
  workdir_lib.write_config(workdir, config)
  ckpt = checkpointing.Checkpointer(workdir, config)
  for step in (1, 2):
    ckpt.save(step, state, input_pipeline.Position(), force=True)
    ckpt.wait()
  ckpt.close()
  data = [os.path.join(d, f) for d, _, names in os.walk(os.path.join(workdir, "checkpoints", "2"))
          for f in names if "/d/" in os.path.join(d, f)]
  assert data
  for path in data:  # Every data file: which one holds what varies from run to run.
    os.truncate(path, os.path.getsize(path) // 2)
  with caplog.at_level(logging.WARNING):
    generator = talkface_jax.load(workdir)
  assert generator.step == 1
  assert "checkpoints/2 is damaged" in caplog.text
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]  # Only read.
  with pytest.raises(errors.UserError, match="no usable checkpoint"):
    talkface_jax.load(workdir, step=2)
