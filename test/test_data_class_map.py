"""Class maps: YAML parsing, remapping rules, colour masks, shipped config files."""

from pathlib import Path

import numpy as np
import pytest

from mtl_perception.data.aerial import DEEPFOREST_CLASS_MAP, SOLARIS_CLASS_MAP
from mtl_perception.data.class_map import ClassMap, colors_to_indices, detection_mapping, map_classes, mask_lookup
from mtl_perception.data.errors import DatasetFormatError
from mtl_perception.data.sdd import SDD_CLASS_MAP
from mtl_perception.data.voc import VOC_CLASS_MAP, voc_palette

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "datasets"


def test_map_classes_renames_drops_and_orders():
    mapping = map_classes(["Biker", "Pedestrian", "Car", "Bus"], ["person", "vehicle"],
                          {"Pedestrian": "person", "Car": "vehicle", "Bus": "vehicle"})
    assert mapping.lut.tolist() == [-1, 0, 1, 1]
    default = map_classes(["Tree", "Alive", "Dead"], rename={"Alive": "tree", "Dead": "tree", "Tree": "tree"})
    assert default.target_names == ("tree",) and default.lut.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="duplicate"):
        map_classes(["a"], ["x", "x"])


def test_mask_lookup_handles_unmapped_ignore_and_out_of_range():
    class_map = ClassMap(segmentation=("background", "road", "tree"), ignore_index=7)
    table, names = mask_lookup(class_map, ["background", "tree"])
    assert names == ("background", "tree")
    assert table[[0, 1, 2, 3, 7, 255]].tolist() == [0, 255, 1, 255, 255, 255]
    table, _ = mask_lookup(class_map, ["background", "tree"], unmapped="background")
    assert table[[0, 1, 2]].tolist() == [0, 0, 1]


def test_colors_to_indices_reports_unknown_colours():
    rgb = np.array([[[0, 0, 0], [128, 0, 0], [9, 9, 9], [224, 224, 192]]], dtype=np.uint8)
    indices, unknown = colors_to_indices(rgb, [(0, 0, 0), (128, 0, 0)], ignore_colors=[(224, 224, 192)])
    assert indices.tolist() == [[0, 1, 255, 255]]
    assert unknown == [(9, 9, 9)]


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("segmentation: [a, b]\npalette: [[0, 0, 0]]\n")
    with pytest.raises(DatasetFormatError, match="bad.yaml.*palette has 1 colours but there are 2"):
        ClassMap.from_yaml(path)
    path.write_text("segmentation: [a, a]\n")
    with pytest.raises(DatasetFormatError, match="bad.yaml: segmentation: duplicate"):
        ClassMap.from_yaml(path)
    path.write_text("detection: [a]\ncolours: []\n")
    with pytest.raises(DatasetFormatError, match="unknown class map keys \\['colours'\\]"):
        ClassMap.from_yaml(path)
    path.write_text("segmentation: [a]\npalette: [[300, 0, 0]]\n")
    with pytest.raises(DatasetFormatError, match="palette\\[0\\]"):
        ClassMap.from_yaml(path)
    path.write_text("name: x\n")
    with pytest.raises(DatasetFormatError, match="needs 'detection' and/or 'segmentation'"):
        ClassMap.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        ClassMap.from_yaml(tmp_path / "missing.yaml")


def test_hex_colours_and_rename_extension():
    class_map = ClassMap.from_dict({"segmentation": ["a", "b"], "palette": ["#000000", "#80ff01"]})
    assert class_map.palette == ((0, 0, 0), (128, 255, 1))
    renamed = class_map.with_rename({"b": "c"})
    assert mask_lookup(renamed)[1] == ("a", "c")


def test_voc_palette_is_the_standard_colour_map():
    palette = voc_palette(21)
    assert palette[0] == (0, 0, 0) and palette[1] == (128, 0, 0) and palette[15] == (192, 128, 128)
    assert palette[20] == (0, 64, 128)


@pytest.mark.parametrize("name, builtin", [
    ("voc", VOC_CLASS_MAP), ("sdd", SDD_CLASS_MAP),
    ("deepforest_trees", DEEPFOREST_CLASS_MAP), ("solaris_buildings", SOLARIS_CLASS_MAP),
])
def test_shipped_yaml_matches_builtin_class_map(name, builtin):
    assert ClassMap.from_yaml(CONFIG_DIR / f"{name}.yaml") == builtin


def test_every_shipped_yaml_loads():
    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        class_map = ClassMap.from_yaml(path)
        if class_map.detection is not None:
            assert len(detection_mapping(class_map).target_names) >= 1
    uavid = ClassMap.from_yaml(CONFIG_DIR / "uavid.yaml")
    table, names = mask_lookup(uavid)
    assert names == ("background", "building", "road", "tree", "low_vegetation", "car", "human")
    assert table[:8].tolist() == [0, 1, 2, 3, 4, 5, 5, 6]
