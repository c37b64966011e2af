"""A PyTorch peer of the authors' released training step, for side-by-side speed comparisons.

The paper's authors released PyTorch code (an audio-conditioned SVG-LP, Denton & Fergus 2018).
This module rebuilds its training step -- same layers, widths, per-frame loop, loss and
optimiser -- so ``benchmarks/vs_peer.py`` can time it against our jitted JAX step in one run on
one machine. It is a benchmark, not a second implementation of the model: nothing in the
package imports it, and torch is only the ``bench`` extra (``pip install -e .[bench]``).

What the release computes, per training step on a batch of B sequences of T frames:

* Frame encoder (VGG style; "stage" = conv3x3 + BatchNorm + LeakyReLU(0.2), 2x2 max-pool
  between scales; a final 4x4 VALID conv of the 4x4 map to g_dim=128, BN, tanh). Its per-scale
  outputs are the skips. Widths (``RELEASE_NETS``): at 128x128 one stage per scale, 64@128,
  128@64, 256@32, 512@16, 512@8; at 64x64 (SVG-LP's own 64 px net) 2, 2, 3, 3 stages of
  64@64, 128@32, 256@16, 512@8.
* Frame decoder: 4x4 transposed conv from g_dim to 512@4, BN, LeakyReLU; then per scale
  (coarse to fine) nearest upsample x2, concat the skip of that scale (from frame 0), stages;
  at the finest scale a 3x3 conv to RGB and a sigmoid.
* Audio encoder over one 28x12 MFCC window: conv3x3 1->64, 64->128 (no nonlinearity), max-pool
  3 stride (1, 2), conv 128->256, 256->256, max-pool 3 stride 2, flatten (6144), FC 2048 +
  ReLU, FC 128 + ReLU.
* Frame posterior and audio prior: Linear(input -> 256), one LSTMCell(256), Linear heads for
  mu and log-variance of z (z_dim 24). Frame predictor: Linear(g_dim + z -> 256), two
  LSTMCells, Linear(256 -> g_dim), tanh. All LSTM states start at zero per sequence.
* Loop (teacher forcing), for t = 1 .. T-1, one frame at a time as the release does: encode
  the audio window a_t, the true frame x_t (posterior input) and the previous true frame
  x_{t-1} (predictor input; at t = 1 also the skips); z_t ~ posterior (reparameterised); the
  prior sees the audio code; the predictor's code is decoded with the skips. Loss: sum over t
  of MSE(x_hat_t, x_t) + beta * KL(posterior || prior) (KL summed over z, averaged over the
  batch). So each step predicts B x (T-1) frames and runs the encoder twice per frame.
* Optimiser: RMSprop (lr 2e-4, alpha 0.9, eps 1e-8) on every parameter; init N(0, 0.02)
  for conv/linear weights, BN scale N(1, 0.02).

Deviation, cost-neutral: the release's Gaussian LSTM returns exp(0.5 * logvar) where its KL
expects a log-variance; the peer returns the log-variance (the same operations, the right
KL). The release builds six RMSprop optimisers with one setting; the peer uses one over all
parameters (the same update).
"""

import os

import torch
from torch import nn
from torch.utils import flop_counter

from benchmarks import machine

# Widths per scale, finest first: encoder stages and decoder stages (coarse to fine).
RELEASE_NETS = {
    128: {"encoder": ((64,), (128,), (256,), (512,), (512,)),
          "decoder": ((512, 512), (512, 256), (256, 128), (128, 64), (64,))},
    64: {"encoder": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512)),
         "decoder": ((512, 512, 256), (256, 256, 128), (128, 64), (64,))},
}
G_DIM, Z_DIM, RNN_SIZE, AUDIO_DIM = 128, 24, 256, 128


def _stage(c_in: int, c_out: int) -> nn.Sequential:
  return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2, inplace=True))


def _stages(c_in: int, widths) -> nn.Sequential:
  layers = []
  for w in widths:
    layers.append(_stage(c_in, w))
    c_in = w
  return nn.Sequential(*layers)


class Encoder(nn.Module):
  """Frames [N, 3, H, W] -> (codes [N, G_DIM], skips finest first)."""

  def __init__(self, resolution: int):
    super().__init__()
    widths = RELEASE_NETS[resolution]["encoder"]
    c_in, scales = 3, []
    for w in widths:
      scales.append(_stages(c_in, w))
      c_in = w[-1]
    self.scales = nn.ModuleList(scales)
    self.head = nn.Sequential(nn.Conv2d(c_in, G_DIM, 4, 1, 0), nn.BatchNorm2d(G_DIM), nn.Tanh())
    self.pool = nn.MaxPool2d(2, 2)

  def forward(self, x):
    skips = []
    for i, scale in enumerate(self.scales):
      x = scale(self.pool(x) if i else x)
      skips.append(x)
    return self.head(self.pool(x)).flatten(1), skips


class Decoder(nn.Module):
  """(codes [N, G_DIM], skips finest first) -> frames [N, 3, H, W] in [0, 1]."""

  def __init__(self, resolution: int):
    super().__init__()
    net = RELEASE_NETS[resolution]
    skip_widths = [w[-1] for w in net["encoder"]][::-1]  # Coarse to fine.
    self.project = nn.Sequential(nn.ConvTranspose2d(G_DIM, skip_widths[0], 4, 1, 0),
                                 nn.BatchNorm2d(skip_widths[0]), nn.LeakyReLU(0.2, inplace=True))
    c_in, scales = skip_widths[0], []
    for widths, skip in zip(net["decoder"], skip_widths):
      scales.append(_stages(c_in + skip, widths))
      c_in = widths[-1]
    self.scales = nn.ModuleList(scales)
    self.to_rgb = nn.Sequential(nn.ConvTranspose2d(c_in, 3, 3, 1, 1), nn.Sigmoid())
    self.up = nn.Upsample(scale_factor=2, mode="nearest")

  def forward(self, codes, skips):
    x = self.project(codes[:, :, None, None])
    for scale, skip in zip(self.scales, skips[::-1]):
      x = scale(torch.cat([self.up(x), skip], 1))
    return self.to_rgb(x)


class AudioEncoder(nn.Module):
  """MFCC windows [N, 28, 12] -> codes [N, AUDIO_DIM]."""

  def __init__(self):
    super().__init__()
    self.convs = nn.Sequential(
        nn.Conv2d(1, 64, 3, 1, 1), nn.Conv2d(64, 128, 3, 1, 1), nn.MaxPool2d(3, stride=(1, 2)),
        nn.Conv2d(128, 256, 3, 1, 1), nn.Conv2d(256, 256, 3, 1, 1), nn.MaxPool2d(3, stride=2))
    self.fc = nn.Sequential(nn.Linear(6144, 2048), nn.ReLU(True),
                            nn.Linear(2048, AUDIO_DIM), nn.ReLU(True))

  def forward(self, mfcc):
    return self.fc(self.convs(mfcc[:, None]).flatten(1))


class LSTMStack(nn.Module):
  """Linear embed -> ``layers`` LSTMCells, stepped one frame at a time."""

  def __init__(self, in_dim: int, layers: int):
    super().__init__()
    self.embed = nn.Linear(in_dim, RNN_SIZE)
    self.cells = nn.ModuleList(nn.LSTMCell(RNN_SIZE, RNN_SIZE) for _ in range(layers))

  def zero_state(self, batch: int):
    return [(torch.zeros(batch, RNN_SIZE), torch.zeros(batch, RNN_SIZE)) for _ in self.cells]

  def forward(self, x, state):
    h, new_state = self.embed(x), []
    for cell, s in zip(self.cells, state):
      s = cell(h, s)
      new_state.append(s)
      h = s[0]
    return h, new_state


class GaussianLSTM(LSTMStack):
  """One LSTM layer and mu / log-variance heads: returns (z, mu, logvar, state)."""

  def __init__(self, in_dim: int):
    super().__init__(in_dim, 1)
    self.mu = nn.Linear(RNN_SIZE, Z_DIM)
    self.logvar = nn.Linear(RNN_SIZE, Z_DIM)

  def forward(self, x, state):  # pylint: disable=arguments-renamed
    h, state = super().forward(x, state)
    mu, logvar = self.mu(h), self.logvar(h)
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu), mu, logvar, state


class Predictor(LSTMStack):
  """Two LSTM layers from concat(previous frame code, z) to the next frame's code."""

  def __init__(self):
    super().__init__(G_DIM + Z_DIM, 2)
    self.out = nn.Sequential(nn.Linear(RNN_SIZE, G_DIM), nn.Tanh())

  def forward(self, x, state):  # pylint: disable=arguments-renamed
    h, state = super().forward(x, state)
    return self.out(h), state


class ReleasePeer(nn.Module):
  """The release's networks at ``resolution`` (64 or 128) and its training step."""

  def __init__(self, resolution: int, beta: float = 1e-6, lr: float = 2e-4):
    super().__init__()
    if resolution not in RELEASE_NETS:
      raise ValueError(f"the release has 64 and 128 px networks, not {resolution}")
    self.resolution, self.beta = resolution, beta
    self.encoder, self.decoder = Encoder(resolution), Decoder(resolution)
    self.audio_encoder = AudioEncoder()
    self.posterior, self.prior = GaussianLSTM(G_DIM), GaussianLSTM(AUDIO_DIM)
    self.predictor = Predictor()
    self.apply(_init_weights)
    self.optimizer = torch.optim.RMSprop(self.parameters(), lr=lr, alpha=0.9, eps=1e-8)

  def loss(self, frames, mfcc):
    """Teacher-forced loss of a batch.

    Args:
      frames: [T, B, 3, H, W] in [0, 1] (time-major, as the release feeds them).
      mfcc: [T, B, 28, 12].

    Returns:
      The scalar loss: sum over t = 1 .. T-1 of MSE + beta * KL.
    """
    t_len, b = frames.shape[:2]
    post_state, prior_state = self.posterior.zero_state(b), self.prior.zero_state(b)
    pred_state = self.predictor.zero_state(b)
    mse = kl = 0.0
    skips = None
    for t in range(1, t_len):
      audio_code = self.audio_encoder(mfcc[t])
      target_code = self.encoder(frames[t])[0]
      prev_code, prev_skips = self.encoder(frames[t - 1])
      if skips is None:  # Skips of frame 0, held for the whole sequence.
        skips = prev_skips
      z, mu, logvar, post_state = self.posterior(target_code, post_state)
      _, mu_p, logvar_p, prior_state = self.prior(audio_code, prior_state)
      code, pred_state = self.predictor(torch.cat([prev_code, z], 1), pred_state)
      mse = mse + nn.functional.mse_loss(self.decoder(code, skips), frames[t])
      kl = kl + gaussian_kl(mu, logvar, mu_p, logvar_p).sum() / b
    return mse + self.beta * kl

  def train_step(self, frames, mfcc) -> float:
    """One optimiser step on a batch (see ``loss``); returns the loss."""
    self.optimizer.zero_grad(set_to_none=True)
    loss = self.loss(frames, mfcc)
    loss.backward()
    self.optimizer.step()
    return float(loss.detach())


def gaussian_kl(mu1, logvar1, mu2, logvar2):
  """KL(N(mu1, exp(logvar1)) || N(mu2, exp(logvar2))) per element."""
  return (0.5 * (logvar2 - logvar1) + (torch.exp(logvar1) + (mu1 - mu2) ** 2)
          / (2 * torch.exp(logvar2)) - 0.5)


def random_batch(resolution: int, batch: int, seq_len: int, seed: int = 0):
  """A seeded random (frames [T, B, 3, H, W] in [0, 1], mfcc [T, B, 28, 12]) batch."""
  g = torch.Generator().manual_seed(seed)
  frames = torch.rand(seq_len, batch, 3, resolution, resolution, generator=g)
  return frames, torch.randn(seq_len, batch, 28, 12, generator=g)


def step_flops(peer: ReleasePeer, frames, mfcc) -> float:
  """FLOPs of one training step (convolutions and matmuls, forward and backward), counted by
  torch's FlopCounterMode while running it (so the count is of what actually ran)."""
  with flop_counter.FlopCounterMode(display=False) as counter:
    peer.train_step(frames, mfcc)
  return float(counter.get_total_flops())


def set_threads(threads: int = 0) -> int:
  """Uses ``threads`` intra-op threads (0: one per core); returns the number set."""
  threads = threads or os.cpu_count() or 1
  torch.set_num_threads(threads)
  return threads


def serve(conn, resolution: int, batch: int, seq_len: int, threads: int) -> None:
  """The peer in a process of its own (``vs_peer --peer_malloc``): builds it, runs the
  warm-up step and sends its FLOPs and the glibc tunables it runs with over ``conn``, then
  answers ``"step"`` (one train step, then None) and ``"usage"`` (this process's (user s,
  system s, minor page faults)) until ``"stop"``."""
  peer = ReleasePeer(resolution)
  frames, mfcc = random_batch(resolution, batch, seq_len)
  set_threads(threads)
  conn.send((step_flops(peer, frames, mfcc), os.environ.get("GLIBC_TUNABLES", "")))
  while (command := conn.recv()) != "stop":
    if command == "step":
      peer.train_step(frames, mfcc)
      conn.send(None)
    else:
      conn.send(machine.process_usage())


def _init_weights(m: nn.Module):
  if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
    nn.init.normal_(m.weight, 0.0, 0.02)
    nn.init.zeros_(m.bias)
  elif isinstance(m, nn.BatchNorm2d):
    nn.init.normal_(m.weight, 1.0, 0.02)
    nn.init.zeros_(m.bias)
