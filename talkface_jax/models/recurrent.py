"""The recurrent parts: Gaussian LSTMs (frame posterior, audio prior) and the frame predictor.

Every LSTM runs over time with ``nn.RNN`` (a scan). The same modules take one step at a time
during generation by calling them on length-1 sequences with an explicit carry, so training
and generation share parameters without a second definition. All states start at zero.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Carry = Any


class LSTMStack(nn.Module):
  """``num_layers`` stacked LSTM layers over [B, T, F] sequences."""
  features: int
  num_layers: int
  dtype: Any = jnp.float32

  def setup(self):
    self.layers = [nn.RNN(nn.OptimizedLSTMCell(self.features, dtype=self.dtype,
                                               param_dtype=jnp.float32),
                          return_carry=True, name=f"lstm_{i}")
                   for i in range(self.num_layers)]

  def __call__(self, x: jax.Array, carry: list[Carry] | None = None):
    """Runs the stack over [B, T, F]; returns (final carries, outputs [B, T, features])."""
    carry = carry if carry is not None else zero_carry(x.shape[0], self.features,
                                                       self.num_layers, self.dtype)
    new_carry = []
    for layer, layer_carry in zip(self.layers, carry):
      layer_carry, x = layer(x, initial_carry=layer_carry)
      new_carry.append(layer_carry)
    return new_carry, x


class GaussianLSTM(nn.Module):
  """Linear embed -> LSTM -> (mu, log-variance) heads: q(z_t | inputs_1..t).

  With ``components`` M > 1 (the learned prior's ``TalkFace.prior_components``) the heads give
  a mixture of M diagonal Gaussians, sum_m pi_m N(mu_m, exp(logvar_m)), pi = softmax(logits).
  A single Gaussian has to stretch its variance over rare, distant posteriors (a blink's
  onset in a few frames of fifty) and then hardly ever draws one; a mixture can give such an
  event a component of its own with the event's probability.
  """
  rnn_size: int
  z_dim: int
  num_layers: int = 1
  dtype: Any = jnp.float32
  components: int = 1

  def setup(self):
    self.embed = nn.Dense(self.rnn_size, dtype=self.dtype)
    self.lstm = LSTMStack(self.rnn_size, self.num_layers, self.dtype)
    # The heads compute in float32 (float64 when the model does): KL and sampling need it.
    heads = at_least_float32(self.dtype)
    self.mu = nn.Dense(self.components * self.z_dim, dtype=heads)
    self.logvar = nn.Dense(self.components * self.z_dim, dtype=heads)
    if self.components > 1:
      self.logits = nn.Dense(self.components, dtype=heads)

  def __call__(self, inputs: jax.Array, carry: list[Carry] | None = None):
    """inputs [B, T, F] -> (carry, mu [B, T, z_dim], logvar [B, T, z_dim]), float32 heads;
    with M > 1 components (carry, mu [B, T, M, z_dim], logvar [B, T, M, z_dim], logits
    [B, T, M])."""
    carry, h = self.lstm(self.embed(inputs.astype(self.dtype)), carry)
    if self.components == 1:
      return carry, self.mu(h), self.logvar(h)
    shape = (*h.shape[:-1], self.components, self.z_dim)
    return carry, self.mu(h).reshape(shape), self.logvar(h).reshape(shape), self.logits(h)


class FramePredictor(nn.Module):
  """Linear embed -> LSTM stack -> Linear -> tanh: the next frame's code from (prev code, z)."""
  rnn_size: int
  g_dim: int
  num_layers: int = 2
  dtype: Any = jnp.float32

  def setup(self):
    self.embed = nn.Dense(self.rnn_size, dtype=self.dtype)
    self.lstm = LSTMStack(self.rnn_size, self.num_layers, self.dtype)
    self.out = nn.Dense(self.g_dim, dtype=self.dtype)

  def __call__(self, prev_codes: jax.Array, z: jax.Array, carry: list[Carry] | None = None):
    """prev_codes [B, T, g], z [B, T, z] -> (carry, predicted codes [B, T, g_dim])."""
    x = jnp.concatenate([prev_codes.astype(self.dtype), z.astype(self.dtype)], axis=-1)
    carry, h = self.lstm(self.embed(x), carry)
    return carry, jnp.tanh(self.out(h))


def at_least_float32(dtype) -> jnp.dtype:
  """float32 for low-precision compute dtypes (bfloat16), else ``dtype`` (float64 stays)."""
  return jnp.promote_types(dtype, jnp.float32)


def zero_carry(batch: int, features: int, num_layers: int,
               dtype: Any = jnp.float32) -> list[Carry]:
  """The all-zero (c, h) state of each of ``num_layers`` LSTM layers (float32 or wider)."""
  zeros = jnp.zeros((batch, features), at_least_float32(dtype))
  return [(zeros, zeros) for _ in range(num_layers)]
