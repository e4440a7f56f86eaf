"""EXIF of DJI frames, read with exifread from the APP1 TIFF block alone.

Handing exifread only the TIFF block (not the whole file) skips its own JPEG scan and the MakerNote
and thumbnail work, which DJI's files do not need.
"""

from __future__ import annotations

import io
import logging
from datetime import datetime
from fractions import Fraction
from typing import Any

import exifread

EXIF_APP1_PREFIX = b"Exif\x00\x00"
logging.getLogger("exifread").setLevel(logging.ERROR)


def find_exif_block(app1_payloads: list[bytes]) -> bytes | None:
    for payload in app1_payloads:
        if payload.startswith(EXIF_APP1_PREFIX):
            return payload[len(EXIF_APP1_PREFIX) :]
    return None


def read_exif(tiff_block: bytes) -> dict[str, Any]:
    """The EXIF fields the pipeline uses, as plain JSON-ready values (None where absent)."""
    tags = exifread.process_file(
        io.BytesIO(tiff_block), details=False, extract_thumbnail=False, strict=False
    )
    latitude = _gps_degrees(tags.get("GPS GPSLatitude"), tags.get("GPS GPSLatitudeRef"), "S")
    longitude = _gps_degrees(tags.get("GPS GPSLongitude"), tags.get("GPS GPSLongitudeRef"), "W")
    altitude = _number(tags.get("GPS GPSAltitude"))
    if altitude is not None and _text(tags.get("GPS GPSAltitudeRef")) in ("1", "Below Sea Level"):
        altitude = -altitude
    return {
        "make": _text(tags.get("Image Make")),
        "model": _text(tags.get("Image Model")),
        "datetime": _datetime(tags.get("EXIF DateTimeOriginal") or tags.get("Image DateTime")),
        "focal_length_mm": _number(tags.get("EXIF FocalLength")),
        "focal_length_35mm": _number(tags.get("EXIF FocalLengthIn35mmFilm")),
        "f_number": _number(tags.get("EXIF FNumber")),
        "gps_latitude": latitude,
        "gps_longitude": longitude,
        "gps_altitude_m": altitude,
        "image_description": _text(tags.get("Image ImageDescription")),
        "software": _text(tags.get("Image Software")),
        "serial_number": _text(tags.get("EXIF BodySerialNumber")),
        "width": _integer(tags.get("EXIF ExifImageWidth")),
        "height": _integer(tags.get("EXIF ExifImageLength")),
    }


def _text(tag: Any) -> str | None:
    if tag is None:
        return None
    text = str(tag.printable if hasattr(tag, "printable") else tag).strip().strip("\x00").strip()
    return text or None


def _values(tag: Any) -> list[Any]:
    values = getattr(tag, "values", tag)
    return list(values) if isinstance(values, (list, tuple)) else [values]


def _number(tag: Any) -> float | None:
    if tag is None:
        return None
    values = _values(tag)
    if not values:
        return None
    try:
        value = values[0]
        if isinstance(value, Fraction) and value.denominator == 0:
            return None
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _integer(tag: Any) -> int | None:
    number = _number(tag)
    return None if number is None else int(number)


def _gps_degrees(tag: Any, ref: Any, negative_ref: str) -> float | None:
    if tag is None:
        return None
    try:
        parts = [float(v) for v in _values(tag)]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if len(parts) != 3:
        return None
    degrees = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    if _text(ref) == negative_ref:
        degrees = -degrees
    return round(degrees, 9)


def _datetime(tag: Any) -> str | None:
    text = _text(tag)
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
