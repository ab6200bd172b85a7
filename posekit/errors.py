"""posekit's exceptions: each says which input was wrong and what was expected.

All derive from :class:`PosekitError`, so ``except posekit.errors.PosekitError`` catches any
problem posekit reports on purpose; anything else is a bug.
"""
from __future__ import annotations


class PosekitError(Exception):
    """Base class of every error posekit raises on purpose."""


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


class ArgumentError(PosekitError, TypeError, ValueError):
    """A Python API argument is of the wrong kind or out of range (the message says what is accepted)."""


class OutputError(PosekitError, OSError):
    """An output file cannot be written (folder missing or read-only, disk full, special file, name too long)."""
