"""Image encoder ``Enc_f`` and skip-connected image decoder (SVG-LP's VGG networks).

Encoder at 128x128 (release widths): one conv3x3+BN+LeakyReLU stage per scale (64@128,
128@64, 256@32, 512@16, 512@8) with 2x2 max-pooling between stages, then a 4x4 VALID conv of
the 4x4 map to ``g_dim``, BN, tanh. The 64x64 variant has one stage fewer.

Decoder: a 4x4 transposed conv from ``g_dim`` to the coarsest width, then per scale (coarse to
fine): upsample x2, concat the identity frame's skip of that scale, conv to the scale's width
and conv to the next finer width; a final 3x3 conv to RGB and a sigmoid (``output='direct'``,
the paper's). ``output='residual'`` (beyond the paper) adds the final conv to the identity
frame's logits before the sigmoid, with that conv initialised to zero: the untrained decoder
outputs the identity frame exactly, and training learns only what changes (mouth, eyes, head).
Measured on the many-identity corpus (BENCHMARKS.md, "generalization"): the direct decoder
spends thousands of steps learning to redraw 24 faces through the skips and leaves z unused.

The decoder's concat-conv is computed as ``conv(x) + conv(skip)``, which is the same linear map
(a conv over a channel concatenation is the sum of convs over the parts). Skips come from the
first frame only, so ``conv(skip)`` is computed once per sequence and broadcast over its frames
instead of once per frame; this removes ~40% of the decoder's FLOPs and its skip copies.
The x part's upsampling and conv are one op (``layers.UpsampleConv``): a 3x3 conv of a x2
nearest-upsampled map is four 2x2 convs of the small map (one per output pixel parity), the
same map with 4/9 of the multiplies and no upsampled copy; at 128x128 this takes the train
step from 30.2 to 23.0 GFLOP per predicted frame (BENCHMARKS.md, issue 12).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from talkface_jax.models import layers


class ImageEncoder(nn.Module):
  """Frame encoder ``Enc_f``.

  Attributes:
    widths: channels per scale, finest first; ``len(widths) = log2(resolution) - 2``.
    g_dim: output code size.
  """
  widths: Sequence[int]
  g_dim: int
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> tuple[jax.Array, list[jax.Array]]:
    """Encodes frames.

    Args:
      images: [N, H, W, 3] in [0, 1].
      train: BatchNorm uses batch statistics (and updates its running averages).

    Returns:
      codes [N, g_dim] in (-1, 1) and the per-scale feature maps (skips), finest first, each
      [N, H / 2^i, W / 2^i, widths[i]].
    """
    block = functools.partial(layers.ConvNormAct, bn_momentum=self.bn_momentum,
                              dtype=self.dtype, conv_impl=self.conv_impl)
    x = images.astype(self.dtype)
    skips = []
    for i, width in enumerate(self.widths):
      if i:
        x = layers.max_pool(x, 2, 2)
      x = block(width)(x, train)
      skips.append(x)
    x = layers.max_pool(x, 2, 2)
    if x.shape[-3:-1] != (4, 4):
      raise ValueError(f"encoder expects the last stage at 8x8, got {x.shape[-3:-1]}x2: "
                       f"{len(self.widths)} widths do not fit {images.shape[-3]}x{images.shape[-2]}")
    x = block(self.g_dim, kernel_size=4, padding="VALID", activation=jnp.tanh)(x, train)
    return x.reshape(x.shape[0], self.g_dim), skips


class ImageDecoder(nn.Module):
  """Decoder from frame codes plus the identity frame's skips to RGB frames in [0, 1]."""
  widths: Sequence[int]
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  conv_impl: str = "xla"
  output: str = "direct"  # 'direct' (paper) or 'residual' (on the identity frame's logits).

  def setup(self):
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding="SAME", use_bias=False,
                             kernel_init=layers.conv_init, dtype=self.dtype,
                             conv_general_dilated=layers.conv_function(self.conv_impl))
    block = functools.partial(layers.ConvNormAct, bn_momentum=self.bn_momentum,
                              dtype=self.dtype, conv_impl=self.conv_impl)
    self.project = nn.ConvTranspose(self.widths[-1], (4, 4), padding="VALID", use_bias=False,
                                    kernel_init=layers.conv_init, dtype=self.dtype)
    self.project_norm = layers.batch_norm(None, self.bn_momentum, self.dtype)
    n = len(self.widths)
    # Per scale i: the concat conv split into its x part and its skip part, then BN+LReLU, and
    # (except at the finest scale) a second stage down to the next finer width.
    self.up_convs = [layers.UpsampleConv(self.widths[i], self.dtype, self.conv_impl,
                                         name=f"up_conv_{i}") for i in range(n)]
    self.skip_convs = [conv(self.widths[i], name=f"skip_conv_{i}") for i in range(n)]
    self.merge_norms = [layers.batch_norm(None, self.bn_momentum, self.dtype, name=f"merge_bn_{i}")
                        for i in range(n)]
    self.refine = [block(self.widths[i - 1], name=f"refine_{i}") for i in range(1, n)]
    if self.output not in ("direct", "residual"):
      raise ValueError(f"decoder output={self.output!r}: use direct or residual")
    residual = self.output == "residual"
    zeros = nn.initializers.zeros
    self.to_rgb = nn.Conv(3, (3, 3), padding="SAME",
                          kernel_init=zeros if residual else layers.conv_init,
                          dtype=self.dtype,
                          conv_general_dilated=layers.conv_function(self.conv_impl))

  def identity_context(self, skips: Sequence[jax.Array],
                       frame0: jax.Array | None = None) -> list[jax.Array]:
    """Skip contributions of the identity frame, computed once per sequence.

    Args:
      skips: the encoder's feature maps of the identity frames, finest first, [B, h, w, c].
      frame0: the identity frames [B, H, W, 3] in [0, 1]; needed by ``output='residual'``.

    Returns:
      Per scale, the skip half of the decoder's concat conv, [B, h, w, widths[i]]; with
      ``output='residual'`` followed by the identity frames' logits [B, H, W, 3] (float32).
    """
    context = [self.skip_convs[i](s.astype(self.dtype)) for i, s in enumerate(skips)]
    if self.output == "residual":
      if frame0 is None:
        raise ValueError("output='residual' needs the identity frames")
      # Clipped so that saturated pixels (0 or 255) keep finite logits (+-6.9).
      p = jnp.clip(frame0.astype(jnp.float32), 1e-3, 1.0 - 1e-3)
      context.append(jnp.log(p) - jnp.log1p(-p))
    return context

  def __call__(self, codes: jax.Array, context: Sequence[jax.Array], train: bool) -> jax.Array:
    """Decodes frame codes.

    Args:
      codes: [B, M, g_dim], M frames per identity (time steps, or samples).
      context: ``identity_context`` of the B identity frames.
      train: BatchNorm mode (statistics over all B * M frames).

    Returns:
      frames [B, M, H, W, 3] in [0, 1].
    """
    b, m = codes.shape[:2]
    bn = lambda layer, x: _bn(layer, x, train)
    x = codes.reshape(b * m, 1, 1, codes.shape[-1]).astype(self.dtype)
    x = nn.leaky_relu(bn(self.project_norm, self.project(x)), 0.2)
    for i in reversed(range(len(self.widths))):
      x = self.up_convs[i](x)  # Upsampled x2 and convolved in one (same map, fewer FLOPs).
      x = x.reshape(b, m, *x.shape[1:]) + context[i][:, None]
      x = x.reshape(b * m, *x.shape[2:])
      x = nn.leaky_relu(bn(self.merge_norms[i], x), 0.2)
      if i:
        x = self.refine[i - 1](x, train)
    x = self.to_rgb(x).astype(jnp.promote_types(self.dtype, jnp.float32))
    x = x.reshape(b, m, *x.shape[1:])
    if self.output == "residual":
      x = x + context[-1][:, None].astype(x.dtype)
    return nn.sigmoid(x)


def _bn(layer: nn.BatchNorm, x: jax.Array, train: bool) -> jax.Array:
  return layer(x, use_running_average=not train)
