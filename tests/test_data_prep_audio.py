"""Tests of data_prep.audio: decoding, the python_speech_features MFCC, one window per frame."""

import os

import numpy as np
import pytest

from data_prep import audio
from data_prep import schema
from tests import fixtures_raw


# --- A direct transcription of python_speech_features 0.6 (sigproc + base), loops and all. ---


def _psf_framesig(sig, frame_len, frame_step):
  slen = len(sig)
  frame_len, frame_step = int(round(frame_len)), int(round(frame_step))
  if slen <= frame_len:
    numframes = 1
  else:
    numframes = 1 + int(np.ceil((1.0 * slen - frame_len) / frame_step))
  padlen = int((numframes - 1) * frame_step + frame_len)
  padsignal = np.concatenate((sig, np.zeros(padlen - slen)))
  indices = (np.tile(np.arange(0, frame_len), (numframes, 1)) +
             np.tile(np.arange(0, numframes * frame_step, frame_step), (frame_len, 1)).T)
  return padsignal[indices.astype(np.int32)]


def _psf_filterbanks(nfilt, nfft, samplerate):
  hz2mel = lambda hz: 2595 * np.log10(1 + hz / 700.)
  mel2hz = lambda mel: 700 * (10 ** (mel / 2595.0) - 1)
  melpoints = np.linspace(hz2mel(0), hz2mel(samplerate / 2), nfilt + 2)
  bin_ = np.floor((nfft + 1) * mel2hz(melpoints) / samplerate)
  fbank = np.zeros([nfilt, nfft // 2 + 1])
  for j in range(0, nfilt):
    for i in range(int(bin_[j]), int(bin_[j + 1])):
      fbank[j, i] = (i - bin_[j]) / (bin_[j + 1] - bin_[j])
    for i in range(int(bin_[j + 1]), int(bin_[j + 2])):
      fbank[j, i] = (bin_[j + 2] - i) / (bin_[j + 2] - bin_[j + 1])
  return fbank


def _psf_mfcc(signal, samplerate=16000):
  signal = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
  frames = _psf_framesig(signal, 0.025 * samplerate, 0.01 * samplerate)
  pspec = 1.0 / 512 * np.square(np.absolute(np.fft.rfft(frames, 512)))
  energy = np.sum(pspec, 1)
  energy = np.where(energy == 0, np.finfo(float).eps, energy)
  feat = np.dot(pspec, _psf_filterbanks(26, 512, samplerate).T)
  feat = np.where(feat == 0, np.finfo(float).eps, feat)
  feat = np.log(feat)
  # DCT-II, orthonormal, written out rather than taken from scipy.
  n = feat.shape[1]
  k = np.arange(n)[:, None]
  basis = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n)) * np.sqrt(2.0 / n)
  basis[0] /= np.sqrt(2.0)
  feat = (feat @ basis.T)[:, :13]
  lift = 1 + (22 / 2.) * np.sin(np.pi * np.arange(13) / 22)
  feat = feat * lift
  feat[:, 0] = np.log(energy)
  return feat


def test_mfcc_matches_python_speech_features_transcription():
  rng = np.random.default_rng(0)
  signal = fixtures_raw.tone(1.3, seed=1).astype(np.float64) / 32768
  signal[5000:5400] = 0.0  # a stretch of digital silence exercises the eps guards
  signal += 0.001 * rng.standard_normal(len(signal)) * (np.arange(len(signal)) > 9000)
  ours = audio.mfcc(signal)
  reference = _psf_mfcc(signal)
  assert ours.shape == reference.shape == (1 + int(np.ceil((len(signal) - 400) / 160)), 13)
  np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)


def test_mel_filterbank_matches_transcription():
  np.testing.assert_allclose(audio.mel_filterbank(16000), _psf_filterbanks(26, 512, 16000),
                             atol=1e-12)


@pytest.mark.parametrize("seconds,windows", [(3.0, 75), (1.16, 29)])
def test_window_count_of_release_clip_lengths(seconds, windows):
  waveform = fixtures_raw.tone(seconds)
  assert len(waveform) == windows * schema.SAMPLES_PER_FRAME
  out = audio.mfcc_windows(waveform)
  assert out.shape == (windows, 28, 12)
  assert out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("num_frames,num_samples", [(1, 100), (7, 7 * 640), (29, 18000),
                                                    (40, 40 * 640 + 1234), (75, 30000)])
def test_one_window_per_video_frame_after_fitting(num_frames, num_samples):
  waveform = fixtures_raw.tone(num_samples / 16000)[:num_samples]
  fitted, change = audio.fit_to_frames(waveform, num_frames)
  assert len(fitted) == num_frames * 640
  assert change == num_frames * 640 - num_samples
  assert audio.mfcc_windows(fitted, num_frames).shape == (num_frames, 28, 12)


def test_mfcc_windows_rejects_unfitted_audio():
  with pytest.raises(ValueError, match="fit the audio"):
    audio.mfcc_windows(np.zeros(75 * 640 + 700, np.int16), 75)


def test_fit_to_frames_pads_with_zeros_and_trims():
  waveform = np.arange(1, 1001, dtype=np.int16)
  padded, change = audio.fit_to_frames(waveform, 2)
  assert change == 280 and (padded[:1000] == waveform).all() and not padded[1000:].any()
  trimmed, change = audio.fit_to_frames(waveform, 1)
  assert change == -360 and (trimmed == waveform[:640]).all()


def test_window_is_centred_on_its_frame():
  # A burst filling video frame 40 exactly, in silence: inside window 40 the rows that see
  # it must sit in the middle of the 28 rows (rows 12..15 are frame 40's own 4 hops).
  waveform = np.zeros(75 * 640, np.int16)
  waveform[40 * 640:41 * 640] = (np.random.default_rng(0).standard_normal(640) * 8000).astype(
      np.int16)
  windows = audio.mfcc_windows(waveform, 75)
  silence_row = windows[0, 0]
  touched = np.flatnonzero(np.abs(windows[40] - silence_row).max(-1) > 1e-3)
  assert 11 <= touched.mean() <= 16
  assert touched.min() >= 9 and touched.max() <= 18
  # Neighbouring windows see the burst shifted by exactly 4 rows.
  touched_next = np.flatnonzero(np.abs(windows[41] - silence_row).max(-1) > 1e-3)
  np.testing.assert_array_equal(touched_next, touched - 4)


def test_load_audio_resamples_any_rate_to_16k_mono(tmp_path):
  rate = 50000
  t = np.arange(rate) / rate
  stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], -1)
  path = fixtures_raw.write_wav(str(tmp_path / "a.wav"), (stereo * 16000).astype(np.int16), rate)
  waveform = audio.load_audio(path)
  assert waveform.dtype == np.int16 and abs(len(waveform) - 16000) <= 16
  spectrum = np.abs(np.fft.rfft(waveform.astype(float)))
  peak_hz = np.argmax(spectrum) * 16000 / len(waveform)
  assert abs(peak_hz - 440) < 3


def test_load_audio_from_video_container_and_missing_stream(tmp_path):
  frames = fixtures_raw.noise_frames(10, (64, 48))
  with_audio = fixtures_raw.write_video(str(tmp_path / "v.mp4"), frames,
                                        audio=fixtures_raw.tone(0.4))
  waveform = audio.load_audio(with_audio)
  assert abs(len(waveform) - 6400) < 1600 and np.abs(waveform).max() > 1000
  silent_video = fixtures_raw.write_video(str(tmp_path / "n.mp4"), frames)
  with pytest.raises(audio.AudioError, match="no audio stream"):
    audio.load_audio(silent_video)
  garbage = tmp_path / "g.wav"
  garbage.write_bytes(os.urandom(3000))
  with pytest.raises(audio.AudioError):
    audio.load_audio(str(garbage))


def test_clip_normalisation_equals_normalising_the_rows_before_windowing():
  """Per-utterance CMVN of the windows (each MFCC row counted once) = windows of the CMVN'd
  rows, computed here independently from the row matrix."""
  rng = np.random.default_rng(0)
  samples = (0.3 * rng.standard_normal(12 * 640)).astype(np.float32)
  rows = audio.mfcc(np.pad(samples.astype(np.float64), audio.PAD_SAMPLES))[:, 1:]
  normalised_rows = (rows - rows.mean(axis=0)) / rows.std(axis=0)
  expected = np.stack([normalised_rows[4 * t:4 * t + 28] for t in range(12)])
  windows = audio.mfcc_windows(samples, 12)
  np.testing.assert_allclose(audio.normalize_windows(windows, "clip"), expected, atol=2e-5)
  np.testing.assert_array_equal(audio.normalize_windows(windows, "none"), windows)


def test_clip_normalisation_removes_a_stationary_colouring_and_keeps_silence_zero():
  """A channel or voice colouring is an additive cepstral offset (and a scale); 'clip' takes
  it out exactly. Silence (every row equal) stays zero instead of dividing by zero."""
  windows = audio.mfcc_windows(fixtures_raw.tone(0.48), 12)
  offset = np.linspace(-3.0, 5.0, 12, dtype=np.float32)
  coloured = 1.7 * windows + offset
  np.testing.assert_allclose(audio.normalize_windows(coloured, "clip"),
                             audio.normalize_windows(windows, "clip"), atol=1e-4)
  assert not np.allclose(audio.normalize_windows(coloured, "none"), windows)
  silence = audio.normalize_windows(audio.mfcc_windows(np.zeros(5 * 640, np.int16), 5), "clip")
  assert silence.shape == (5, 28, 12) and np.abs(silence).max() < 1e-6


def test_energy_feature_is_c0_relative_to_the_loudest_row_and_floored():
  """model.audio_energy's feature 0: c0 (the log frame energy the paper drops) minus its
  maximum over the clip, floored 40 dB under it; the 12 cepstra after it are unchanged. Gain
  does not move it, and digital silence and a noise floor 60 dB down are the same value."""
  rng = np.random.default_rng(1)
  samples = (0.3 * rng.standard_normal(12 * 640)).astype(np.float32)
  samples[: 4 * 640] = 0.0  # Digital silence at the start.
  rows = audio.mfcc(np.pad(samples.astype(np.float64), audio.PAD_SAMPLES))
  loudness = np.maximum(rows[:, 0] - rows[:, 0].max(), -4.0 * np.log(10.0))
  expected = np.stack([loudness[4 * t:4 * t + 28] for t in range(12)])
  windows = audio.mfcc_windows(samples, 12, energy=True)
  assert windows.shape == (12, 28, 13)
  np.testing.assert_allclose(windows[..., 0], expected, atol=1e-5)
  np.testing.assert_array_equal(windows[..., 1:], audio.mfcc_windows(samples, 12))
  assert windows[..., 0].max() == 0.0 and windows[0, 0, 0] == np.float32(-4 * np.log(10.0))
  quiet = audio.mfcc_windows(0.01 * samples, 12, energy=True)
  np.testing.assert_allclose(quiet[..., 0], windows[..., 0], atol=1e-4)
  floor = samples.copy()
  floor[: 4 * 640] = 0.3e-3 * rng.standard_normal(4 * 640)  # 60 dB under the speech.
  np.testing.assert_allclose(audio.mfcc_windows(floor, 12, energy=True)[:2, :4, 0],
                             windows[:2, :4, 0], atol=1e-6)
  # model_windows adds it to stored windows from the clip's waveform (int16 as stored).
  stored = (samples * 32767).astype(np.int16)
  np.testing.assert_allclose(
      audio.model_windows(stored, audio.mfcc_windows(stored, 12), True),
      audio.mfcc_windows(stored, 12, energy=True), atol=1e-6)
  np.testing.assert_array_equal(audio.model_windows(stored, windows[..., 1:], False),
                                windows[..., 1:])


def test_unknown_audio_norm_is_a_user_error():
  with pytest.raises(audio.UserError, match="data.audio_norm='cmvn'"):
    audio.normalize_windows(np.zeros((2, 28, 12), np.float32), "cmvn")
