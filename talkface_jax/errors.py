"""The error a user can fix: a bad file, flag, config or workdir.

Raised with one line that names the file (or flag) and the problem. ``run_experiment.py``
prints it as ``error: <message>`` and exits with status 2, without a traceback; any other
exception is an internal error and keeps its traceback.
"""


class UserError(ValueError):
  """Bad input from the user: a missing or unreadable file, a bad flag or config, a workdir
  that does not hold what the mode needs. The message is one line naming the culprit."""
