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


class UnreadableSheetError(InputFileError):
    """Sheets (or files) of an epoch cannot be read: corrupt, truncated or not rasters.

    Attributes
    ----------
    sheets : tuple of imagery_watch.io.integrity.UnreadableSheet
        Each bad file with the reason and the area it covers, so that a caller can record
        the areas that were not processed.
    """

    def __init__(self, message: str, sheets=()):
        super().__init__(message)
        self.sheets = tuple(sheets)

    def __reduce__(self):  # pickles across dask.distributed workers with its sheets
        return type(self), (str(self), self.sheets)


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


# -- review (imagery_watch.review) ------------------------------------------------------------
class StaleVersionError(ImageryWatchError, RuntimeError):
    """A review decision was based on a patch version that another reviewer has replaced.

    Attributes
    ----------
    current : dict
        The patch as it is now (status, reviewer, reviewed_at, note, version, ...).
    """

    exit_code = 8

    def __init__(self, message: str, current: dict):
        super().__init__(message)
        self.current = current


class PatchNotFoundError(ImageryWatchError, KeyError):
    """No patch of the review store has the given ``patch_id``."""

    exit_code = 9

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UserError(ImageryWatchError, ValueError):
    """A review account name, role or password is not acceptable, or the account does not exist."""

    exit_code = 10


class SampleExistsError(ImageryWatchError, FileExistsError):
    """A review sample is already marked in the patch file (``imagery-watch review sample``)."""

    exit_code = 11
