"""The demo bag: real aerial images shipped inside the deepforest and solaris packages.

Frames, in order (14 with the defaults, about 4.7 s at 3 Hz):

* the held-out deepforest tiles (``OSBS_029`` and the 400-pixel tiles of the held-out YELL crop,
  10 tiles with 323 boxes), with ground-truth tree boxes (detection class ``tree``);
* deepforest's DJI drone photo ``AWPE Pigeon Lake 2020 DJI_0005.JPG`` resized to a camera-like
  640 pixels wide (no ground truth);
* the 3 held-out solaris tiles (bottom rows of the tile), with building masks (segmentation
  classes ``background``, ``building``).

The class lists are those of the demo models trained on :func:`~mtl_perception.data.aerial_sample_splits`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mtl_perception.data.aerial import deepforest_tree_split, package_data_dir, solaris_building_split
from mtl_perception.data.errors import CorruptImageError
from mtl_perception.data.image_files import read_rgb_image

from .errors import BagError
from .frames_to_bag import BagSummary, write_bag
from .sources import DatasetSource, FrameSource, SourceFrame, resize_frame

DEMO_PHOTO = "AWPE Pigeon Lake 2020 DJI_0005.JPG"
DEMO_RATE_HZ = 3.0


class _DemoSource(FrameSource):
    def __init__(self, det_tile_size: int, seg_tile_size: int, photo_width: int) -> None:
        try:
            self.trees = DatasetSource(deepforest_tree_split("heldout", det_tile_size), "deepforest held-out tiles")
            self.buildings = DatasetSource(solaris_building_split("heldout", seg_tile_size), "solaris held-out tiles")
            self.photo_path = package_data_dir("deepforest", "2.1.0") / DEMO_PHOTO
        except (FileNotFoundError, ImportError, ValueError) as error:
            raise BagError(f"demo bag: the packaged sample data is not usable: {error}") from error
        if not self.photo_path.is_file():
            raise BagError(f"demo bag: drone photo not found: {self.photo_path}")
        self.photo_width = photo_width
        self.detection_classes = self.trees.detection_classes
        self.segmentation_classes = self.buildings.segmentation_classes
        self.description = (
            f"demo: {len(self.trees)} deepforest held-out tiles, {DEMO_PHOTO} at {photo_width} px wide, "
            f"{len(self.buildings)} solaris held-out tiles"
        )

    def __len__(self) -> int:
        return len(self.trees) + 1 + len(self.buildings)

    def _photo(self) -> SourceFrame:
        try:
            image = read_rgb_image(self.photo_path)
        except CorruptImageError as error:
            raise BagError(f"demo bag: {error}") from error
        frame = SourceFrame(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), DEMO_PHOTO)
        return resize_frame(frame, self.photo_width, 0)

    def __iter__(self) -> Iterator[SourceFrame]:
        yield from self.trees
        yield self._photo()
        yield from self.buildings


def make_demo_bag(
    out_path: str | Path,
    rate: float = DEMO_RATE_HZ,
    det_tile_size: int = 400,
    seg_tile_size: int = 300,
    photo_width: int = 640,
    **write_options: Any,
) -> BagSummary:
    """Write the demo bag (see module docstring) to ``out_path``.

    Args:
        out_path: bag folder to create.
        rate: frame rate in Hz.
        det_tile_size: tile size of the deepforest images.
        seg_tile_size: tile size of the solaris tile.
        photo_width: width the drone photo is resized to (aspect ratio kept).
        **write_options: more :func:`~mtl_perception.bags.frames_to_bag.write_bag` arguments
            (``storage``, ``compressed``, ``start_ns``, ``force``, ...).
    """
    source = _DemoSource(det_tile_size, seg_tile_size, photo_width)
    return write_bag(source, out_path, rate=rate, **write_options)
