"""The one error hierarchy of imagery_watch.

Every error raised on purpose by the library derives from :class:`ImageryWatchError`
and also from the built-in exception that fits, so callers can catch either. Messages
say what was expected, what was found and how to fix it. Only the CLI turns these into
exit codes.
"""

from __future__ import annotations


class ImageryWatchError(Exception):
    """Base class of every error imagery_watch raises on purpose."""

    #: process exit code the CLI uses for this kind of error
    exit_code = 1


class ConfigError(ImageryWatchError, ValueError):
    """A configuration file or option is invalid (unknown key, wrong type, missing field)."""

    exit_code = 2


class InputFileError(ImageryWatchError, OSError):
    """An input file is missing, unreadable, corrupt or of the wrong kind."""

    exit_code = 3


class GridMismatchError(ImageryWatchError, ValueError):
    """Two rasters cannot be put on one processing grid (no CRS, no overlap, bands...)."""

    exit_code = 4


class VectorLayerError(ImageryWatchError, ValueError):
    """A vector layer is missing, empty, or cannot be used."""

    exit_code = 5


class OutputError(ImageryWatchError, OSError):
    """An output location cannot be written."""

    exit_code = 6


class JobError(ImageryWatchError, RuntimeError):
    """A job folder is inconsistent or a job failed while running."""

    exit_code = 7
