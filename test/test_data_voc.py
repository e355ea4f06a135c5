"""Pascal VOC + SBD reader on a tiny VOCdevkit written to a tmp dir."""

import logging

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torchvision import tv_tensors

from mtl_perception.data.errors import DatasetFormatError
from mtl_perception.data.voc import VOC_DETECTION_CLASSES, PascalVOC, voc_palette

H, W = 48, 64


def write_xml(path, objects):
    """objects: (name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)."""
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, diff in objects
    )
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename><size><width>{W}</width>"
                    f"<height>{H}</height><depth>3</depth></size>{body}</annotation>")


def write_image(path, value):
    Image.fromarray(np.full((H, W, 3), value, dtype=np.uint8)).save(path)


def write_palette_png(path, mask):
    png = Image.fromarray(mask.astype(np.uint8), mode="P")
    png.putpalette([c for rgb in voc_palette(256) for c in rgb])
    png.save(path)


def class_mask(value, box):
    """H x W mask with `value` inside the 0-based half-open box (x0, y0, x1, y1), 255 on its border."""
    mask = np.zeros((H, W), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
    mask[y0:y1, x0:x1] = value
    return mask


@pytest.fixture
def devkit(tmp_path):
    root = tmp_path / "VOCdevkit"
    for year in ("2007", "2012"):
        for sub in ("Annotations", "JPEGImages", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
            (root / f"VOC{year}" / sub).mkdir(parents=True)
    v07, v12 = root / "VOC2007", root / "VOC2012"
    # VOC2007: two detection images, one of them with a mask.
    write_image(v07 / "JPEGImages/000001.jpg", 10)
    write_xml(v07 / "Annotations/000001.xml", [("dog", (11, 21, 30, 40), False), ("person", (1, 1, 5, 8), True)])
    write_image(v07 / "JPEGImages/000002.jpg", 20)
    write_xml(v07 / "Annotations/000002.xml", [("car", (2, 3, 64, 48), False)])
    (v07 / "ImageSets/Main/trainval.txt").write_text("000001\n000002\n")
    (v07 / "ImageSets/Segmentation/trainval.txt").write_text("000001\n")
    write_palette_png(v07 / "SegmentationClass/000001.png", class_mask(12, (10, 20, 30, 40)))
    # VOC2012: seg train/val, and SBD-only images.
    for stem, value in [("2008_000001", 30), ("2008_000003", 40), ("2008_000004", 50), ("2008_000005", 60)]:
        write_image(v12 / f"JPEGImages/{stem}.jpg", value)
    write_xml(v12 / "Annotations/2008_000001.xml", [("cat", (5, 5, 20, 20), False)])
    write_xml(v12 / "Annotations/2008_000003.xml", [("bird", (30, 10, 50, 30), False), ("dog", (1, 1, 10, 10), False)])
    write_xml(v12 / "Annotations/2008_000005.xml", [("cow", (3, 3, 9, 9), False)])
    write_palette_png(v12 / "SegmentationClass/2008_000001.png", class_mask(8, (4, 4, 20, 20)))
    write_palette_png(v12 / "SegmentationClass/2008_000005.png", class_mask(10, (2, 2, 9, 9)))
    (v12 / "ImageSets/Segmentation/train.txt").write_text("2008_000001\n")
    (v12 / "ImageSets/Segmentation/val.txt").write_text("2008_000005\n")
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    for stem, value in [("2008_000001", 1), ("2008_000003", 3), ("2008_000004", 4), ("2008_000005", 5)]:
        scipy.io.savemat(sbd / "cls" / f"{stem}.mat", {"GTcls": {"Segmentation": np.full((H, W), value, np.uint8)}})
    (sbd / "train.txt").write_text("2008_000001\n2008_000003\n2008_000004\n2008_000005\n")
    return root, sbd.parent


def test_detection_mode_reads_boxes_labels_and_difficult(devkit):
    root, _ = devkit
    dataset = PascalVOC(root, splits=["2007:trainval"], mode="det")
    assert len(dataset) == 2
    image, target = dataset[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and tuple(image.shape) == (3, H, W)
    assert set(target) == {"image_id", "boxes", "labels", "difficult"}
    assert target["image_id"] == "VOC2007/000001"
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and tuple(target["boxes"].canvas_size) == (H, W)
    assert target["boxes"].tolist() == [[10, 20, 30, 40], [0, 0, 5, 8]]  # 1-based inclusive -> continuous
    assert target["labels"].tolist() == [VOC_DETECTION_CLASSES.index("dog"), VOC_DETECTION_CLASSES.index("person")]
    assert target["difficult"].tolist() == [False, True]
    assert dataset[1][1]["boxes"].tolist() == [[1, 2, 64, 48]]


def test_difficult_boxes_can_be_dropped(devkit):
    root, _ = devkit
    target = PascalVOC(root, splits=["2007:trainval"], mode="det", include_difficult=False)[0][1]
    assert target["labels"].tolist() == [VOC_DETECTION_CLASSES.index("dog")]


def test_segmentation_mode_reads_palette_indices_and_ignore(devkit):
    root, _ = devkit
    dataset = PascalVOC(root, splits=["2007:trainval"], mode="seg")
    image, target = dataset[0]
    assert set(target) == {"image_id", "mask"}
    mask = target["mask"]
    assert isinstance(mask, tv_tensors.Mask) and tuple(mask.shape) == (H, W)
    assert torch.equal(mask, torch.from_numpy(class_mask(12, (10, 20, 30, 40))))


def test_both_mode_uses_voc_png_then_sbd_and_needs_annotations(devkit):
    root, sbd = devkit
    dataset = PascalVOC(root, splits=["2012:train"], mode="both", sbd_root=sbd, exclude_splits=["2012:val"])
    ids = [dataset[i][1]["image_id"] for i in range(len(dataset))]
    # 2008_000004 has no XML (left out), 2008_000005 is in the excluded val list.
    assert ids == ["VOC2012/2008_000001", "VOC2012/2008_000003"]
    first, second = dataset[0][1], dataset[1][1]
    assert set(first) == {"image_id", "boxes", "labels", "difficult", "mask"}
    assert int(first["mask"][10, 10]) == 8  # the VOC PNG wins over the SBD .mat (value 1)
    assert torch.unique(second["mask"]).tolist() == [3]  # SBD GTcls.Segmentation
    assert second["boxes"].tolist() == [[29, 9, 50, 30], [0, 0, 10, 10]]
    assert second["labels"].tolist() == [VOC_DETECTION_CLASSES.index("bird"), VOC_DETECTION_CLASSES.index("dog")]


def test_seg_mode_with_sbd_keeps_images_without_xml(devkit):
    root, sbd = devkit
    dataset = PascalVOC(root, splits=["2012:train"], mode="seg", sbd_root=sbd)
    assert len(dataset) == 4
    assert dataset[2][1]["image_id"] == "VOC2012/2008_000004"
    assert set(dataset[2][1]) == {"image_id", "mask"}


def test_remapping_to_model_classes(devkit):
    root, _ = devkit
    det = PascalVOC(root, splits=["2007:trainval"], mode="both", det_classes=["person", "dog"],
                    seg_classes=["background", "dog"])
    target = det[0][1]
    assert target["labels"].tolist() == [1, 0]
    mask = target["mask"]
    assert int(mask[25, 15]) == 1 and int(mask[0, 0]) == 0 and int(mask[19, 9]) == 255
    cars_only = PascalVOC(root, splits=["2007:trainval"], mode="both", seg_classes=["background", "cat"])
    assert int(cars_only[0][1]["mask"][25, 15]) == 255  # dog is not a model class: ignored
    as_background = PascalVOC(root, splits=["2007:trainval"], mode="both", seg_classes=["background", "cat"],
                              unmapped_mask="background")
    assert int(as_background[0][1]["mask"][25, 15]) == 0


def test_malformed_xml_names_the_file(devkit):
    root, _ = devkit
    bad = root / "VOC2007/Annotations/000002.xml"
    bad.write_text("<annotation><object><name>dog</name>")
    with pytest.raises(DatasetFormatError, match="000002.xml: malformed XML"):
        PascalVOC(root, splits=["2007:trainval"], mode="det")


def test_box_without_coordinates_and_unknown_class_are_errors(devkit):
    root, _ = devkit
    xml = root / "VOC2007/Annotations/000002.xml"
    xml.write_text("<annotation><object><name>car</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                   "<xmax>4</xmax></bndbox></object></annotation>")
    with pytest.raises(DatasetFormatError, match="000002.xml: object #0 <bndbox> has no <ymax>"):
        PascalVOC(root, splits=["2007:trainval"], mode="det")
    write_xml(xml, [("unicorn", (1, 1, 4, 4), False)])
    with pytest.raises(DatasetFormatError, match="000002.xml: unknown class 'unicorn'"):
        PascalVOC(root, splits=["2007:trainval"], mode="det")


def test_missing_files_are_reported_by_path(devkit):
    root, _ = devkit
    (root / "VOC2007/JPEGImages/000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000002.jpg"):
        PascalVOC(root, splits=["2007:trainval"], mode="det")
    with pytest.raises(FileNotFoundError, match="ImageSets/Main/test.txt"):
        PascalVOC(root, splits=["2007:test"], mode="det")
    with pytest.raises(ValueError, match="YEAR:NAME"):
        PascalVOC(root, splits=["trainval"], mode="det")
    with pytest.raises(FileNotFoundError, match="VOCdevkit root"):
        PascalVOC(root / "nope")


def test_corrupt_image_is_logged_once_and_skipped(devkit, caplog):
    root, _ = devkit
    broken = root / "VOC2007/JPEGImages/000001.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    dataset = PascalVOC(root, splits=["2007:trainval"], mode="det")
    with caplog.at_level(logging.WARNING):
        first = dataset[0]
        again = dataset[0]
    assert first[1]["image_id"] == again[1]["image_id"] == "VOC2007/000002"
    messages = [r.getMessage() for r in caplog.records if "000001.jpg" in r.getMessage()]
    assert len(messages) == 1 and "cannot decode" in messages[0]
