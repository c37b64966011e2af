"""A convolution whose weight gradient is computed with matmuls.

XLA on CPU lowers the weight gradient of a convolution to a convolution whose
window is the whole output map (`b01f_01io->b01f`, window = H x W) and whose
contraction depth per window tap is only the batch size. That runs several
times slower than the forward pass or the input gradient. The weight gradient
of a stride-1, undilated convolution is, however, a sum of plain matmuls:

  dW[k] = sum_{n, p} x_pad[n, p + k, :]^T dy[n, p, :]      (one per tap k)

with a contraction over all N * H_out * W_out positions, which the CPU matmul
kernels run close to their peak. This module wraps `jax.lax.conv_general_dilated`
in a `jax.custom_vjp` whose forward pass and input gradient are XLA's own, and
whose weight gradient uses that formulation. Cases it does not cover (strides,
dilation, groups, integer dtypes) go straight to `lax.conv_general_dilated`,
with XLA's gradient.

Use it through `conv_general_dilated_for(impl)`, which returns a callable for
`flax.linen.Conv(conv_general_dilated=...)`.

Which CPU library runs the convolutions is a compile option, not an op: on
jaxlib 0.10 XLA:CPU hands convolutions to YNNPACK by default (the
`individual_convolution` entry of `--xla_cpu_experimental_ynn_fusion_type`),
whose weight gradient -- a convolution whose window is the whole map -- runs at
a tenth of its forward rate on maps of 32x32 and larger; XLA's own (Eigen)
convolution runs the same weight gradient near the matmul rate. impl='eigen'
keeps `lax.conv_general_dilated` and XLA's gradients, and `compiler_options`
gives the `jax.jit` option that compiles them to Eigen; 'auto' picks 'eigen' on
CPU when the installed jaxlib knows the option.

Limitation: a `custom_vjp` function supports reverse mode only (`jax.grad`,
`jax.vjp`, and reverse-over-reverse); `jax.jvp` / `jax.jacfwd` through the fast
path raise. Use impl='xla' where forward mode is needed.
"""

import functools
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('xla', 'fast_wgrad', 'eigen', 'auto')
WGRAD_METHODS = ('auto', 'shifted_matmuls', 'im2col')

# im2col concatenates all kernel taps of the input into one [M, K * C_in]
# operand and does a single matmul. It wins when the per-tap matmuls would be
# thin (few input channels, e.g. RGB) or tiny (a 4x4 VALID conv on a 4x4 map
# is 16 matmuls over N rows), but it writes K copies of the input at once,
# which measured slower than per-tap matmuls for the wide layers.
_IM2COL_MAX_TAP_FEATURES = 256
_IM2COL_MAX_PATCH_ELEMENTS = 1 << 20


class _ConvConfig(NamedTuple):
  """Static (hashable) description of a stride-1 undilated convolution."""
  padding: tuple[tuple[int, int], ...]
  dimension_numbers: lax.ConvDimensionNumbers
  precision: Any
  preferred_element_type: Any
  wgrad_method: str


def _is_trivial(values: Sequence[int] | None) -> bool:
  return values is None or all(v == 1 for v in values)


def _freeze_precision(precision):
  """Makes a precision argument hashable (lists become tuples)."""
  if isinstance(precision, list):
    return tuple(precision)
  return precision


def _xla_conv(lhs, rhs, config: _ConvConfig):
  """XLA's own stride-1 convolution, used for the forward pass and dx."""
  ndim_spatial = lhs.ndim - 2
  return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides=(1,) * ndim_spatial,
      padding=config.padding,
      dimension_numbers=config.dimension_numbers,
      precision=config.precision,
      preferred_element_type=config.preferred_element_type,
  )


def _choose_wgrad_method(
    method: str, num_taps: int, in_features: int, num_positions: int
) -> str:
  if method != 'auto':
    return method
  tap_features = in_features * num_taps
  if num_taps > 1 and (
      tap_features <= _IM2COL_MAX_TAP_FEATURES
      or tap_features * num_positions <= _IM2COL_MAX_PATCH_ELEMENTS):
    return 'im2col'
  return 'shifted_matmuls'


def weight_grad(
    lhs: jax.Array,
    out_grad: jax.Array,
    kernel_shape: Sequence[int],
    kernel_dtype: Any,
    padding: Sequence[tuple[int, int]],
    dimension_numbers: lax.ConvDimensionNumbers,
    precision: Any = None,
    method: str = 'auto',
) -> jax.Array:
  """Weight gradient of a stride-1, undilated, ungrouped convolution.

  Args:
    lhs: the convolution's input, e.g. [N, H, W, C_in] (any layout described
      by `dimension_numbers`).
    out_grad: cotangent of the output, e.g. [N, H_out, W_out, C_out].
    kernel_shape: shape of the kernel, e.g. [KH, KW, C_in, C_out].
    kernel_dtype: dtype of the returned gradient.
    padding: explicit (low, high) padding per spatial dimension.
    dimension_numbers: canonical `lax.ConvDimensionNumbers`.
    precision: passed to the matmuls.
    method: 'shifted_matmuls' (one matmul per kernel tap), 'im2col' (one
      matmul over all taps) or 'auto'.

  Returns:
    The kernel gradient, shape `kernel_shape`, dtype `kernel_dtype`.
  """
  lhs_spec, rhs_spec, out_spec = dimension_numbers
  ndim_spatial = len(lhs_spec) - 2
  # Channels-last working layout [N, spatial..., C]: a flat [M, C] view of it
  # is free, and the transposes are identities for NHWC/HWIO (flax's layout).
  x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
  dy = jnp.transpose(out_grad, (out_spec[0], *out_spec[2:], out_spec[1]))
  taps = tuple(kernel_shape[d] for d in rhs_spec[2:])
  in_features, out_features = x.shape[-1], dy.shape[-1]
  out_spatial = dy.shape[1:-1]

  # bf16/f16 products are summed in f32 over N * H * W terms, then rounded
  # once; a mixed pair (bf16 input, f32 cotangent) is computed in the wider.
  compute_dtype = jnp.result_type(x.dtype, dy.dtype)
  accumulate_dtype = (
      jnp.float32 if jnp.finfo(compute_dtype).bits < 32 else None)
  x = x.astype(compute_dtype)
  dy = dy.astype(compute_dtype)

  # lax.pad takes negative padding (cropping) as lax.conv does.
  zero = jnp.zeros((), compute_dtype)
  x = lax.pad(x, zero, [(0, 0, 0), *[(lo, hi, 0) for lo, hi in padding],
                        (0, 0, 0)])
  dy_flat = dy.reshape(-1, out_features)
  num_positions = dy_flat.shape[0]
  offsets = list(itertools.product(*[range(k) for k in taps]))

  def shifted(offset):
    window = lax.slice(
        x,
        (0, *offset, 0),
        (x.shape[0], *[o + s for o, s in zip(offset, out_spatial)],
         in_features),
    )
    return window.reshape(num_positions, in_features)

  contract_rows = (((0,), (0,)), ((), ()))
  matmul = functools.partial(
      lax.dot_general,
      dimension_numbers=contract_rows,
      precision=precision,
      preferred_element_type=accumulate_dtype,
  )
  method = _choose_wgrad_method(method, len(offsets), in_features,
                                num_positions)
  if method == 'im2col':
    patches = jnp.concatenate([shifted(o) for o in offsets], axis=1)
    grad = matmul(patches, dy_flat)  # [K * C_in, C_out]
  elif method == 'shifted_matmuls':
    grad = jnp.stack([matmul(shifted(o), dy_flat) for o in offsets])
  else:
    raise ValueError(f'Unknown weight-gradient method {method!r}; '
                     f'expected one of {WGRAD_METHODS}.')
  grad = grad.reshape(*taps, in_features, out_features)

  # From [spatial..., I, O] to the kernel's own layout.
  perm = [0] * (ndim_spatial + 2)
  perm[rhs_spec[0]] = ndim_spatial + 1
  perm[rhs_spec[1]] = ndim_spatial
  for d in range(ndim_spatial):
    perm[rhs_spec[2 + d]] = d
  return jnp.transpose(grad, perm).astype(kernel_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fast_wgrad_conv(config: _ConvConfig, lhs, rhs):
  return _xla_conv(lhs, rhs, config)


def _fast_wgrad_conv_fwd(config, lhs, rhs):
  return _xla_conv(lhs, rhs, config), (lhs, rhs)


def _fast_wgrad_conv_bwd(config, residuals, out_grad):
  lhs, rhs = residuals
  # The input gradient is XLA's own transposed convolution, which is as fast
  # as the forward pass.
  _, lhs_vjp = jax.vjp(lambda l: _xla_conv(l, rhs, config), lhs)
  (lhs_grad,) = lhs_vjp(out_grad)
  rhs_grad = weight_grad(
      lhs, out_grad, rhs.shape, rhs.dtype, config.padding,
      config.dimension_numbers, config.precision, config.wgrad_method)
  return lhs_grad, rhs_grad


_fast_wgrad_conv.defvjp(_fast_wgrad_conv_fwd, _fast_wgrad_conv_bwd)


def fast_wgrad_supported(
    lhs,
    rhs,
    window_strides: Sequence[int],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
) -> bool:
  """Whether `conv_general_dilated` takes the matmul weight-gradient path."""
  return (
      _is_trivial(window_strides)
      and _is_trivial(lhs_dilation)
      and _is_trivial(rhs_dilation)
      and feature_group_count == 1
      and batch_group_count == 1
      and jnp.issubdtype(jnp.result_type(lhs), jnp.floating)
      and jnp.issubdtype(jnp.result_type(rhs), jnp.floating)
  )


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    *,
    wgrad_method: str = 'auto',
) -> jax.Array:
  """Drop-in for `lax.conv_general_dilated` with a matmul weight gradient.

  Same arguments and result as `jax.lax.conv_general_dilated` (e.g. lhs
  [N, H, W, C_in], rhs [KH, KW, C_in, C_out] under flax's dimension numbers,
  result [N, H_out, W_out, C_out]). Stride-1, undilated, ungrouped float
  convolutions get the custom weight gradient; everything else is passed to
  `lax.conv_general_dilated` unchanged.

  Args:
    lhs: input.
    rhs: kernel.
    window_strides: strides per spatial dimension.
    padding: 'SAME', 'VALID', 'SAME_LOWER' or explicit (low, high) pairs.
    lhs_dilation: input dilation (transposed convolutions).
    rhs_dilation: kernel dilation.
    dimension_numbers: as for `lax.conv_general_dilated`.
    feature_group_count: feature groups.
    batch_group_count: batch groups.
    precision: matmul/conv precision.
    preferred_element_type: accumulation/result dtype of the forward pass.
    wgrad_method: see `weight_grad`.

  Returns:
    The convolution output.
  """
  if not fast_wgrad_supported(lhs, rhs, window_strides, lhs_dilation,
                              rhs_dilation, feature_group_count,
                              batch_group_count):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
  dnums = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  ndim_spatial = lhs.ndim - 2
  if isinstance(padding, str):
    in_spatial = [lhs.shape[d] for d in dnums.lhs_spec[2:]]
    kernel_spatial = [rhs.shape[d] for d in dnums.rhs_spec[2:]]
    padding = lax.padtype_to_pads(in_spatial, kernel_spatial,
                                  (1,) * ndim_spatial, padding)
  config = _ConvConfig(
      padding=tuple((int(lo), int(hi)) for lo, hi in padding),
      dimension_numbers=dnums,
      precision=_freeze_precision(precision),
      preferred_element_type=preferred_element_type,
      wgrad_method=wgrad_method,
  )
  return _fast_wgrad_conv(config, lhs, rhs)


# XLA:CPU's list of operations it hands to YNNPACK (jaxlib 0.10.2 default: dots, reductions and
# convolutions) without the convolutions. The list is given whole because `jax.jit`'s
# compiler_options take no "-entry" edits of the default, as XLA_FLAGS do.
_YNN_FUSION_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
_YNN_FUSIONS_WITHOUT_CONVOLUTION = (
    'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE')


@functools.cache
def _eigen_option_supported() -> bool:
  """Whether this jaxlib's XLA:CPU accepts the option (a tiny compile, once per process)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={
        _YNN_FUSION_OPTION: _YNN_FUSIONS_WITHOUT_CONVOLUTION}).lower(
            jnp.zeros((), jnp.float32)).compile()
  except Exception:  # pylint: disable=broad-except
    # An unknown option or value is an INVALID_ARGUMENT JaxRuntimeError; any failure means the
    # option cannot be used, and 'auto' falls back to the matmul weight gradient.
    return False
  return True


def resolve_impl(impl: str) -> str:
  """Maps 'auto' to the implementation used on this backend.

  On CPU: 'eigen' where the jaxlib accepts its compile option (XLA's convolutions compiled to
  Eigen instead of YNNPACK; measured 1.5x the whole 128x128 train step, BENCHMARKS.md), else
  'fast_wgrad'. Elsewhere 'xla': GPU/TPU convolution gradients are already fast.
  """
  if impl not in IMPLS:
    raise ValueError(f'Unknown conv impl {impl!r}; expected one of {IMPLS}.')
  if impl == 'auto':
    if jax.default_backend() != 'cpu':
      return 'xla'
    return 'eigen' if _eigen_option_supported() else 'fast_wgrad'
  return impl


def compiler_options(impl: str) -> dict[str, str]:
  """The `jax.jit(compiler_options=...)` that a program built with conv `impl` needs.

  {} except for 'eigen' on CPU: there, the option that keeps XLA:CPU's convolutions out of
  YNNPACK (module docstring). A user's own `--xla_cpu_experimental_ynn_fusion_type` in
  XLA_FLAGS wins: then {} as well, so the flag they set is the one that applies.

  Args:
    impl: one of `IMPLS`.

  Returns:
    Option name -> value, to pass to `jax.jit`.
  """
  if (resolve_impl(impl) != 'eigen' or jax.default_backend() != 'cpu'
      or _YNN_FUSION_OPTION in os.environ.get('XLA_FLAGS', '')):
    return {}
  return {_YNN_FUSION_OPTION: _YNN_FUSIONS_WITHOUT_CONVOLUTION}


def conv_general_dilated_for(impl: str) -> Callable[..., jax.Array]:
  """Returns the convolution to pass to `nn.Conv(conv_general_dilated=...)`.

  Args:
    impl: 'xla' (plain `lax.conv_general_dilated`), 'fast_wgrad' (matmul
      weight gradient), 'eigen' (plain `lax.conv_general_dilated`; the program
      is compiled with `compiler_options('eigen')`) or 'auto' (`resolve_impl`).

  Returns:
    A function with the signature of `lax.conv_general_dilated`.
  """
  if resolve_impl(impl) == 'fast_wgrad':
    return conv_general_dilated
  return lax.conv_general_dilated
