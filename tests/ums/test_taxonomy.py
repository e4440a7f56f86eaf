import numpy as np
import pytest

from ums.taxonomy import ClassMapping, Taxonomy, load_mapping, load_taxonomy


def test_shipped_taxonomies():
    assert load_taxonomy("ums").names == {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 4: "bus", 5: "truck"}
    assert len(load_taxonomy("coco").classes) == 80 and load_taxonomy("coco").names[7] == "truck"
    assert len(load_taxonomy("msrs-seg").classes) == 9 and len(load_taxonomy("m3fd").classes) == 6


@pytest.mark.parametrize("source, target", [("coco", "ums"), ("msrs-det", "ums"), ("m3fd", "ums"),
                                            ("ums", "msrs-seg"), ("msrs-seg", "ums")])
def test_every_shipped_mapping_loads(source, target):
    assert load_mapping(source, target).table


def test_mapping_values():
    coco = load_mapping("coco", "ums")
    assert coco(0) == 0 and coco(7) == 5 and coco(16) is None  # person, truck, dog
    np.testing.assert_array_equal(coco.map_array(np.array([2, 16, 5])), [2, -1, 4])
    to_msrs = load_mapping("ums", "msrs-seg")
    assert to_msrs(4) == 1 and to_msrs(0) == 2  # bus -> car, person -> person
    assert load_mapping("m3fd", "ums")(4) is None  # Lamp has no UMS class


def test_errors_name_what_is_wrong():
    with pytest.raises(FileNotFoundError, match="known"):
        load_taxonomy("imagenet")
    with pytest.raises(KeyError, match="no coco->m3fd"):
        load_mapping("coco", "m3fd")
    ums = load_taxonomy("ums")
    with pytest.raises(ValueError, match="unknown source classes"):
        ClassMapping(ums, ums, {"dragon": "car"})
    with pytest.raises(ValueError, match="unique"):
        Taxonomy(name="x", classes=[{"id": 0, "name": "a"}, {"id": 0, "name": "b"}])


def test_palette_reserves_background():
    palette = load_taxonomy("ums").palette()
    assert palette.shape == (7, 3) and not palette[0].any() and tuple(palette[1]) == (60, 20, 220)
