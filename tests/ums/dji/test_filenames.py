from datetime import datetime

import pytest

from ums.dji.filenames import fallback_capture_name, parse_capture_name


@pytest.mark.parametrize(
    "name, sequence, camera, timestamp",
    [
        ("DJI_20240517103000_0001_W.JPG", 1, "W", datetime(2024, 5, 17, 10, 30)),
        ("DJI_20240517103001_0001_T.jpg", 1, "T", datetime(2024, 5, 17, 10, 30, 1)),
        ("dji_20240517103001_0412_z.jpeg", 412, "Z", datetime(2024, 5, 17, 10, 30, 1)),
        ("DJI_0011_T.JPG", 11, "T", None),
        ("DJI_0001_R.JPG", 1, "R", None),
        ("DJI_0203_V.JPG", 203, "V", None),
    ],
)
def test_capture_names(name, sequence, camera, timestamp):
    parsed = parse_capture_name(name)
    assert (parsed.sequence, parsed.camera, parsed.timestamp, parsed.standard) == (sequence, camera, timestamp, True)


@pytest.mark.parametrize(
    "name",
    ["DJI_20241317103000_0001_W.JPG", "DJI_0001_Q.JPG", "DJI_0001_W.MP4", "IMG_0001.JPG", "DJI_H20T.jpg",
     "DJI_0001_W.JPG.bak"],
)
def test_not_capture_names(name):
    assert parse_capture_name(name) is None


def test_fallback_takes_the_last_digits():
    assert fallback_capture_name("DJI_H20T.jpg").sequence == 20
    assert fallback_capture_name("thermal.jpg").sequence == 0
    assert fallback_capture_name("x.jpg").camera is None and not fallback_capture_name("x.jpg").standard
