"""posekit's exceptions: each says which input was wrong and what was expected.

All derive from :class:`PosekitError`, so ``except posekit.errors.PosekitError`` catches any
problem posekit reports on purpose; anything else is a bug.

Where the advice in a message depends on where it is read (a notebook user passes a Python
argument, a terminal user a command-line flag), ``str(error)`` is the Python wording and
:meth:`PosekitError.for_cli` the command line's.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Hint:
    """One way out of an error, worded for each place it is shown.

    E.g. ``Hint(python="pass pose_weights=PATH to PoseEstimator", cli="pass --weights PATH")``.
    """

    python: str
    cli: str


class PosekitError(Exception):
    """Base class of every error posekit raises on purpose.

    Args:
        cli_message: the message as the command line shows it (its advice names flags rather
            than Python arguments); None when the message fits both.
    """

    def __init__(self, *args: object, cli_message: str | None = None) -> None:
        super().__init__(*args)
        self.cli_message = cli_message

    def for_cli(self) -> str:
        """The message worded for a terminal user."""
        return self.cli_message or str(self)


class ImageReadError(PosekitError, OSError):
    """An image file is missing, empty, corrupt or of an unsupported format."""


class BoxError(PosekitError, ValueError):
    """A person box is not finite, has no area, or lies outside its image."""


class DetectionsFormatError(PosekitError, ValueError):
    """A detections file or list does not follow the COCO detection-results schema."""


class AnnotationError(PosekitError, ValueError):
    """A COCO annotation file lacks a field posekit needs or is not valid JSON."""


class CheckpointError(PosekitError, ValueError):
    """A checkpoint cannot be read, or its keys/shapes do not fit the model."""


class DownloadError(PosekitError, OSError):
    """A file could not be downloaded (offline, HTTP error, interrupted)."""


class ChecksumError(DownloadError):
    """A downloaded or cached file does not have the expected sha256."""
