"""The one exception type for bad user input, shared by ``data_prep`` and ``talkface_jax``.

It lives here, at the bottom of the import graph, because ``data_prep`` imports no JAX and
``talkface_jax`` imports ``data_prep``; ``talkface_jax.errors`` re-exports it.
"""


class UserError(ValueError):
  """A problem with what the user gave us (a file, a folder, a flag), not a bug.

  The message is ONE line that names the file (or flag) and the problem, e.g.
  ``"face photo me.jpg: no face found"``. Entry points print ``error: <message>`` and exit
  with status 2, without a traceback; any other exception is an internal error and keeps its
  traceback.
  """
