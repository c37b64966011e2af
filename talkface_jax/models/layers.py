"""Building blocks shared by the image and audio networks: conv + BatchNorm + activation.

Pooling, upsampling and convolutions whose kernel covers the whole input are written with
reshapes, slices and matmuls rather than ``reduce_window``/``repeat``/convolution: the same
values, but on XLA CPU the gradient of ``reduce_window`` max (select_and_scatter) and a
convolution of a 4x4 map by a 4x4 kernel run far slower than their formulations here
(``benchmarks/profile_step.py --parts=ops``).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# The release initialises conv and linear weights from N(0, 0.02) and BatchNorm scales from
# N(1, 0.02) (DCGAN/SVG habit).
conv_init = nn.initializers.normal(stddev=0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def conv_function(impl: str) -> Callable[..., jax.Array]:
  """The ``lax.conv_general_dilated`` replacement that ``nn.Conv`` should call for ``impl``."""
  if impl == "xla":
    conv = jax.lax.conv_general_dilated
  else:
    from talkface_jax.ops import conv as conv_ops  # pylint: disable=g-import-not-at-top
    conv = conv_ops.conv_general_dilated_for(impl)
    if impl == "auto" and conv is not jax.lax.conv_general_dilated:
      conv = functools.partial(_matmul_wgrad_on_large_maps, conv)
  return functools.partial(_conv_or_matmul, conv)


# On XLA CPU the native weight gradient of a 3x3 conv runs at ~10 GFLOP/s on maps of 32x32
# and larger (a tenth of its forward pass) and the matmul one of ops/conv.py 3-4x faster,
# while on 16x16 and 8x8 maps the native one is the faster (benchmarks/conv_grad.py).
_MATMUL_WGRAD_MIN_POSITIONS = 32 * 32


def _matmul_wgrad_on_large_maps(matmul_wgrad_conv, lhs, rhs, *args, **kwargs):
  """'auto' on CPU: the matmul weight gradient on large maps only, XLA's elsewhere."""
  if lhs.ndim == 4 and lhs.shape[1] * lhs.shape[2] >= _MATMUL_WGRAD_MIN_POSITIONS:
    return matmul_wgrad_conv(lhs, rhs, *args, **kwargs)
  return jax.lax.conv_general_dilated(lhs, rhs, *args, **kwargs)


_NHWC_HWIO = jax.lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                          out_spec=(0, 3, 1, 2))


def _conv_or_matmul(conv, lhs, rhs, window_strides, padding, lhs_dilation=None,
                    rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                    **kwargs) -> jax.Array:
  """``conv``, except that a VALID kernel as large as its NHWC input is one matmul.

  Such a conv ([N, k, k, C_in] by [k, k, C_in, C_out] -> [N, 1, 1, C_out], the encoder's
  last layer) is a Dense layer over the flattened map; the kernel keeps its conv shape.
  """
  trivial = lambda v: v is None or all(d == 1 for d in v)
  if (padding == "VALID" and dimension_numbers == _NHWC_HWIO and lhs.ndim == 4
      and lhs.shape[1:3] == rhs.shape[:2] and feature_group_count == 1
      and trivial(lhs_dilation) and trivial(rhs_dilation)):
    n, out_features = lhs.shape[0], rhs.shape[-1]
    y = jnp.dot(lhs.reshape(n, -1), rhs.reshape(-1, out_features),
                precision=kwargs.get("precision"),
                preferred_element_type=kwargs.get("preferred_element_type"))
    return y.reshape(n, 1, 1, out_features)
  return conv(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
              rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
              feature_group_count=feature_group_count, **kwargs)


class ConvNormAct(nn.Module):
  """Conv (no bias) -> BatchNorm -> activation, the release's ``vgg_layer``.

  Attributes:
    features: output channels.
    kernel_size: square kernel size.
    padding: 'SAME' or 'VALID'.
    activation: applied last; None for none.
    use_bias: add a bias to the conv (only useful without the norm).
    norm: apply BatchNorm.
  """
  features: int
  kernel_size: int = 3
  padding: str = "SAME"
  activation: Callable[[jax.Array], jax.Array] | None = functools.partial(
      nn.leaky_relu, negative_slope=0.2)
  norm: bool = True
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, (self.kernel_size, self.kernel_size), padding=self.padding,
                use_bias=not self.norm, kernel_init=conv_init, dtype=self.dtype,
                conv_general_dilated=conv_function(self.conv_impl))(x)
    if self.norm:
      x = batch_norm(train, self.bn_momentum, self.dtype)(x)
    return self.activation(x) if self.activation is not None else x


def batch_norm(train: bool | None, momentum: float, dtype: Any,
               name: str | None = None) -> nn.BatchNorm:
  """BatchNorm with the release's init; statistics kept in float32.

  ``train=None`` defers the mode to call time (``use_running_average=``), for setup()-style
  modules whose mode is only known then.
  """
  return nn.BatchNorm(use_running_average=None if train is None else not train, momentum=momentum, epsilon=1e-5,
                      scale_init=bn_scale_init, dtype=dtype, param_dtype=jnp.float32, name=name)


def max_pool(x: jax.Array, window: int | tuple[int, int], stride: int | tuple[int, int]):
  """VALID max pooling over the two spatial axes of [N, H, W, C].

  The values are ``nn.max_pool``'s. The window is separable (a max over rows of maxes over
  columns), each axis pooled by a reshape when windows do not overlap, else by a maximum of
  strided slices. Where a window's maximum is unique the gradient is ``nn.max_pool``'s too;
  tied maxima share it equally instead of the first one taking all.
  """
  window = (window, window) if isinstance(window, int) else window
  stride = (stride, stride) if isinstance(stride, int) else stride
  x = _max_pool_axis(x, -3, window[0], stride[0])
  return _max_pool_axis(x, -2, window[1], stride[1])


def _max_pool_axis(x: jax.Array, axis: int, window: int, stride: int) -> jax.Array:
  """VALID 1-D max pooling along ``axis`` (negative)."""
  axis %= x.ndim
  out = (x.shape[axis] - window) // stride + 1
  if window == stride:
    x = jax.lax.slice_in_dim(x, 0, out * window, axis=axis)
    x = x.reshape(*x.shape[:axis], out, window, *x.shape[axis + 1:])
    return jnp.max(x, axis=axis + 1)
  taps = [jax.lax.slice_in_dim(x, start, start + stride * (out - 1) + 1, stride, axis=axis)
          for start in range(window)]
  return functools.reduce(jnp.maximum, taps)


def upsample2x(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 upsampling of [..., H, W, C] (the release's nn.UpsamplingNearest2d)."""
  *lead, h, w, c = x.shape
  x = jnp.broadcast_to(x[..., :, None, :, None, :], (*lead, h, 2, w, 2, c))
  return x.reshape(*lead, 2 * h, 2 * w, c)
