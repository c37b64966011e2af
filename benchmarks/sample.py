"""Sampling speed: frames/s and real-time factor of generation with K latent draws per input.

Generation runs through ``inference.Generator`` (one compiled chunk function, every LSTM state
carried across chunks, the K samples of an input as K rows that share its audio encoder and
audio prior), as ``--mode=sample``, evaluation and ``talkface_jax.load`` do. The model has
random weights (speed does not depend on them) at the release's sizes
(``train_step.release_config``), with configs/grid.py's prior unless ``--prior`` says
otherwise.

Units: frames/s counts generated frames, K x (T-1) per input (frame 0 is the input photo).
The real-time factor (RTF) is seconds of generated video per second of wall-clock time at
25 fps, the K videos of an input counted together: RTF = frames/s / 25, > 1 is faster than
real time.

``--profile`` also times the parts of one generated frame on their own (each jitted, the
same K rows): the audio encoder and prior over a chunk of one input's windows (per frame; run
once for the K rows), the frame encoder on the previous frames, the predictor LSTMs, the
decoder, and the chunk's host transfer. Their sum against the whole chunk's time per frame
says what the scan, the noise and the rest cost.

  python -m benchmarks.sample --resolutions=64,128 --num_samples=1,8 --seconds=3
  python -m benchmarks.sample --resolutions=64 --num_samples=8 --profile
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import machine
from benchmarks import train_step as train_bench
from talkface_jax import inference, parallel
from talkface_jax.models import recurrent, talkface
from talkface_jax.ops import conv

FPS = inference.FPS


def make_generator(config) -> inference.Generator:
  model = talkface.build_model(config.model)
  variables = jax.jit(functools.partial(talkface.init_variables, model))(
      jax.random.key(0), jax.random.key(1))
  return inference.Generator(config, variables)


def random_inputs(config, batch: int, num_frames: int):
  r = config.model.resolution
  rng = np.random.default_rng(0)
  frame0 = rng.integers(0, 256, (batch, r, r, 3), dtype=np.uint8)
  return frame0, rng.normal(size=(batch, num_frames, 28, 12)).astype(np.float32)


def bench(config, num_samples: int, num_frames: int, batch: int, reps: int) -> dict:
  """Median wall time of ``generate_aligned`` (after a compiling call) and its rates."""
  generator = make_generator(config)
  frame0, mfcc = random_inputs(config, batch, num_frames)
  start = time.perf_counter()
  generator.generate_aligned(frame0, mfcc, num_samples, jax.random.key(2))  # Compiles.
  compile_s = time.perf_counter() - start
  times = []
  for i in range(reps):
    start = time.perf_counter()
    videos = generator.generate_aligned(frame0, mfcc, num_samples, jax.random.key(3 + i))
    times.append(time.perf_counter() - start)
  assert videos.shape == (batch, num_samples, num_frames, *frame0.shape[1:]), videos.shape
  wall = float(np.median(times))
  generated = batch * num_samples * (num_frames - 1)  # Frame 0 is the input photo.
  return {"wall_s": wall, "frames_per_s": generated / wall, "rtf": generated / FPS / wall,
          "compile_s": compile_s, "traces": generator.num_traces}


def _timed(fn, *args, reps: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def profile(config, num_samples: int, reps: int) -> dict:
  """Seconds per generated frame of each part of generation, for one input's K rows."""
  generator = make_generator(config)
  model, variables = generator.model, generator.variables
  rows, chunk, r = num_samples, generator.chunk_frames, config.model.resolution
  frame0, mfcc = random_inputs(config, rows, chunk + 1)
  frames = jnp.asarray(frame0, jnp.float32) / 255.0
  options = conv.compiler_options(config.model.conv_impl)  # As inference.Generator's jits.
  apply = lambda method: jax.jit(lambda v, *a: model.apply(v, *a, train=False, method=method),
                                 compiler_options=options)
  context = apply(talkface.TalkFace.identity_context)(variables, frames)
  codes = jnp.zeros((rows, 1, model.g_dim), model.dtype)
  z_width = model.z_dim + (model.audio_dim if model.audio_to_predictor else 0)
  z = jnp.zeros((rows, 1, z_width), model.dtype)
  carry = recurrent.zero_carry(rows, model.rnn_size, model.predictor_layers, model.dtype)
  windows = jnp.asarray(mfcc[:1, 1:])  # One input's chunk: its K rows share the audio work.
  if model.prior == "learned":  # Its prior steps per row with the frames, not timed apart.
    audio_name, audio_args = "audio encoder (input, chunk / C)", (windows,)
    audio_fn = apply(talkface.TalkFace.encode_audio)
  else:
    audio_name, audio_fn = "audio encoder + prior (input, chunk / C)", apply(
        talkface.TalkFace.prior_chunk)
    audio_args = (windows, recurrent.zero_carry(1, model.rnn_size, model.posterior_layers,
                                                model.dtype))
  out = {
      audio_name: _timed(audio_fn, variables, *audio_args, reps=reps) / chunk,
      "frame encoder": _timed(apply(lambda m, x, train: m.frame_encoder(x, train)), variables,
                              frames, reps=reps),
      "predictor LSTMs": _timed(apply(lambda m, c, zz, s, train: m.predictor(c, zz, s)), variables,
                                codes, z, carry, reps=reps),
      "decoder": _timed(apply(lambda m, c, ctx, train: m.frame_decoder(c, ctx, train)), variables,
                        codes.reshape(rows, 1, -1), context, reps=reps),
  }
  # pylint: disable=protected-access
  state = generator._start(variables, frames, audio_inputs=1)
  key_data, sample_index = generator._row_keys(jax.random.key(0), 1, rows)
  run_chunk = lambda: generator._chunk(variables, state, windows,
                                       jnp.zeros(rows, jnp.int32), key_data, sample_index,
                                       generator.bank, deterministic=False)[1]
  # pylint: enable=protected-access
  out["whole chunk (/ C)"] = _timed(run_chunk, reps=reps) / chunk
  pieces = run_chunk()
  out["host transfer (/ C)"] = _timed(lambda: parallel.to_host(pieces), reps=reps) / chunk
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--resolutions", default="64,128")
  parser.add_argument("--num_samples", default="1,8", help="comma list of K")
  parser.add_argument("--seconds", type=float, default=3.0, help="audio length per input")
  parser.add_argument("--batch_size", type=int, default=1, help="inputs per call")
  parser.add_argument("--chunk_frames", type=int, default=25)
  parser.add_argument("--prior", default="", help="override model.prior: audio | learned")
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--profile", action="store_true", help="also time the per-frame parts")
  args = parser.parse_args()
  num_frames = int(round(args.seconds * FPS))
  print(machine.describe())
  print(f"backend={jax.default_backend()} jax={jax.__version__} frames={num_frames} "
        f"batch={args.batch_size} chunk={args.chunk_frames}")
  print(f"{'res':>4s} {'widths':24s} {'prior':7s} {'K':>3s} {'wall s':>8s} {'frames/s':>9s} "
        f"{'RTF':>6s} {'compile s':>9s} {'traces':>6s}  load")
  for res in (int(r) for r in args.resolutions.split(",")):
    for k in (int(k) for k in args.num_samples.split(",")):
      config = train_bench.release_config(res)
      config.sample.chunk_frames = args.chunk_frames
      if args.prior:
        config.model.prior = args.prior
      r = bench(config, k, num_frames, args.batch_size, args.reps)
      print(f"{res:4d} {str(tuple(config.model.encoder_widths)):24s} {config.model.prior:7s} "
            f"{k:3d} {r['wall_s']:8.2f} {r['frames_per_s']:9.2f} {r['rtf']:6.2f} "
            f"{r['compile_s']:9.1f} {r['traces']:6d}  {machine.load()}", flush=True)
      if args.profile:
        parts = profile(config, k, args.reps)
        whole = parts["whole chunk (/ C)"]
        for name, seconds in parts.items():
          print(f"      {name:36s} {1e3 * seconds:8.2f} ms/frame {100 * seconds / whole:6.1f}%")
        model_parts = sum(list(parts.values())[:4])  # Audio+prior, encoder, LSTMs, decoder.
        print(f"      {'sum of the model parts':36s} {1e3 * model_parts:8.2f} ms/frame "
              f"{100 * model_parts / whole:6.1f}%  load {machine.load()}", flush=True)


if __name__ == "__main__":
  main()
