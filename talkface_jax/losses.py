"""Training objective: lambda * MSE reconstruction + beta * KL(q_frame || q_audio), per example.

Following the release, each time step contributes the mean squared error over its pixels and
the KL summed over latent dimensions; steps are summed over time; the batch loss is the mean
of the per-example losses. The KL is the correct closed form between diagonal Gaussians given
by means and LOG-variances (the release passes standard deviations where log-variances are
expected; see docs/REFERENCE.md).
"""

import jax
import jax.numpy as jnp


def gaussian_kl(mu1: jax.Array, logvar1: jax.Array, mu2: jax.Array,
                logvar2: jax.Array) -> jax.Array:
  """KL(N(mu1, exp(logvar1)) || N(mu2, exp(logvar2))) summed over the last axis.

  Uses log(s2/s1) + (s1^2 + (mu1 - mu2)^2) / (2 s2^2) - 1/2 per dimension.
  """
  per_dim = 0.5 * (logvar2 - logvar1) + (
      jnp.exp(logvar1) + jnp.square(mu1 - mu2)) / (2.0 * jnp.exp(logvar2)) - 0.5
  return jnp.sum(per_dim, axis=-1)


def frame_mse(predicted: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error per frame: [..., H, W, C] -> [...] (float32, or float64 inputs' float64)."""
  dtype = jnp.promote_types(jnp.promote_types(predicted.dtype, target.dtype), jnp.float32)
  diff = predicted.astype(dtype) - target.astype(dtype)
  return jnp.mean(jnp.square(diff), axis=(-3, -2, -1))


def per_example_losses(output, target_frames: jax.Array, reconstruction_weight: float,
                       kl_weight: float) -> dict[str, jax.Array]:
  """Per-example loss terms of a teacher-forced pass.

  Args:
    output: ``models.talkface.TrainOutput`` for targets t = 1..T-1.
    target_frames: [B, T-1, H, W, 3] in [0, 1].
    reconstruction_weight: lambda.
    kl_weight: beta.

  Returns:
    dict of [B] arrays: 'loss', 'mse' (mean per frame), 'kl' (mean per step), summed over time
    in 'loss' only.
  """
  mse = frame_mse(output.frames, target_frames)  # [B, T-1]
  kl = gaussian_kl(output.posterior_mu, output.posterior_logvar,
                   output.prior_mu, output.prior_logvar)  # [B, T-1]
  loss = jnp.sum(reconstruction_weight * mse + kl_weight * kl, axis=1)
  return {"loss": loss, "mse": jnp.mean(mse, axis=1), "kl": jnp.mean(kl, axis=1)}
