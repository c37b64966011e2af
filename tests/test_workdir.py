"""The workdir's config check: which stored configs describe the same model."""

import pytest

from configs import grid
from talkface_jax import errors, workdir
from talkface_jax.models import talkface


def test_differing_model_keys_are_named_and_compute_keys_ignored():
  stored, given = grid.get_config("tiny"), grid.get_config("tiny")
  given.model.dtype = "bfloat16"
  given.model.conv_impl = "eigen"
  given.model.latent_correlation = 0.5  # Generation only: training never reads it.
  given.optim.learning_rate = 1.0  # Not a model key.
  assert not workdir.model_differences(stored, given)
  given.model.z_dim = stored.model.z_dim + 1
  assert workdir.model_differences(stored, given) == {
      "model.z_dim": (stored.model.z_dim, stored.model.z_dim + 1)}
  with pytest.raises(errors.UserError, match=r"model.z_dim \(workdir"):
    workdir.check_same_model(stored, given, "W/config.json")


@pytest.mark.parametrize("key", sorted(talkface.ADDED_KEYS))
def test_a_config_stored_before_a_key_existed_means_the_papers_choice(key):
  """An older workdir's config lacks the keys added since: it resumes under a config that
  sets them to the paper's choice, and differs from one that sets another value."""
  stored, given = grid.get_config("tiny"), grid.get_config("tiny")
  del stored.model[key]
  assert given.model[key] == talkface.ADDED_KEYS[key]
  assert not workdir.model_differences(stored, given)
  others = {"decoder_output": "residual", "audio_to_predictor": True, "prior_components": 4,
            "posterior_view": "upper_face", "audio_energy": True}
  given.model[key] = others[key]
  assert key in {k.split(".", 1)[1] for k in workdir.model_differences(stored, given)}
