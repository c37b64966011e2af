"""benchmarks.torch_peer: the PyTorch peer has the release's layers (skipped without torch)."""

import pytest

torch = pytest.importorskip("torch")
from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top,wrong-import-position
from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top,wrong-import-position


def _conv_flops(layers):
  """2 x multiply-adds of 'same' convs [(map size, c_in, c_out, kernel)] on one image."""
  return sum(2 * size * size * c_in * c_out * k * k for size, c_in, c_out, k in layers)


# The release's 128 px networks, layer by layer (its models/vgg_128.py), written out by hand.
_ENCODER_128 = [(128, 3, 64, 3), (64, 64, 128, 3), (32, 128, 256, 3), (16, 256, 512, 3),
                (8, 512, 512, 3), (1, 512, 128, 4)]  # Last: the 4x4 VALID conv to g_dim.
_DECODER_128 = [(1, 128, 512, 4),  # 4x4 transposed conv from g_dim.
                (8, 1024, 512, 3), (8, 512, 512, 3), (16, 1024, 512, 3), (16, 512, 256, 3),
                (32, 512, 256, 3), (32, 256, 128, 3), (64, 256, 128, 3), (64, 128, 64, 3),
                (128, 128, 64, 3), (128, 64, 3, 3)]


def _forward_flops(fn, *args):
  with flop_counter.FlopCounterMode(display=False) as counter, torch.no_grad():
    out = fn(*args)
  return counter.get_total_flops(), out


def test_128px_networks_have_the_release_layers():
  encoder, decoder = torch_peer.Encoder(128).eval(), torch_peer.Decoder(128).eval()
  flops, (codes, skips) = _forward_flops(encoder, torch.rand(1, 3, 128, 128))
  assert flops == _conv_flops(_ENCODER_128)
  assert codes.shape == (1, torch_peer.G_DIM)
  assert [s.shape[1:] for s in skips] == [(64, 128, 128), (128, 64, 64), (256, 32, 32),
                                          (512, 16, 16), (512, 8, 8)]
  flops, frames = _forward_flops(decoder, codes, skips)
  assert flops == _conv_flops(_DECODER_128)
  assert frames.shape == (1, 3, 128, 128)
  assert float(frames.min()) >= 0 and float(frames.max()) <= 1


@pytest.mark.slow
def test_training_step_runs_and_learns():
  torch.manual_seed(0)
  torch_peer.set_threads(1)
  peer = torch_peer.ReleasePeer(64, lr=1e-3)
  frames, mfcc = torch_peer.random_batch(64, batch=2, seq_len=2)
  losses = [peer.train_step(frames, mfcc) for _ in range(3)]
  assert all(l == l for l in losses)  # Finite (not NaN).
  assert losses[-1] < losses[0]
