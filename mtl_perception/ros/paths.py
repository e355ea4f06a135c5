"""Resolve package-relative paths (checkpoints, config) for nodes and the graph CLI."""

from __future__ import annotations

from pathlib import Path

PACKAGE = "mtl_perception"


def package_share_dir() -> Path | None:
    """``share/mtl_perception`` of the install (None when the package isn't installed)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except PackageNotFoundError:
        return None


def resolve_package_path(value: str) -> Path:
    """An absolute path as is; a relative one against the working directory if it exists
    there, else against the package's share directory (``checkpoints/x.pt`` → the installed
    checkpoint). Returns the first candidate that exists, or the share-dir candidate."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    share = package_share_dir()
    if share is not None:
        return share / path
    return path
