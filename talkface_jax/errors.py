"""User errors: the exception that entry points report as one ``error:`` line (exit status 2).

The class is defined in ``data_prep.errors`` (``data_prep`` imports no JAX and sits below
this package) so that the photo and audio readers there raise the same type.
"""

from data_prep.errors import UserError

__all__ = ["UserError"]
