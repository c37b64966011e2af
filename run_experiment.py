"""Entry point: ``python run_experiment.py --workdir=DIR [--config=configs/grid.py] [--mode=...]``.

Modes: ``train`` (needs ``--config``; resumes from the workdir's checkpoints and stores the
config in ``WORKDIR/config.json``), ``eval`` (SSIM, PSNR, LMD, lip-sync r and diversity of K
samples per held-out clip, into WORKDIR/eval_<step>.json) and ``sample`` (K videos for
held-out clips into WORKDIR/samples, or, with ``--face=photo.jpg --audio=speech.wav
[--out=DIR] [--num_samples=K]``, K videos of that face saying that audio; ``--csv=FILE`` does
the same for each ``face,audio,out`` row). ``eval`` and ``sample`` read the workdir's own
config; a ``--config`` given to them must describe the same model. Any config key can be
overridden, e.g. ``--config.train.batch_size=8``. Multi-process runs (TPU pods, several GPU
hosts) set ``--config.distributed=True``.

The console shows progress bars, warnings and one summary per phase; library logs (INFO and
up) go to ``WORKDIR/log/`` (``--verbosity=1`` shows them on the console too). A user error (a
missing or bad file, no face, unreadable audio, a bad flag or config) prints one
``error: ...`` line and exits with status 2.
"""

import logging as std_logging
import os
import sys

# TensorFlow serves only tf.data here: no start-up chatter from its C++ side (the oneDNN notice
# is what makes it log before its logging is set up).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from talkface_jax import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries, samples.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "What to run.")
_FACE = flags.DEFINE_string("face", None, "Sample mode: a face photo (with --audio).")
_AUDIO = flags.DEFINE_string("audio", None, "Sample mode: an audio file, any format and rate.")
_CSV = flags.DEFINE_string("csv", None, "Sample mode: a CSV of face,audio,out rows.")
_OUT = flags.DEFINE_string("out", None, "Sample mode: output folder for --face and --audio.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None,
                                    "Sample mode: K videos per input (default: config).")
_FACE_INDEX = flags.DEFINE_integer("face_index", 0, "Sample mode: which face of a photo with "
                                   "several (0: the largest, 1: the next, ...).")
flags.mark_flags_as_required(["workdir"])

USER_ERROR_STATUS = 2
# Log records from these folders are the project's own (shown on the console when warnings).
_ROOT = os.path.dirname(os.path.abspath(__file__))
_PROJECT_DIRS = tuple(os.path.join(_ROOT, d) + os.sep for d in ("talkface_jax", "data_prep"))


def _user_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_STATUS)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config file reported as one ``error:`` line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _user_error(str(e).splitlines()[0] if str(e) else type(e).__name__)
  return []


class _ConsoleFilter(std_logging.Filter):
  """What the console shows of the logs: errors, and this project's own warnings.

  The libraries' warnings (TensorFlow and TFDS deprecations, Orbax's timing notes) stay in the
  log file; ``--verbosity=1`` shows everything from INFO up.
  """

  def __init__(self, show_info: bool):
    super().__init__()
    self.show_info = show_info

  def filter(self, record: std_logging.LogRecord) -> bool:
    if self.show_info or record.levelno >= std_logging.ERROR:
      return True
    ours = os.path.abspath(record.pathname).startswith(_PROJECT_DIRS)
    return record.levelno >= std_logging.WARNING and ours


def _log_to_workdir(workdir: str) -> None:
  """Every log record to WORKDIR/log/; the console gets ``_ConsoleFilter``'s share."""
  log_dir = os.path.join(workdir, "log")
  try:
    os.makedirs(log_dir, exist_ok=True)
  except OSError as e:
    _user_error(f"workdir {workdir}: cannot create {log_dir} ({e.strerror or e})")
  logging.get_absl_handler().use_absl_log_file("talkface", log_dir)
  logging.set_stderrthreshold("fatal")  # The console handler below decides instead.
  console = std_logging.StreamHandler(sys.stderr)
  console.setFormatter(std_logging.Formatter("%(levelname)s: %(message)s"))
  console.addFilter(_ConsoleFilter(show_info=flags.FLAGS.verbosity >= 1))
  std_logging.getLogger().addHandler(console)
  std_logging.captureWarnings(True)  # Python warnings of the libraries: to the log file.


def main(argv):
  if len(argv) > 1:
    _user_error(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  # config.host_malloc, before JAX and TensorFlow start threads (glibc's allocator settings
  # hold only for threads that have not allocated yet) and before the log file is opened: it
  # may run this command again with glibc tunables. Without --config (eval and sample read
  # the workdir's config later), glibc's defaults.
  try:
    host_malloc_applied, host_malloc = host_memory.configure(
        config.get("host_malloc", "system") if config is not None else "system")
  except ValueError as e:
    _user_error(f"config.{e}")
  _log_to_workdir(_WORKDIR.value)
  (logging.info if host_malloc_applied else logging.warning)("%s", host_malloc)
  # Imported here so that --help answers without loading JAX and TensorFlow.
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from talkface_jax import errors, experiment, parallel, sampling  # pylint: disable=g-import-not-at-top

  tf.config.set_visible_devices([], "GPU")  # tf.data only; keep accelerators for JAX.
  try:
    if config is not None:
      parallel.initialize_distributed(config)
    logging.info("JAX process %d / %d, local devices: %s", jax.process_index(),
                 jax.process_count(), jax.local_devices())
    request = sampling.SampleRequest(face=_FACE.value, audio=_AUDIO.value, csv=_CSV.value,
                                     out=_OUT.value, num_samples=_NUM_SAMPLES.value,
                                     face_index=_FACE_INDEX.value)
    if _MODE.value != "sample" and request != sampling.SampleRequest():
      raise errors.UserError("--face, --audio, --csv, --out and --num_samples need "
                             "--mode=sample")
    experiment.run(config, _WORKDIR.value, _MODE.value, request)
  except errors.UserError as e:
    logging.info("User error: %s", e)
    _user_error(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
