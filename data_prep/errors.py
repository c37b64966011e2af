"""The errors of pre-processing and of user input, at the bottom of the import graph.

* :class:`UserError`: bad user input (a file, a folder, a flag). It lives here because
  ``data_prep`` imports no JAX and ``talkface_jax`` imports ``data_prep``;
  ``talkface_jax.errors`` re-exports it, so the photo and audio readers here and the library
  raise the same type.
* :class:`ContentError`: a clip itself is unusable (no face, unreadable or corrupt video, no
  audio, too short, audio and video lengths that disagree). It is the clip's fault and will not
  change on a rerun, so the build records it as a skip with the reason and caches that.
* Transient errors (:data:`TRANSIENT`): not the clip's fault -- an I/O error (disk full, a
  network filesystem hiccup), ``MemoryError``, a decoder killed by a signal (the OOM killer), a
  timeout. The build retries them a bounded number of times and never caches them: if they
  persist the run fails naming the clip, and a rerun processes it again.

Imports no JAX.
"""

import subprocess


class UserError(ValueError):
  """A problem with what the user gave us (a file, a folder, a flag), not a bug.

  The message is ONE line that names the file (or flag) and the problem, e.g.
  ``"face photo me.jpg: no face found"``. Entry points print ``error: <message>`` and exit
  with status 2, without a traceback; any other exception is an internal error and keeps its
  traceback.
  """
class ContentError(Exception):
  """The clip's content cannot be used; the message is the reason recorded in the manifest."""


class TransientError(Exception):
  """A failure that is not the clip's fault (a killed or timed-out subprocess); retried."""


# What the build retries (and never caches as a skip).
TRANSIENT = (OSError, MemoryError, TimeoutError, TransientError, subprocess.TimeoutExpired)


def is_transient(error: BaseException) -> bool:
  return isinstance(error, TRANSIENT)
