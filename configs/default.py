"""Default hyper-parameters: the single source of truth for every run.

Dataset configs (``grid.py``, ``lrw.py``, ``demo.py``) start from ``get_config()`` and change
only what differs. Any key can be overridden on the command line, e.g.
``--config.train.batch_size=16``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config (the release's GRID settings at 128x128)."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds parameter init, training noise and the input order.

  config.data = ml_collections.ConfigDict()
  config.data.dir = ""  # Folder of TFRecord shards written by `python -m data_prep.build`.
  config.data.raw_dir = ""  # Raw corpus the shards are built from (shown in the error if missing).
  config.data.dataset = "grid"  # Raw layout for data_prep: grid | lrw | folder.
  config.data.train_split = "train"  # TFDS split names inside data.dir.
  config.data.eval_split = "test"
  config.data.seq_len = 75  # Frames per training sequence (a random window of each clip).
  config.data.shuffle_buffer = 256  # Examples held by the shuffle buffer, per process.
  # MFCC normalisation per clip: 'none' (the paper's features) or 'clip' (per-utterance
  # cepstral mean and variance normalisation, data_prep.audio.normalize_windows): the audio
  # encoder hears speech rather than one voice's or microphone's colouring.
  config.data.audio_norm = "none"
  # Beyond the paper: probability of each training-time audio augmentation (vocal tract
  # length warp, reverberation, noise, frequency mask; data_prep.audio_augment) of every
  # training clip; 0 = the paper's clean features. Evaluation and generation never augment.
  config.data.audio_augment = 0.0
  # Which of them (data_prep.audio_augment.KINDS: warp, reverb, noise, mask), as a
  # comma-separated string.
  config.data.audio_augment_kinds = "warp,reverb,noise"
  # The vocal tract warp's half-width: alpha ~ U(1 - w, 1 + w) (0.1: about +-1.7 semitones).
  config.data.audio_warp = 0.1
  config.data.prefetch = 2  # Batches prefetched by tf.data, per process.
  # Global batches kept transferred to the devices ahead of the train step (1: none ahead).
  config.data.device_prefetch = 2
  # Build missing shards (and a missing synthetic corpus) before training (data_prep.prepare).
  config.data.prepare = False

  config.model = ml_collections.ConfigDict()
  config.model.resolution = 128  # Frame size H = W: 64 or 128.
  # Encoder channels per scale, finest first (128: 128,64,32,16,8 px; 64 drops the 128 stage).
  config.model.encoder_widths = (64, 128, 256, 512, 512)
  config.model.g_dim = 128  # Frame code size (output of the image encoder and the predictor).
  config.model.z_dim = 24  # Latent size (release README command: 24; script default 64).
  config.model.rnn_size = 256  # LSTM width of posteriors and predictor.
  config.model.posterior_layers = 1  # LSTM layers of the frame posterior and the audio prior.
  config.model.predictor_layers = 2  # LSTM layers of the frame predictor.
  config.model.audio_widths = (64, 128, 256, 256)  # Audio encoder conv channels (release).
  config.model.audio_hidden = 2048  # Audio encoder hidden FC width.
  config.model.audio_dim = 128  # Audio encoder output size.
  # The release has no nonlinearity between the audio convs; True adds BN + ReLU (ATVGNet).
  config.model.audio_bn_relu = False
  # BatchNorm at generation time: 'running' uses the running averages (each sample is
  # independent of the others in the batch); 'batch' normalises with the statistics of the
  # generated batch, as both official releases do.
  config.model.generation_batch_norm = "running"
  config.model.bn_momentum = 0.9  # Running-average momentum (PyTorch's 0.1 update rate).
  config.model.dtype = "float32"  # Compute dtype: float32, or bfloat16 on GPU/TPU.
  # Convolutions (ops/conv.py): xla (XLA's defaults: YNNPACK on CPU) | fast_wgrad (matmul
  # weight gradients, every layer) | eigen (on CPU, XLA's convolutions compiled to Eigen
  # instead of YNNPACK, whose weight gradient is slow on large maps) | auto (training on one
  # CPU process: xla or eigen, whichever trains faster in a short probe of whole steps at
  # start-up, train.choose_conv_impl, kept by the workdir; otherwise eigen on CPU where the
  # jaxlib has its option, else fast_wgrad; native on GPU/TPU). The two compute the same
  # maths with other rounding. grid.py, lrw.py, synthetic.py and demo.py use auto
  # (BENCHMARKS.md "Train step vs the PyTorch peer", "demo"); the tiny variants xla.
  config.model.conv_impl = "xla"
  # The prior of z_t: 'audio' is the paper's q_a(z_t | a_1..t), z_t drawn afresh each frame;
  # 'learned' is SVG-LP's learned prior, whose LSTM also sees the previous frame's code
  # (true frame in training, generated frame at generation), so it can continue a blink or
  # a head movement that an earlier draw started (models/talkface.py).
  config.model.prior = "audio"
  # AR(1) correlation rho of the generation noise over time (0: independent per frame, the
  # paper). Generation only; eps_t = rho eps_{t-1} + sqrt(1 - rho^2) n_t.
  config.model.latent_correlation = 0.0
  # Where generation takes z_t from (generation only, like latent_correlation): 'prior' (the
  # paper: draws from the prior) or 'posterior_bank' (beyond the paper): each sample replays
  # the frame posterior's mean trajectory of a training clip drawn at random (another every
  # trajectory length), so what z carries (with posterior_view='upper_face': blinks, brows,
  # head position) happens as often, as long and at as independent times as in the training
  # data; the audio still drives the predictor (audio_to_predictor). The bank holds
  # `bank_clips` clips of data.train_split (needs the shards or the workdir's stored bank,
  # latent_bank_<step>.npz; inference.py). The deterministic baseline stays the prior's mean.
  config.model.latent_source = "prior"
  config.model.bank_clips = 256
  # Beyond the paper, with prior=learned only: the prior is a mixture of this many Gaussians
  # (1: a single Gaussian). A single Gaussian covers a rare, distant posterior (a blink's
  # onset) by widening and then hardly ever draws it; a mixture can give the event its own
  # component with the event's probability. The KL is then estimated at the posterior's draw.
  config.model.prior_components = 1
  # What the frame posterior q_f(z_t | f_1..f_t) sees of each frame: 'frame' (the paper) or
  # 'upper_face' (beyond the paper): the frame with its rows from the template's mouth box
  # down replaced by the identity frame's, so z cannot carry the mouth and jaw (the audio's
  # to decide) and carries what the audio does not decide: blinks, brows, head position.
  # Costs one more encoder pass over T-1 frames per training step.
  config.model.posterior_view = "frame"
  # The decoder's last layer: 'direct' (the paper: RGB through a sigmoid) or 'residual' (beyond
  # the paper: added to the identity frame's logits before the sigmoid, zero-initialised, so
  # an untrained model outputs the identity frame and learns only what moves;
  # models/image.py).
  config.model.decoder_output = "direct"
  # Beyond the paper: the frame predictor also sees this frame's audio code, so the audio
  # reaches the frames directly (trained by the reconstruction error) and not only through
  # the prior's match of the frame posterior (models/talkface.py).
  config.model.audio_to_predictor = False
  # Beyond the paper, which drops c0: each MFCC row also carries its loudness, the log frame
  # energy relative to the clip's (or recording's) loudest row, floored 40 dB under it
  # (data_prep.audio.relative_log_energy), as feature 0 of 13; computed from the shards'
  # stored waveform, so shards need no rebuild. A recording's gain and its silence (digital
  # zeros or a noise floor) then look the same to the audio encoder.
  config.model.audio_energy = False

  config.loss = ml_collections.ConfigDict()
  config.loss.reconstruction_weight = 1.0  # lambda: weight of the per-frame MSE.
  config.loss.kl_weight = 1e-6  # beta: weight of KL(q_frame || q_audio).
  # Beyond the paper (1 = the paper's plain MSE): weight of the squared error in the
  # template's mouth and eye regions relative to the rest of the frame (losses.py).
  config.loss.mouth_weight = 1.0
  config.loss.eye_weight = 1.0
  # Beyond the paper (0 = the paper's plain KL): nats per frame under which a frame's KL
  # costs a constant ("free bits"), a guard against the frame posterior's collapse onto the
  # prior (losses.py).
  config.loss.free_bits = 0.0

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "rmsprop"  # rmsprop (release) | adam (SVG-LP) | sgd.
  config.optim.learning_rate = 2e-4
  config.optim.rmsprop_decay = 0.9
  config.optim.eps = 1e-8
  config.optim.adam_b1 = 0.9
  config.optim.adam_b2 = 0.999
  config.optim.sgd_momentum = 0.0  # 0 for plain SGD.
  config.optim.grad_clip_norm = 0.0  # Global-norm clipping; 0 disables (release: none).
  # Beyond the paper (0 = the release's constant rate): the last fraction of
  # train.num_steps over which the learning rate falls to 0 along a half cosine.
  config.optim.decay_fraction = 0.0

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 5  # Global batch (sequences) over all processes and devices.
  # The release trains 100 epochs. GRID's default split trains on 29 speakers x ~1000
  # sentences (~29k clips): 100 epochs at batch 5 are 580k steps.
  config.train.num_steps = 100 * 29_000 // 5
  config.train.log_every = 50  # Steps between scalar summaries (and non-finite checks).
  config.train.checkpoint_every = 1000  # Steps between checkpoints.
  # Beyond the paper (0 = its teacher forcing): the probability that a training step's
  # predictor sees the model's own previous frame, generated with the frame posterior's z,
  # instead of the true one (scheduled sampling; train.feedback_frames). Costs a generation
  # pass per step.
  config.train.feedback = 0.0
  config.train.keep_checkpoints = 3  # Latest N checkpoints kept.
  config.train.async_checkpoints = True  # Save in the background while training continues.

  config.eval = ml_collections.ConfigDict()
  config.eval.every = 5000  # Steps between evaluations during training (0: only at the end).
  config.eval.num_batches = 4  # Teacher-forced loss batches per evaluation during training.
  config.eval.batch_size = 5  # Global eval batch.
  config.eval.num_clips = 256  # Clips evaluated by --mode=eval (the paper: 256 random).
  config.eval.num_samples = 8  # K latent draws per clip for best-of-K / mean-of-K.
  config.eval.after_training = False  # Run the full evaluation (--mode=eval) after training.
  config.eval.seed = 0  # Seeds the random choice of eval clips and their latent draws.
  # Frames per video (evenly spaced after frame 0) whose Dlib face descriptor is compared with
  # the identity frame's; 0 skips identity scoring. The descriptor costs ~0.2 s per frame on
  # a CPU core, so not every frame: 4 frames x (K samples + the ground truth) per clip.
  config.eval.identity_frames = 4

  config.sample = ml_collections.ConfigDict()
  config.sample.num_samples = 4  # K videos drawn per input.
  config.sample.num_clips = 2  # Held-out clips sampled into summaries / --mode=sample.
  config.sample.seed = 0  # Seed of the latent draws.
  # After training (and evaluation): sample files and WORKDIR/metrics.json
  # (experiment.write_demo_outputs).
  config.sample.after_training = False
  # Frames generated per compiled call (sampling and --mode=eval): any length runs in chunks
  # of this size with the LSTM states carried over, so memory does not grow with the audio.
  config.sample.chunk_frames = 75

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # Devices on the data axis; -1: all devices.
  config.distributed = False  # Call jax.distributed.initialize() (multi-host / multi-process).
  # How glibc serves the gigabytes the CPU train step allocates and frees every step
  # (talkface_jax/host_memory.py): "hugepages" (transparent huge pages for its big blocks),
  # "retain" (keeps freed memory: fastest, but 2-3x the memory), "system" (glibc's defaults),
  # "auto" (hugepages where JAX runs on the CPU, else system). At 128 px on CPU, hugepages
  # trains at 6.0-6.8 s a step against 7.5-8.3 with the same memory (BENCHMARKS.md, "Host
  # memory in training"). Applied once, at process start, before JAX is imported.
  config.host_malloc = "auto"
  return config


def apply_tiny_model(model: ml_collections.ConfigDict) -> None:
  """Shrinks ``config.model`` in place to the seconds-per-step size of the ``tiny`` variants
  (``configs/grid.py:tiny``, ``configs/demo.py:tiny``)."""
  model.encoder_widths = (8, 8, 16, 16)
  model.g_dim = 16
  model.z_dim = 4
  model.rnn_size = 16
  model.audio_widths = (4, 8, 8, 8)
  model.audio_hidden = 32
  model.audio_dim = 16
