"""The input pipeline: shard round trip, deterministic order, exact resume, clear errors."""

import itertools

import numpy as np
import pytest

from configs import grid
from data_prep import audio as audio_prep
from talkface_jax import input_pipeline
from tests import shard_fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("shards"))
  splits = shard_fixtures.write_tiny_dataset(data_dir, num_train=10, num_test=3, num_frames=9,
                                             examples_per_shard=3)
  config = grid.get_config("tiny")
  config.data.dir = data_dir
  config.data.seq_len = 5
  return config, splits


def _find_window(batch_frames, batch_mfcc, clips):
  """The (clip, offset) that each batch row was cut from."""
  found = []
  for frames, mfcc in zip(batch_frames, batch_mfcc):
    hits = [(c["clip_id"], o) for c in clips for o in range(len(c["frames"]) - len(frames) + 1)
            if np.array_equal(c["frames"][o:o + len(frames)], frames)
            and np.array_equal(c["mfcc"][o:o + len(frames)], mfcc)]
    assert len(hits) == 1, "a batch row must be an exact window of exactly one clip"
    found.append(hits[0])
  return found


def test_batches_are_exact_windows_of_the_written_clips(dataset):
  config, splits = dataset
  pipeline = input_pipeline.InputPipeline(config, local_batch_size=2)
  batches = list(itertools.islice(pipeline.train_batches(), 10))  # Two epochs of 5 batches.
  batch, position = batches[0]
  assert batch["frames"].shape == (2, 5, 64, 64, 3) and batch["frames"].dtype == np.uint8
  assert batch["mfcc"].shape == (2, 5, 28, 12) and batch["mfcc"].dtype == np.float32
  epoch0 = [w for b, _ in batches[:5] for w in _find_window(b["frames"], b["mfcc"],
                                                             splits["train"])]
  epoch1 = [w for b, _ in batches[5:] for w in _find_window(b["frames"], b["mfcc"],
                                                             splits["train"])]
  # Every clip once per epoch, reshuffled between epochs.
  assert sorted(c for c, _ in epoch0) == sorted(c["clip_id"] for c in splits["train"])
  assert sorted(c for c, _ in epoch1) == sorted(c["clip_id"] for c in splits["train"])
  assert [c for c, _ in epoch0] != [c for c, _ in epoch1]
  assert len({o for _, o in epoch0 + epoch1}) > 1  # Random crop offsets.
  assert position == input_pipeline.Position(0, 2)
  assert batches[5][1] == input_pipeline.Position(1, 2)


def test_order_is_deterministic_and_resume_continues_exactly(dataset):
  config, _ = dataset
  pipeline = input_pipeline.InputPipeline(config, local_batch_size=2)
  reference = list(itertools.islice(pipeline.train_batches(), 8))
  again = list(itertools.islice(pipeline.train_batches(), 8))
  for (a, pa), (b, pb) in zip(reference, again):
    np.testing.assert_array_equal(a["frames"], b["frames"])
    assert pa == pb
  for k in (3, 5, 6):  # Mid-epoch, at the epoch border and in the next epoch.
    resumed = list(itertools.islice(pipeline.train_batches(reference[k - 1][1]), 8 - k))
    for (a, pa), (b, pb) in zip(reference[k:], resumed):
      np.testing.assert_array_equal(a["frames"], b["frames"])
      np.testing.assert_array_equal(a["mfcc"], b["mfcc"])
      assert pa == pb


def test_seed_changes_the_order(dataset):
  config, _ = dataset
  other = config.copy_and_resolve_references()
  other.seed = 1
  first = next(input_pipeline.InputPipeline(config, 2).train_batches())[0]
  second = next(input_pipeline.InputPipeline(other, 2).train_batches())[0]
  assert not np.array_equal(first["frames"], second["frames"])


def test_eval_batches_start_at_frame_zero_in_file_order(dataset):
  config, splits = dataset
  pipeline = input_pipeline.InputPipeline(config, local_batch_size=2)
  batches = list(pipeline.eval_batches(num_batches=5, local_batch_size=2))
  assert len(batches) == 1  # 3 test clips make one full batch of 2.
  windows = _find_window(batches[0]["frames"], batches[0]["mfcc"], splits["test"])
  assert windows == [(splits["test"][0]["clip_id"], 0), (splits["test"][1]["clip_id"], 0)]


def test_clips_shorter_than_the_window_are_skipped(tmp_path):
  shard_fixtures.write_tiny_dataset(str(tmp_path), num_train=4, num_frames=4)
  config = grid.get_config("tiny")
  config.data.dir = str(tmp_path)
  config.data.seq_len = 5
  with pytest.raises(ValueError, match="no batch"):
    next(input_pipeline.InputPipeline(config, 2).train_batches())


def test_load_clips_returns_whole_clips(dataset):
  config, splits = dataset
  clips = input_pipeline.load_clips(config, "test", 2)
  assert [c["clip_id"] for c in clips] == [c["clip_id"] for c in splits["test"][:2]]
  np.testing.assert_array_equal(clips[0]["frames"], splits["test"][0]["frames"])
  np.testing.assert_array_equal(clips[0]["audio"], splits["test"][0]["audio"])
  seeded = input_pipeline.load_clips(config, "test", 2, seed=3)
  assert len(seeded) == 2


def test_clip_audio_norm_reaches_training_eval_and_whole_clips(dataset):
  """With data.audio_norm='clip' every path into the model gets the whole clip's normalised
  windows (statistics of the clip, not of the training window)."""
  config, splits = dataset
  config = config.copy_and_resolve_references()
  config.data.audio_norm = "clip"
  normalised = {split: [{**c, "mfcc": audio_prep.normalize_windows(c["mfcc"], "clip")}
                        for c in clips] for split, clips in splits.items()}
  pipeline = input_pipeline.InputPipeline(config, local_batch_size=2)
  for batch, _ in itertools.islice(pipeline.train_batches(), 3):
    _find_window(batch["frames"], batch["mfcc"], normalised["train"])
  batch = next(pipeline.eval_batches(num_batches=1, local_batch_size=2))
  _find_window(batch["frames"], batch["mfcc"], normalised["test"])
  clip = input_pipeline.load_clips(config, "test", 1)[0]
  np.testing.assert_array_equal(clip["mfcc"], normalised["test"][0]["mfcc"])
  config.data.audio_norm = "cmvn"
  with pytest.raises(ValueError, match="data.audio_norm"):
    input_pipeline.InputPipeline(config, 2)


def test_audio_energy_reaches_training_eval_and_whole_clips(dataset):
  """With model.audio_energy every path into the model gets 13 features per MFCC row: the
  loudness of the clip's stored waveform first, then the stored cepstra, all normalised."""
  config, splits = dataset
  config = config.copy_and_resolve_references()
  config.model.audio_energy = True
  config.data.audio_norm = "clip"
  heard = {split: [{**c, "mfcc": audio_prep.normalize_windows(
      audio_prep.model_windows(c["audio"], c["mfcc"], True), "clip")} for c in clips]
           for split, clips in splits.items()}
  assert heard["train"][0]["mfcc"].shape[-1] == 13
  pipeline = input_pipeline.InputPipeline(config, local_batch_size=2)
  for batch, _ in itertools.islice(pipeline.train_batches(), 3):
    assert batch["mfcc"].shape == (2, 5, 28, 13)
    _find_window(batch["frames"], batch["mfcc"], heard["train"])
  batch = next(pipeline.eval_batches(num_batches=1, local_batch_size=2))
  _find_window(batch["frames"], batch["mfcc"], heard["test"])
  clip = input_pipeline.load_clips(config, "test", 1)[0]
  np.testing.assert_array_equal(clip["mfcc"], heard["test"][0]["mfcc"])


def test_missing_data_says_where_and_how_to_build(tmp_path):
  config = grid.get_config("tiny")
  config.data.dir = str(tmp_path / "nowhere")
  with pytest.raises(input_pipeline.DataNotFoundError, match="data_prep.build"):
    input_pipeline.InputPipeline(config, 2)


def test_resolution_mismatch_is_an_error(dataset):
  config, _ = dataset
  other = config.copy_and_resolve_references()
  other.model.resolution = 128
  with pytest.raises(ValueError, match="resolution"):
    input_pipeline.InputPipeline(other, 2)
