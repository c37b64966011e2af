"""The loss: Gaussian KL against closed forms, per-example reduction over time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from data_prep import template
from talkface_jax import losses
from talkface_jax.models import talkface


def test_kl_of_equal_gaussians_is_zero():
  rng = np.random.default_rng(0)
  mu, logvar = rng.normal(size=(3, 7, 24)), rng.normal(size=(3, 7, 24))
  np.testing.assert_allclose(losses.gaussian_kl(mu, logvar, mu, logvar), 0.0, atol=1e-12)


def test_kl_equals_closed_form_in_standard_deviations():
  rng = np.random.default_rng(1)
  m1, m2 = rng.normal(size=(2, 5, 24))
  s1, s2 = np.exp(rng.normal(size=(2, 5, 24)) * 0.5)
  expected = np.sum(np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5, axis=-1)
  got = losses.gaussian_kl(m1, 2 * np.log(s1), m2, 2 * np.log(s2))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_kl_matches_monte_carlo_estimate():
  rng = np.random.default_rng(2)
  m1, m2, lv1, lv2 = rng.normal(size=(4, 3)) * 0.5
  x = m1 + np.exp(0.5 * lv1) * rng.normal(size=(400_000, 3))
  log_q = -0.5 * (lv1 + (x - m1) ** 2 / np.exp(lv1))
  log_p = -0.5 * (lv2 + (x - m2) ** 2 / np.exp(lv2))
  estimate = np.mean(np.sum(log_q - log_p, axis=-1))
  np.testing.assert_allclose(losses.gaussian_kl(m1, lv1, m2, lv2), estimate, atol=0.01)


def test_kl_is_positive_and_asymmetric():
  a = (jnp.zeros(4), jnp.zeros(4))
  b = (jnp.ones(4), jnp.full(4, 1.0))
  kl_ab, kl_ba = losses.gaussian_kl(*a, *b), losses.gaussian_kl(*b, *a)
  assert kl_ab > 0 and kl_ba > 0 and not np.isclose(kl_ab, kl_ba)


def test_per_example_losses_sum_over_time_and_weight_terms():
  rng = np.random.default_rng(3)
  b, t, z = 2, 4, 3
  output = talkface.TrainOutput(
      frames=jnp.asarray(rng.uniform(size=(b, t, 8, 8, 3))),
      posterior_mu=jnp.asarray(rng.normal(size=(b, t, z))),
      posterior_logvar=jnp.asarray(rng.normal(size=(b, t, z))),
      prior_mu=jnp.asarray(rng.normal(size=(b, t, z))),
      prior_logvar=jnp.asarray(rng.normal(size=(b, t, z))))
  target = jnp.asarray(rng.uniform(size=(b, t, 8, 8, 3)))
  terms = losses.per_example_losses(output, target, reconstruction_weight=2.0, kl_weight=0.5)
  mse = np.mean((np.asarray(output.frames) - np.asarray(target)) ** 2, axis=(2, 3, 4))
  kl = np.asarray(losses.gaussian_kl(output.posterior_mu, output.posterior_logvar,
                                     output.prior_mu, output.prior_logvar))
  np.testing.assert_allclose(terms["loss"], np.sum(2.0 * mse + 0.5 * kl, axis=1), rtol=1e-5)
  np.testing.assert_allclose(terms["mse"], mse.mean(axis=1), rtol=1e-5)
  assert terms["loss"].shape == (b,)
  assert jax.tree.all(jax.tree.map(lambda x: np.all(np.isfinite(x)), terms))


def test_free_bits_price_each_frame_at_least_lambda_and_stop_the_pull_below_it():
  rng = np.random.default_rng(5)
  b, t, z = 2, 5, 3
  frames = jnp.asarray(rng.uniform(size=(b, t, 8, 8, 3)), jnp.float32)
  target = jnp.asarray(rng.uniform(size=(b, t, 8, 8, 3)), jnp.float32)
  prior_mu, logvar = jnp.zeros((b, t, z)), jnp.zeros((b, t, z))
  # Posterior means at distances whose KLs (|mu|^2 / 2 nats) straddle lambda = 0.5.
  mu = jnp.asarray(rng.normal(scale=1.0, size=(b, t, z)), jnp.float32)

  def loss(mu_, free_bits):
    out = talkface.TrainOutput(frames, mu_, logvar, prior_mu, logvar)
    return losses.per_example_losses(out, target, 1.0, 0.1, free_bits=free_bits)

  kl = np.asarray(0.5 * jnp.sum(jnp.square(mu), axis=-1))  # Analytic, [b, t].
  assert (kl < 0.5).any() and (kl > 0.5).any()
  mse = np.mean((np.asarray(frames) - np.asarray(target)) ** 2, axis=(2, 3, 4))
  plain, free = loss(mu, 0.0), loss(mu, 0.5)
  np.testing.assert_allclose(plain["loss"], np.sum(mse + 0.1 * kl, 1), rtol=1e-5)
  np.testing.assert_allclose(free["loss"], np.sum(mse + 0.1 * np.maximum(kl, 0.5), 1),
                             rtol=1e-5)
  np.testing.assert_allclose(free["kl"], plain["kl"])  # The reported KL stays the plain one.
  # No gradient pulls a frame under lambda towards the prior; the others are pulled as before.
  grad = np.asarray(jax.grad(lambda m: jnp.sum(loss(m, 0.5)["loss"]))(mu))
  below = kl < 0.5
  np.testing.assert_array_equal(grad[below], 0.0)
  np.testing.assert_allclose(grad[~below], 0.1 * np.asarray(mu)[~below], rtol=1e-5)
  with pytest.raises(ValueError, match="free_bits"):
    loss(mu, -1.0)
  # The training and evaluation steps read it from config.loss; a config stored before the
  # key existed prices the plain KL.
  config = default.get_config()
  config.model.resolution, config.loss.kl_weight, config.loss.free_bits = 8, 0.1, 0.5
  out = talkface.TrainOutput(frames, mu, logvar, prior_mu, logvar)
  np.testing.assert_allclose(losses.config_losses(out, target, config)["loss"], free["loss"])
  del config.loss["free_bits"]
  np.testing.assert_allclose(losses.config_losses(out, target, config)["loss"], plain["loss"])


def test_region_weights_weight_the_template_boxes_and_keep_the_scale():
  assert losses.pixel_weights(64) is None
  w = losses.pixel_weights(64, mouth_weight=10.0, eye_weight=3.0)[..., 0]
  np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)
  boxes = template.region_boxes(64)
  (my0, my1, mx0, mx1), (ey0, ey1, ex0, ex1) = boxes["mouth"], boxes["eyes"]
  base = w[0, 0]
  np.testing.assert_allclose(w[my0:my1, mx0:mx1], 10.0 * base, rtol=1e-6)
  np.testing.assert_allclose(w[ey0:ey1, ex0:ex1], 3.0 * base, rtol=1e-6)
  assert my0 > ey1  # The mouth lies below the eyes.
  with pytest.raises(ValueError, match="> 0"):
    losses.pixel_weights(64, mouth_weight=0.0)

  # An error only in the mouth box costs 10x what the same error costs outside it.
  rng = np.random.default_rng(4)
  b, t, z = 1, 2, 3
  target = np.zeros((b, t, 64, 64, 3), np.float32)
  in_mouth, outside = target.copy(), target.copy()
  in_mouth[..., my0, mx0, :] = 0.5
  outside[..., 0, 0, :] = 0.5
  gauss = lambda: jnp.asarray(rng.normal(size=(b, t, z)), jnp.float32)
  mu, logvar = gauss(), gauss()
  terms = [losses.per_example_losses(
      talkface.TrainOutput(jnp.asarray(f), mu, logvar, mu, logvar), jnp.asarray(target),
      1.0, 1e-6, losses.pixel_weights(64, 10.0, 3.0)) for f in (in_mouth, outside)]
  np.testing.assert_allclose(terms[0]["loss"] / terms[1]["loss"], 10.0, rtol=1e-5)
  np.testing.assert_allclose(terms[0]["mse"], terms[1]["mse"])  # 'mse' stays plain.


def test_mixture_kl_estimate_is_exact_for_one_repeated_component_and_unbiased():
  """A mixture of M copies of one Gaussian is that Gaussian: the estimate at each z equals
  log q(z) - log p(z) computed independently (numpy), and its mean over many draws of z ~ q
  the closed-form KL."""
  rng = np.random.default_rng(4)
  z_dim, n = 3, 200_000
  mu1, logvar1 = rng.normal(size=z_dim), rng.normal(size=z_dim) * 0.3
  mu2, logvar2 = rng.normal(size=z_dim), rng.normal(size=z_dim) * 0.3
  z = mu1 + np.exp(0.5 * logvar1) * rng.normal(size=(n, z_dim))
  rep = lambda x: np.broadcast_to(x, (n, 4, z_dim))
  estimate = np.asarray(losses.mixture_kl_estimate(
      jnp.asarray(z), jnp.asarray(mu1), jnp.asarray(logvar1), jnp.asarray(rep(mu2)),
      jnp.asarray(rep(logvar2)), jnp.asarray(rng.normal(size=(n, 4)))))
  log_n = lambda x, m, lv: -0.5 * np.sum(np.log(2 * np.pi) + lv + (x - m) ** 2 / np.exp(lv), -1)
  np.testing.assert_allclose(estimate, log_n(z, mu1, logvar1) - log_n(z, mu2, logvar2),
                             rtol=1e-4, atol=1e-4)
  closed = float(losses.gaussian_kl(jnp.asarray(mu1), jnp.asarray(logvar1), jnp.asarray(mu2),
                                    jnp.asarray(logvar2)))
  assert abs(estimate.mean() - closed) < 4 * estimate.std() / np.sqrt(n)


def test_mixture_kl_estimate_weights_components_by_their_probabilities():
  """Two distant components: log p(z) is the log of pi_1 N_1(z) + pi_2 N_2(z) (numpy)."""
  z = np.array([[0.1, -0.2], [4.9, 5.3]])
  mu2 = np.broadcast_to(np.array([[0.0, 0.0], [5.0, 5.0]]), (2, 2, 2))
  logvar2 = np.zeros((2, 2, 2))
  logits = np.log(np.array([[0.9, 0.1], [0.9, 0.1]]))
  mu1, logvar1 = np.zeros(2), np.zeros(2)
  estimate = np.asarray(losses.mixture_kl_estimate(*map(jnp.asarray, (z, mu1, logvar1, mu2,
                                                                       logvar2, logits))))
  density = lambda x, m: np.exp(-0.5 * np.sum((x - m) ** 2)) / (2 * np.pi)
  for i in range(2):
    p = 0.9 * density(z[i], mu2[i, 0]) + 0.1 * density(z[i], mu2[i, 1])
    np.testing.assert_allclose(estimate[i], np.log(density(z[i], mu1)) - np.log(p), rtol=1e-5)
