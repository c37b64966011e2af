"""The composed model: a multimodal VAE whose frame posterior and audio prior are matched by KL.

Per time step t = 1..T-1 of a clip with identity frame f_0:

* frame posterior ``q_f(z_t | f_1..f_t)``: LSTM over ``Enc_f`` codes of the true frames;
* audio prior ``q_a(z_t | a_1..a_t)``: LSTM over ``Enc_a`` codes of the MFCC windows (the
  paper's, ``prior='audio'``), or with ``prior='learned'`` SVG-LP's learned prior
  ``q_a(z_t | a_1..a_t, f_0..f_{t-1})``: the same LSTM over ``[Enc_a(a_t), Enc_f(f_{t-1})]``,
  the previous TRUE frame in training and the previous GENERATED frame at generation, so a
  draw that starts a blink is seen by the next step's prior, which can continue it;
* frame predictor: LSTM over ``[Enc_f(f_{t-1}), z_t]`` -> code of f_t, decoded with the
  identity frame's skips; with ``audio_to_predictor`` (beyond the paper) over
  ``[Enc_f(f_{t-1}), z_t, Enc_a(a_t)]``, so the audio reaches the frames directly, trained by
  the reconstruction error, and not only through the prior's match of the frame posterior.
  With ``posterior_view='upper_face'`` (beyond the paper) the frame posterior sees frames
  whose mouth and jaw are the identity frame's (``posterior_frames``): z carries only what
  the audio does not decide.

``__call__`` is the teacher-forced training pass (previous frame = ground truth, z from the
frame posterior). ``generate`` draws z from the audio prior and feeds each generated frame
back; it draws K latent sequences per input in one batched call and can run in chunks with
every state carried across chunk borders. ``latent_correlation`` = rho > 0 makes the
generation noise AR(1) over time, eps_t = rho eps_{t-1} + sqrt(1 - rho^2) n_t (the same N(0, 1)
marginal per frame, but a draw persists for about (1 + rho) / (1 - rho) frames); 0 is the
paper's independent draw per frame. It changes generation only, not training. So does a
latent bank (``generate_chunk``'s ``bank``, beyond the paper): z replayed from the frame
posterior's means on training clips instead of drawn from the prior.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

import talkface_jax.errors as errors
from data_prep import template
from talkface_jax.models import audio as audio_lib
from talkface_jax.models import image as image_lib
from talkface_jax.models import recurrent
from talkface_jax.ops import conv


@flax.struct.dataclass
class TrainOutput:
  """Teacher-forced outputs for targets t = 1..T-1 (all [B, T-1, ...])."""
  frames: jax.Array  # Predicted frames [B, T-1, H, W, 3] in [0, 1].
  posterior_mu: jax.Array  # q_f(z_t) mean [B, T-1, z].
  posterior_logvar: jax.Array
  prior_mu: jax.Array  # q_a(z_t) mean [B, T-1, z] ([B, T-1, M, z] for M > 1 components).
  prior_logvar: jax.Array
  # With prior_components M > 1: the mixture's logits [B, T-1, M]; None for one Gaussian.
  prior_logits: jax.Array | None = None
  # The posterior's draw [B, T-1, z] (the mixture's KL is estimated at it, losses.py).
  z: jax.Array | None = None


class TalkFace(nn.Module):
  """The stochastic talking-face model; fields mirror ``config.model`` (``build_model``), where
  each is set and commented once (configs/default.py)."""
  resolution: int
  encoder_widths: tuple[int, ...]
  g_dim: int
  z_dim: int
  rnn_size: int
  posterior_layers: int
  predictor_layers: int
  audio_widths: tuple[int, ...]
  audio_hidden: int
  audio_dim: int
  audio_bn_relu: bool
  bn_momentum: float
  dtype: Any
  conv_impl: str
  prior: str  # 'audio' (paper) or 'learned' (also sees the previous frame's code).
  latent_correlation: float  # AR(1) coefficient of the generation noise over time.
  decoder_output: str = "direct"  # 'direct' (paper) or 'residual' on the identity frame.
  audio_to_predictor: bool = False  # The predictor also sees this frame's audio code.
  # Beyond the paper: each MFCC row also carries its loudness, feature 0 of 13
  # (data_prep.audio.model_windows, data_prep.schema.audio_features).
  audio_energy: bool = False
  prior_components: int = 1  # Gaussians in the learned prior's mixture (1: one Gaussian).
  posterior_view: str = "frame"  # 'frame' (paper) or 'upper_face' (``posterior_frames``).

  def setup(self):
    common = dict(bn_momentum=self.bn_momentum, dtype=self.dtype, conv_impl=self.conv_impl)
    self.frame_encoder = image_lib.ImageEncoder(self.encoder_widths, self.g_dim, **common)
    self.frame_decoder = image_lib.ImageDecoder(self.encoder_widths, output=self.decoder_output,
                                                **common)
    self.audio_encoder = audio_lib.AudioEncoder(
        self.audio_widths, self.audio_hidden, self.audio_dim, self.audio_bn_relu, **common)
    self.frame_posterior = recurrent.GaussianLSTM(
        self.rnn_size, self.z_dim, self.posterior_layers, self.dtype)
    self.audio_prior = recurrent.GaussianLSTM(
        self.rnn_size, self.z_dim, self.posterior_layers, self.dtype, self.prior_components)
    self.predictor = recurrent.FramePredictor(
        self.rnn_size, self.g_dim, self.predictor_layers, self.dtype)

  # ---------------------------------------------------------------------------------------------
  # Training: teacher forcing.
  # ---------------------------------------------------------------------------------------------

  def __call__(self, frames: jax.Array, mfcc: jax.Array, train: bool = True,
               posterior_mean: bool = False, prev_frames: jax.Array | None = None
               ) -> TrainOutput:
    """Teacher-forced pass; draws z with the 'latent' RNG stream.

    Args:
      frames: [B, T, H, W, 3] in [0, 1]; frames[:, 0] is the identity frame.
      mfcc: [B, T, 28, 12], one window per frame.
      train: BatchNorm mode.
      posterior_mean: z = the frame posterior's mean instead of a draw (no 'latent' stream
        needed): the evaluation's reconstruction (``inference.Generator.reconstruct_clips``).
      prev_frames: [B, T-1, H, W, 3], the previous frame the predictor (and the learned prior)
        sees at steps 1..T-1 instead of the true frames[:, :-1]: training on the model's own
        frames (``rollout``, ``config.train.feedback``). The posterior, the identity frame
        and the targets stay the true frames.
    """
    prev_codes, posterior_codes, context = self._encode_clip_views(frames, prev_frames, train)
    audio = self.encode_audio(mfcc[:, 1:], train)
    z, post_mu, post_logvar = self._posterior_draw(posterior_codes, posterior_mean)
    prior_inputs = audio
    if self.prior == "learned":  # The previous frame's code (true, unless prev_frames).
      prior_inputs = jnp.concatenate([audio, prev_codes.astype(audio.dtype)], axis=-1)
    _, *prior = self.audio_prior(prior_inputs)

    _, predicted = self.predictor(prev_codes, self.predictor_latent(z, audio))
    recon = self.frame_decoder(predicted, context, train)
    return TrainOutput(recon, post_mu, post_logvar, *prior, z=z)

  def _encode_clip(self, frames: jax.Array, train: bool):
    """Codes [B, N, g_dim] of frames [B, N, H, W, 3] (all in one batch) and the decoder's
    identity context from frames[:, 0]."""
    b, n = frames.shape[:2]
    codes, skips = self.frame_encoder(frames.reshape(b * n, *frames.shape[2:]), train)
    identity_skips = [s.reshape(b, n, *s.shape[1:])[:, 0] for s in skips]
    context = self.frame_decoder.identity_context(identity_skips, frames[:, 0])
    return codes.reshape(b, n, -1), context

  def _encode_clip_views(self, frames: jax.Array, prev_frames: jax.Array | None, train: bool):
    """Encodes, in one batch, what each part of the teacher-forced pass sees of a clip.

    Returns:
      (codes [B, T-1, g] of the predictor's previous frames: frames[:, :-1], or
      ``prev_frames``; codes [B, T-1, g] of frames 1..T-1 as the frame posterior sees them
      (``posterior_view``); the decoder's identity context).
    """
    t = frames.shape[1]
    views = [frames]
    if prev_frames is not None:
      views.append(prev_frames)
    if self.posterior_view != "frame":
      views.append(posterior_frames(frames, self.posterior_view))
    codes, context = self._encode_clip(jnp.concatenate(views, axis=1), train)
    rest = codes[:, t:]
    prev_codes = codes[:, :t - 1]
    if prev_frames is not None:
      prev_codes, rest = rest[:, :t - 1], rest[:, t - 1:]
    posterior_codes = codes[:, 1:t] if self.posterior_view == "frame" else rest
    return prev_codes, posterior_codes, context

  def _posterior_draw(self, codes: jax.Array, posterior_mean: bool):
    """Frame posterior over codes [B, T-1, g] of frames 1..T-1 -> (z, mu, logvar), z drawn
    with the 'latent' stream (its first use in a pass) unless ``posterior_mean``."""
    _, mu, logvar = self.frame_posterior(codes)
    if posterior_mean:
      return mu, mu, logvar
    eps = jax.random.normal(self.make_rng("latent"), mu.shape, mu.dtype)
    return mu + jnp.exp(0.5 * logvar) * eps, mu, logvar

  def posterior_means(self, frames: jax.Array, train: bool) -> jax.Array:
    """The frame posterior's means [B, T-1, z] of clips [B, T, H, W, 3] (``posterior_view``):
    the trajectories of a latent bank (``generate_chunk``'s ``bank``)."""
    _, posterior_codes, _ = self._encode_clip_views(frames, None, train)
    return self.frame_posterior(posterior_codes)[1]

  def posterior_latents(self, frames: jax.Array, mfcc: jax.Array, train: bool):
    """``rollout``'s inputs: the predictor latents of steps 1..T-1 [B, T-1, ...] from the
    frame posterior's draw (the draw ``__call__`` makes with the same 'latent' key) and the
    identity context."""
    _, posterior_codes, context = self._encode_clip_views(frames, None, train)
    z, _, _ = self._posterior_draw(posterior_codes, posterior_mean=False)
    return self.predictor_latent(z, self.encode_audio(mfcc[:, 1:], train)), context

  def predictor_latent(self, z: jax.Array, audio: jax.Array) -> jax.Array:
    """The predictor's input besides the previous code: z, or [z, audio code] with
    ``audio_to_predictor``; [..., z_dim] and [..., audio_dim] with equal leading axes."""
    if not self.audio_to_predictor:
      return z
    return jnp.concatenate([z, audio.astype(z.dtype)], axis=-1)

  @property
  def audio_features(self) -> int:
    """Features per MFCC row: the 12 cepstra, and the loudness first with ``audio_energy``."""
    return 12 + int(self.audio_energy)

  def encode_audio(self, mfcc: jax.Array, train: bool) -> jax.Array:
    """[B, T, 28, 12] ([B, T, 28, 13] with ``audio_energy``) -> [B, T, audio_dim], all
    windows in one batch."""
    if mfcc.shape[-1] != self.audio_features:  # 12 and 13 pool alike: the FC would not catch it.
      raise ValueError(f"MFCC windows with {mfcc.shape[-1]} features per row; this model "
                       f"(model.audio_energy={self.audio_energy}) hears {self.audio_features}")
    b, t = mfcc.shape[:2]
    return self.audio_encoder(mfcc.reshape(b * t, *mfcc.shape[2:]), train).reshape(b, t, -1)

  # ---------------------------------------------------------------------------------------------
  # Generation pieces (composed by `generate` below).
  # ---------------------------------------------------------------------------------------------

  def identity_context(self, frame0: jax.Array, train: bool) -> list[jax.Array]:
    """Decoder skip contributions of identity frames [B, H, W, 3]."""
    _, skips = self.frame_encoder(frame0, train)
    return self.frame_decoder.identity_context(skips, frame0)

  def prior_chunk(self, mfcc: jax.Array, carry, train: bool):
    """Audio prior over a chunk of windows [B, C, 28, 12] -> (carry, mu, logvar [B, C, z],
    audio codes [B, C, audio_dim])."""
    audio = self.encode_audio(mfcc, train)
    carry, mu, logvar = self.audio_prior(audio, carry)
    return carry, mu, logvar, audio

  def predict_frame(self, prev_frames: jax.Array, z: jax.Array, context, carry, train: bool):
    """One generation step for K samples of B inputs.

    Args:
      prev_frames: [B, K, H, W, 3], the previous (generated) frames.
      z: [B, K, z_dim], or ``predictor_latent``'s [B, K, z_dim + audio_dim].
      context: ``identity_context`` of the B inputs.
      carry: predictor LSTM state of the B * K sequences.
      train: BatchNorm mode.

    Returns:
      (carry, frames [B, K, H, W, 3]).
    """
    b, k = prev_frames.shape[:2]
    codes, _ = self.frame_encoder(prev_frames.reshape(b * k, *prev_frames.shape[2:]), train)
    carry, predicted = self.predictor(codes[:, None], z.reshape(b * k, 1, -1), carry)
    return carry, self.frame_decoder(predicted.reshape(b, k, -1), context, train)

  def predict_frame_learned(self, prev_frames: jax.Array, audio_code: jax.Array,
                            eps: jax.Array, context, prior_carry, predictor_carry,
                            train: bool, choice: jax.Array | None = None):
    """One generation step with the learned prior (``prior='learned'``).

    The previous frame's code feeds both the prior (with the audio code) and the predictor.

    Args:
      prev_frames: [B, K, H, W, 3], the previous (generated) frames.
      audio_code: [B, audio_dim], ``encode_audio`` of this frame's window.
      eps: [B, K, z_dim] noise (zeros for the prior's mean).
      context: ``identity_context`` of the B inputs.
      prior_carry, predictor_carry: LSTM states of the B * K sequences.
      train: BatchNorm mode.
      choice: with ``prior_components`` > 1, [B, K] uniform draws in [0, 1) that pick each
        sample's mixture component (``mixture_component``); None picks the most probable one.

    Returns:
      (prior_carry, predictor_carry, frames [B, K, H, W, 3]).
    """
    b, k = prev_frames.shape[:2]
    codes, _ = self.frame_encoder(prev_frames.reshape(b * k, *prev_frames.shape[2:]), train)
    audio = jnp.broadcast_to(audio_code[:, None], (b, k, audio_code.shape[-1]))
    prior_in = jnp.concatenate([audio.reshape(b * k, -1), codes.astype(audio.dtype)], -1)
    prior_carry, mu, logvar, *logits = self.audio_prior(prior_in[:, None], prior_carry)
    if logits:  # Each sample's component: mu, logvar [B*K, 1, M, z] -> [B*K, 1, z].
      pick = mixture_component(logits[0], None if choice is None else choice.reshape(b * k, 1))
      mu, logvar = (jnp.take_along_axis(x, pick[..., None, None], axis=-2)[..., 0, :]
                    for x in (mu, logvar))
    z = mu + jnp.exp(0.5 * logvar) * eps.reshape(b * k, 1, -1)
    z = self.predictor_latent(z, audio.reshape(b * k, 1, -1))
    predictor_carry, predicted = self.predictor(codes[:, None], z, predictor_carry)
    frames = self.frame_decoder(predicted.reshape(b, k, -1), context, train)
    return prior_carry, predictor_carry, frames


def mixture_component(logits: jax.Array, choice: jax.Array | None) -> jax.Array:
  """Component indices [...] of mixtures with ``logits`` [..., M]: the inverse CDF of
  softmax(logits) at the uniform draws ``choice`` [...], or the most probable (None)."""
  if choice is None:
    return jnp.argmax(logits, axis=-1)
  cdf = jnp.cumsum(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
  return jnp.minimum(jnp.sum(cdf <= choice[..., None], axis=-1), logits.shape[-1] - 1)


POSTERIOR_VIEWS = ("frame", "upper_face")
# ``config.model`` keys added after the first version, each with the value that a config
# without it (one stored by an earlier run) means: the paper's model. ``build_model`` and
# ``workdir.model_differences`` read older configs with these.
ADDED_KEYS = {"decoder_output": "direct", "audio_to_predictor": False, "prior_components": 1,
              "posterior_view": "frame", "audio_energy": False}


def posterior_frames(frames: jax.Array, view: str) -> jax.Array:
  """Frames 1..T-1 [B, T-1, H, W, 3] of clips [B, T, H, W, 3] as the frame posterior sees them.

  'frame' (the paper): the frames. 'upper_face' (beyond the paper): every frame's rows from
  the top of the template's mouth box (``data_prep.template.region_boxes``, frames are
  aligned to the template) to the bottom replaced by the identity frame's, so z_t cannot
  carry the mouth and jaw, which the audio decides, while the eyes, brows and the head's
  position stay visible: the posterior encodes what the audio does not decide.
  """
  if view == "frame":
    return frames[:, 1:]
  if view != "upper_face":
    raise ValueError(f"posterior view {view!r}: use one of {POSTERIOR_VIEWS}")
  cut = template.region_boxes(frames.shape[2])["mouth"][0]
  lower = jnp.arange(frames.shape[2])[:, None, None] >= cut  # [H, 1, 1]
  return jnp.where(lower, frames[:, :1], frames[:, 1:])


def init_variables(model: TalkFace, params_rng: jax.Array, latent_rng: jax.Array):
  """Fresh {'params', 'batch_stats'} of ``model`` (traced on a 2-frame dummy clip)."""
  res = model.resolution
  return model.init({"params": params_rng, "latent": latent_rng},
                    jnp.zeros((1, 2, res, res, 3), jnp.float32),
                    jnp.zeros((1, 2, 28, model.audio_features), jnp.float32), train=True)


def build_model(model_config: ml_collections.ConfigDict) -> TalkFace:
  """The model described by ``config.model``."""
  if model_config.conv_impl not in conv.IMPLS:
    raise errors.UserError(f"model.conv_impl={model_config.conv_impl!r}: use one of "
                           f"{', '.join(conv.IMPLS)}")
  prior = model_config.prior
  if prior not in ("audio", "learned"):
    raise errors.UserError(f"model.prior={prior!r}: use audio or learned")
  decoder_output = model_config.get("decoder_output", ADDED_KEYS["decoder_output"])
  if decoder_output not in ("direct", "residual"):
    raise errors.UserError(f"model.decoder_output={decoder_output!r}: use direct or residual")
  rho = float(model_config.latent_correlation)
  if not 0.0 <= rho < 1.0:
    raise errors.UserError(f"model.latent_correlation={rho}: must be in [0, 1)")
  posterior_view = model_config.get("posterior_view", ADDED_KEYS["posterior_view"])
  if posterior_view not in POSTERIOR_VIEWS:
    raise errors.UserError(f"model.posterior_view={posterior_view!r}: use one of "
                           f"{', '.join(POSTERIOR_VIEWS)}")
  components = int(model_config.get("prior_components", ADDED_KEYS["prior_components"]))
  if components < 1 or (components > 1 and prior != "learned"):
    raise errors.UserError(f"model.prior_components={components}: use 1, or more with "
                           "model.prior=learned")
  return TalkFace(
      resolution=model_config.resolution,
      encoder_widths=tuple(model_config.encoder_widths),
      g_dim=model_config.g_dim, z_dim=model_config.z_dim, rnn_size=model_config.rnn_size,
      posterior_layers=model_config.posterior_layers,
      predictor_layers=model_config.predictor_layers,
      audio_widths=tuple(model_config.audio_widths), audio_hidden=model_config.audio_hidden,
      audio_dim=model_config.audio_dim, audio_bn_relu=model_config.audio_bn_relu,
      bn_momentum=model_config.bn_momentum, dtype=jnp.dtype(model_config.dtype),
      conv_impl=model_config.conv_impl, prior=prior, latent_correlation=rho,
      decoder_output=decoder_output,
      audio_to_predictor=bool(model_config.get("audio_to_predictor",
                                               ADDED_KEYS["audio_to_predictor"])),
      audio_energy=bool(model_config.get("audio_energy", ADDED_KEYS["audio_energy"])),
      prior_components=components, posterior_view=posterior_view)


# -------------------------------------------------------------------------------------------------
# Generation: z from the audio prior, generated frames fed back, K samples per input.
# -------------------------------------------------------------------------------------------------


@flax.struct.dataclass
class GenerationState:
  """Everything carried across chunk borders of one generation."""
  context: list[jax.Array]  # Identity skip contributions of the B inputs.
  prev_frames: jax.Array  # [B, K, H, W, 3], last frame of each sample.
  # Prior LSTM state of the B inputs (of the N audio inputs with generate_chunk's
  # audio_index; of the B * K samples for prior='learned').
  prior_carry: Any
  predictor_carry: Any  # Predictor LSTM state of the B * K samples.
  step: jax.Array  # Index of the next frame (frame 0 is the identity frame).
  noise: jax.Array  # [B, K, z_dim], the last frame's noise eps (for latent_correlation).


def start_generation(model: TalkFace, variables, frame0: jax.Array, num_samples: int,
                     batch_norm: str = "running", audio_inputs: int | None = None
                     ) -> GenerationState:
  """The state before frame 1: frame0 [B, H, W, 3] repeated for K samples, zero LSTM states.

  ``audio_inputs``: N, the audio inputs of ``generate_chunk``'s ``audio_index`` (None: B, one
  per input); the audio prior's state has one row per audio input.
  """
  b = frame0.shape[0]
  prior_batch = b * num_samples if model.prior == "learned" else (audio_inputs or b)
  context = _apply(model, variables, batch_norm, frame0, method=TalkFace.identity_context)
  prev = jnp.broadcast_to(frame0[:, None], (b, num_samples, *frame0.shape[1:]))
  return GenerationState(
      context=context, prev_frames=prev.astype(jnp.float32),
      prior_carry=recurrent.zero_carry(prior_batch, model.rnn_size, model.posterior_layers,
                                       model.dtype),
      predictor_carry=recurrent.zero_carry(b * num_samples, model.rnn_size,
                                           model.predictor_layers, model.dtype),
      step=jnp.ones((), jnp.int32),
      noise=jnp.zeros((b, num_samples, model.z_dim), jnp.float32))


def generate_chunk(model: TalkFace, variables, state: GenerationState, mfcc: jax.Array,
                   key: jax.Array, batch_norm: str = "running", deterministic: bool = False,
                   audio_index: jax.Array | None = None, bank: jax.Array | None = None,
                   sample_index: jax.Array | None = None):
  """Generates the frames of the next C windows.

  The audio encoder and the audio prior are deterministic: inputs that hear the same audio
  (``inference.Generator``'s K sample rows of one input) can share one audio input, whose
  codes, prior means and variances are computed once (``audio_index``). With
  ``batch_norm='batch'`` the audio encoder's statistics are then those of the N audio inputs'
  windows, which equal those of B rows that repeat each of them equally often.

  The noise of input b at frame t is drawn from ``fold_in(keys[b], t)``: a generation split
  into chunks draws exactly the same latents as one in a single call, and an input draws the
  same latents whatever else is in its batch (or on which device it runs).

  Args:
    model: the model.
    variables: {'params', 'batch_stats'}.
    state: from ``start_generation`` or a previous chunk.
    mfcc: [B, C, 28, 12], the windows of frames state.step .. state.step + C - 1; with
      ``audio_index``, [N, C, 28, 12] of the N audio inputs.
    key: PRNG key of this generation (the same for every chunk): one key, from which input
      b's key is ``fold_in(key, b)``, or a [B] array of keys, one per input.
    batch_norm: 'running' (running averages) or 'batch' (statistics of the generated batch).
    deterministic: use the prior's mean instead of a draw (the deterministic baseline).
    audio_index: [B] ints in [0, N): input b hears audio input ``audio_index[b]`` (the state
      from ``start_generation(..., audio_inputs=N)``); None: input b hears ``mfcc[b]``.
    bank: optional [N, L, z_dim] latent trajectories (``model.latent_source =
      'posterior_bank'``: the frame posterior's means on training clips): instead of the
      prior's draws, sample k of input b replays z of one bank trajectory (``bank_rows``:
      the K samples of an input replay K different ones), another one every L frames. Not
      used by the deterministic baseline (the prior's mean).
    sample_index: optional [B] ints, with one sample per row (K = 1): row b is sample
      ``sample_index[b]`` of the input whose key is ``keys[b]`` (``inference.Generator``'s
      rows, which hold the K samples of an input as separate rows). Its noise is drawn from
      ``fold_in(keys[b], sample_index[b])`` and its bank trajectory is entry
      ``sample_index[b]`` of the input's draw, so the rows of one input replay different
      trajectories, as the K samples of ``generate`` do.

  Returns:
    (new state, frames [B, K, C, H, W, 3] in [0, 1]).
  """
  b = state.prev_frames.shape[0]
  keys = input_keys(key, b)
  bank_keys = keys
  if sample_index is not None:
    if state.prev_frames.shape[1] != 1:
      raise ValueError(f"sample_index needs one sample per row, not "
                       f"{state.prev_frames.shape[1]}")
    keys = jax.vmap(jax.random.fold_in)(keys, sample_index)  # The rows' own keys.
  steps = state.step + jnp.arange(mfcc.shape[1], dtype=jnp.int32)
  if bank is not None and not deterministic:
    return _replay_chunk(model, variables, state, mfcc, bank_keys, steps, batch_norm,
                         audio_index, bank, sample_index)
  rho = model.latent_correlation
  learned = model.prior == "learned"

  if learned:
    audio = _apply(model, variables, batch_norm, mfcc, method=TalkFace.encode_audio)
    xs = audio  # [B, C, audio_dim]
  else:
    prior_carry, mu, logvar, audio = _apply(model, variables, batch_norm, mfcc,
                                            state.prior_carry, method=TalkFace.prior_chunk)
    xs = (mu, logvar, audio)  # [B, C, z] twice, [B, C, audio_dim]
  if audio_index is not None:  # Input b gets the outputs of audio input audio_index[b].
    xs = jax.tree.map(lambda x: jnp.take(x, audio_index, axis=0), xs)

  def step(carry, inputs):
    prev_frames, prev_eps, prior_c, predictor_carry = carry
    x_t, t = inputs
    eps = latent_noise(keys, t, prev_eps, rho)
    draw = jnp.zeros_like(eps) if deterministic else eps
    if learned:
      choice = None
      if model.prior_components > 1 and not deterministic:
        choice = component_draw(keys, t, eps.shape[:2])
      prior_c, predictor_carry, frames = _apply(
          model, variables, batch_norm, prev_frames, x_t, draw, state.context, prior_c,
          predictor_carry, choice=choice, method=TalkFace.predict_frame_learned)
    else:
      mu_t, logvar_t, audio_t = x_t  # [B, z], [B, z], [B, audio_dim]
      z = mu_t[:, None] + jnp.exp(0.5 * logvar_t)[:, None] * draw
      predictor_carry, frames = _frames_from_z(model, variables, batch_norm, prev_frames, z,
                                               audio_t, state.context, predictor_carry)
    frames = frames.astype(jnp.float32)
    return (frames, eps, prior_c, predictor_carry), frames

  scan_prior = state.prior_carry if learned else ()
  (prev_frames, last_eps, scan_prior, predictor_carry), frames = jax.lax.scan(
      step, (state.prev_frames, state.noise, scan_prior, state.predictor_carry),
      (jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), xs), steps))
  if learned:
    prior_carry = scan_prior
  new_state = GenerationState(state.context, prev_frames, prior_carry, predictor_carry,
                              state.step + mfcc.shape[1], last_eps)
  return new_state, jnp.moveaxis(frames, 0, 2)


def _replay_chunk(model: TalkFace, variables, state: GenerationState, mfcc: jax.Array,
                  keys: jax.Array, steps: jax.Array, batch_norm: str,
                  audio_index: jax.Array | None, bank: jax.Array,
                  sample_index: jax.Array | None):
  """``generate_chunk`` with z replayed from ``bank`` [N, L, z] (the prior is not used; its
  state is carried unchanged)."""
  k = state.prev_frames.shape[1]
  audio = _apply(model, variables, batch_norm, mfcc, method=TalkFace.encode_audio)
  if audio_index is not None:
    audio = jnp.take(audio, audio_index, axis=0)

  def step(carry, inputs):
    prev_frames, predictor_carry = carry
    audio_t, t = inputs  # [B, audio_dim], frame index
    predictor_carry, frames = _frames_from_z(model, variables, batch_norm, prev_frames,
                                             bank_latents(bank, keys, t, k, sample_index),
                                             audio_t,
                                             state.context, predictor_carry)
    return (frames, predictor_carry), frames

  (prev_frames, predictor_carry), frames = jax.lax.scan(
      step, (state.prev_frames, state.predictor_carry), (jnp.moveaxis(audio, 1, 0), steps))
  new_state = GenerationState(state.context, prev_frames, state.prior_carry, predictor_carry,
                              state.step + mfcc.shape[1], state.noise)
  return new_state, jnp.moveaxis(frames, 0, 2)


def _frames_from_z(model: TalkFace, variables, batch_norm: str, prev_frames: jax.Array,
                   z: jax.Array, audio_t: jax.Array, context, predictor_carry):
  """One predictor step of B * K samples from their z [B, K, z_dim] and their input's audio
  code [B, audio_dim] (``predictor_latent``) -> (predictor carry, float32 frames [B, K, ...])."""
  b, k = prev_frames.shape[:2]
  z = model.predictor_latent(z, jnp.broadcast_to(audio_t[:, None], (b, k, audio_t.shape[-1])))
  predictor_carry, frames = _apply(model, variables, batch_norm, prev_frames, z, context,
                                   predictor_carry, method=TalkFace.predict_frame)
  return predictor_carry, frames.astype(jnp.float32)


def bank_rows(keys: jax.Array, segment: jax.Array, num_samples: int, bank_size: int,
              sample_index: jax.Array | None = None) -> jax.Array:
  """[B, K] bank trajectories that the K samples of each input replay in ``segment`` (frames
  1 + segment * L .. (segment + 1) * L): sample k takes entry k of a random permutation of
  the N trajectories, drawn from ``fold_in(fold_in(keys[b], segment), 2)`` per input like the
  noise (independent of ``latent_noise``'s and ``component_draw``'s draws). So the K samples
  of an input replay K different trajectories (while K <= N; beyond, the permutation
  repeats), each one uniform over the bank. With ``sample_index`` [B] (K = 1, rows of
  ``generate_chunk``'s ``sample_index``): entry ``sample_index[b]``."""
  first = (jnp.zeros(keys.shape[0], jnp.int32) if sample_index is None
           else jnp.asarray(sample_index, jnp.int32))

  def draw(input_key, start):
    order = jax.random.permutation(
        jax.random.fold_in(jax.random.fold_in(input_key, segment), 2), bank_size)
    return order[(start + jnp.arange(num_samples)) % bank_size]

  return jax.vmap(draw)(keys, first)


def bank_latents(bank: jax.Array, keys: jax.Array, t: jax.Array, num_samples: int,
                 sample_index: jax.Array | None = None) -> jax.Array:
  """z [B, K, z_dim] of frame t >= 1 replayed from ``bank`` [N, L, z_dim]: position
  (t - 1) mod L of the trajectory ``bank_rows`` draws for segment (t - 1) // L."""
  length = bank.shape[1]
  rows = bank_rows(keys, (t - 1) // length, num_samples, bank.shape[0], sample_index)
  return bank[rows, (t - 1) % length].astype(jnp.float32)


def latent_noise(key: jax.Array, t: jax.Array, prev_eps: jax.Array, rho: float) -> jax.Array:
  """The generation noise eps_t of frame t, shaped like ``prev_eps`` (eps_{t-1}, [B, ...]).

  N(0, 1) drawn for input b from ``fold_in(keys[b], t)`` (``input_keys``: one key, or [B]
  keys) at frame 1 and whenever rho = 0 (the paper: every frame independent); otherwise
  AR(1), rho eps_{t-1} + sqrt(1 - rho^2) n_t, which keeps the N(0, 1) marginal of every frame
  and correlates frames rho^|dt| apart. An input's noise does not depend on its batch.
  """
  keys = input_keys(key, prev_eps.shape[0])
  fresh = jax.vmap(lambda row_key: jax.random.normal(
      jax.random.fold_in(row_key, t), prev_eps.shape[1:], prev_eps.dtype))(keys)
  if rho == 0.0:
    return fresh
  return jnp.where(t == 1, fresh, rho * prev_eps + (1.0 - rho * rho) ** 0.5 * fresh)


def component_draw(key: jax.Array, t: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """Uniform [B, K] draws that pick the mixture components of frame t (independent of the
  noise ``latent_noise`` draws from the same keys); per input, like the noise."""
  keys = input_keys(key, shape[0])
  return jax.vmap(lambda row_key: jax.random.uniform(
      jax.random.fold_in(jax.random.fold_in(row_key, t), 1), shape[1:]))(keys)


def generate(model: TalkFace, variables, frame0: jax.Array, mfcc: jax.Array, key: jax.Array,
             num_samples: int, batch_norm: str = "running", deterministic: bool = False,
             bank: jax.Array | None = None):
  """K videos for each of B inputs: [B, K, T, H, W, 3] in [0, 1], frame 0 = ``frame0``.

  Args:
    frame0: identity frames [B, H, W, 3] in [0, 1].
    mfcc: [B, T, 28, 12]; window t drives frame t (window 0 belongs to the identity frame).
    key: PRNG key, or [B] keys (see ``generate_chunk``); the same key gives the same videos,
      different keys different ones.
    num_samples: K.
    bank: optional latent bank (``generate_chunk``).
  """
  state = start_generation(model, variables, frame0, num_samples, batch_norm)
  _, frames = generate_chunk(model, variables, state, mfcc[:, 1:], key, batch_norm,
                             deterministic, bank=bank)
  first = jnp.broadcast_to(state.prev_frames[:, :, None], (*frames.shape[:2], 1,
                                                           *frames.shape[3:]))
  return jnp.concatenate([first, frames], axis=2)


def input_keys(key: jax.Array, batch: int) -> jax.Array:
  """[B] keys, one per input: ``key`` itself if it is a [B] array, else ``fold_in(key, b)``."""
  if key.ndim == 1:
    if key.shape[0] != batch:
      raise ValueError(f"{key.shape[0]} keys for a batch of {batch} inputs")
    return key
  return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(batch))


def reconstruct(model: TalkFace, variables, frames: jax.Array, mfcc: jax.Array,
                batch_norm: str = "running") -> jax.Array:
  """Teacher-forced frames 1..T-1 [B, T-1, H, W, 3] in [0, 1] of clips ``frames`` [B, T, ...]
  with ``mfcc`` [B, T, 28, 12]: previous TRUE frame, z = the frame posterior's mean."""
  return _apply(model, variables, batch_norm, frames, mfcc, posterior_mean=True,
                method=TalkFace.__call__).frames


def posterior_means(model: TalkFace, variables, frames: jax.Array,
                    batch_norm: str = "running") -> jax.Array:
  """The frame posterior's means [B, T-1, z_dim] of clips ``frames`` [B, T, H, W, 3] in
  [0, 1] (a latent bank's trajectories, ``generate_chunk``'s ``bank``)."""
  return _apply(model, variables, batch_norm, frames, method=TalkFace.posterior_means)


def rollout(model: TalkFace, variables, frames: jax.Array, mfcc: jax.Array, key: jax.Array,
            batch_norm: str = "running") -> jax.Array:
  """The model's own frames 1..T-2 [B, T-2, H, W, 3] of clips ``frames`` [B, T, ...]: each
  generated from the previous GENERATED frame (frame 0 the true identity frame), as in
  generation, but with z from the frame posterior of the true frames, drawn with the noise
  that the training pass with ``rngs={'latent': key}`` uses (its posterior evaluated in this
  function's BatchNorm mode, so in training, where the pass normalises with batch
  statistics, the two z differ slightly). Fed to that pass as ``prev_frames``, they train
  the predictor on inputs like those it gets at generation."""
  latents, context = _apply(model, variables, batch_norm, frames, mfcc, rngs={"latent": key},
                            method=TalkFace.posterior_latents)

  def step(carry, latent):
    prev, predictor_carry = carry
    predictor_carry, frame = _apply(model, variables, batch_norm, prev[:, None],
                                    latent[:, None], context, predictor_carry,
                                    method=TalkFace.predict_frame)
    frame = frame[:, 0].astype(jnp.float32)
    return (frame, predictor_carry), frame

  start = (frames[:, 0].astype(jnp.float32),
           recurrent.zero_carry(frames.shape[0], model.rnn_size, model.predictor_layers,
                                model.dtype))
  # The last latent (step T-1) makes a frame no later step sees.
  _, generated = jax.lax.scan(step, start, jnp.moveaxis(latents[:, :-1], 1, 0))
  return jnp.moveaxis(generated, 0, 1)


def _apply(model: TalkFace, variables, batch_norm: str, *args, method, **kwargs):
  """``model.apply`` in generation mode: running BN averages, or batch stats discarded."""
  if batch_norm == "running":
    return model.apply(variables, *args, train=False, method=method, **kwargs)
  if batch_norm == "batch":
    out, _ = model.apply(variables, *args, train=True, method=method, mutable=["batch_stats"],
                         **kwargs)
    return out
  raise ValueError(f"generation batch_norm={batch_norm!r}: use 'running' or 'batch'")
