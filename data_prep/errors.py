"""The two kinds of failure a clip can meet in pre-processing, and how the build treats them.

* :class:`ContentError`: the clip itself is unusable (no face, unreadable or corrupt video, no
  audio, too short, audio and video lengths that disagree). It is the clip's fault and will not
  change on a rerun, so the build records it as a skip with the reason and caches that.
* Transient errors (:data:`TRANSIENT`): not the clip's fault -- an I/O error (disk full, a
  network filesystem hiccup), ``MemoryError``, a decoder killed by a signal (the OOM killer), a
  timeout. The build retries them a bounded number of times and never caches them: if they
  persist the run fails naming the clip, and a rerun processes it again.

Imports no JAX.
"""

import subprocess


class ContentError(Exception):
  """The clip's content cannot be used; the message is the reason recorded in the manifest."""


class TransientError(Exception):
  """A failure that is not the clip's fault (a killed or timed-out subprocess); retried."""


# What the build retries (and never caches as a skip).
TRANSIENT = (OSError, MemoryError, TimeoutError, TransientError, subprocess.TimeoutExpired)


def is_transient(error: BaseException) -> bool:
  return isinstance(error, TRANSIENT)
