"""Entry point: ``python run_experiment.py --config=configs/grid.py --workdir=DIR [--mode=...]``.

Modes: ``train`` (resumes from the workdir's checkpoints), ``eval`` (SSIM, PSNR, LMD, lip-sync r
and diversity of K samples per held-out clip, into WORKDIR/eval_<step>.json) and ``sample`` (K
videos for held-out clips into WORKDIR/samples, or, with ``--face=photo.jpg --audio=speech.wav
[--out=DIR] [--num_samples=K]``, K videos of that face saying that audio; ``--csv=FILE`` does
the same for each ``face,audio,out`` row). Any config key can be overridden, e.g.
``--config.train.batch_size=8``.
Multi-process runs (TPU pods, several GPU hosts) set ``--config.distributed=True``.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries, samples.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to run.")
_FACE = flags.DEFINE_string("face", None, "Sample mode: a face photo (with --audio).")
_AUDIO = flags.DEFINE_string("audio", None, "Sample mode: an audio file, any format and rate.")
_CSV = flags.DEFINE_string("csv", None, "Sample mode: a CSV of face,audio,out rows.")
_OUT = flags.DEFINE_string("out", None, "Sample mode: output folder for --face and --audio.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None,
                                    "Sample mode: K videos per input (default: config).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Imported here so that --help answers without loading JAX and TensorFlow.
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from talkface_jax import experiment, parallel, sampling  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], "GPU")  # tf.data only; keep accelerators for JAX.
  config = _CONFIG.value
  parallel.initialize_distributed(config)
  logging.info("JAX process %d / %d, local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  request = sampling.SampleRequest(face=_FACE.value, audio=_AUDIO.value, csv=_CSV.value,
                                   out=_OUT.value, num_samples=_NUM_SAMPLES.value)
  if _MODE.value != "sample" and request != sampling.SampleRequest():
    raise app.UsageError("--face, --audio, --csv, --out and --num_samples need --mode=sample")
  experiment.run(config, _WORKDIR.value, _MODE.value, request)


if __name__ == "__main__":
  app.run(main)
