"""Building blocks shared by the image and audio networks: conv + BatchNorm + activation."""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from talkface_jax.ops import conv

# The release initialises conv and linear weights from N(0, 0.02) and BatchNorm scales from
# N(1, 0.02) (DCGAN/SVG habit).
conv_init = nn.initializers.normal(stddev=0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def conv_function(impl: str) -> Callable[..., jax.Array]:
  """The ``lax.conv_general_dilated`` replacement that ``nn.Conv`` should call for ``impl``."""
  if impl == "xla":
    return jax.lax.conv_general_dilated
  fast = conv.conv_general_dilated_for(impl)
  if impl == "auto" and fast is not jax.lax.conv_general_dilated:
    return functools.partial(_matmul_wgrad_on_large_maps, fast)
  return fast


# Used only where 'auto' resolves to 'fast_wgrad' (a jaxlib without the compile option of
# 'eigen', ops/conv.py). There XLA CPU's native (YNNPACK) weight gradient of a 3x3 conv is
# slowest on large maps; measured under load, the matmul one of ops/conv.py was 3-4x faster
# on maps of 32x32 and larger and slower on 16x16 and 8x8 (BENCHMARKS.md, "Train step").
_MATMUL_WGRAD_MIN_POSITIONS = 32 * 32


def _matmul_wgrad_on_large_maps(matmul_wgrad_conv, lhs, rhs, *args, **kwargs):
  """'auto' on CPU: the matmul weight gradient on large maps only, XLA's elsewhere."""
  if lhs.ndim == 4 and lhs.shape[1] * lhs.shape[2] >= _MATMUL_WGRAD_MIN_POSITIONS:
    return matmul_wgrad_conv(lhs, rhs, *args, **kwargs)
  return jax.lax.conv_general_dilated(lhs, rhs, *args, **kwargs)


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

  A pool whose window equals its stride and tiles the map (the encoder's 2x2 / 2) is
  ``block_max_pool``: the same values and gradient as ``nn.max_pool``, computed elementwise.
  Others (the audio encoder's overlapping 3x3 pools) are ``nn.max_pool``.
  """
  window = (window, window) if isinstance(window, int) else tuple(window)
  stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
  if (x.ndim == 4 and window == stride and window[0] * window[1] <= 127  # int8 winner.
      and x.shape[1] % window[0] == 0 and x.shape[2] % window[1] == 0):
    return block_max_pool(x, window)
  return nn.max_pool(x, window, strides=stride, padding="VALID")


def _window_positions(x: jax.Array, window: tuple[int, int]) -> list[jax.Array]:
  """The kh * kw strided views of [N, H, W, C] that a tiling pool takes its max over, each
  [N, H / kh, W / kw, C], in the window's row-major order."""
  n, h, w, c = x.shape
  kh, kw = window
  blocks = x.reshape(n, h // kh, kh, w // kw, kw, c)
  return [blocks[:, :, a, :, b, :] for a in range(kh) for b in range(kw)]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def block_max_pool(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """Max over non-overlapping ``window`` blocks of [N, H, W, C] (H, W multiples of it).

  Equal to ``nn.max_pool(x, window, strides=window)``, values and derivatives, ties included:
  the derivative follows the first maximum of each block in row-major order, the choice of the
  select-and-scatter that XLA differentiates ``reduce_window`` max with. Written as a max of
  strided views, with a JVP that takes each block's tangent from the winning view (its index
  kept as int8), both passes are elementwise, in forward and reverse mode alike: on CPU, XLA
  expands the select-and-scatter into a reduce-window over the map with four int32 index maps
  of its size and a scatter, which took 7-11 % of the whole 128 px train step (BENCHMARKS.md,
  issue 12, run 11).
  """
  return functools.reduce(jnp.maximum, _window_positions(x, window))


@block_max_pool.defjvp
def _block_max_pool_jvp(window, primals, tangents):
  (x,), (x_dot,) = primals, tangents
  positions = _window_positions(x, window)
  y = functools.reduce(jnp.maximum, positions)
  last = len(positions) - 1
  winner = jnp.full(y.shape, last, jnp.int8)
  for k in reversed(range(last)):  # The first position holding the max wins.
    winner = jnp.where(positions[k] == y, jnp.int8(k), winner)
  # Linear in x_dot given the winner, so reverse mode is its transpose (selects and pads).
  tangent_positions = _window_positions(x_dot, window)
  y_dot = tangent_positions[last]
  for k in reversed(range(last)):
    y_dot = jnp.where(winner == k, tangent_positions[k], y_dot)
  return y, y_dot


def upsample2x(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 upsampling of [..., H, W, C] (the release's nn.UpsamplingNearest2d)."""
  x = jnp.repeat(x, 2, axis=-3)
  return jnp.repeat(x, 2, axis=-2)


def _phase_taps(kernel: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  """The two low-resolution taps of a 3-tap kernel axis after x2 nearest upsampling.

  Output row 2i (phase 0) sees upsampled rows 2i-1, 2i, 2i+1 = input rows i-1, i, i; output
  row 2i+1 (phase 1) sees input rows i, i, i+1. So phase 0 applies taps (k0, k1 + k2) to
  input rows (i-1, i), phase 1 applies (k0 + k1, k2) to rows (i, i+1).
  """
  k0, k1, k2 = (jnp.take(kernel, j, axis=axis) for j in range(3))
  return (jnp.stack([k0, k1 + k2], axis=axis), jnp.stack([k0 + k1, k2], axis=axis))


def upsample_conv3x3(x: jax.Array, kernel: jax.Array,
                     conv_general_dilated: Callable[..., jax.Array] = jax.lax.conv_general_dilated
                     ) -> jax.Array:
  """``conv3x3_SAME(upsample2x(x), kernel)``, computed at x's resolution.

  The same linear map with 4/9 of the multiplies: each of the four output phases (row and
  column parity) is a 2x2 convolution of x with taps summed from the 3x3 kernel
  (``_phase_taps``), and the four are one 2x2 VALID convolution of x padded by 1 with 4 x Cout
  outputs: phase (a, b) at output (2i + a, 2j + b) is that conv's output (i + a, j + b). No
  upsampled map is built, and the gradient has no x2 reduction either.

  Args:
    x: [N, H, W, Cin].
    kernel: [3, 3, Cin, Cout] (HWIO), the conv's kernel at the upsampled resolution.
    conv_general_dilated: the convolution to use (``conv_function``).

  Returns:
    [N, 2H, 2W, Cout].
  """
  n, h, w, _ = x.shape
  cout = kernel.shape[-1]
  phases = [col for row in _phase_taps(kernel, 0) for col in _phase_taps(row, 1)]
  y = conv_general_dilated(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))),
                           jnp.concatenate(phases, axis=-1), (1, 1), "VALID",
                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
  # Split into the four phases' maps, not sliced from a [..., 4, Cout] view: the gradient of a
  # split is one concatenation (of the phases' padded gradients), where that of four slices
  # is four zero-padded copies of the whole [N, H + 1, W + 1, 4, Cout] map and their sum
  # (7 % of the 128 px train step, 3 % at 64; BENCHMARKS.md, issue 12, run 12). The same
  # numbers to the bit, forward and backward.
  parts = jax.lax.split(y, (cout,) * 4, axis=3)
  rows = [jnp.stack([parts[2 * a + b][:, a:a + h, b:b + w] for b in (0, 1)], axis=3)
          for a in (0, 1)]  # Each [N, H, W, 2 (b), Cout].
  return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, cout)


class UpsampleConv(nn.Module):
  """x2 nearest upsampling then a 3x3 SAME conv without bias (``upsample_conv3x3``).

  Its parameter is the 3x3 conv's ``kernel`` [3, 3, Cin, features], named, shaped and
  initialised as ``nn.Conv``'s, so the module can replace ``nn.Conv`` after ``upsample2x``
  with the same parameters.
  """
  features: int
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", conv_init, (3, 3, x.shape[-1], self.features), jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return upsample_conv3x3(x, kernel, conv_function(self.conv_impl))
