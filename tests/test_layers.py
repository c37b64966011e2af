"""The fast formulations of ``models.layers`` against the plain Flax/XLA ops they replace."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import grid
from talkface_jax.models import layers, talkface


def _reference_max_pool(x, window, stride):
  window = (window, window) if isinstance(window, int) else window
  stride = (stride, stride) if isinstance(stride, int) else stride
  return nn.max_pool(x, window, strides=stride, padding="VALID")


def _reference_upsample2x(x):
  return jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)


def _reference_conv_function(impl):
  del impl
  return jax.lax.conv_general_dilated


def _assert_same_value_and_grad(fn, reference, x, rtol=1e-5, atol=1e-6):
  """Same outputs, and the same gradient of a random projection of them."""
  close = functools.partial(np.testing.assert_allclose, rtol=rtol, atol=atol)
  y, vjp = jax.vjp(fn, x)
  y_ref, vjp_ref = jax.vjp(reference, x)
  close(y, y_ref)
  cotangent = jax.random.normal(jax.random.key(1), y.shape)
  jax.tree.map(close, vjp(cotangent)[0], vjp_ref(cotangent)[0])


@pytest.mark.parametrize("shape,window,stride", [
    ((2, 8, 8, 3), 2, 2),  # Encoder.
    ((2, 9, 7, 3), 2, 2),  # Odd sizes: VALID drops the last row/column.
    ((2, 28, 12, 4), 3, (1, 2)),  # Audio encoder, overlapping windows.
    ((2, 26, 5, 4), 3, 2),
])
def test_max_pool_matches_flax(shape, window, stride):
  # Normal draws have no ties, so the gradients must agree exactly.
  x = jax.random.normal(jax.random.key(0), shape)
  _assert_same_value_and_grad(lambda v: layers.max_pool(v, window, stride),
                              lambda v: _reference_max_pool(v, window, stride), x)


def test_max_pool_gradient_of_ties_sums_to_one():
  x = jnp.zeros((1, 2, 2, 1))
  grad = jax.grad(lambda v: jnp.sum(layers.max_pool(v, 2, 2)))(x)
  np.testing.assert_allclose(jnp.sum(grad), 1.0)


def test_upsample2x_matches_repeat():
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5, 6))
  _assert_same_value_and_grad(layers.upsample2x, _reference_upsample2x, x)


def test_model_outputs_and_gradients_match_reference_ops(monkeypatch):
  """The whole training pass with the fast ops equals the one with the plain ops."""
  config = grid.get_config("tiny")
  config.model.conv_impl = "xla"
  model = talkface.build_model(config.model)
  b, t, r = 2, 4, config.model.resolution
  frames = jax.random.uniform(jax.random.key(0), (b, t, r, r, 3))
  mfcc = jax.random.normal(jax.random.key(1), (b, t, 28, 12))
  rngs = {"params": jax.random.key(2), "latent": jax.random.key(3)}
  variables = model.init(rngs, frames, mfcc)

  def loss(params):
    out, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                               frames, mfcc, rngs={"latent": jax.random.key(4)},
                               mutable=["batch_stats"])
    return jnp.mean(out.frames ** 2) + jnp.mean(out.prior_mu * out.posterior_mu), (out, updates)

  grad_fn = jax.grad(loss, has_aux=True)
  grads, (out, updates) = grad_fn(variables["params"])
  with monkeypatch.context() as patch:
    patch.setattr(layers, "max_pool", _reference_max_pool)
    patch.setattr(layers, "upsample2x", _reference_upsample2x)
    patch.setattr(layers, "conv_function", _reference_conv_function)
    reference_variables = model.init(rngs, frames, mfcc)
    reference_grads, (reference_out, reference_updates) = grad_fn(variables["params"])

  assert jax.tree.map(jnp.shape, reference_variables) == jax.tree.map(jnp.shape, variables)
  jax.tree.map(np.testing.assert_array_equal, reference_variables, variables)
  close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, out, reference_out)
  jax.tree.map(close, updates, reference_updates)
  jax.tree.map(close, grads, reference_grads)
