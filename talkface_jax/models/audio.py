"""Audio encoder ``Enc_a`` over one 28x12 MFCC window (time x coefficient) per video frame.

ATVGNet's layout with the release's widths: conv 1->64, 64->128, max-pool 3 stride (1, 2),
conv 128->256, 256->256, max-pool 3 stride 2 (26x5 -> 12x2), flatten (6144), FC 2048, ReLU,
FC 128, ReLU. The release has no nonlinearity between its convs; ``bn_relu`` adds BN + ReLU.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from talkface_jax.models import layers


class AudioEncoder(nn.Module):
  """MFCC window encoder.

  Attributes:
    widths: channels of the four convs.
    hidden: width of the first FC layer.
    features: output size.
    bn_relu: BatchNorm + ReLU after each conv (ATVGNet) instead of none (release).
  """
  widths: Sequence[int] = (64, 128, 256, 256)
  hidden: int = 2048
  features: int = 128
  bn_relu: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, mfcc: jax.Array, train: bool) -> jax.Array:
    """Encodes MFCC windows [N, 28, 12] -> [N, features]."""
    block = functools.partial(
        layers.ConvNormAct, norm=self.bn_relu, activation=nn.relu if self.bn_relu else None,
        bn_momentum=self.bn_momentum, dtype=self.dtype, conv_impl=self.conv_impl)
    x = mfcc[..., None].astype(self.dtype)
    x = block(self.widths[0])(x, train)
    x = block(self.widths[1])(x, train)
    x = layers.max_pool(x, 3, (1, 2))
    x = block(self.widths[2])(x, train)
    x = block(self.widths[3])(x, train)
    x = layers.max_pool(x, 3, 2)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, kernel_init=layers.conv_init, dtype=self.dtype)(x))
    x = nn.relu(nn.Dense(self.features, kernel_init=layers.conv_init, dtype=self.dtype)(x))
    return x
