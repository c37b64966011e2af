"""Shapes through the networks at 64 and 128, and the sampling contract of ``generate``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import grid
from data_prep import template
from talkface_jax import losses, parallel, train
from talkface_jax.models import audio, image, talkface


def _tiny_model(**overrides):
  config = grid.get_config("tiny")
  config.model.conv_impl = "xla"
  config.model.update(overrides)
  return talkface.build_model(config.model)


@pytest.mark.parametrize("resolution,widths", [(64, (64, 128, 256, 512)),
                                               (128, (64, 128, 256, 512, 512))])
def test_encoder_decoder_shapes(resolution, widths):
  encoder = image.ImageEncoder(widths, g_dim=128)
  decoder = image.ImageDecoder(widths)
  x = jnp.zeros((3, resolution, resolution, 3))
  variables = jax.eval_shape(functools.partial(encoder.init, train=True), jax.random.key(0), x)
  (codes, skips), _ = jax.eval_shape(
      functools.partial(encoder.apply, train=True, mutable=["batch_stats"]), variables, x)
  assert codes.shape == (3, 128)
  assert [s.shape for s in skips] == [
      (3, resolution >> i, resolution >> i, w) for i, w in enumerate(widths)]

  # The decoder's two methods share parameters: init through a module that calls both.
  frames = jax.eval_shape(lambda: _decode(decoder, jnp.zeros((3, 4, 128)), skips))
  assert frames.shape == (3, 4, resolution, resolution, 3)


def _decode(decoder, codes, skips):
  class Both(image.ImageDecoder):
    def __call__(self, codes, skips):  # pylint: disable=arguments-differ
      return super().__call__(codes, self.identity_context(skips), train=True)
  module = Both(decoder.widths)
  skips = [jnp.zeros(s.shape, s.dtype) for s in skips]
  variables = module.init(jax.random.key(0), codes, skips)
  out, _ = module.apply(variables, codes, skips, mutable=["batch_stats"])
  return out


def test_encoder_rejects_widths_that_do_not_fit():
  encoder = image.ImageEncoder((8, 8, 8), g_dim=4)
  with pytest.raises(ValueError, match="8x8"):
    encoder.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=True)


def test_audio_encoder_release_shapes():
  encoder = audio.AudioEncoder()
  x = jnp.zeros((5, 28, 12))
  variables = jax.eval_shape(functools.partial(encoder.init, train=True), jax.random.key(0), x)
  # The release flattens 256 x 12 x 2 = 6144 features into its first FC layer.
  assert variables["params"]["Dense_0"]["kernel"].shape == (6144, 2048)
  out = jax.eval_shape(functools.partial(encoder.apply, train=False), variables, x)
  assert out.shape == (5, 128)


@pytest.mark.parametrize("variant", ["", "tiny"])
def test_model_train_and_generate_shapes(variant):
  config = grid.get_config(variant)
  config.model.conv_impl = "xla"
  model = talkface.build_model(config.model)
  res = config.model.resolution
  frames, mfcc = jnp.zeros((2, 5, res, res, 3)), jnp.zeros((2, 5, 28, 12))
  rngs = {"params": jax.random.key(0), "latent": jax.random.key(1)}
  variables = jax.eval_shape(functools.partial(model.init, train=True), rngs, frames, mfcc)
  out, _ = jax.eval_shape(functools.partial(
      model.apply, train=True, rngs={"latent": jax.random.key(1)}, mutable=["batch_stats"]),
      variables, frames, mfcc)
  z = config.model.z_dim
  assert out.frames.shape == (2, 4, res, res, 3)
  assert out.posterior_mu.shape == out.prior_logvar.shape == (2, 4, z)
  videos = jax.eval_shape(functools.partial(talkface.generate, model, num_samples=3),
                          variables, frames[:, 0], mfcc, jax.random.key(2))
  assert videos.shape == (2, 3, 5, res, res, 3)


@pytest.fixture(scope="module")
def tiny_generation():
  # Momentum 0: one training-mode pass sets the running BN statistics to real ones, as after
  # training (the initial mean 0 / variance 1 would shrink every activation towards zero).
  model = _tiny_model(bn_momentum=0.0)
  rng = np.random.default_rng(0)
  frames = jnp.asarray(rng.uniform(size=(2, 7, 64, 64, 3)), jnp.float32)
  mfcc = jnp.asarray(rng.normal(size=(2, 7, 28, 12)), jnp.float32)
  rngs = {"params": jax.random.key(0), "latent": jax.random.key(1)}
  variables = model.init(rngs, frames, mfcc, train=True)
  _, stats = model.apply(variables, frames, mfcc, train=True, rngs=rngs, mutable=["batch_stats"])
  variables = {"params": variables["params"], **stats}
  generate = jax.jit(functools.partial(talkface.generate, model, num_samples=3))
  return model, variables, frames, mfcc, generate


def test_generate_k_different_samples_and_same_key_same_video(tiny_generation):
  _, variables, frames, mfcc, generate = tiny_generation
  a = np.asarray(generate(variables, frames[:, 0], mfcc, jax.random.key(7)))
  b = np.asarray(generate(variables, frames[:, 0], mfcc, jax.random.key(7)))
  c = np.asarray(generate(variables, frames[:, 0], mfcc, jax.random.key(8)))
  assert a.shape == (2, 3, 7, 64, 64, 3)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[:, :, 0], np.broadcast_to(frames[:, None, 0], a[:, :, 0].shape))
  assert np.all((a >= 0) & (a <= 1))
  for i in range(3):  # Every pair of the K samples differs after the identity frame.
    for j in range(i + 1, 3):
      assert np.abs(a[:, i, 1:] - a[:, j, 1:]).max() > 1e-4
  assert np.abs(a[:, :, 1:] - c[:, :, 1:]).max() > 1e-4


def test_samples_are_independent_of_batch_composition(tiny_generation):
  """With running BN statistics, a sample does not depend on the other inputs in the batch."""
  _, variables, frames, mfcc, generate = tiny_generation
  both = np.asarray(generate(variables, frames[:, 0], mfcc, jax.random.key(3)))
  first = np.asarray(generate(variables, frames[:1, 0], mfcc[:1], jax.random.key(3)))
  np.testing.assert_allclose(both[0], first[0], atol=1e-5)


def test_chunked_generation_equals_single_call(tiny_generation):
  model, variables, frames, mfcc, generate = tiny_generation
  key = jax.random.key(11)
  whole = np.asarray(generate(variables, frames[:, 0], mfcc, key))
  state = talkface.start_generation(model, variables, frames[:, 0], 3)
  chunks = []
  for start, stop in [(1, 3), (3, 6), (6, 7)]:
    state, out = talkface.generate_chunk(model, variables, state, mfcc[:, start:stop], key)
    chunks.append(np.asarray(out))
  np.testing.assert_allclose(np.concatenate(chunks, axis=2), whole[:, :, 1:], atol=1e-5)


def test_deterministic_generation_ignores_the_key(tiny_generation):
  model, variables, frames, mfcc, _ = tiny_generation
  run = lambda key: np.asarray(talkface.generate(model, variables, frames[:, 0], mfcc, key, 2,
                                                 deterministic=True))
  a, b = run(jax.random.key(0)), run(jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a[:, 0], a[:, 1], atol=1e-6)


# -------------------------------------------------------------------------------------------------
# Options beyond the paper: the learned prior and temporally correlated latents.
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["default", "grid", "lrw", "demo"])
def test_paper_prior_is_the_default(module):
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{module}").get_config()
  model = talkface.build_model(config.model)
  if module != "demo":
    assert model.prior == "audio" and model.latent_correlation == 0.0


def test_bad_prior_options_are_errors():
  with pytest.raises(ValueError, match="model.prior='lstm'"):
    _tiny_model(prior="lstm")
  with pytest.raises(ValueError, match="latent_correlation=1.0"):
    _tiny_model(latent_correlation=1.0)


def _init_tiny(model, frames, mfcc):
  rngs = {"params": jax.random.key(0), "latent": jax.random.key(1)}
  variables = jax.jit(functools.partial(model.init, train=True))(rngs, frames, mfcc)
  _, stats = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
      variables, frames, mfcc, rngs=rngs)
  return {"params": variables["params"], **stats}


@pytest.fixture(scope="module")
def learned_generation():
  """Both options on: the learned prior and AR(1) noise (rho 0.5)."""
  model = _tiny_model(bn_momentum=0.0, prior="learned", latent_correlation=0.5)
  rng = np.random.default_rng(1)
  frames = jnp.asarray(rng.uniform(size=(2, 6, 64, 64, 3)), jnp.float32)
  mfcc = jnp.asarray(rng.normal(size=(2, 6, 28, 12)), jnp.float32)
  return model, _init_tiny(model, frames, mfcc), frames, mfcc


def _train_prior(model, variables, frames, mfcc):
  out = jax.jit(functools.partial(model.apply, train=False))(
      variables, frames, mfcc, rngs={"latent": jax.random.key(0)})
  return np.asarray(out.prior_mu)


def test_learned_prior_sees_the_previous_frame(learned_generation):
  """Changing true frame 3 changes the learned prior's z_4 (index 3) but not z_1..z_3; the
  paper's audio prior ignores the frames altogether."""
  model, variables, frames, mfcc = learned_generation
  changed = frames.at[:, 3].set(1.0 - frames[:, 3])
  before, after = (_train_prior(model, variables, f, mfcc) for f in (frames, changed))
  assert before.shape == (2, 5, model.z_dim)
  np.testing.assert_array_equal(before[:, :3], after[:, :3])
  assert np.abs(before[:, 3] - after[:, 3]).max() > 1e-4
  audio_model = _tiny_model(bn_momentum=0.0)
  audio_vars = _init_tiny(audio_model, frames, mfcc)
  np.testing.assert_array_equal(_train_prior(audio_model, audio_vars, frames, mfcc),
                                _train_prior(audio_model, audio_vars, changed, mfcc))


def test_learned_prior_generation_is_chunkable_and_sample_dependent(learned_generation):
  """Every state of both options (prior LSTM per sample, the last noise) crosses chunks."""
  _assert_chunkable_sample_dependent_deterministic(*learned_generation, [(1, 3), (3, 6)])


def _assert_chunkable_sample_dependent_deterministic(model, variables, frames, mfcc, chunks):
  """Generation in ``chunks`` (frame ranges) equals one call, samples differ, and the
  deterministic video (the prior's mean given the generated frames) ignores the key."""
  key = jax.random.key(5)
  whole = np.asarray(jax.jit(functools.partial(talkface.generate, model, num_samples=3))(
      variables, frames[:, 0], mfcc, key))
  assert whole.shape == (*frames.shape[:1], 3, *frames.shape[1:])
  chunk = jax.jit(functools.partial(talkface.generate_chunk, model))
  state = talkface.start_generation(model, variables, frames[:, 0], 3)
  parts = []
  for start, stop in chunks:
    state, out = chunk(variables, state, mfcc[:, start:stop], key)
    parts.append(np.asarray(out))
  np.testing.assert_allclose(np.concatenate(parts, axis=2), whole[:, :, 1:], atol=1e-5)
  assert np.abs(whole[:, 0, 1:] - whole[:, 1, 1:]).max() > 1e-4
  det = jax.jit(functools.partial(talkface.generate, model, num_samples=2, deterministic=True))
  np.testing.assert_array_equal(det(variables, frames[:, 0], mfcc, jax.random.key(0)),
                                det(variables, frames[:, 0], mfcc, jax.random.key(1)))


def test_true_previous_frames_given_explicitly_change_nothing(learned_generation):
  model, variables, frames, mfcc = learned_generation
  apply = jax.jit(functools.partial(model.apply, train=False))
  rngs = {"latent": jax.random.key(3)}
  plain = apply(variables, frames, mfcc, rngs=rngs)
  given = apply(variables, frames, mfcc, rngs=rngs, prev_frames=frames[:, :-1])
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6), plain, given)


def test_rollout_is_the_training_pass_on_its_own_frames(learned_generation):
  """Fed its rollout as previous frames, the training pass (same key, same BatchNorm mode)
  predicts the rollout's frames again: same posterior draw, same predictor loop; and they
  differ from the teacher-forced frames, so the rollout is not the true frames in disguise."""
  model, variables, frames, mfcc = learned_generation
  key = jax.random.key(4)
  rolled = jax.jit(functools.partial(talkface.rollout, model))(variables, frames, mfcc, key)
  assert rolled.shape == (2, 4, 64, 64, 3)
  prev = jnp.concatenate([frames[:, :1], rolled], axis=1)
  apply = jax.jit(functools.partial(model.apply, train=False))
  fed = apply(variables, frames, mfcc, rngs={"latent": key}, prev_frames=prev).frames
  np.testing.assert_allclose(fed[:, :-1], rolled, atol=1e-5)
  forced = apply(variables, frames, mfcc, rngs={"latent": key}).frames
  np.testing.assert_allclose(forced[:, 0], rolled[:, 0], atol=1e-5)  # Both from frame 0.
  assert np.abs(forced[:, 1:-1] - rolled[:, 1:]).max() > 1e-3
  other = jax.jit(functools.partial(talkface.rollout, model))(variables, frames, mfcc,
                                                              jax.random.key(5))
  assert np.abs(other - rolled).max() > 1e-4


def test_mixture_component_follows_the_probabilities():
  logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
  picks = np.asarray(talkface.mixture_component(
      jnp.broadcast_to(logits, (50_000, 3)), jax.random.uniform(jax.random.key(0), (50_000,))))
  np.testing.assert_allclose(np.bincount(picks, minlength=3) / 50_000, [0.2, 0.5, 0.3],
                             atol=0.01)
  assert int(talkface.mixture_component(logits, None)) == 1


@pytest.mark.slow  # Compiles a third model's training and generation passes (~1-2 min).
def test_mixture_prior_trains_and_generates():
  """prior_components = 3: the training pass gives the mixture and the draw its KL is
  estimated at; generation is chunkable, draws differ between samples, and the
  deterministic video (the most probable component's mean) ignores the key."""
  with pytest.raises(ValueError, match="prior_components=2"):
    _tiny_model(prior_components=2)  # The paper's audio prior stays a single Gaussian.
  model = _tiny_model(bn_momentum=0.0, prior="learned", prior_components=3)
  rng = np.random.default_rng(2)
  frames = jnp.asarray(rng.uniform(size=(2, 6, 64, 64, 3)), jnp.float32)
  mfcc = jnp.asarray(rng.normal(size=(2, 6, 28, 12)), jnp.float32)
  variables = _init_tiny(model, frames, mfcc)
  out = jax.jit(functools.partial(model.apply, train=False))(
      variables, frames, mfcc, rngs={"latent": jax.random.key(0)})
  assert out.prior_mu.shape == out.prior_logvar.shape == (2, 5, 3, model.z_dim)
  assert out.prior_logits.shape == (2, 5, 3) and out.z.shape == (2, 5, model.z_dim)
  assert np.isfinite(losses.per_example_losses(out, frames[:, 1:], 1.0, 1.0)["kl"]).all()
  _assert_chunkable_sample_dependent_deterministic(model, variables, frames, mfcc,
                                                   [(1, 4), (4, 6)])


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_latent_noise_is_ar1_with_unit_variance(rho):
  eps, key = jnp.zeros((20000,)), jax.random.key(9)
  sequence = []
  for t in range(1, 9):
    eps = talkface.latent_noise(key, jnp.int32(t), eps, rho)
    sequence.append(np.asarray(eps))
  sequence = np.stack(sequence)
  lag1 = np.mean([np.corrcoef(sequence[t], sequence[t + 1])[0, 1] for t in range(7)])
  assert abs(lag1 - rho) < 0.03
  np.testing.assert_allclose(sequence.var(axis=1), 1.0, atol=0.05)


def test_residual_decoder_starts_at_the_identity_frame_and_learns():
  """``decoder_output='residual'``: untrained, every predicted and generated frame is the
  identity frame (up to the logit clip); one gradient step moves the frames, and the
  paper's decoder does not start there."""
  rng = np.random.default_rng(2)
  frames = jnp.asarray(rng.uniform(0.01, 0.99, size=(2, 5, 64, 64, 3)), jnp.float32)
  mfcc = jnp.asarray(rng.normal(size=(2, 5, 28, 12)), jnp.float32)
  model = _tiny_model(bn_momentum=0.0, decoder_output="residual")
  variables = _init_tiny(model, frames, mfcc)
  rngs = {"latent": jax.random.key(3)}
  out = model.apply(variables, frames, mfcc, train=False, rngs=rngs)
  identity = np.broadcast_to(np.asarray(frames[:, :1]), out.frames.shape)
  np.testing.assert_allclose(np.asarray(out.frames), identity, atol=1e-5)
  videos = talkface.generate(model, variables, frames[:, 0], mfcc, jax.random.key(4),
                             num_samples=2)
  np.testing.assert_allclose(np.asarray(videos),
                             np.broadcast_to(np.asarray(frames[:, None, :1]), videos.shape),
                             atol=1e-5)

  def mse(params):
    o = model.apply({**variables, "params": params}, frames, mfcc, train=False, rngs=rngs)
    return jnp.mean(jnp.square(o.frames - frames[:, 1:]))
  grads = jax.grad(mse)(variables["params"])
  assert float(jnp.abs(grads["frame_decoder"]["to_rgb"]["kernel"]).max()) > 0
  moved = jax.tree.map(lambda p, g: p - 0.1 * g, variables["params"], grads)
  assert float(mse(moved)) < float(mse(variables["params"]))

  direct = _tiny_model(bn_momentum=0.0)
  out = direct.apply(_init_tiny(direct, frames, mfcc), frames, mfcc, train=False, rngs=rngs)
  assert np.abs(np.asarray(out.frames) - identity).max() > 0.1
  with pytest.raises(ValueError, match="decoder_output='mask'"):
    _tiny_model(decoder_output="mask")


@pytest.mark.slow  # Compiles three models' training and generation passes (~1.5 min).
def test_audio_to_predictor_makes_the_frames_depend_on_the_audio():
  """The paper's teacher-forced frames do not depend on the audio (z comes from the frame
  posterior; the audio only reaches the KL); with ``audio_to_predictor`` they do, and
  generation (both priors, chunked or not) runs with the wider predictor input."""
  rng = np.random.default_rng(5)
  frames = jnp.asarray(rng.uniform(size=(2, 5, 64, 64, 3)), jnp.float32)
  mfcc = jnp.asarray(rng.normal(size=(2, 5, 28, 12)), jnp.float32)
  other = mfcc + jnp.asarray(rng.normal(size=mfcc.shape), jnp.float32)
  rngs = {"latent": jax.random.key(6)}
  for audio_to_predictor, prior in ((False, "audio"), (True, "audio"), (True, "learned")):
    # BN + ReLU in the audio encoder: the release's plain convs at init give codes ~1e-6.
    model = _tiny_model(bn_momentum=0.0, audio_to_predictor=audio_to_predictor, prior=prior,
                        audio_bn_relu=True)
    variables = _init_tiny(model, frames, mfcc)
    run = lambda m: np.asarray(model.apply(variables, frames, m, train=False, rngs=rngs).frames)
    differ = np.abs(run(mfcc) - run(other)).max()
    assert (differ > 1e-4) == audio_to_predictor, (audio_to_predictor, prior, differ)
    if audio_to_predictor:
      gen = functools.partial(talkface.generate, model, variables, frames[:, 0],
                              key=jax.random.key(7), num_samples=2, deterministic=True)
      np.testing.assert_allclose(np.asarray(gen(mfcc=mfcc)[:, :, 1:]).shape,
                                 (2, 2, 4, 64, 64, 3))
      assert np.abs(np.asarray(gen(mfcc=mfcc)) - np.asarray(gen(mfcc=other))).max() > 1e-4
      state = talkface.start_generation(model, variables, frames[:, 0], 2)
      state, first = talkface.generate_chunk(model, variables, state, mfcc[:, 1:3],
                                             jax.random.key(7))
      _, second = talkface.generate_chunk(model, variables, state, mfcc[:, 3:],
                                          jax.random.key(7))
      whole = talkface.generate(model, variables, frames[:, 0], mfcc, jax.random.key(7), 2)
      np.testing.assert_allclose(np.concatenate([first, second], axis=2),
                                 np.asarray(whole[:, :, 1:]), atol=1e-5)


def test_audio_energy_widens_the_audio_input_and_the_loudness_is_heard():
  """model.audio_energy: the model is built for 13 features per MFCC row (init_variables, as
  training and inference restore it), and feature 0 (the loudness) changes the frames."""
  model = _tiny_model(bn_momentum=0.0, audio_energy=True, audio_to_predictor=True,
                      audio_bn_relu=True)
  initial = jax.eval_shape(lambda: talkface.init_variables(model, jax.random.key(0),
                                                           jax.random.key(1)))
  rng = np.random.default_rng(8)
  frames = jnp.asarray(rng.uniform(size=(2, 5, 64, 64, 3)), jnp.float32)
  mfcc = jnp.asarray(rng.normal(size=(2, 5, 28, 13)), jnp.float32)
  variables = _init_tiny(model, frames, mfcc)
  assert jax.tree.map(lambda x: x.shape, variables) == jax.tree.map(lambda x: x.shape, initial)
  louder = mfcc.at[..., 0].add(2.0)
  run = lambda m: np.asarray(model.apply(variables, frames, m, train=False,
                                         rngs={"latent": jax.random.key(6)}).frames)
  assert np.abs(run(mfcc) - run(louder)).max() > 1e-4
  # The paper's 12 features would pool to the FC's input size too: an error names the key.
  with pytest.raises(ValueError, match="model.audio_energy=True"):
    run(mfcc[..., 1:])
  assert not _tiny_model().audio_energy  # Off by default (the paper's features).
  # The conv library's probe times steps on random batches of the configured width.
  config = grid.get_config("tiny")
  config.model.audio_energy = True
  assert train.random_batch(config, parallel.make_mesh(config))["mfcc"].shape[-1] == 13


def _posterior_mu(model, variables, frames, mfcc, prev_frames=None):
  out = jax.jit(functools.partial(model.apply, train=False))(
      variables, frames, mfcc, rngs={"latent": jax.random.key(0)}, prev_frames=prev_frames)
  return np.asarray(out.posterior_mu)


def test_upper_face_posterior_does_not_see_the_mouth():
  """posterior_view='upper_face': changing frames 1..T-1 below the top of the template's
  mouth box leaves the frame posterior unchanged, changing them above it (the eyes) changes
  it; the paper's view sees both. Frame 0 (the identity) stays the true one throughout."""
  rng = np.random.default_rng(2)
  frames = jnp.asarray(rng.uniform(size=(2, 5, 64, 64, 3)), jnp.float32)
  mfcc = jnp.asarray(rng.normal(size=(2, 5, 28, 12)), jnp.float32)
  cut = template.region_boxes(64)["mouth"][0]
  assert 32 < cut < 56  # Below the eyes, above the chin.
  mouth = frames.at[:, 1:, cut:].set(1.0 - frames[:, 1:, cut:])
  eyes = frames.at[:, 1:, 16:30].set(1.0 - frames[:, 1:, 16:30])
  for view, sees_mouth in (("upper_face", False), ("frame", True)):
    model = _tiny_model(bn_momentum=0.0, posterior_view=view)
    variables = _init_tiny(model, frames, mfcc)
    base, moved, blinked = (_posterior_mu(model, variables, f, mfcc)
                            for f in (frames, mouth, eyes))
    assert (np.abs(base - moved).max() > 1e-4) == sees_mouth, view
    assert np.abs(base - blinked).max() > 1e-4, view
    # The predictor's previous frames still are the true ones, mouth included.
    fed = _posterior_mu(model, variables, frames, mfcc, prev_frames=mouth[:, :-1])
    np.testing.assert_allclose(fed, base, atol=1e-6)
  with pytest.raises(ValueError, match="posterior_view='lips'"):
    _tiny_model(posterior_view="lips")


def test_posterior_frames_take_the_lower_rows_from_the_identity_frame():
  frames = jnp.arange(3)[None, :, None, None, None] * jnp.ones((1, 3, 64, 64, 3))
  seen = np.asarray(talkface.posterior_frames(frames, "upper_face"))
  cut = template.region_boxes(64)["mouth"][0]
  np.testing.assert_array_equal(seen[:, :, :cut], np.asarray(frames[:, 1:, :cut]))
  np.testing.assert_array_equal(seen[:, :, cut:], 0.0)
  np.testing.assert_array_equal(talkface.posterior_frames(frames, "frame"), frames[:, 1:])
