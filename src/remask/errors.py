"""The errors a stage turns into one line and exit code 2: bad params, data or checkpoints.

They live apart from the code that raises them so that catching them (``pipeline/_common.py``,
the CLI) imports nothing else: a stage's DVC deps stay the modules it really runs.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the offending key."""


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, key or character."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted, unsafe or does not fit the model."""
