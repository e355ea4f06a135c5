"""Exceptions raised by the dataset readers."""

from __future__ import annotations

from pathlib import Path


class DatasetFormatError(ValueError):
    """An annotation, list or config file is malformed; the message names the file (and line)."""


class CorruptImageError(OSError):
    """An image or mask file exists but cannot be decoded.

    Datasets catch this, log it once with the path, and serve the next valid sample instead.

    Args:
        path: the file that failed to decode.
        reason: what went wrong.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: cannot decode ({reason})")
        self.path = str(path)
        self.reason = reason
