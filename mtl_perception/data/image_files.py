"""Reading images and label masks from disk into tensors / arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from torchvision import tv_tensors

from .errors import CorruptImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise FileNotFoundError naming ``what`` it should have been."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def require_dir(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise FileNotFoundError naming ``what`` it should have been."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found (expected a directory): {path}")
    return path


def rgb_array_to_image(array: np.ndarray) -> tv_tensors.Image:
    """Wrap an [H,W,3] uint8 RGB array as a [3,H,W] uint8 ``tv_tensors.Image``."""
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an [H,W,3] uint8 array, got {array.shape} {array.dtype}")
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous())


def read_rgb_image(path: str | Path) -> tv_tensors.Image:
    """Decode an image file to a uint8 RGB ``tv_tensors.Image`` [3,H,W].

    Raises:
        CorruptImageError: the file is missing, truncated or not an image.
    """
    try:
        with PILImage.open(path) as pil:
            array = np.array(pil.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(path, str(err) or type(err).__name__) from err
    return rgb_array_to_image(array)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image from its header only."""
    try:
        with PILImage.open(path) as pil:
            width, height = pil.size
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(path, str(err) or type(err).__name__) from err
    return height, width


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label image as stored: [H,W] for palette/grey PNGs (the index values), [H,W,3] for colour ones.

    Raises:
        CorruptImageError: the file is missing or cannot be decoded.
    """
    try:
        with PILImage.open(path) as pil:
            if pil.mode in ("P", "L", "I", "I;16", "1"):
                return np.array(pil if pil.mode != "1" else pil.convert("L"))
            return np.array(pil.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(path, str(err) or type(err).__name__) from err


def read_tiff(path: str | Path) -> np.ndarray:
    """Read a (Geo)TIFF raster without GDAL, via ``tifffile`` (Pillow cannot decode 16-bit GeoTIFFs)."""
    try:
        import tifffile
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs tifffile: pip install tifffile") from err
    try:
        return tifffile.imread(str(path))
    except (OSError, ValueError) as err:
        raise CorruptImageError(path, str(err) or type(err).__name__) from err
