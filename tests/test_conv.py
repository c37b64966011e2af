"""Tests for talkface_jax.ops.conv: the matmul weight gradient equals XLA's."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from talkface_jax.ops import conv

FLAX_DNUMS = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _normal(seed, shape, dtype=jnp.float32):
  # numpy, not jax.random: an eager jax.random.normal compiles for every new
  # shape, which costs seconds per test on CPU.
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal(shape, np.float32).astype(dtype))


def _grads(conv_fn, x, w, dy, strides, padding, dnums, **kwargs):
  """(dx, dW) of <conv(x, w), dy>, jitted."""
  def loss(x, w):
    y = conv_fn(x, w, strides, padding, dimension_numbers=dnums, **kwargs)
    return jnp.vdot(y.astype(jnp.float32), dy.astype(jnp.float32))
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)


def _random_case(seed, batch, in_shape, c_in, c_out, kernel, padding,
                 strides=(1, 1), dtype=jnp.float32):
  x = _normal(seed, (batch, *in_shape, c_in), dtype)
  w = _normal(seed + 1, (*kernel, c_in, c_out), dtype)
  out_shape = jax.eval_shape(
      lambda x, w: lax.conv_general_dilated(
          x, w, strides, padding, dimension_numbers=FLAX_DNUMS), x, w).shape
  dy = _normal(seed + 2, out_shape, dtype)
  return x, w, dy


def _assert_close(actual, expected, rtol):
  # Relative to the largest entry: sums of N*H*W products cancel, so
  # entrywise relative error is meaningless for near-zero entries.
  scale = float(jnp.max(jnp.abs(expected.astype(jnp.float32))))
  np.testing.assert_allclose(
      np.asarray(actual, np.float32), np.asarray(expected, np.float32),
      rtol=0, atol=rtol * scale)


CASES = {
    # name: (batch, in spatial, c_in, c_out, kernel, padding)
    'odd_3x3_same': (2, (9, 7), 5, 4, (3, 3), 'SAME'),
    'rgb_in': (3, (8, 8), 3, 16, (3, 3), 'SAME'),
    'rgb_out': (2, (8, 8), 16, 3, (3, 3), 'SAME'),
    '1x1': (2, (5, 6), 7, 6, (1, 1), 'SAME'),
    '3x3_valid': (2, (11, 9), 4, 5, (3, 3), 'VALID'),
    '4x4_valid_to_1x1': (5, (4, 4), 12, 10, (4, 4), 'VALID'),
    '4x4_same': (2, (8, 8), 6, 5, (4, 4), 'SAME'),
    'explicit_asymmetric': (1, (7, 10), 4, 4, (3, 2), [(2, 0), (1, 1)]),
    'explicit_negative': (2, (9, 9), 3, 4, (3, 3), [(1, -1), (0, 2)]),
}


@pytest.mark.parametrize('name', CASES)
def test_gradients_match_xla(name):
  batch, in_shape, c_in, c_out, kernel, padding = CASES[name]
  x, w, dy = _random_case(0, batch, in_shape, c_in, c_out, kernel, padding)
  dx_ref, dw_ref = _grads(lax.conv_general_dilated, x, w, dy, (1, 1),
                          padding, FLAX_DNUMS)
  for method in ('shifted_matmuls', 'im2col'):
    fast = functools.partial(conv.conv_general_dilated, wgrad_method=method)
    dx, dw = _grads(fast, x, w, dy, (1, 1), padding, FLAX_DNUMS)
    assert dw.shape == w.shape and dw.dtype == w.dtype
    _assert_close(dx, dx_ref, 1e-5)
    _assert_close(dw, dw_ref, 1e-5)


def test_forward_is_xla_conv():
  x, w, _ = _random_case(1, 2, (9, 7), 5, 4, (3, 3), 'SAME')
  args = ((1, 1), 'SAME')
  np.testing.assert_array_equal(
      conv.conv_general_dilated(x, w, *args, dimension_numbers=FLAX_DNUMS),
      lax.conv_general_dilated(x, w, *args, dimension_numbers=FLAX_DNUMS))


@pytest.mark.parametrize('dnums', [('NCHW', 'OIHW', 'NCHW'),
                                   ('NHWC', 'OHWI', 'NCHW'), None])
def test_other_dimension_numbers(dnums):
  lhs_shape = {'N': 2, 'C': 3, 'H': 9, 'W': 7}
  rhs_shape = {'O': 4, 'I': 3, 'H': 3, 'W': 2}
  spec = dnums or ('NCHW', 'OIHW', 'NCHW')
  x = _normal(0, [lhs_shape[c] for c in spec[0]])
  w = _normal(1, [rhs_shape[c] for c in spec[1]])
  y_shape = jax.eval_shape(lambda x, w: lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=dnums), x, w).shape
  dy = _normal(2, y_shape)
  dx, dw = _grads(conv.conv_general_dilated, x, w, dy, (1, 1), 'SAME', dnums)
  dx_ref, dw_ref = _grads(lax.conv_general_dilated, x, w, dy, (1, 1), 'SAME',
                          dnums)
  _assert_close(dx, dx_ref, 1e-5)
  _assert_close(dw, dw_ref, 1e-5)


def test_1d_and_3d_convolutions():
  for spatial, kernel, spec in [((13,), (3,), ('NWC', 'WIO', 'NWC')),
                                ((5, 6, 4), (3, 3, 2),
                                 ('NDHWC', 'DHWIO', 'NDHWC'))]:
    x = _normal(0, (2, *spatial, 3))
    w = _normal(1, (*kernel, 3, 4))
    dy = _normal(2, (2, *spatial, 4))
    strides = (1,) * len(spatial)
    dx, dw = _grads(conv.conv_general_dilated, x, w, dy, strides, 'SAME', spec)
    dx_ref, dw_ref = _grads(lax.conv_general_dilated, x, w, dy, strides,
                            'SAME', spec)
    _assert_close(dx, dx_ref, 1e-5)
    _assert_close(dw, dw_ref, 1e-5)


@pytest.mark.parametrize('strides,padding,kwargs', [
    ((2, 2), 'SAME', {}),
    ((1, 1), 'SAME', dict(rhs_dilation=(2, 2))),
    ((1, 1), [(1, 1), (2, 0)], dict(lhs_dilation=(2, 2))),
    ((1, 1), 'SAME', dict(feature_group_count=2)),
], ids=['stride', 'rhs_dilation', 'lhs_dilation', 'groups'])
def test_unsupported_cases_fall_back_to_xla(strides, padding, kwargs):
  x = _normal(0, (2, 9, 8, 4))
  w = _normal(1, (3, 3, 4 // kwargs.get('feature_group_count', 1), 6))
  assert not conv.fast_wgrad_supported(x, w, strides, **kwargs)
  y_shape = jax.eval_shape(lambda x, w: lax.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=FLAX_DNUMS, **kwargs),
                           x, w).shape
  dy = _normal(2, y_shape)
  dx, dw = _grads(conv.conv_general_dilated, x, w, dy, strides, padding,
                  FLAX_DNUMS, **kwargs)
  dx_ref, dw_ref = _grads(lax.conv_general_dilated, x, w, dy, strides,
                          padding, FLAX_DNUMS, **kwargs)
  np.testing.assert_array_equal(dx, dx_ref)
  np.testing.assert_array_equal(dw, dw_ref)


def test_strided_conv_has_no_custom_vjp():
  x, w, _ = _random_case(6, 1, (8, 8), 2, 2, (3, 3), 'SAME', (2, 2))
  jaxpr = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
      x, w, (2, 2), 'SAME', dimension_numbers=FLAX_DNUMS))(x, w)
  assert 'custom_vjp' not in str(jaxpr)
  jaxpr = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=FLAX_DNUMS))(x, w)
  assert 'custom_vjp' in str(jaxpr)


def test_bfloat16_accumulates_in_float32():
  x, w, dy = _random_case(7, 4, (16, 16), 32, 8, (3, 3), 'SAME',
                          dtype=jnp.bfloat16)
  dx, dw = _grads(conv.conv_general_dilated, x, w, dy, (1, 1), 'SAME',
                  FLAX_DNUMS)
  assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
  f32 = lambda a: a.astype(jnp.float32)
  dx_ref, dw_ref = _grads(lax.conv_general_dilated, f32(x), f32(w), f32(dy),
                          (1, 1), 'SAME', FLAX_DNUMS)
  # One bf16 rounding of the f32 sum (2^-8 relative), not 1024 of them.
  _assert_close(dw, dw_ref, 2**-7)
  _assert_close(dx, dx_ref, 2**-6)


def test_preferred_element_type():
  x, w, dy = _random_case(8, 2, (8, 8), 4, 5, (3, 3), 'SAME',
                          dtype=jnp.bfloat16)
  kwargs = dict(preferred_element_type=jnp.float32)
  y = conv.conv_general_dilated(x, w, (1, 1), 'SAME',
                                dimension_numbers=FLAX_DNUMS, **kwargs)
  assert y.dtype == jnp.float32
  dx, dw = _grads(conv.conv_general_dilated, x, w, dy, (1, 1), 'SAME',
                  FLAX_DNUMS, **kwargs)
  dx_ref, dw_ref = _grads(lax.conv_general_dilated, x, w, dy, (1, 1), 'SAME',
                          FLAX_DNUMS, **kwargs)
  assert dx.dtype == dx_ref.dtype and dw.dtype == dw_ref.dtype
  _assert_close(dx, dx_ref, 2**-7)
  _assert_close(dw, dw_ref, 2**-7)


def test_second_order_reverse_mode():
  x, w, dy = _random_case(9, 2, (6, 6), 3, 4, (3, 3), 'SAME')

  def grad_norm(conv_fn):
    def loss(w):
      y = conv_fn(x, w, (1, 1), 'SAME', dimension_numbers=FLAX_DNUMS)
      return jnp.vdot(y, dy)
    return jax.grad(lambda w: jnp.sum(jax.grad(loss)(w * w) ** 2))(w)

  _assert_close(grad_norm(conv.conv_general_dilated),
                grad_norm(lax.conv_general_dilated), 1e-5)


class _TinyModel(nn.Module):
  """Conv stack covering SAME, VALID, explicit and strided padding."""
  impl: str

  @nn.compact
  def __call__(self, x):  # x: [B, 8, 8, 3]
    conv_fn = conv.conv_general_dilated_for(self.impl)
    x = nn.relu(nn.Conv(8, (3, 3), padding='SAME',
                        conv_general_dilated=conv_fn)(x))
    x = nn.relu(nn.Conv(6, (3, 3), strides=2, padding=1,
                        conv_general_dilated=conv_fn)(x))           # 4x4
    x = nn.relu(nn.Conv(5, (2, 2), padding=((1, 0), (0, 1)),
                        conv_general_dilated=conv_fn)(x))           # 4x4
    x = nn.Conv(7, (4, 4), padding='VALID',
                conv_general_dilated=conv_fn)(x)                    # 1x1
    return nn.Conv(3, (1, 1), conv_general_dilated=conv_fn)(x)


def test_flax_model_gradients_match_default_conv():
  x = _normal(0, (3, 8, 8, 3))
  shapes = jax.eval_shape(_TinyModel('xla').init, jax.random.PRNGKey(0), x)
  leaves, treedef = jax.tree.flatten(shapes)
  params = jax.tree.unflatten(
      treedef, [0.3 * _normal(i, s.shape) for i, s in enumerate(leaves)])

  def grads(impl):
    loss = lambda p: jnp.sum(_TinyModel(impl).apply(p, x) ** 2)
    return jax.jit(jax.grad(loss))(params)

  fast, ref = grads('fast_wgrad'), grads('xla')
  jax.tree.map(lambda a, b: _assert_close(a, b, 1e-5), fast, ref)


def test_selector():
  assert conv.conv_general_dilated_for('xla') is lax.conv_general_dilated
  assert (conv.conv_general_dilated_for('fast_wgrad')
          is conv.conv_general_dilated)
  assert conv.conv_general_dilated_for('eigen') is lax.conv_general_dilated
  assert jax.default_backend() == 'cpu'  # the test suite runs on CPU
  # jaxlib 0.10.2 (the pinned version) accepts the compile option of 'eigen'.
  assert conv.resolve_impl('auto') == 'eigen'
  assert conv.conv_general_dilated_for('auto') is lax.conv_general_dilated
  with pytest.raises(ValueError):
    conv.conv_general_dilated_for('cudnn')


def test_auto_falls_back_to_matmul_wgrad_without_the_option(monkeypatch):
  monkeypatch.setattr(conv, '_eigen_option_supported', lambda: False)
  assert conv.resolve_impl('auto') == 'fast_wgrad'
  assert conv.compiler_options('auto') == {}
  assert conv.conv_general_dilated_for('auto') is conv.conv_general_dilated


def test_auto_on_accelerator_is_xla(monkeypatch):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert conv.resolve_impl('auto') == 'xla'
  assert conv.compiler_options('auto') == {}
  assert conv.compiler_options('eigen') == {}


def _conv_grad_program(options):
  """Compiled (dx, dW) of a 3x3 conv with `options`: its HLO text and its function."""
  # 32 channels: XLA leaves smaller convolutions out of YNNPACK even by default.
  x, w, dy = _random_case(0, 2, (16, 16), 32, 32, (3, 3), 'SAME')
  def loss(x, w, dy):  # dy an argument: XLA keeps a conv on a constant out of YNNPACK.
    y = lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                 dimension_numbers=FLAX_DNUMS)
    return jnp.vdot(y, dy)
  fn = jax.jit(jax.grad(loss, argnums=(0, 1)), compiler_options=options)
  return fn.lower(x, w, dy).compile().as_text(), fn(x, w, dy)


def _convolutions_in_ynn_fusions(hlo_text):
  """Convolutions that XLA put inside YNNPACK fusions (their computations' names)."""
  ynn_computations = set(
      re.findall(r'calls=%?([\w.\-]+), [^\n]*"kind":"__ynn_fusion"', hlo_text))
  bodies = re.split(r'\n(?=%|ENTRY)', hlo_text)
  return [b.split(' ', 1)[0].lstrip('%') for b in bodies
          if b.split(' ', 1)[0].lstrip('%') in ynn_computations and 'convolution(' in b]


def test_eigen_option_moves_convolutions_out_of_ynnpack_same_gradients(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  options = conv.compiler_options('eigen')
  assert options, 'eigen on CPU must set a compile option'
  default_hlo, (dx_ref, dw_ref) = _conv_grad_program({})
  eigen_hlo, (dx, dw) = _conv_grad_program(options)
  # jaxlib 0.10.2 puts both convolutions (dx and dW) into YNNPACK by default; the option
  # leaves them to XLA's own (Eigen) kernels.
  assert len(_convolutions_in_ynn_fusions(default_hlo)) == 2, default_hlo
  assert not _convolutions_in_ynn_fusions(eigen_hlo), eigen_hlo
  assert eigen_hlo.count('convolution(') >= 2
  _assert_close(dx, dx_ref, 1e-5)
  _assert_close(dw, dw_ref, 1e-5)


def test_users_xla_flags_win(monkeypatch):
  monkeypatch.setenv(
      'XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=-individual_dot')
  assert conv.compiler_options('eigen') == {}
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_enable_fast_math=false')
  assert conv.compiler_options('eigen')
  assert conv.compiler_options('xla') == {}
  assert conv.compiler_options('fast_wgrad') == {}


def test_auto_method_choice():
  choose = conv._choose_wgrad_method  # pylint: disable=protected-access
  assert choose('auto', 9, 3, 81920) == 'im2col'             # RGB input
  assert choose('auto', 16, 512, 5) == 'im2col'              # 4x4 on 4x4
  assert choose('auto', 9, 128, 81920) == 'shifted_matmuls'
  assert choose('auto', 1, 3, 81920) == 'shifted_matmuls'    # 1x1: one matmul
  assert choose('im2col', 9, 128, 81920) == 'im2col'


@pytest.mark.parametrize('size, matmul_wgrad', [(32, True), (64, True), (16, False), (8, False)])
def test_auto_fallback_uses_the_matmul_weight_gradient_on_large_maps_only(
    size, matmul_wgrad, monkeypatch):
  from talkface_jax.models import layers  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(conv, '_eigen_option_supported', lambda: False)
  conv_fn = layers.conv_function('auto')
  x, w = jnp.zeros((2, size, size, 4)), jnp.zeros((3, 3, 4, 8))
  jaxpr = str(jax.make_jaxpr(
      lambda x, w: conv_fn(x, w, (1, 1), 'SAME', dimension_numbers=FLAX_DNUMS))(x, w))
  assert ('custom_vjp_call' in jaxpr) == matmul_wgrad, jaxpr
  assert layers.conv_function('xla') is lax.conv_general_dilated


@pytest.mark.parametrize("shape,c_in,c_out", [((4, 4), 3, 5), ((8, 6), 16, 8), ((1, 1), 4, 4)])
def test_upsample_conv_is_upsample_then_conv(shape, c_in, c_out):
  """The decoder's fused x2-upsample + 3x3 conv: same values and gradients as the two ops."""
  from talkface_jax.models import layers  # pylint: disable=g-import-not-at-top
  x = _normal(0, (2, *shape, c_in))
  w = _normal(1, (3, 3, c_in, c_out))
  dy = _normal(2, (2, 2 * shape[0], 2 * shape[1], c_out))

  def two_ops(x, w, strides, padding, dimension_numbers):
    return lax.conv_general_dilated(layers.upsample2x(x), w, strides, padding,
                                    dimension_numbers=dimension_numbers)

  def fused(x, w, strides, padding, dimension_numbers):
    del strides, padding, dimension_numbers
    return layers.upsample_conv3x3(x, w)

  dnums = ("NHWC", "HWIO", "NHWC")
  want = two_ops(x, w, (1, 1), "SAME", dnums)
  got = fused(x, w, None, None, None)
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(got, want, atol=2e-6 * scale, rtol=0)
  for g, r in zip(_grads(fused, x, w, dy, (1, 1), "SAME", dnums),
                  _grads(two_ops, x, w, dy, (1, 1), "SAME", dnums)):
    np.testing.assert_allclose(g, r, atol=2e-6 * float(jnp.max(jnp.abs(r))), rtol=0)


def test_upsample_conv_phases_split_equal_slices_bitwise():
  """The four phases are taken with a split (whose gradient is one concatenation) rather than
  four slices of a [..., 4, Cout] view (four zero-padded copies summed): the same numbers, to
  the bit, forward, reverse and forward mode."""
  from talkface_jax.models import layers  # pylint: disable=g-import-not-at-top
  x = _normal(4, (3, 5, 6, 4))
  w = _normal(5, (3, 3, 4, 7))
  dy = _normal(6, (3, 10, 12, 7))

  def sliced(x, w, strides, padding, dimension_numbers):
    del strides, padding, dimension_numbers
    n, h, wd, _ = x.shape
    phases = [c for r in layers._phase_taps(w, 0) for c in layers._phase_taps(r, 1)]  # pylint: disable=protected-access
    y = lax.conv_general_dilated(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))),
                                 jnp.concatenate(phases, axis=-1), (1, 1), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y.reshape(n, h + 1, wd + 1, 4, w.shape[-1])
    rows = [jnp.stack([y[:, a:a + h, b:b + wd, 2 * a + b] for b in (0, 1)], axis=3)
            for a in (0, 1)]
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * wd, w.shape[-1])

  def split(x, w, strides, padding, dimension_numbers):
    del strides, padding, dimension_numbers
    return layers.upsample_conv3x3(x, w)

  args = (None, None, None)
  np.testing.assert_array_equal(jax.jit(split, static_argnums=(2, 3, 4))(x, w, *args),
                                jax.jit(sliced, static_argnums=(2, 3, 4))(x, w, *args))
  for g, r in zip(_grads(split, x, w, dy, *args), _grads(sliced, x, w, dy, *args)):
    np.testing.assert_array_equal(g, r)
  tangents = (_normal(7, x.shape), _normal(8, w.shape))
  np.testing.assert_array_equal(
      jax.jvp(lambda x, w: split(x, w, *args), (x, w), tangents)[1],
      jax.jvp(lambda x, w: sliced(x, w, *args), (x, w), tangents)[1])


def test_upsample_conv_module_has_nn_conv_parameters_and_fewer_flops():
  """UpsampleConv's kernel is nn.Conv's (name, shape, init), so it replaces nn.Conv after
  upsample2x in old checkpoints; it multiplies 4/9 as often (XLA's cost analysis)."""
  from talkface_jax.models import layers  # pylint: disable=g-import-not-at-top
  x = _normal(3, (2, 16, 16, 32))
  fused = layers.UpsampleConv(32)
  plain = nn.Conv(32, (3, 3), padding="SAME", use_bias=False, kernel_init=layers.conv_init)
  params = fused.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, plain.init(jax.random.key(0), layers.upsample2x(x)))
  np.testing.assert_array_equal(params["params"]["kernel"], plain.init(
      jax.random.key(0), layers.upsample2x(x))["params"]["kernel"])
  np.testing.assert_allclose(fused.apply(params, x),
                             plain.apply(params, layers.upsample2x(x)), atol=1e-5, rtol=0)

  def flops(fn):
    return jax.jit(fn).lower(params, x).compile().cost_analysis()["flops"]

  ratio = flops(fused.apply) / flops(lambda p, x: plain.apply(p, layers.upsample2x(x)))
  assert 4 / 9 * 0.95 < ratio < 4 / 9 * (17 / 16) ** 2 * 1.05, ratio


@pytest.mark.parametrize("shape,window", [((3, 8, 8, 5), 2), ((2, 6, 4, 3), 2),
                                          ((2, 9, 6, 4), (3, 2))])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_block_max_pool_equals_nn_max_pool_ties_included(shape, window, dtype):
  """The encoder's tiling pool: nn.max_pool's values, gradient and JVP to the bit, with many
  ties (values on a coarse grid), where the gradient must go to each block's first maximum."""
  from talkface_jax.models import layers  # pylint: disable=g-import-not-at-top
  x = (jnp.round(_normal(0, shape) * 2) / 2).astype(dtype)
  win = (window, window) if isinstance(window, int) else window
  pooled_shape = (shape[0], shape[1] // win[0], shape[2] // win[1], shape[3])
  dy = _normal(1, pooled_shape).astype(dtype)

  def ref(x):
    return jnp.vdot(nn.max_pool(x, win, strides=win, padding="VALID"), dy)

  def ours(x):
    return jnp.vdot(layers.max_pool(x, window, window), dy)

  jaxpr = str(jax.make_jaxpr(ours)(x))
  assert "custom_jvp_call" in jaxpr and "reduce_window" not in jaxpr, jaxpr
  np.testing.assert_array_equal(layers.max_pool(x, window, window),
                                nn.max_pool(x, win, strides=win, padding="VALID"))
  for transform in (lambda f: f, jax.jit):
    want, got = transform(jax.grad(ref))(x), transform(jax.grad(ours))(x)
    np.testing.assert_array_equal(got, want)
  tangent = _normal(3, shape).astype(dtype)  # Forward mode too.
  np.testing.assert_array_equal(jax.jvp(ours, (x,), (tangent,))[1],
                                jax.jvp(ref, (x,), (tangent,))[1])
  # Ties exist, and a tied block's gradient sits on one element only.
  blocks = np.asarray(x, np.float32).reshape(shape[0], pooled_shape[1], win[0],
                                             pooled_shape[2], win[1], shape[3])
  maxima = blocks.max(axis=(2, 4), keepdims=True)
  assert ((blocks == maxima).sum(axis=(2, 4)) > 1).any()
  nonzero = (np.asarray(got, np.float32).reshape(blocks.shape) != 0).sum(axis=(2, 4))
  assert nonzero.max() == 1


def test_overlapping_or_untiled_pools_are_nn_max_pool():
  """Pools that do not tile the map (the audio encoder's 3x3 / (1, 2)) keep nn.max_pool."""
  from talkface_jax.models import layers  # pylint: disable=g-import-not-at-top
  for shape, window, stride in [((2, 12, 20, 4), 3, (1, 2)), ((2, 7, 8, 4), 2, 2)]:
    x = _normal(2, shape)
    assert "reduce_window" in str(jax.make_jaxpr(
        lambda x: layers.max_pool(x, window, stride))(x))
    strides = (stride, stride) if isinstance(stride, int) else stride
    np.testing.assert_array_equal(layers.max_pool(x, window, stride),
                                  nn.max_pool(x, (window, window), strides=strides,
                                              padding="VALID"))
