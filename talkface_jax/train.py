"""Training: state, jitted steps, and the ``train_and_evaluate`` loop.

Read top to bottom: optimiser, train state, train step, eval step, the loop. Everything that
runs on devices is a pure function jitted once with explicit shardings over the ``data`` mesh
(parameters replicated, batches split). The step's randomness is ``fold_in(state.rng,
state.step)``, so the host threads no keys and a resumed run draws the same noise.
"""

import functools
import os
import signal
import sys
import threading
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from clu import metric_writers, periodic_actions

from data_prep import audio as audio_prep
from data_prep import schema
import talkface_jax.checkpointing as checkpointing
import talkface_jax.errors as errors
import talkface_jax.inference as inference
import talkface_jax.input_pipeline as input_pipeline
import talkface_jax.losses as losses
import talkface_jax.parallel as parallel
import talkface_jax.sampling as sampling
import talkface_jax.workdir as workdir_lib
from talkface_jax.models import talkface
from talkface_jax.ops import conv

# -------------------------------------------------------------------------------------------------
# Optimiser and train state.
# -------------------------------------------------------------------------------------------------


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """RMSprop as released (PyTorch semantics: eps outside the sqrt), Adam (SVG-LP) or SGD."""
  optim = config.optim
  if optim.name == "rmsprop":
    tx = optax.rmsprop(optim.learning_rate, decay=optim.rmsprop_decay, eps=optim.eps,
                       eps_in_sqrt=False)
  elif optim.name == "adam":
    tx = optax.adam(optim.learning_rate, b1=optim.adam_b1, b2=optim.adam_b2, eps=optim.eps)
  elif optim.name == "sgd":
    tx = optax.sgd(optim.learning_rate, momentum=optim.sgd_momentum or None)
  else:
    raise errors.UserError(f"optim.name={optim.name!r}: use rmsprop, adam or sgd")
  if optim.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
  return tx


def learning_rate_scale(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
  """The factor on the learning rate before optimiser step ``step`` (0-based).

  1 throughout by default (the release's constant rate). With ``optim.decay_fraction`` f > 0
  the rate stays constant for the first (1 - f) of ``train.num_steps`` and then falls to 0
  along a half cosine over the last f. The train step multiplies the optimiser's updates by
  this factor: for RMSprop, Adam and SGD the same as a schedule on the learning rate (optax
  scales by the rate last), with no extra optimiser state, so checkpoints of runs with and
  without a decay have the same structure and a run resumes with either.
  """
  fraction = config.optim.get("decay_fraction", 0.0)
  if not 0.0 <= fraction <= 1.0:
    raise errors.UserError(f"optim.decay_fraction={fraction}: use a fraction in [0, 1]")
  if fraction == 0.0:
    return jnp.ones((), jnp.float32)
  total = config.train.num_steps
  decay_steps = max(1, round(fraction * total))
  progress = jnp.clip((step - (total - decay_steps)) / decay_steps, 0.0, 1.0)
  return (0.5 * (1.0 + jnp.cos(jnp.pi * progress))).astype(jnp.float32)


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Completed optimiser steps.
  params: Any
  batch_stats: Any  # BatchNorm running averages.
  opt_state: Any
  rng: jax.Array  # uint32 key data; per-step keys are folded from it.


def _init_state(config, model, tx) -> TrainState:
  rng = jax.random.key(config.seed)
  params_rng, latent_rng, train_rng = jax.random.split(rng, 3)
  variables = talkface.init_variables(model, params_rng, latent_rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                    batch_stats=variables["batch_stats"],
                    opt_state=tx.init(variables["params"]),
                    rng=jax.random.key_data(train_rng))


def abstract_train_state(config, model, tx, mesh):
  """Shapes of the train state, each leaf carrying its (replicated) sharding."""
  shapes = jax.eval_shape(functools.partial(_init_state, config, model, tx))
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def create_train_state(config, model, tx, mesh) -> TrainState:
  """A freshly initialised train state, created directly on the mesh."""
  return jax.jit(functools.partial(_init_state, config, model, tx),
                 out_shardings=parallel.replicated(mesh),
                 compiler_options=conv.compiler_options(config.model.conv_impl))()


def variables_of(state: TrainState) -> dict[str, Any]:
  return {"params": state.params, "batch_stats": state.batch_stats}


# -------------------------------------------------------------------------------------------------
# Steps.
# -------------------------------------------------------------------------------------------------


def _to_float_frames(frames: jax.Array) -> jax.Array:
  return frames.astype(jnp.float32) / 255.0


def train_step(state: TrainState, batch, *, model, tx, config) -> tuple[TrainState, dict]:
  """One optimiser step on a global batch; a non-finite loss leaves the state unchanged.

  Args:
    state: the train state.
    batch: {'frames': uint8 [B, L, H, W, 3], 'mfcc': float32 [B, L, 28, 12]}.

  Returns:
    (new state, metrics): batch means of 'loss', 'mse', 'kl', plus 'grad_norm' and
    'nonfinite' (1 if the update was skipped).
  """
  frames = _to_float_frames(batch["frames"])
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  prev_frames = None
  if config.train.get("feedback", 0.0) > 0:
    prev_frames = feedback_frames(state, frames, batch["mfcc"], rng, model=model,
                                  config=config)

  def loss_fn(params):
    output, updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, frames, batch["mfcc"],
        train=True, rngs={"latent": rng}, mutable=["batch_stats"], prev_frames=prev_frames)
    terms = losses.config_losses(output, frames[:, 1:], config)
    return jnp.mean(terms["loss"]), (terms, updates["batch_stats"])

  (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  lr_scale = learning_rate_scale(config, state.step)
  updates = jax.tree.map(lambda u: u * lr_scale, updates)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = TrainState(step=state.step + 1, params=keep(params, state.params),
                         batch_stats=keep(batch_stats, state.batch_stats),
                         opt_state=keep(opt_state, state.opt_state), rng=state.rng)
  metrics = {k: jnp.mean(v) for k, v in terms.items()}
  metrics.update(grad_norm=grad_norm, nonfinite=1.0 - finite.astype(jnp.float32),
                 learning_rate=config.optim.learning_rate * lr_scale)
  return new_state, metrics


def feedback_frames(state: TrainState, frames: jax.Array, mfcc: jax.Array, rng: jax.Array, *,
                    model, config) -> jax.Array:
  """Previous-frame inputs [B, T-1, H, W, 3] of a step with ``config.train.feedback`` = p > 0.

  Beyond the paper (scheduled sampling): at generation the predictor continues its own
  frames, and a model trained only on true previous frames lets small errors grow (a lid a
  little too dark turns into closed eyes). So each step t >= 2 of each sequence sees, with
  probability p, the model's own frame t-1 (``talkface.rollout``: generated frame by frame
  with z from the frame posterior, the training pass's draw ``rng``), else the true one. No
  gradient flows through the generated frames.
  """
  generated = talkface.rollout(model, variables_of(state), frames, mfcc, rng,
                               config.model.generation_batch_norm)
  generated = jax.lax.stop_gradient(jnp.concatenate([frames[:, :1], generated], axis=1))
  own = jax.random.bernoulli(jax.random.fold_in(rng, 1), config.train.feedback,
                             generated.shape[:2])
  return jnp.where(own[..., None, None, None], generated, frames[:, :-1])


def eval_step(state: TrainState, batch, index, *, model, config) -> dict:
  """Teacher-forced loss terms with running BatchNorm statistics; per-example [B] arrays.

  The posterior's draw of eval batch ``index`` is ``fold_in(key(config.eval.seed), index)``:
  every evaluation of a run scores the same draws, and different batches different ones.
  """
  frames = _to_float_frames(batch["frames"])
  key = jax.random.fold_in(jax.random.key(config.eval.seed), index)
  output = model.apply(variables_of(state), frames, batch["mfcc"], train=False,
                       rngs={"latent": key})
  return losses.config_losses(output, frames[:, 1:], config)


def jit_train_step(config, model, tx, mesh, state_sharding):
  """``train_step`` jitted with explicit shardings and the state donated."""
  return jax.jit(functools.partial(train_step, model=model, tx=tx, config=config),
                 in_shardings=(state_sharding, parallel.data_sharded(mesh)),
                 out_shardings=(state_sharding, parallel.replicated(mesh)), donate_argnums=0,
                 compiler_options=conv.compiler_options(config.model.conv_impl))


def jit_eval_step(config, model, mesh, state_sharding):
  return jax.jit(functools.partial(eval_step, model=model, config=config),
                 in_shardings=(state_sharding, parallel.data_sharded(mesh),
                               parallel.replicated(mesh)),
                 out_shardings=parallel.replicated(mesh),
                 compiler_options=conv.compiler_options(config.model.conv_impl))


# -------------------------------------------------------------------------------------------------
# The convolution library, chosen by timing whole steps.
# -------------------------------------------------------------------------------------------------

PROBE_TIMED_STEPS = 2  # Per candidate, after one warm-up step; interleaved, the fastest kept.


def choose_conv_impl(config: ml_collections.ConfigDict, workdir: str):
  """Resolves ``model.conv_impl='auto'`` for this run by a short probe.

  On CPU in one process, 'auto' times whole train steps of this very config (its model, batch
  and loop, on a fresh state and a batch of the run's shapes) with XLA's default convolutions
  ('xla': YNNPACK in jaxlib 0.10) and with the alternative that ``conv.resolve_impl('auto')``
  names ('eigen', or 'fast_wgrad' where the jaxlib lacks Eigen's compile option): one
  warm-up step and ``PROBE_TIMED_STEPS`` timed steps each, interleaved, and keeps the faster.
  Which is faster depends on the CPU and the widths (BENCHMARKS.md: at release widths Eigen
  is 2.4x faster on every CPU measured; the demo's narrow model is 1.25x faster with Eigen
  on an Intel Xeon and 1.15x slower on an AVX2 EPYC), so no fixed rule is right on every machine.
  The winner's compiled step is the one training runs, so the probe costs one compilation
  of the train step (the loser's) and a few steps.

  A workdir whose stored config already holds a resolved choice keeps it without probing: a
  resumed run computes as it did. Elsewhere (GPU/TPU, several processes, which must all run
  one program) 'auto' is left to ``conv.resolve_impl``'s rule. Any other value is used as is.

  Returns:
    (config, train_fn): ``config`` itself or a copy whose ``model.conv_impl`` is the choice;
    the chosen compiled train step (``jit_train_step``'s program) when a probe ran, else None.
  """
  if (config.model.conv_impl != "auto" or jax.default_backend() != "cpu"
      or jax.process_count() > 1):
    return config, None
  stored = workdir_lib.read_config(workdir)
  stored_impl = stored.model.get("conv_impl") if stored is not None else None
  if stored_impl in conv.IMPLS and stored_impl != "auto":
    logging.info("model.conv_impl=auto: %s, as chosen when %s began.", stored_impl, workdir)
    return _with_conv_impl(config, stored_impl), None
  candidates = ["xla", conv.resolve_impl("auto")]
  seconds, steps = _time_train_steps(config, candidates)
  choice = min(candidates, key=seconds.__getitem__)
  line = (f"model.conv_impl=auto: {choice} (whole train steps on this machine, s/step: "
          + ", ".join(f"{impl} {seconds[impl]:.3g}" for impl in candidates) + ")")
  logging.info("%s", line)
  tqdm.tqdm.write(line, file=sys.stderr)
  return _with_conv_impl(config, choice), steps[choice]


def random_batch(config: ml_collections.ConfigDict, mesh) -> dict[str, jax.Array]:
  """A seeded random global batch of ``config``'s training shapes (frames uint8, MFCC
  windows): for timing steps without data (the probe above, ``benchmarks/``)."""
  shape = (parallel.local_batch_size(config.train.batch_size, mesh), config.data.seq_len)
  rng = np.random.default_rng(0)
  return parallel.global_batch({
      "frames": rng.integers(0, 256, shape + (config.model.resolution,) * 2 + (3,),
                             dtype=np.uint8),
      "mfcc": rng.normal(size=shape + (schema.MFCC_WINDOW_ROWS, schema.audio_features(
          audio_prep.audio_energy(config)))).astype(np.float32)}, mesh)


def _with_conv_impl(config: ml_collections.ConfigDict, impl: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.conv_impl = impl
  return config


def _time_train_steps(config: ml_collections.ConfigDict, impls: list[str]):
  """(seconds per step, compiled step) per conv impl: the fastest of the timed steps each."""
  mesh = parallel.make_mesh(config)
  tx = make_optimizer(config)
  state = create_train_state(config, talkface.build_model(config.model), tx, mesh)
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  fresh_copy = jax.jit(lambda s: jax.tree.map(jnp.copy, s), out_shardings=state_sharding)
  batch = random_batch(config, mesh)
  steps = {}
  for impl in impls:
    impl_config = _with_conv_impl(config, impl)
    jitted = jit_train_step(impl_config, talkface.build_model(impl_config.model), tx, mesh,
                            state_sharding)
    steps[impl] = jitted.lower(state, batch).compile()
  seconds = {impl: [] for impl in impls}
  for round_ in range(1 + PROBE_TIMED_STEPS):
    for impl in impls:
      donated = fresh_copy(state)  # The step donates (consumes) its state.
      jax.block_until_ready(donated)
      start = time.perf_counter()
      jax.block_until_ready(steps[impl](donated, batch))
      if round_ > 0:  # The first round warms up.
        seconds[impl].append(time.perf_counter() - start)
  return {impl: min(times) for impl, times in seconds.items()}, steps


# -------------------------------------------------------------------------------------------------
# The loop.
# -------------------------------------------------------------------------------------------------


class NonFiniteLossError(FloatingPointError):
  """Training produced a non-finite loss; the last checkpoint on disk is a good one."""


class TrainingInterrupted(SystemExit):
  """Training stopped on SIGTERM/SIGINT (or a preemption notice) after saving a checkpoint.

  A ``SystemExit`` with code ``128 + signal`` (143 for SIGTERM, 130 for SIGINT; 143 for a
  preemption notice of JAX's service): the process ends without a traceback and with the
  status schedulers read as "terminated, restart me" (Kubernetes restarts a non-zero exit;
  0 would mark the job done). Rerunning the same command resumes from the saved step.
  """

  def __init__(self, signum: int, step: int, directory: str):
    super().__init__(128 + signum)
    self.signum, self.step, self.directory = signum, step, directory

  def __str__(self) -> str:
    return (f"stopped by {signal.Signals(self.signum).name} after step {self.step}; checkpoint "
            f"saved in {self.directory}. Run the same command to resume.")


class StopSignals:
  """Turns SIGTERM and SIGINT into a request to stop after the current step.

  Installed only in single-process runs, in the main thread: with several processes a
  signal reaches each at another step, so stopping must be agreed on, which JAX's
  preemption service does for SIGTERM (``Checkpointer.reached_preemption``). A second
  SIGINT (Ctrl-C twice) interrupts at once.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.received = signum
    logging.warning("%s received: stopping after the current step, with a checkpoint.",
                    signal.Signals(signum).name)

  def __enter__(self) -> "StopSignals":
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def evaluate_loss(config, eval_fn, state, pipeline, mesh) -> dict[str, float]:
  """Mean teacher-forced loss terms over ``config.eval.num_batches`` eval batches."""
  local_bs = parallel.local_batch_size(config.eval.batch_size, mesh)
  sums, count = {}, 0
  for index, local in enumerate(pipeline.eval_batches(config.eval.num_batches, local_bs)):
    terms = jax.device_get(eval_fn(state, parallel.global_batch(local, mesh), index))
    for k, v in terms.items():
      sums[k] = sums.get(k, 0.0) + float(np.sum(v))
    count += len(terms["loss"])
  return {f"eval_{k}": v / count for k, v in sums.items()}


# Test hooks: the process signals itself right after the step given by the variable's value.
_FAULT_HOOKS = {"TALKFACE_SIGKILL_AT_STEP": signal.SIGKILL,
                "TALKFACE_SIGTERM_AT_STEP": signal.SIGTERM,
                "TALKFACE_SIGINT_AT_STEP": signal.SIGINT}


def _fault_injection(step: int) -> None:
  """Signals this process at a chosen step, to test preemption (``_FAULT_HOOKS``)."""
  for variable, signum in _FAULT_HOOKS.items():
    if os.environ.get(variable) == str(step):
      os.kill(os.getpid(), signum)


def check_writable(workdir: str) -> None:
  """Creates ``workdir`` if needed and checks that files can be written there.

  Raises:
    errors.UserError: it cannot be created or written (read-only, full, a file in the way).
  """
  probe = os.path.join(workdir, f".write_test_{os.getpid()}")
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, "wb") as f:
      f.write(b"\0" * 4096)  # Fails on a full disk or under a small file size limit too.
    os.remove(probe)
  except OSError as e:
    raise errors.UserError(f"workdir {workdir}: cannot write there "
                           f"({e.strerror or e})") from e


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       train_fn=None) -> TrainState:
  """Trains (resuming from ``workdir`` if it holds checkpoints), evaluates and samples.

  ``train_fn``: the train step already compiled for this config (``choose_conv_impl``'s),
  else it is jitted here.

  Stops early, after saving a checkpoint of the last completed step, on SIGTERM or SIGINT
  (single process) or a preemption notice (JAX's service, multi-process), raising
  :class:`TrainingInterrupted`; on unreadable shards (``input_pipeline.DataError``, raised
  after that checkpoint too) and on a non-finite loss (no checkpoint of the bad state).

  Returns:
    The final train state.
  """
  check_writable(workdir)
  mesh = parallel.make_mesh(config)
  model = talkface.build_model(config.model)
  tx = make_optimizer(config)
  # Every batch size and split is checked here, before the first step, not hours later.
  local_bs = parallel.local_batch_size(config.train.batch_size, mesh)
  pipeline = input_pipeline.InputPipeline(config, local_bs)
  parallel.local_batch_size(config.eval.batch_size, mesh)
  pipeline.check_split(config.data.eval_split)
  _store_config(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  ckpt = checkpointing.Checkpointer(workdir, config)

  abstract_state = abstract_train_state(config, model, tx, mesh)
  state_sharding = jax.tree.map(lambda x: x.sharding, abstract_state)
  restored = ckpt.restore_latest(abstract_state, set_aside_damaged=True)
  if restored is None:
    state, position = create_train_state(config, model, tx, mesh), input_pipeline.Position()
    writer.write_hparams({k: str(v) if isinstance(v, (tuple, list)) else v
                          for k, v in workdir_lib.flatten(config.to_dict()).items()})
  else:
    latest, state, position = restored
    resumed = f"Resumed from step {latest} of {ckpt.directory} (input at {position})."
    logging.info(resumed)
    if jax.process_index() == 0:  # The console line of a resumed run (library logs go to file).
      tqdm.tqdm.write(resumed, file=sys.stderr)
  first_step = int(state.step)

  if train_fn is None:
    train_fn = jit_train_step(config, model, tx, mesh, state_sharding)
  eval_fn = jit_eval_step(config, model, mesh, state_sharding)
  batches = parallel.prefetch_to_device(pipeline.train_batches(position), mesh,
                                        config.data.device_prefetch)
  num_steps = config.train.num_steps
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)
  progress = tqdm.tqdm(total=num_steps, initial=first_step, desc="train", unit="step",
                       disable=jax.process_index() > 0, mininterval=2.0)
  pending = []

  def flush_metrics(step):
    if not pending:
      return
    metrics = jax.device_get(pending)
    pending.clear()
    if any(m["nonfinite"] > 0 for m in metrics):
      bad = [first + i for i, m in enumerate(metrics) if m["nonfinite"] > 0]
      raise NonFiniteLossError(
          f"non-finite loss or gradient at step(s) {bad[:5]} (their updates were skipped); "
          f"stopping. The last checkpoint in {ckpt.directory} (step {ckpt.latest_step()}) "
          "precedes them and is good.")
    scalars = {f"train_{k}": float(np.mean([m[k] for m in metrics])) for k in metrics[0]}
    writer.write_scalars(step, scalars)
    progress.set_postfix(loss=f"{scalars['train_loss']:.4g}", refresh=False)

  def save_before_stopping(step):
    """Checkpoints the last completed ``step`` unless it is saved already, and waits."""
    if step > first_step and ckpt.latest_step() != step:
      flush_metrics(step)
      ckpt.save(step, state, position, force=True)
    ckpt.wait()

  first = first_step + 1
  stop_signum = None
  try:
    with StopSignals() as signals:
      for step in range(first_step + 1, num_steps + 1):
        try:
          batch, position_next = next(batches)
        except input_pipeline.DataError:
          if jax.process_count() == 1:  # A save is collective: other processes may not stop.
            save_before_stopping(step - 1)  # The steps trained so far are kept.
          raise
        position = position_next
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          state, metrics = train_fn(state, batch)
        if not pending:
          first = step
        pending.append(metrics)
        report(step)
        progress.update(1)
        is_last = step == num_steps
        if ckpt.reached_preemption(step):
          stop_signum = signal.SIGTERM
        elif signals.received is not None:
          stop_signum = signals.received
        stopping = stop_signum is not None
        if step % config.train.log_every == 0 or is_last or stopping or ckpt.should_save(step):
          flush_metrics(step)  # Also the non-finite check: nothing bad reaches a checkpoint.
        if ckpt.should_save(step) or is_last or stopping:
          ckpt.save(step, state, position, force=is_last or stopping)
        if stopping:
          break
        if config.eval.every and step % config.eval.every == 0 and not is_last:
          writer.write_scalars(step, evaluate_loss(config, eval_fn, state, pipeline, mesh))
        _fault_injection(step)
      if stop_signum is None and signals.received is not None:
        stop_signum = signals.received  # Arrived after the last step: its save is under way.
      if stop_signum is None:  # Final evaluation and sample summaries.
        final_step = int(state.step)
        writer.write_scalars(final_step, evaluate_loss(config, eval_fn, state, pipeline, mesh))
        generator = inference.Generator(config, variables_of(state), step=final_step,
                                        mesh=mesh, workdir=workdir)
        sampling.write_sample_summaries(generator, writer, final_step)
      progress.close()
      ckpt.wait()  # The signal handlers stay until the last save is committed.
      if stop_signum is None and signals.received is not None:
        stop_signum = signals.received  # During the final evaluation: skip what follows it.
  except checkpointing.CheckpointError:
    raise
  except BaseException:
    # Whatever failed (evaluation, a bad batch, Ctrl-C twice), the save under way is finished
    # so the last checkpoint is not lost with the process; its own error would hide this one.
    try:
      ckpt.wait()
    except checkpointing.CheckpointError as e:
      logging.error("%s", e)
    raise
  ckpt.close()
  writer.flush()
  if stop_signum is not None:
    interrupted = TrainingInterrupted(stop_signum, int(state.step), ckpt.directory)
    logging.warning("%s", interrupted)
    raise interrupted
  return state


def _store_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the config into the workdir (process 0); a resumed run must train the same model.

  Raises:
    UserError: the workdir holds checkpoints of a model the config does not describe.
  """
  stored = workdir_lib.read_config(workdir)
  if stored is not None:
    workdir_lib.check_same_model(stored, config, workdir_lib.config_path(workdir))
  if jax.process_index() == 0:
    workdir_lib.write_config(workdir, config)


