"""Forward / input-gradient / weight-gradient speed of the model's convolutions.

Compares XLA's own convolution gradient ('xla': XLA's default library, YNNPACK on
jaxlib 0.10 CPU; 'eigen': the same ops compiled with `conv.compiler_options('eigen')`)
with the matmul weight gradient of `talkface_jax.ops.conv` ('fast') on the layer shapes of the
talking-face encoder/decoder at 128x128, and prints GFLOP/s per layer, the
fwd+bwd time of the whole list, and a 2048^3 matmul as the machine's peak.

Timings on a shared machine are noisy: each figure is the median (and the
best) of `--reps` runs, with the implementations interleaved round by round so
that a burst of load hits both alike.

  python -m benchmarks.conv_grad [--batch 5] [--reps 7] [--methods auto]
"""

import argparse
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks import machine
from talkface_jax.ops import conv

# (label, spatial size, C_in, C_out, kernel, padding).
LAYERS = (
    ('enc 3->64 @128', 128, 3, 64, 3, 'SAME'),
    ('dec 128->64 @128', 128, 128, 64, 3, 'SAME'),
    ('enc 64->128 @64', 64, 64, 128, 3, 'SAME'),
    ('dec 256->128 @64', 64, 256, 128, 3, 'SAME'),
    ('enc 128->256 @32', 32, 128, 256, 3, 'SAME'),
    ('dec 512->256 @32', 32, 512, 256, 3, 'SAME'),
    ('enc 256->512 @16', 16, 256, 512, 3, 'SAME'),
    ('dec 1024->512 @16', 16, 1024, 512, 3, 'SAME'),
    ('enc 512->512 @8', 8, 512, 512, 3, 'SAME'),
    ('dec 1024->512 @8', 8, 1024, 512, 3, 'SAME'),
    ('enc 512->128 4x4 VALID @4', 4, 512, 128, 4, 'VALID'),
)
DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def conv_flops(batch, size, c_in, c_out, kernel, padding):
  out = size if padding == 'SAME' else size - kernel + 1
  return 2.0 * batch * out * out * kernel * kernel * c_in * c_out


def time_interleaved(fns: dict[str, Callable], args, reps: int):
  """Returns {name: (median_s, min_s)}, running the fns round-robin."""
  for fn in fns.values():
    jax.block_until_ready(fn(*args))  # compile
  times = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  return {name: (float(np.median(t)), float(np.min(t)))
          for name, t in times.items()}


def conv_fn(impl: str, padding: str, method: str = 'auto'):
  def apply(x, w):
    if impl == 'xla':
      return lax.conv_general_dilated(
          x, w, (1, 1), padding, dimension_numbers=DIMENSION_NUMBERS)
    return conv.conv_general_dilated(
        x, w, (1, 1), padding, dimension_numbers=DIMENSION_NUMBERS,
        wgrad_method=method)
  return apply


def input_grad(apply, options=None):
  return jax.jit(lambda x, w, dy: jax.vjp(lambda x: apply(x, w), x)[1](dy),
                 compiler_options=options)


def weight_grad(apply, options=None):
  return jax.jit(lambda x, w, dy: jax.vjp(lambda w: apply(x, w), w)[1](dy),
                 compiler_options=options)


def make_inputs(key, batch, size, c_in, c_out, kernel, padding, dtype):
  out = size if padding == 'SAME' else size - kernel + 1
  kx, kw, ky = jax.random.split(key, 3)
  return (jax.random.normal(kx, (batch, size, size, c_in), dtype),
          jax.random.normal(kw, (kernel, kernel, c_in, c_out), dtype),
          jax.random.normal(ky, (batch, out, out, c_out), dtype))


class _ConvStack(nn.Module):
  """Two chained nn.Convs with a ReLU, as in the encoder's 128x128 block."""
  impl: str
  features: tuple[int, ...] = (128, 64)

  @nn.compact
  def __call__(self, x):  # [B, 128, 128, 64]
    conv_fn = conv.conv_general_dilated_for(self.impl)
    for i, features in enumerate(self.features):
      if i:
        x = nn.relu(x)
      x = nn.Conv(features, (3, 3), conv_general_dilated=conv_fn)(x)
    return x


def flax_stack_timings(batch, dtype, reps):
  """Gradient time of a chained flax conv stack, 'xla' vs 'fast_wgrad'."""
  x = jnp.ones((batch, 128, 128, 64), dtype)
  params = _ConvStack('xla').init(jax.random.PRNGKey(0), x)
  fns = {}
  for impl in ('xla', 'fast_wgrad'):
    model = _ConvStack(impl)
    fns[impl] = jax.jit(jax.grad(
        lambda p, x, m=model: jnp.mean(m.apply(p, x).astype(jnp.float32)**2)))
  return time_interleaved(fns, (params, x), reps)


def matmul_peak(reps):
  a = jnp.ones((2048, 2048), jnp.float32)
  timing = time_interleaved({'mm': jax.jit(jnp.matmul)}, (a, a), reps)['mm']
  return 2.0 * 2048**3 / timing[0] / 1e9, 2.0 * 2048**3 / timing[1] / 1e9


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=5)
  parser.add_argument('--reps', type=int, default=7)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--methods', default='auto',
                      help='comma list of wgrad methods to compare: '
                      + ', '.join(conv.WGRAD_METHODS))
  parser.add_argument('--layers', default='',
                      help='comma list of layer indices (default: all)')
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  methods = args.methods.split(',')
  layers = LAYERS
  if args.layers:
    layers = [LAYERS[int(i)] for i in args.layers.split(',')]

  print(machine.describe())
  print(f'backend={jax.default_backend()} devices={jax.devices()} '
        f'batch={args.batch} dtype={dtype.name} reps={args.reps}')
  peak = matmul_peak(args.reps)
  print(f'matmul 2048^3: {peak[0]:.0f} GFLOP/s median, {peak[1]:.0f} best\n')

  wgrad_cols = ['xla', 'eigen'] + [f'fast:{m}' for m in methods]
  eigen = conv.compiler_options('eigen')
  header = (f'{"layer":27s} {"GFLOP":>6s} {"fwd":>9s} {"dx":>9s} '
            + ' '.join(f'{"dW " + c:>20s}' for c in wgrad_cols)
            + f' {"dW speedup":>10s}')
  print('GFLOP/s per pass, median (best) of reps')
  print(header)
  key = jax.random.PRNGKey(0)
  for label, size, c_in, c_out, kernel, padding in layers:
    x, w, dy = make_inputs(key, args.batch, size, c_in, c_out, kernel,
                           padding, dtype)
    gflop = conv_flops(args.batch, size, c_in, c_out, kernel, padding) / 1e9
    xla = conv_fn('xla', padding)
    fns = {
        'fwd': jax.jit(lambda x, w, dy, f=xla: f(x, w)),
        'dx': input_grad(xla),
        'dW xla': weight_grad(xla),
        'dW eigen': weight_grad(xla, eigen),
    }
    for m in methods:
      fns[f'dW fast:{m}'] = weight_grad(conv_fn('fast', padding, m))
    t = time_interleaved(fns, (x, w, dy), args.reps)
    rate = {k: (gflop / v[0], gflop / v[1]) for k, v in t.items()}
    cells = [f'{rate[k][0]:4.0f} ({rate[k][1]:3.0f})' for k in ('fwd', 'dx')]
    cells += [f'{rate["dW " + c][0]:13.0f} ({rate["dW " + c][1]:3.0f})'
              for c in wgrad_cols]
    speedup = t['dW xla'][0] / t[f'dW fast:{methods[0]}'][0]
    print(f'{label:27s} {gflop:6.2f} {cells[0]:>9s} {cells[1]:>9s} '
          + ' '.join(f'{c:>20s}' for c in cells[2:]) + f' {speedup:9.2f}x')

  # Whole list, forward + both gradients, one jit per implementation.
  inputs = [make_inputs(key, args.batch, s, ci, co, k, p, dtype)
            for _, s, ci, co, k, p in layers]
  total_gflop = 3 * sum(conv_flops(args.batch, s, ci, co, k, p)
                        for _, s, ci, co, k, p in layers) / 1e9

  def train_like(impl, method='auto', options=None):
    def loss(params, xs, dys):
      return sum(jnp.vdot(conv_fn(impl, layer[5], method)(x, w), dy)
                 for layer, x, w, dy in zip(layers, xs, params, dys))
    return jax.jit(jax.grad(loss, argnums=(0, 1)), compiler_options=options)

  xs = [i[0] for i in inputs]
  ws = [i[1] for i in inputs]
  dys = [i[2] for i in inputs]
  totals = {'xla': train_like('xla'), 'eigen': train_like('xla', options=eigen)}
  for m in methods:
    totals[f'fast:{m}'] = train_like('fast', m)
  t = time_interleaved(totals, (ws, xs, dys), args.reps)
  print(f'\nall layers, fwd + dx + dW ({total_gflop:.1f} GFLOP):')
  for name, (med, best) in t.items():
    print(f'  {name:22s} {1e3 * med:8.1f} ms median ({1e3 * best:6.1f} best)'
          f'  {total_gflop / med:5.0f} GFLOP/s'
          f'  speedup {t["xla"][0] / med:4.2f}x')

  t = flax_stack_timings(args.batch, dtype, args.reps)
  print('\nflax nn.Conv 64->128->64 @128 (relu between), jax.grad of a loss:')
  for name, (med, best) in t.items():
    print(f'  {name:22s} {1e3 * med:8.1f} ms median ({1e3 * best:6.1f} best)'
          f'  speedup {t["xla"][0] / med:4.2f}x')


if __name__ == '__main__':
  main()
