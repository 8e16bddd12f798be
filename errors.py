"""The exceptions tuban raises for expected problems with its inputs.

Every layer (``tiles``, ``detect``, ``pipeline``, ``cli``) may import this leaf module; it
imports nothing of tuban's. The CLI turns a :class:`TubanError` into one line on stderr and
exit code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["TubanError", "InputError", "ConfigError", "NoOverlapError"]


class TubanError(Exception):
    """Root of tuban's expected errors."""


class InputError(TubanError, ValueError):
    """A file or array given to tuban cannot be used as it is."""


class ConfigError(InputError):
    """The configuration names a missing key, a bad value or a file that is not there."""


class NoOverlapError(InputError):
    """Two inputs that must overlap (a source and the offices, two epochs) do not."""
