"""``ums manifest --json``: one JSON object per capture per line; documented in docs/manifest.md."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from ums.core.workspace import Workspace

# Fields that locate a flight or identify an aircraft and its owner.
PRIVATE_EXIF_FIELDS = ("gps_latitude", "gps_longitude", "gps_altitude_m", "serial_number")
PRIVATE_XMP_FIELDS = (
    "GpsLatitude", "GpsLongitude", "GpsLongtitude", "AbsoluteAltitude",
    "LRFTargetLat", "LRFTargetLon", "LRFTargetAlt", "LRFTargetAbsAlt",
    "DroneSerialNumber", "CameraSerialNumber", "LensSerialNumber",
)
# Firmware adds and misspells fields (GpsLongtitude): a name like these goes too, even if unlisted.
_PRIVATE_XMP_NAME = re.compile(r"latitude|longt?itude|serial", re.IGNORECASE)


def manifest_records(workspace: Workspace, redact: bool = False) -> Iterator[dict[str, Any]]:
    for capture in workspace.manifest():
        record = without_write_times(capture.model_dump(mode="json"))
        yield redact_record(record, str(workspace.root)) if redact else record


def without_write_times(record: dict[str, Any]) -> dict[str, Any]:
    """Each stage's output stamps as size and SHA-256 only: when a file was written says nothing
    about the dataset, and would make two runs' manifests differ."""
    for result in record.get("stages", {}).values():
        outputs = result.get("outputs") if isinstance(result, dict) else None
        if isinstance(outputs, dict):
            result["outputs"] = {path: {"size": stamp["size"], "sha256": stamp["sha256"]} for path, stamp in outputs.items()}
    return record


def manifest_lines(workspace: Workspace, redact: bool = False) -> Iterator[str]:
    for record in manifest_records(workspace, redact):
        yield json.dumps(record, ensure_ascii=False, sort_keys=False)


def redact_record(record: dict[str, Any], workspace_root: str | None = None) -> dict[str, Any]:
    """Remove positions and serial numbers from a manifest record (and from each frame), and the
    folders above the flight and the workspace from every path: those often hold a user name."""
    for holder in [record, *record.get("frames", {}).values()]:
        exif = holder.get("exif") or {}
        for key in PRIVATE_EXIF_FIELDS:
            if key in exif:
                exif[key] = None
        xmp = holder.get("xmp") or {}
        for key in [k for k in xmp if k in PRIVATE_XMP_FIELDS or _PRIVATE_XMP_NAME.search(k)]:
            del xmp[key]
    flight_root = record.get("flight_root")
    # Longest first: a workspace inside the flight folder (or the reverse) loses its own prefix.
    prefixes = sorted((_folder_prefix(p) for p in (flight_root, workspace_root) if p), key=len, reverse=True)
    record = _strip_prefixes(record, [p for p in prefixes if p])
    if flight_root:
        record["flight_root"] = PurePosixPath(flight_root).name
    return record


def _folder_prefix(folder: str) -> str:
    # "/" as a prefix would strip every slash of every string; such a root keeps its paths.
    return folder.rstrip("/") + "/" if folder.rstrip("/") else ""


def _strip_prefixes(value: Any, prefixes: list[str]) -> Any:
    """Every string of ``value`` with the prefixes removed wherever they occur (issue messages quote
    paths too)."""
    if isinstance(value, str):
        for prefix in prefixes:
            value = value.replace(prefix, "")
        return value
    if isinstance(value, dict):
        return {key: _strip_prefixes(item, prefixes) for key, item in value.items()}
    if isinstance(value, list):
        return [_strip_prefixes(item, prefixes) for item in value]
    return value
