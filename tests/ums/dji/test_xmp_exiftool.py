"""drone-dji XMP and EXIF of every real DJI sample against ExifTool's dumps of the same files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, shared_data
from ums.dji.exif import find_exif_block, read_exif
from ums.dji.jpeg import APP1, read_header
from ums.dji.xmp import find_xmp_packet, parse_drone_dji


def exiftool_dump(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            fields.setdefault(name.strip().replace(" ", ""), value.strip())
    return fields


def dumped_files() -> list[Path]:
    return sorted(shared_data("dji").rglob("*.exiftool.txt"))


# Collected at import so that each file is its own test; empty (and the tests below skipped by
# test_every_dump_has_its_image) when the shared data is absent.
DUMPS = sorted((SHARED_DATA / "dji").rglob("*.exiftool.txt")) if (SHARED_DATA / "dji").exists() else []


def image_for(dump: Path) -> Path:
    stem = dump.name[: -len(".exiftool.txt")]
    return next(p for p in dump.parent.iterdir() if p.stem == stem and p.suffix.lower() == ".jpg")


def exiftool_form(raw: str) -> str:
    # ExifTool prints XMP dates as EXIF dates: 2022-07-23T07:12:22.8 -> 2022:07:23 07:12:22.8
    match = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})T(.*)", raw)
    return f"{match[1]}:{match[2]}:{match[3]} {match[4]}" if match else raw


def dms_degrees(text: str) -> float:
    degrees, minutes, seconds, ref = re.match(r"(\d+) deg (\d+)' ([\d.]+)\" ([NSEW])", text).groups()
    value = int(degrees) + int(minutes) / 60 + float(seconds) / 3600
    return -value if ref in "SW" else value


# ExifTool prints these drone-dji tags under the EXIF names, in degrees-minutes-seconds.
DMS_TAGS = {"GpsLatitude": "GPSLatitude", "GpsLongitude": "GPSLongitude"}
SIGNATURE = {"AbsoluteAltitude", "RelativeAltitude", "GimbalYawDegree", "FlightYawDegree"}


def test_every_dump_has_its_image():
    dumps = dumped_files()
    assert len(dumps) >= 10
    for dump in dumps:
        assert image_for(dump).exists()


@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
def test_xmp_fields_equal_exiftool(dump: Path):
    expected = exiftool_dump(dump)
    header = read_header(image_for(dump).read_bytes())
    packet = find_xmp_packet(header.payloads(APP1))
    fields = parse_drone_dji(packet) if packet else {}
    # ExifTool's flat dump shows one "Version": crs:Version overwrites drone-dji:Version.
    compared = {name: field for name, field in fields.items() if name != "Version"}
    for name, field in compared.items():
        if name in DMS_TAGS:
            assert field["value"] == pytest.approx(dms_degrees(expected[DMS_TAGS[name]]), abs=0.01 / 3600)
            continue
        assert name in expected, f"{name} missing from the ExifTool dump"
        assert exiftool_form(field["raw"]) == expected[name], name
    # Whatever drone-dji fields ExifTool found, we found too.
    assert SIGNATURE & set(expected) <= set(fields)


@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
def test_exif_equals_exiftool(dump: Path):
    expected = exiftool_dump(dump)
    header = read_header(image_for(dump).read_bytes())
    exif = read_exif(find_exif_block(header.payloads(APP1)))
    assert exif["make"] == expected["Make"]
    assert exif["model"] == expected["CameraModelName"]
    # ExifTool appends SubSecTimeOriginal and OffsetTime where a camera writes them (XT2).
    assert exif["datetime"].replace("-", ":").replace("T", " ") == expected["Date/TimeOriginal"][:19]
    assert f"{exif['focal_length_mm']:.1f} mm" == expected["FocalLength"].split(" (")[0]
    if "GPSLatitude" in expected and exif["gps_latitude"] is not None:
        assert exif["gps_latitude"] == pytest.approx(dms_degrees(expected["GPSLatitude"]), abs=0.01 / 3600)
