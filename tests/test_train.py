"""Training steps: the loss goes down, non-finite losses are caught, the loop writes its outputs."""

import jax
import numpy as np
import optax
import pytest

from configs import grid
from talkface_jax import checkpointing, errors, parallel, train
from talkface_jax import workdir as workdir_lib
from talkface_jax.models import talkface
from talkface_jax.ops import conv
from tests import shard_fixtures


@pytest.fixture(scope="module")
def compiled_step():
  """The tiny config's jitted train step (compiled once for the module) and a fresh state."""
  config = grid.get_config("tiny")
  config.optim.learning_rate = 3e-3
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  tx = train.make_optimizer(config)
  state = train.create_train_state(config, model, tx, mesh)
  sharding = jax.tree.map(lambda x: x.sharding, state)
  step_fn = train.jit_train_step(config, model, tx, mesh, sharding)
  return mesh, step_fn, lambda: train.create_train_state(config, model, tx, mesh)


def _variant_step(mesh, state, overrides: dict):
  """The jitted train step of the module's config (tiny, rate 3e-3) with ``overrides``
  ({'section.key': value}) applied; the model and optimiser state are the module's."""
  config = grid.get_config("tiny")
  config.optim.learning_rate = 3e-3
  for name, value in overrides.items():
    section, key = name.split(".")
    config[section][key] = value
  model = talkface.build_model(config.model)
  return train.jit_train_step(config, model, train.make_optimizer(config), mesh,
                              jax.tree.map(lambda x: x.sharding, state))


def _fixed_batch(mesh, num_frames=6):
  clips = [shard_fixtures.make_clip(i, num_frames, 64) for i in range(4)]
  local = {"frames": np.stack([c["frames"] for c in clips]),
           "mfcc": np.stack([c["mfcc"] for c in clips])}
  return parallel.global_batch(local, mesh)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(compiled_step):
  mesh, step_fn, new_state = compiled_step
  state = new_state()
  batch = _fixed_batch(mesh)
  losses = []
  for _ in range(12):
    state, metrics = step_fn(state, batch)
    losses.append(float(metrics["loss"]))
    assert float(metrics["nonfinite"]) == 0.0
  assert int(state.step) == 12
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_non_finite_loss_skips_the_update(compiled_step):
  mesh, step_fn, new_state = compiled_step
  state = new_state()
  batch = _fixed_batch(mesh)
  bad = dict(batch, mfcc=batch["mfcc"] * np.nan)
  before = jax.device_get(state.params)
  state, metrics = step_fn(state, bad)
  assert float(metrics["nonfinite"]) == 1.0
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))
  state, metrics = step_fn(state, batch)  # A good batch still trains afterwards.
  assert float(metrics["nonfinite"]) == 0.0


def test_feedback_steps_train_on_the_models_own_frames(compiled_step):
  """train.feedback = 1: every step t >= 2 sees the rollout's frame, so the first step's loss
  differs from teacher forcing's on the same state and batch (frame 1 is predicted from the
  true identity frame either way), and a few steps still reduce it."""
  mesh, teacher_forced, new_state = compiled_step
  state = new_state()
  step_fn = _variant_step(mesh, state, {"train.feedback": 1.0})
  batch = _fixed_batch(mesh)
  _, forced = teacher_forced(new_state(), batch)
  losses = []
  for _ in range(12):
    state, metrics = step_fn(state, batch)
    losses.append(float(metrics["loss"]))
  assert abs(losses[0] - float(forced["loss"])) > 1e-4 * abs(losses[0])
  assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_learning_rate_decay_matches_optax_schedules():
  """optim.decay_fraction: constant, then a half cosine to 0 -- the same factors as optax's
  own schedules joined at the decay's first step (an independent implementation)."""
  config = grid.get_config("tiny")
  config.train.num_steps = 40
  config.optim.decay_fraction = 0.25
  reference = optax.join_schedules(
      [optax.constant_schedule(1.0), optax.cosine_decay_schedule(1.0, decay_steps=10)],
      boundaries=[30])
  steps = np.arange(45)
  ours = np.array([train.learning_rate_scale(config, s) for s in steps])
  np.testing.assert_allclose(ours, [reference(s) for s in steps], atol=1e-6)
  assert ours[29] == 1.0 and ours[35] == pytest.approx(0.5) and ours[40] == 0.0
  config.optim.decay_fraction = 0.0
  assert float(train.learning_rate_scale(config, 39)) == 1.0
  config.optim.decay_fraction = 1.5
  with pytest.raises(errors.UserError, match="decay_fraction"):
    train.learning_rate_scale(config, 0)


def test_a_fully_decayed_step_leaves_the_parameters(compiled_step):
  """The train step applies the factor: at a step past the decay the rate is 0, so the
  parameters stay, while the optimiser's moments and the step count move on."""
  mesh, _, new_state = compiled_step
  state = new_state()
  step_fn = _variant_step(mesh, state, {"train.num_steps": 4, "optim.decay_fraction": 0.5})
  batch = _fixed_batch(mesh)
  first = jax.tree.leaves(jax.device_get(state.params))
  state, metrics = step_fn(state, batch)  # Step 0: the full rate (the state is donated).
  assert float(metrics["learning_rate"]) == pytest.approx(3e-3)
  assert not all(np.allclose(a, b) for a, b in
                 zip(first, jax.tree.leaves(jax.device_get(state.params))))
  state = state.replace(step=state.step + 3)  # Step 4 = num_steps: fully decayed.
  before = jax.device_get(state.params)
  after, metrics = step_fn(state, batch)
  assert float(metrics["learning_rate"]) == 0.0 and int(after.step) == 5
  jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(after.params))


def test_training_loop_stops_loudly_on_non_finite_loss(tmp_path):
  data_dir = str(tmp_path / "data")
  clips = [shard_fixtures.make_clip(i, 8, 64) for i in range(8)]
  for clip in clips[4:]:
    clip["mfcc"][:] = np.nan
  from data_prep import shards  # pylint: disable=g-import-not-at-top
  shards.write_dataset(data_dir, {"train": clips, "test": clips[:2]}, 64)
  config = grid.get_config("tiny")
  config.data.dir = data_dir
  config.train.num_steps = 6
  with pytest.raises(train.NonFiniteLossError, match="last checkpoint"):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  # Whatever was saved precedes the first bad step.
  ckpt = checkpointing.Checkpointer(str(tmp_path / "work"), config)
  assert ckpt.latest_step() is None or ckpt.latest_step() < 6
  ckpt.close()


def test_prefetch_to_device_keeps_order_positions_and_one_batch_ahead():
  mesh = parallel.make_mesh(grid.get_config("tiny"))
  pulled = []

  def source():
    for i in range(4):
      pulled.append(i)
      yield {"x": np.full((2, 3), i, np.float32)}, f"position {i}"

  batches = parallel.prefetch_to_device(source(), mesh, size=2)
  batch, position = next(batches)
  assert pulled == [0, 1]  # The next batch is already on its way to the devices.
  assert position == "position 0" and isinstance(batch["x"], jax.Array)
  assert batch["x"].sharding == parallel.data_sharded(mesh)
  rest = list(batches)
  assert [p for _, p in rest] == ["position 1", "position 2", "position 3"]
  assert [float(b["x"][0, 0]) for b, _ in rest] == [1.0, 2.0, 3.0]
  assert pulled == [0, 1, 2, 3]


@pytest.mark.slow  # Two compilations of a 32-channel model: ~1-3 min on 2 shared cores.
def test_eigen_conv_step_equals_the_xla_step():
  """conv_impl='eigen' (ops/conv.py: the same ops, compiled to XLA's Eigen convolutions instead
  of YNNPACK) gives the same train step: loss terms and gradient norm. (Not the updated
  parameters: RMSprop's first update is ~lr * sign(gradient), so rounding flips near-zero
  gradients; test_conv.py compares the convolution gradients themselves.)"""
  def one_step(conv_impl):
    config = grid.get_config("tiny")
    config.model.conv_impl = conv_impl
    # 32 channels: below that XLA keeps convolutions out of YNNPACK anyway, and the two
    # programs would be the same.
    config.model.encoder_widths = (32, 32, 32, 32)
    mesh = parallel.make_mesh(config)
    model = talkface.build_model(config.model)
    tx = train.make_optimizer(config)
    state = train.create_train_state(config, model, tx, mesh)
    step_fn = train.jit_train_step(config, model, tx, mesh,
                                   jax.tree.map(lambda x: x.sharding, state))
    # The compiled program runs the step too (calling step_fn would compile it a second time).
    compiled = step_fn.lower(state, _fixed_batch(mesh)).compile()
    state, metrics = compiled(state, _fixed_batch(mesh))
    return compiled.as_text(), jax.device_get(metrics)

  xla_hlo, xla_metrics = one_step("xla")
  eigen_hlo, eigen_metrics = one_step("eigen")
  # Convolutions outside YNNPACK fusions (in the entry computation, not a fused one): more of
  # them with the option, which leaves every convolution to XLA itself.
  top_level_convs = lambda hlo: hlo.split("ENTRY")[1].count(" convolution(")
  assert top_level_convs(eigen_hlo) > top_level_convs(xla_hlo)
  assert xla_metrics["grad_norm"] > 0
  for key in xla_metrics:
    np.testing.assert_allclose(eigen_metrics[key], xla_metrics[key], rtol=1e-4, atol=1e-6)


def test_auto_conv_impl_keeps_the_faster_step_and_the_workdir_keeps_the_choice(
    tmp_path, monkeypatch):
  """choose_conv_impl: 'auto' becomes whichever whole step the probe timed faster, with that
  step's compiled program; a workdir that stored a choice keeps it without a probe; explicit
  values pass through untouched."""
  alternative = conv.resolve_impl("auto")  # 'eigen' on this jaxlib, else 'fast_wgrad'.
  config = grid.get_config("tiny")
  config.model.conv_impl = "auto"
  for fast, slow in (("xla", alternative), (alternative, "xla")):
    monkeypatch.setattr(train, "_time_train_steps", lambda c, impls, fast=fast, slow=slow: (
        {fast: 1.0, slow: 2.0}, {impl: f"compiled {impl}" for impl in impls}))
    chosen, step = train.choose_conv_impl(config, str(tmp_path / "fresh"))
    assert (chosen.model.conv_impl, step) == (fast, f"compiled {fast}")
    assert config.model.conv_impl == "auto"  # The caller's config is not changed.

  def no_probe(*args):
    raise AssertionError("probed")

  monkeypatch.setattr(train, "_time_train_steps", no_probe)
  stored = grid.get_config("tiny")
  stored.model.conv_impl = alternative
  workdir_lib.write_config(str(tmp_path / "resumed"), stored)
  chosen, step = train.choose_conv_impl(config, str(tmp_path / "resumed"))
  assert (chosen.model.conv_impl, step) == (alternative, None)
  explicit = grid.get_config("tiny")  # conv_impl='xla'
  assert train.choose_conv_impl(explicit, str(tmp_path / "fresh")) == (explicit, None)


@pytest.mark.slow  # Three compilations of the tiny train step, two short training runs.
def test_training_with_the_probed_step_equals_training_with_its_choice(tmp_path):
  """The probe's compiled step (timed on a fresh state and a random batch) takes the loop's
  restored state and pipeline batches, and trains exactly as the loop's own jit of the chosen
  impl; the run's stored config keeps the choice."""
  data_dir = str(tmp_path / "data")
  from data_prep import shards  # pylint: disable=g-import-not-at-top
  shards.write_dataset(data_dir, {"train": [shard_fixtures.make_clip(i, 8, 64)
                                            for i in range(8)]}, 64)
  config = grid.get_config("tiny")
  config.data.dir = data_dir
  config.data.eval_split = "train"
  config.train.num_steps = 3
  config.model.conv_impl = "auto"
  probed, train_fn = train.choose_conv_impl(config, str(tmp_path / "probed"))
  assert probed.model.conv_impl in ("xla", conv.resolve_impl("auto")) and train_fn is not None
  with_probe = train.train_and_evaluate(probed, str(tmp_path / "probed"), train_fn)
  plain = train.train_and_evaluate(probed, str(tmp_path / "plain"))
  assert int(with_probe.step) == int(plain.step) == 3
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(with_probe.params),
               jax.device_get(plain.params))
  stored = workdir_lib.read_config(str(tmp_path / "probed"))
  assert stored.model.conv_impl == probed.model.conv_impl
  assert train.choose_conv_impl(config, str(tmp_path / "probed"))[1] is None
