import numpy as np
import pytest

from ums.taxonomy import ClassMapping, Taxonomy, load_mapping, load_taxonomy, taxonomy_with_names


def test_shipped_taxonomies():
    assert load_taxonomy("ums").names == {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 4: "bus", 5: "truck"}
    assert len(load_taxonomy("coco").classes) == 80 and load_taxonomy("coco").names[7] == "truck"
    assert len(load_taxonomy("msrs-seg").classes) == 9 and len(load_taxonomy("m3fd").classes) == 6


@pytest.mark.parametrize("source, target", [("ums", "ums"), ("coco", "ums"), ("msrs-det", "ums"), ("m3fd", "ums"),
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


def test_synonyms_name_one_class_each():
    ums = load_taxonomy("ums")
    assert ums.class_of_word("Pedestrian") == 0 and ums.class_of_word(" pickup   truck ") == 5
    assert ums.class_of_word("van") == 2 and ums.class_of_word("dog") is None
    assert ums.vocabulary().startswith("person (pedestrian, people), bicycle (bike), car (vehicle, van, suv)")
    assert load_mapping("ums", "ums").table == {i: i for i in range(6)}
    with pytest.raises(ValueError, match="bike names more than one class"):
        Taxonomy(name="x", classes=[{"id": 0, "name": "bicycle", "synonyms": ["bike"]}, {"id": 1, "name": "Bike"}])


def test_a_taxonomy_is_found_by_its_names():
    assert taxonomy_with_names(load_taxonomy("ums").names) == "ums"
    assert taxonomy_with_names({str(i): n for i, n in load_taxonomy("m3fd").names.items()}) == "m3fd"
    assert taxonomy_with_names({0: "person", 1: "car"}) is None
