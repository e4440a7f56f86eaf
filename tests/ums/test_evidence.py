"""Each piece of label-quality evidence on a constructed case whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from ums import evidence as ev

METRES_PER_PX = 0.1  # a person ~5 px, a car ~45 x 18 px


def scene_with(objects: list[tuple[int, int, int, int, float]], seed: int = 0) -> ev.ThermalScene:
    """Raw counts: noisy ground (sigma 10 counts) with warm rectangles (x0, y0, x1, y1, +counts)."""
    rng = np.random.default_rng(seed)
    counts = 20_000 + rng.normal(0, 10, (256, 320))
    for x0, y0, x1, y1, warmer in objects:
        counts[y0:y1, x0:x1] += warmer
    return ev.thermal_scene(counts.astype(np.uint16), METRES_PER_PX)


def label(box, name="car", provenance=None, score=0.9, mask=None) -> ev.BoxLabel:
    return ev.BoxLabel(box, name, score, provenance or {"visible": 0.9, "thermal": 0.9}, mask)


CAR = (100, 100, 145, 118)


def test_a_warm_car_seen_by_both_modalities_has_no_evidence():
    scene = scene_with([(*CAR, 200)])
    found = ev.label_evidence(label(CAR), scene, np.ones((256, 320), bool), dark_visible=False)
    assert found.names == [] and found.warmth > 15
    assert ev.box_warmth(np.array([[0.0, 1, 2, 3], [4, 5, 6, 7]])) == pytest.approx(6.5)  # the warmest 2 of 8


def test_a_box_on_cold_ground_is_not_warm_and_one_modality():
    scene = scene_with([(*CAR, 200)])
    found = ev.label_evidence(label((200, 150, 245, 168), provenance={"thermal": 0.6}), scene, None, dark_visible=False)
    assert found.names == [ev.ONE_MODALITY, ev.NOT_WARM]


@pytest.mark.parametrize("provenance, dark, warm, expected", [
    ({"thermal": 0.8}, True, 10.0, [ev.ONE_MODALITY_DARK]),  # night: visible could not have seen it
    ({"thermal": 0.8}, False, 10.0, [ev.ONE_MODALITY]),
    ({"visible": 0.8}, False, 1.0, [ev.ONE_MODALITY_COLD]),  # thermal could not have seen a cold object
    ({"visible": 0.8}, False, 10.0, [ev.ONE_MODALITY]),
    ({"visible": 0.8, "thermal": 0.7}, True, 1.0, []),
    ({"visible": 0.8, "thermal": 0.0}, False, 10.0, [ev.ONE_MODALITY]),  # a zero score is not a sighting
])
def test_one_modality_says_whether_the_other_could_have_seen_it(provenance, dark, warm, expected):
    assert ev.modality_evidence(provenance, dark, warm) == expected


def test_a_shifted_box_is_off_its_warm_object():
    scene = scene_with([(*CAR, 200)])
    shifted = (125, 100, 170, 118)  # half the car's length to the right
    assert ev.OFF_OBJECT in ev.label_evidence(label(shifted), scene, None, dark_visible=False).names
    assert ev.OFF_OBJECT not in ev.label_evidence(label(CAR), scene, None, dark_visible=False).names


def test_a_car_box_the_size_of_a_person_is_unlike_its_class():
    person_sized = (50, 50, 55, 55)  # 0.25 m2 at 0.1 m/px
    assert ev.size_evidence("car", 0.25) == [ev.SIZE_UNLIKE_CLASS]
    assert ev.size_evidence("person", 0.25) == []
    assert ev.size_evidence("person", 8.1) == [ev.SIZE_UNLIKE_CLASS]  # a car's footprint
    assert ev.size_evidence("car", 8.1) == []
    scene = scene_with([(50, 50, 55, 55, 300)])
    assert ev.SIZE_UNLIKE_CLASS in ev.label_evidence(label(person_sized, "car"), scene, None, False).names


def test_a_mask_that_misses_its_box_is_a_mismatch():
    mask = np.zeros((256, 320), bool)
    mask[100:118, 100:145] = True
    assert ev.mask_fill(mask, CAR) == pytest.approx(1.0)
    assert ev.MASK_MISMATCH not in ev.label_evidence(label(CAR, mask=mask), None, None, False).names
    assert ev.mask_fill(mask[:, ::-1].copy(), CAR) < 0  # mirrored: all of it outside the box
    spilled = np.zeros_like(mask)
    spilled[90:200, 80:300] = True  # SAM took the whole road
    assert ev.mask_fill(spilled, CAR) < 0
    assert ev.MASK_MISMATCH in ev.label_evidence(label(CAR, mask=spilled), None, None, False).names
    sliver = np.zeros_like(mask)
    sliver[100:102, 100:145] = True
    assert ev.mask_fill(sliver, CAR) == pytest.approx(2 / 18)


def test_border_and_resolution():
    valid = np.zeros((256, 320), bool)
    valid[:, 120:] = True  # the visible frame covers x >= 120 only
    on_border = ev.label_evidence(label(CAR), None, valid, False).names
    assert on_border == [ev.ON_BORDER]  # 20 of 45 columns outside: 44 %
    assert ev.label_evidence(label((10, 10, 11.5, 20)), None, None, False).names == [ev.TOO_SMALL]


def test_the_low_score_threshold():
    assert ev.label_evidence(label(CAR, score=0.39), None, None, False).names == [ev.LOW_SCORE]
    assert ev.label_evidence(label(CAR, score=0.4), None, None, False).names == []


def test_warm_unlabelled_regions_of_object_size_are_candidates():
    person, car, strip, speck = (60, 60, 65, 65, 300), (*CAR, 200), (0, 200, 300, 204, 200), (250, 30, 251, 31, 300)
    scene = scene_with([person, car, strip, speck])
    found = ev.warm_candidates(scene, [])
    boxes = sorted(tuple(int(v) for v in c.box) for c in found)
    assert boxes == [(60, 60, 65, 65), CAR]  # the strip is a road edge, the speck smaller than a person
    assert all(c.contrast > ev.CANDIDATE_PEAK_SIGMA for c in found)
    assert [tuple(int(v) for v in c.box) for c in ev.warm_candidates(scene, [CAR])] == [(60, 60, 65, 65)]


def test_the_contrast_is_in_robust_sigmas_of_the_scene():
    scene = scene_with([(*CAR, 100)])
    assert np.median(np.abs(scene.contrast)) == pytest.approx(0.6745, abs=0.05)  # |N(0,1)|'s median
    assert 7 < scene.contrast[105:113, 110:135].mean() < 13  # 100 counts over sigma 10, less the blur's share


def test_the_aligned_images_border_and_darkness():
    visible = np.zeros((4, 6, 3), np.uint8)
    visible[:, 2:] = 30
    assert ev.valid_area(visible).sum() == 16
    assert ev.visible_is_dark(visible, ev.valid_area(visible))
    visible[:, 2:] = 90
    assert not ev.visible_is_dark(visible, ev.valid_area(visible))


def test_a_box_on_featureless_visible_ground_shows_nothing_distinct():
    rng = np.random.default_rng(1)
    visible = np.clip(120 + rng.normal(0, 4, (256, 320, 3)), 0, 255).astype(np.uint8)
    visible[100:118, 100:145] = (30, 30, 200)  # a red car on grey ground
    counts = (20_000 + rng.normal(0, 10, (256, 320))).astype(np.uint16)
    scene = ev.thermal_scene(counts, METRES_PER_PX, visible=visible)
    assert ev.NOT_VISIBLE not in ev.label_evidence(label(CAR), scene, None, False).names
    assert ev.NOT_VISIBLE in ev.label_evidence(label((200, 150, 245, 168)), scene, None, False).names
    dark = (visible * 0.1).astype(np.uint8)  # at night the visible frame cannot speak against a box
    assert ev.thermal_scene(counts, METRES_PER_PX, visible=dark).visible_contrast is None


def test_a_box_cut_by_the_frame_edge_is_not_judged_by_its_size():
    scene = scene_with([(0, 100, 6, 118, 200)])
    cut_car = (0.0, 100.0, 6.0, 118.0)  # 1 m2 visible of a car entering the frame
    assert ev.SIZE_UNLIKE_CLASS not in ev.label_evidence(label(cut_car), scene, None, False).names
    assert ev.SIZE_UNLIKE_CLASS in ev.label_evidence(label((50.0, 100.0, 56.0, 118.0)), scene, None, False).names
