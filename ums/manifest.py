"""``ums manifest --json``: one JSON object per capture per line; documented in docs/manifest.md."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ums.workspace import Workspace

# Fields that locate a flight or identify an aircraft and its owner.
PRIVATE_EXIF_FIELDS = ("gps_latitude", "gps_longitude", "gps_altitude_m", "serial_number")
PRIVATE_XMP_FIELDS = (
    "GpsLatitude", "GpsLongitude", "LRFTargetLat", "LRFTargetLon", "LRFTargetAbsAlt",
    "AbsoluteAltitude", "DroneSerialNumber", "CameraSerialNumber",
)


def manifest_records(workspace: Workspace, redact: bool = False) -> Iterator[dict[str, Any]]:
    for capture in workspace.manifest():
        record = capture.model_dump(mode="json")
        yield redact_record(record) if redact else record


def manifest_lines(workspace: Workspace, redact: bool = False) -> Iterator[str]:
    for record in manifest_records(workspace, redact):
        yield json.dumps(record, ensure_ascii=False, sort_keys=False)


def redact_record(record: dict[str, Any]) -> dict[str, Any]:
    """Remove GPS positions and serial numbers from a manifest record (and from each frame)."""
    for holder in [record, *record.get("frames", {}).values()]:
        exif = holder.get("exif") or {}
        for key in PRIVATE_EXIF_FIELDS:
            if key in exif:
                exif[key] = None
        xmp = holder.get("xmp") or {}
        for key in PRIVATE_XMP_FIELDS:
            xmp.pop(key, None)
    return record
