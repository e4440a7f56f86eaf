from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.conftest import shared_data
from ums.camera import CameraProfile, plane_homography
from ums.synth import SynthFlightConfig, synth_flight
from ums.synth.flight import COUNTS_PER_KELVIN


def load(truth_path):
    return json.loads(truth_path.read_text())


def test_flight_layout_and_metadata(synthetic_flight):
    truth = load(synthetic_flight / "groundtruth.json")
    assert len(truth["captures"]) == 4
    capture = truth["captures"][0]
    wide = cv2.imread(str(synthetic_flight / capture["files"]["W"]))
    thermal_path = synthetic_flight / capture["files"]["T"]
    assert wide.shape == (3000, 4000, 3)
    assert cv2.imread(str(thermal_path)).shape == (512, 640, 3)
    assert capture["files"]["W"].startswith("DCIM/DJI_202405171030_001_")


def warp_wide_into_thermal(wide_grey, thermal_to_wide):
    return cv2.warpPerspective(wide_grey, np.asarray(thermal_to_wide), (640, 512),
                               flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP)


def test_ground_truth_mapping_is_exact_on_an_identical_pair(tmp_path):
    """With IR == visible grey, the T frame must equal the W frame warped by the truth, and a
    mapping off by one thermal pixel must fit clearly worse."""
    pairs = tmp_path / "pairs"
    (pairs / "ir").mkdir(parents=True)
    (pairs / "vi").mkdir()
    rng = np.random.default_rng(5)
    texture = cv2.resize(rng.integers(0, 255, (64, 80), dtype=np.uint8), (640, 512), interpolation=cv2.INTER_CUBIC)
    texture = cv2.GaussianBlur(texture, (0, 0), 2)
    cv2.imwrite(str(pairs / "vi" / "a.png"), cv2.cvtColor(texture, cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(pairs / "ir" / "a.png"), texture)
    truth = load(synth_flight(tmp_path / "f", SynthFlightConfig(n=1, pairs=pairs, show_progress=False)))
    capture = truth["captures"][0]
    from ums.dji.jpeg import read_header
    from ums.dji.rjpeg import extract_raw_thermal

    counts = extract_raw_thermal(read_header((tmp_path / "f" / capture["files"]["T"]).read_bytes())).counts
    # invert the generator's grey -> temperature -> counts mapping
    thermal_grey = ((counts / COUNTS_PER_KELVIN - 273.15) - 10.0) * 255.0 / 25.0
    wide = cv2.imread(str(tmp_path / "f" / capture["files"]["W"]), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    mapping = np.asarray(capture["thermal_to_wide"])
    inner = (slice(40, -40), slice(40, -40))

    def error(h):
        return np.abs(warp_wide_into_thermal(wide, h) - thermal_grey)[inner].mean()

    shifted = mapping @ np.array([[1, 0, 1.0], [0, 1, 0], [0, 0, 1]])
    assert error(mapping) < 2.0
    assert error(shifted) > 2 * error(mapping)
    # the rig offset is real: a rig without offset or rotation fits measurably worse
    profile = CameraProfile.load("m30t")
    ideal = plane_homography(profile.cameras["T"].intrinsics(), profile.cameras["W"].intrinsics(), np.eye(3),
                             np.zeros(3), capture["distance_m"])
    assert error(ideal) > 2 * error(mapping)


def test_procedural_cars_are_hot_in_the_thermal_frame(synthetic_flight):
    from ums.dji.jpeg import read_header
    from ums.dji.rjpeg import extract_raw_thermal

    truth = load(synthetic_flight / "groundtruth.json")
    cars = 0
    for capture in truth["captures"]:
        counts = extract_raw_thermal(read_header((synthetic_flight / capture["files"]["T"]).read_bytes())).counts
        for obj in capture["objects"]:
            x0, y0, x1, y1 = (int(round(v)) for v in obj["box_thermal"])
            if obj["category"] != "car" or x0 < 2 or y0 < 2 or x1 > 637 or y1 > 509:
                continue
            cars += 1
            # the engine is the hottest thing in the scene
            assert counts[y0 : y1 + 1, x0 : x1 + 1].max() > np.percentile(counts, 99)
            assert len(obj["polygon_thermal"]) == 4
    assert cars >= 3


def test_flights_are_reproducible(tmp_path):
    first = load(synth_flight(tmp_path / "a", SynthFlightConfig(n=1, seed=7, show_progress=False)))
    second = load(synth_flight(tmp_path / "b", SynthFlightConfig(n=1, seed=7, show_progress=False)))
    assert first["captures"] == second["captures"]
    w = first["captures"][0]["files"]["W"]
    assert (tmp_path / "a" / w).read_bytes() == (tmp_path / "b" / w).read_bytes()


def test_missing_pairs_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="ir/ and vi/"):
        synth_flight(tmp_path / "f", SynthFlightConfig(n=1, pairs=tmp_path / "empty", show_progress=False))


def test_real_pairs_make_an_ingestible_flight(tmp_path):
    from ums.core.executors import ExecutorSettings
    from ums.ingest import IngestConfig, ingest_flight
    from ums.core.workspace import Workspace

    pairs = shared_data("llvip", "train")
    truth = load(synth_flight(tmp_path / "f", SynthFlightConfig(n=2, pairs=pairs, show_progress=False)))
    assert [c["source"] for c in truth["captures"]] == ["010001.jpg", "010002.jpg"]
    with Workspace.open(tmp_path / "ws") as ws:
        report = ingest_flight(ws, tmp_path / "f", IngestConfig(), ExecutorSettings(show_progress=False))
    assert report.paired == 2 and report.issues == []
