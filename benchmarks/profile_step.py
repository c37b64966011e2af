"""Where the train step's time goes: forward + backward time of its parts, timed alone.

Each part is jitted on its own with the shapes it has inside the train step (frames folded
into the batch axis) and differentiated with respect to its parameters and inputs:

* ``encoder``: ``ImageEncoder`` on B*T frames (codes and skips get cotangents);
* ``decoder``: ``ImageDecoder`` on B x (T-1) codes plus the identity context of B frames;
* ``audio``: ``AudioEncoder`` on B*(T-1) MFCC windows;
* ``lstms``: frame posterior, audio prior and frame predictor over T-1 steps;
* ``step``: the whole jitted train step, for the sum of the parts to be checked against;
* ``ops``: the encoder's 2x2 max-pools, the decoder's x2-upsampling convs and BatchNorms, alone.

``--reference`` also builds every part with the plain Flax/XLA ops that ``models.layers``
replaces (``nn.max_pool``; the upsampling conv as ``upsample2x`` then a 3x3 conv; XLA's conv
gradient), or with the ones named (``--reference=max_pool``), and times both interleaved: a
whole-step A/B of one op is ``--parts=step --reference=max_pool``.

Parts are run round-robin (``--reps`` rounds) so a burst of load on a shared machine hits
them alike; each figure is the median. The load average is printed with the figures.

  python -m benchmarks.profile_step --config=configs/grid.py --parts=encoder,decoder,audio
"""

import argparse
import functools
import time
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import machine
from benchmarks import train_step as train_bench
from talkface_jax.models import audio, image, layers, recurrent
from talkface_jax.ops import conv


def _grad_fn(module: nn.Module, *args, **kwargs):
  """Jitted (variables, inputs) -> grads of a random projection of the module's outputs."""
  def loss(params, batch_stats, inputs, projections):
    variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {
        "params": params}
    out = module.apply(variables, *inputs, **kwargs, mutable=["batch_stats"])[0]
    return sum(jnp.vdot(o, p) for o, p in zip(jax.tree.leaves(out), projections))

  def prepare(key):
    variables = module.init(key, *args, **kwargs)
    out = jax.eval_shape(lambda: module.apply(variables, *args, **kwargs,
                                              mutable=["batch_stats"])[0])
    projections = [jax.random.normal(jax.random.fold_in(key, i), o.shape, o.dtype)
                   for i, o in enumerate(jax.tree.leaves(out))]
    return (variables["params"], variables.get("batch_stats", {}), args, projections)

  options = conv.compiler_options(getattr(module, "conv_impl", "xla"))
  return (jax.jit(jax.grad(loss, argnums=(0, 2)), compiler_options=options),
          prepare(jax.random.key(0)))


class _Lstms(nn.Module):
  """The three recurrent modules of the train step, wired as in ``TalkFace.__call__``."""
  rnn_size: int
  z_dim: int
  g_dim: int

  @nn.compact
  def __call__(self, codes, audio_codes, eps):
    _, mu, logvar = recurrent.GaussianLSTM(self.rnn_size, self.z_dim)(codes[:, 1:])
    _, prior_mu, prior_logvar = recurrent.GaussianLSTM(self.rnn_size, self.z_dim)(audio_codes)
    z = mu + jnp.exp(0.5 * logvar) * eps
    _, predicted = recurrent.FramePredictor(self.rnn_size, self.g_dim)(codes[:, :-1], z)
    return predicted, prior_mu, prior_logvar


class _Decoder(image.ImageDecoder):
  def __call__(self, codes, skips):  # pylint: disable=arguments-differ
    return super().__call__(codes, self.identity_context(skips), train=True)


def model_parts(config) -> dict:
  """{name: (jitted grad fn, args)} for the model's parts at the train step's shapes."""
  m = config.model
  b, t, r = config.train.batch_size, config.data.seq_len, m.resolution
  key = jax.random.key(1)
  frames = jax.random.uniform(key, (b * t, r, r, 3))
  common = dict(bn_momentum=m.bn_momentum, conv_impl=m.conv_impl)
  parts = {}
  parts["encoder"] = _grad_fn(image.ImageEncoder(tuple(m.encoder_widths), m.g_dim, **common),
                              frames, train=True)
  skips = [jax.random.normal(key, (b, r >> i, r >> i, w))
           for i, w in enumerate(m.encoder_widths)]
  codes = jnp.tanh(jax.random.normal(key, (b, t - 1, m.g_dim)))
  parts["decoder"] = _grad_fn(_Decoder(tuple(m.encoder_widths), **common), codes, skips)
  parts["audio"] = _grad_fn(
      audio.AudioEncoder(tuple(m.audio_widths), m.audio_hidden, m.audio_dim, m.audio_bn_relu,
                         **common),
      jax.random.normal(key, (b * (t - 1), 28, 12)), train=True)
  parts["lstms"] = _grad_fn(
      _Lstms(m.rnn_size, m.z_dim, m.g_dim), jnp.tanh(jax.random.normal(key, (b, t, m.g_dim))),
      jax.random.normal(key, (b, t - 1, m.audio_dim)), jax.random.normal(key, (b, t - 1, m.z_dim)))
  return parts


class _BatchNorm(nn.Module):
  @nn.compact
  def __call__(self, x):
    return layers.batch_norm(True, 0.9, jnp.float32)(x)


def op_parts(config) -> dict:
  """Max-pool, the decoder's x2-upsampling conv and BatchNorm at the largest shapes."""
  m = config.model
  b, t, r = config.train.batch_size, config.data.seq_len, m.resolution
  parts = {}
  for i, w in enumerate(m.encoder_widths[:3]):
    x = jax.random.normal(jax.random.key(i), (b * t, r >> i, r >> i, w))
    parts[f"pool@{r >> i}x{w}"] = (
        jax.jit(jax.grad(lambda x: jnp.vdot(layers.max_pool(x, 2, 2),
                                            layers.max_pool(x, 2, 2) * 0 + 1.0))), (x,))
    small = x[:b * (t - 1), ::2, ::2]
    kernel = jax.random.normal(jax.random.key(i), (3, 3, w, w)) * 0.02
    parts[f"upconv@{r >> (i + 1)}x{w}"] = (
        jax.jit(jax.grad(lambda x, k: jnp.sum(layers.upsample_conv3x3(x, k) ** 2),
                         argnums=(0, 1))), (small, kernel))
    bn = _BatchNorm()
    variables = bn.init(jax.random.key(0), x)
    parts[f"bn@{r >> i}x{w}"] = (
        jax.jit(jax.grad(lambda p, x, s=variables["batch_stats"]: jnp.sum(
            bn.apply({"params": p, "batch_stats": s}, x, mutable=["batch_stats"])[0] ** 2),
                         argnums=(0, 1))),
        (variables["params"], x))
  return parts


def reference_ops():
  """The plain Flax/XLA ops that ``models.layers`` replaces, to patch in for an A/B."""
  return {
      "max_pool": lambda x, window, stride: nn.max_pool(
          x, (window,) * 2 if isinstance(window, int) else window,
          strides=(stride,) * 2 if isinstance(stride, int) else stride, padding="VALID"),
      "upsample_conv3x3": lambda x, kernel, conv_general_dilated=jax.lax.conv_general_dilated: (
          conv_general_dilated(jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2), kernel,
                               (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))),
      "conv_function": lambda impl: (jax.lax.conv_general_dilated if impl == "xla" else
                                     __import__("talkface_jax.ops.conv").ops.conv
                                     .conv_general_dilated_for(impl)),
  }


def compile_parts(build, reference: Sequence[str] = ()) -> dict:
  """Compiles ``build()``'s {name: (jitted fn, args)}, with the ``reference_ops`` named.

  The parts are built afresh (new function objects) so that no trace is shared between the
  two sets through JAX's caches.
  """
  unknown = set(reference) - set(reference_ops())
  if unknown:
    raise ValueError(f"unknown reference ops {sorted(unknown)}; known: {sorted(reference_ops())}")
  saved = {name: getattr(layers, name) for name in reference_ops()}
  try:
    for name in reference:
      setattr(layers, name, reference_ops()[name])
    return {name + (":ref" if reference else ""): (fn.lower(*args).compile(), args)
            for name, (fn, args) in build().items()}
  finally:
    for name, op in saved.items():
      setattr(layers, name, op)


def time_round_robin(fns: dict, reps: int) -> dict:
  """{name: (fn, args)} -> {name: [seconds per rep]}, one call of each per round."""
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))
  times = {name: [] for name in fns}
  for _ in range(reps):
    for name, (fn, args) in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/grid.py")
  parser.add_argument("--batch_size", type=int, default=5)
  parser.add_argument("--seq_len", type=int, default=10)
  parser.add_argument("--resolution", type=int, default=0, help="override (64 or 128)")
  parser.add_argument("--encoder_widths", default="", help="override, e.g. 64,128,256,512")
  parser.add_argument("--conv_impl", default="xla")
  parser.add_argument("--parts", default="encoder,decoder,audio,lstms",
                      help="comma list of encoder,decoder,audio,lstms,step,ops")
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--reference", nargs="?", const="all", default="",
                      help="also time each part built with the plain ops (name:ref), "
                           "interleaved: all, or a comma list of " + ",".join(reference_ops()))
  args = parser.parse_args()

  config = train_bench.load_config(args.config)
  config.train.batch_size, config.data.seq_len = args.batch_size, args.seq_len
  config.model.conv_impl = args.conv_impl
  if args.resolution:
    config.model.resolution = args.resolution
  if args.encoder_widths:
    config.model.encoder_widths = tuple(int(w) for w in args.encoder_widths.split(","))
  wanted = args.parts.split(",")

  def build():
    fns = {k: v for k, v in model_parts(config).items() if k in wanted}
    if "ops" in wanted:
      fns.update(op_parts(config))
    if "step" in wanted:
      fns["step"] = _step_fn(config)
    return fns

  fns = compile_parts(build)
  if args.reference:
    ops = list(reference_ops()) if args.reference == "all" else args.reference.split(",")
    fns = {k: v for pair in zip(fns.items(), compile_parts(build, reference=ops).items())
           for k, v in pair}
  print(machine.describe())
  print(f"config={args.config} B={args.batch_size} T={args.seq_len} "
        f"res={config.model.resolution} widths={tuple(config.model.encoder_widths)} "
        f"conv={args.conv_impl} load before: {machine.load()}", flush=True)
  times = time_round_robin(fns, args.reps)
  total = 0.0
  for name, t in times.items():
    med = float(np.median(t))
    if not name.startswith(("step", "pool", "upconv", "bn")) and ":ref" not in name:
      total += med
    print(f"  {name:22s} {1e3 * med:9.1f} ms median  (min {1e3 * min(t):9.1f})", flush=True)
  print(f"  sum of model parts     {1e3 * total:9.1f} ms   load after: {machine.load()}")


def _step_fn(config):
  """The whole jitted train step and its arguments (state is not donated here)."""
  from talkface_jax import parallel, train  # pylint: disable=g-import-not-at-top
  from talkface_jax.models import talkface  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  tx = train.make_optimizer(config)
  state = train.create_train_state(config, model, tx, mesh)
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, config=config),
                 compiler_options=conv.compiler_options(config.model.conv_impl))
  return step, (state, train.random_batch(config, mesh))


if __name__ == "__main__":
  main()
