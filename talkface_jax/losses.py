"""Training objective: lambda * MSE reconstruction + beta * KL(q_frame || q_audio), per example.

Following the release, each time step contributes the mean squared error over its pixels and
the KL summed over latent dimensions; steps are summed over time; the batch loss is the mean
of the per-example losses. The KL is the correct closed form between diagonal Gaussians given
by means and LOG-variances (the release passes standard deviations where log-variances are
expected; see docs/REFERENCE.md).

With a mixture prior (``model.prior_components`` > 1, beyond the paper) the KL has no closed
form and is estimated at the posterior's draw z: log q(z) - log p(z).

Beyond the paper, ``config.loss.mouth_weight`` / ``eye_weight`` > 1 weight the squared error
of the template's mouth and eye regions (``data_prep.template.region_boxes``: every frame is
aligned to the template, so the regions sit at fixed pixels); the weights are normalised to
mean 1, so the loss keeps the plain MSE's scale (and its balance with beta's KL). The
reported 'mse' stays the plain, unweighted one.

Beyond the paper, ``config.loss.free_bits`` = lambda > 0 nats ("free bits", Kingma et al.
2016, here per frame: one group of all z dimensions, per example) replaces each frame's KL
in the loss by max(KL, lambda): a frame whose posterior is within lambda nats of the prior
gets no gradient pulling it closer, so a posterior that carries a little (a blink) is not
pushed onto the prior early in training, when the predictor does not use z yet (posterior
collapse). The reported 'kl' stays the plain one. On the demo it did not make the blink come
sooner or better (BENCHMARKS.md, "24 held-out clips"); no config uses it.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from numpy.typing import ArrayLike

from data_prep import template


def gaussian_kl(mu1: jax.Array, logvar1: jax.Array, mu2: jax.Array,
                logvar2: jax.Array) -> jax.Array:
  """KL(N(mu1, exp(logvar1)) || N(mu2, exp(logvar2))) summed over the last axis.

  Uses log(s2/s1) + (s1^2 + (mu1 - mu2)^2) / (2 s2^2) - 1/2 per dimension.
  """
  per_dim = 0.5 * (logvar2 - logvar1) + (
      jnp.exp(logvar1) + jnp.square(mu1 - mu2)) / (2.0 * jnp.exp(logvar2)) - 0.5
  return jnp.sum(per_dim, axis=-1)


def gaussian_log_density(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mu, exp(logvar)) of diagonal Gaussians, summed over the last axis."""
  return -0.5 * jnp.sum(jnp.log(2.0 * jnp.pi) + logvar + jnp.square(z - mu) / jnp.exp(logvar),
                        axis=-1)


def mixture_kl_estimate(z: jax.Array, mu1: jax.Array, logvar1: jax.Array, mu2: jax.Array,
                        logvar2: jax.Array, logits2: jax.Array) -> jax.Array:
  """One-sample estimate of KL(q || p), q = N(mu1, exp(logvar1)) [..., z], p a mixture of
  diagonal Gaussians (mu2, logvar2 [..., M, z], logits2 [..., M]): log q(z) - log p(z) at
  ``z``, a reparameterised draw from q (no closed form exists; the estimate is unbiased)."""
  log_pi = jax.nn.log_softmax(logits2, axis=-1)
  log_p = jax.nn.logsumexp(log_pi + gaussian_log_density(z[..., None, :], mu2, logvar2),
                           axis=-1)
  return gaussian_log_density(z, mu1, logvar1) - log_p


def frame_mse(predicted: jax.Array, target: jax.Array,
              weights: ArrayLike | None = None) -> jax.Array:
  """Mean squared error per frame: [..., H, W, C] -> [...] (float32, or float64 inputs' float64),
  each pixel's squared error times ``weights`` [H, W, 1] if given."""
  dtype = jnp.promote_types(jnp.promote_types(predicted.dtype, target.dtype), jnp.float32)
  square = jnp.square(predicted.astype(dtype) - target.astype(dtype))
  if weights is not None:
    square = square * jnp.asarray(weights, dtype)
  return jnp.mean(square, axis=(-3, -2, -1))


def pixel_weights(resolution: int, mouth_weight: float = 1.0,
                  eye_weight: float = 1.0) -> np.ndarray | None:
  """Per-pixel weights [S, S, 1] of the squared error, mean 1; None when both weights are 1.

  Pixels of the template's mouth box (``region_boxes``) weigh ``mouth_weight`` times, and of
  its eye box ``eye_weight`` times, the rest of the frame before the normalisation.
  """
  if mouth_weight == 1.0 and eye_weight == 1.0:
    return None
  if mouth_weight <= 0 or eye_weight <= 0:
    raise ValueError(f"loss weights must be > 0 (mouth {mouth_weight}, eyes {eye_weight})")
  weights = np.ones((resolution, resolution, 1), np.float32)
  for name, weight in (("mouth", mouth_weight), ("eyes", eye_weight)):
    y0, y1, x0, x1 = template.region_boxes(resolution)[name]
    weights[y0:y1, x0:x1] = weight
  return weights / weights.mean()


def config_pixel_weights(config: ml_collections.ConfigDict) -> np.ndarray | None:
  """``pixel_weights`` of ``config.loss`` (configs stored before the keys existed: none)."""
  return pixel_weights(config.model.resolution, config.loss.get("mouth_weight", 1.0),
                       config.loss.get("eye_weight", 1.0))


def per_example_losses(output, target_frames: jax.Array, reconstruction_weight: float,
                       kl_weight: float, weights: ArrayLike | None = None,
                       free_bits: float = 0.0) -> dict[str, jax.Array]:
  """Per-example loss terms of a teacher-forced pass.

  Args:
    output: ``models.talkface.TrainOutput`` for targets t = 1..T-1.
    target_frames: [B, T-1, H, W, 3] in [0, 1].
    reconstruction_weight: lambda.
    kl_weight: beta.
    weights: optional per-pixel weights of the squared error [H, W, 1] (``pixel_weights``).
    free_bits: nats per frame under which a frame's KL costs a constant (module docstring).

  Returns:
    dict of [B] arrays: 'loss', 'mse' (plain, mean per frame), 'kl' (mean per step), summed
    over time in 'loss' only ('loss' uses the weighted error when ``weights`` is given).
  """
  mse = frame_mse(output.frames, target_frames)  # [B, T-1]
  if output.prior_logits is None:
    kl = gaussian_kl(output.posterior_mu, output.posterior_logvar,
                     output.prior_mu, output.prior_logvar)  # [B, T-1]
  else:  # A mixture prior: estimated at the posterior's draw.
    kl = mixture_kl_estimate(output.z, output.posterior_mu, output.posterior_logvar,
                             output.prior_mu, output.prior_logvar, output.prior_logits)
  error = mse if weights is None else frame_mse(output.frames, target_frames, weights)
  if free_bits < 0:
    raise ValueError(f"loss.free_bits must be >= 0 nats, got {free_bits}")
  priced = jnp.maximum(kl, free_bits) if free_bits > 0 else kl
  loss = jnp.sum(reconstruction_weight * error + kl_weight * priced, axis=1)
  return {"loss": loss, "mse": jnp.mean(mse, axis=1), "kl": jnp.mean(kl, axis=1)}


def config_losses(output, target_frames: jax.Array,
                  config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """``per_example_losses`` with the weights of ``config.loss`` (configs stored before a key
  existed: its neutral value)."""
  return per_example_losses(output, target_frames, config.loss.reconstruction_weight,
                            config.loss.kl_weight, config_pixel_weights(config),
                            config.loss.get("free_bits", 0.0))
