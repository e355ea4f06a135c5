"""Segmentation-only datasets stored as image files plus label PNGs (Okutama/Swiss-style, UAVid, ...).

Two ways to list samples:

* folders: every image under ``image_dir`` (recursively) pairs with the mask at the same
  relative path under ``mask_dir``, with the extension replaced by ``mask_suffix``; with
  ``image_folder``/``mask_folder`` only images in folders of that name count, and their
  masks sit beside them in the sibling folder (UAVid: ``seq1/Images/000000.png`` pairs with
  ``seq1/Labels/000000.png``);
* a pairs file (:meth:`SegmentationFolder.from_pairs_file`): one ``image_path mask_path``
  pair per line, relative to the file's folder (or ``root``); ``#`` starts a comment.

Masks are index PNGs (palette or grey: pixel value = class index) or colour PNGs whose
colours are listed in the class map's ``palette``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .base import LabelledImageDataset, JointTransformFn, Sample, mask_field
from .class_map import ClassMap, load_class_map
from .errors import CorruptImageError, DatasetFormatError
from .image_files import IMAGE_EXTENSIONS, read_image_size, read_label_png, read_rgb_image, require_dir, require_file
from .masks import MaskDecoder


class SegmentationFolder(LabelledImageDataset):
    """Images with segmentation masks.

    Args:
        image_dir: folder searched recursively for images.
        mask_dir: folder holding the masks at the images' relative paths.
        class_map: the dataset's class map (YAML path / mapping / ClassMap) with ``segmentation``
            names and, for colour masks, a ``palette``.
        mask_suffix: mask file ending replacing the image's extension (``'.png'``, ``'_label.png'``).
        ids: optional relative paths without extension (e.g. ``'seq1/000010'``) to keep, or the
            path of a text file with one per line.
        mask_format: ``'auto'``, ``'index'`` or ``'color'`` (see :class:`MaskDecoder`).
        seg_classes: the model's segmentation classes (default the dataset's after renaming).
        unmapped_mask: ``'ignore'`` (255) or ``'background'`` (0) for classes the model lacks.
        image_folder: use only images whose folder has this name (e.g. ``'Images'``) ...
        mask_folder: ... and find each mask in the sibling folder of this name (``'Labels'``).
        transforms: joint transform applied to each sample.
    """

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path,
        class_map: ClassMap | str | Path | dict,
        mask_suffix: str = ".png",
        ids: Sequence[str] | str | Path | None = None,
        mask_format: str = "auto",
        seg_classes: Sequence[str] | None = None,
        unmapped_mask: str = "ignore",
        image_folder: str | None = None,
        mask_folder: str | None = None,
        transforms: JointTransformFn | None = None,
    ) -> None:
        image_dir = require_dir(image_dir, "segmentation image directory")
        mask_dir = require_dir(mask_dir, "segmentation mask directory")
        if (image_folder is None) != (mask_folder is None) or (image_folder is not None and image_folder == mask_folder):
            raise ValueError(f"give image_folder and mask_folder together, and different, got {image_folder!r}, {mask_folder!r}")
        images = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if image_folder is not None:
            images = [p for p in images if p.parent.name == image_folder]
        elif mask_dir.resolve() == image_dir.resolve():
            if mask_suffix == Path(f"x{mask_suffix}").suffix:
                raise ValueError(
                    f"images and masks share {image_dir}: give a mask_suffix that marks masks, e.g. '_mask.png'"
                )
            images = [p for p in images if not p.name.endswith(mask_suffix)]
        by_id = {str(p.relative_to(image_dir).with_suffix("")): p for p in images}
        if ids is not None:
            wanted = _read_ids(ids)
            missing = [i for i in wanted if i not in by_id]
            if missing:
                raise FileNotFoundError(f"{len(missing)} listed images not found under {image_dir}, e.g. {missing[0]!r}")
            by_id = {i: by_id[i] for i in wanted}
        def mask_path(sample_id: str) -> Path:
            relative = Path(sample_id)
            if image_folder is not None:
                relative = relative.parent.parent / mask_folder / relative.name
            return mask_dir / f"{relative}{mask_suffix}"

        pairs = [(p, mask_path(sample_id), sample_id) for sample_id, p in by_id.items()]
        self._init_pairs(pairs, class_map, mask_format, seg_classes, unmapped_mask, transforms, str(image_dir))

    @classmethod
    def from_pairs_file(
        cls,
        pairs_file: str | Path,
        class_map: ClassMap | str | Path | dict,
        root: str | Path | None = None,
        mask_format: str = "auto",
        seg_classes: Sequence[str] | None = None,
        unmapped_mask: str = "ignore",
        transforms: JointTransformFn | None = None,
    ) -> "SegmentationFolder":
        """Build from a text file of ``image_path mask_path`` lines (relative to ``root``,
        default the file's folder). The image id is the image path without extension."""
        pairs_file = require_file(pairs_file, "segmentation pairs file")
        base = Path(root) if root is not None else pairs_file.parent
        pairs = []
        for line_number, line in enumerate(pairs_file.read_text().splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 2:
                raise DatasetFormatError(f"{pairs_file}:{line_number}: expected 'image_path mask_path', got {line!r}")
            pairs.append((base / fields[0], base / fields[1], str(Path(fields[0]).with_suffix(""))))
        self = cls.__new__(cls)
        self._init_pairs(pairs, class_map, mask_format, seg_classes, unmapped_mask, transforms, str(pairs_file))
        return self

    def _init_pairs(self, pairs, class_map, mask_format, seg_classes, unmapped_mask, transforms, where: str) -> None:
        LabelledImageDataset.__init__(self, transforms)
        self.class_map = load_class_map(class_map)
        self.mask_decoder = MaskDecoder(self.class_map, seg_classes, unmapped_mask, mask_format)
        for image_path, mask_path, _ in pairs:
            require_file(image_path, "image")
            require_file(mask_path, f"mask of {image_path}")
        if not pairs:
            raise ValueError(f"SegmentationFolder: no images found in {where}")
        self.pairs: list[tuple[Path, Path, str]] = pairs

    @property
    def seg_classes(self) -> tuple[str, ...]:
        """The model segmentation classes the masks are expressed in."""
        return self.mask_decoder.target_names

    def __len__(self) -> int:
        return len(self.pairs)

    def image_size(self, index: int) -> tuple[int, int]:
        return read_image_size(self.pairs[index][0])

    def load_sample(self, index: int) -> Sample:
        image_path, mask_path, sample_id = self.pairs[index]
        image = read_rgb_image(image_path)
        mask = self.mask_decoder(read_label_png(mask_path), str(mask_path))
        if mask.shape != tuple(image.shape[-2:]):
            raise CorruptImageError(mask_path, f"mask is {mask.shape}, image {image_path.name} is {tuple(image.shape[-2:])}")
        return image, {"image_id": sample_id, "mask": mask_field(mask)}


def _read_ids(ids: Sequence[str] | str | Path) -> list[str]:
    if isinstance(ids, (str, Path)):
        path = require_file(ids, "id list")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [str(i) for i in ids]
