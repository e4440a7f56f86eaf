"""Write DJI-style JPEGs: EXIF (through Pillow's EXIF encoder), drone-dji XMP, raw thermal in APP3.

Used by ``ums synth-flight`` and by tests that need files shaped like an M30T's. The layout follows
the real files in the Thermal SDK samples: SOI, APP0 (JFIF), APP1 EXIF, APP1 XMP, APP3 raw blocks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin

from ums.dji.jpeg import APP1, APP3, insert_segments, split_payload
from ums.dji.xmp import build_xmp_packet

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825


def build_exif(
    make: str,
    model: str,
    taken_at: datetime,
    focal_length_mm: float,
    f_number: float | None,
    focal_length_35mm: float | None,
    width: int,
    height: int,
    latitude: float,
    longitude: float,
    altitude_m: float,
    description: str,
    software: str = "10.00.27.07",
) -> bytes:
    """An APP1 EXIF payload (``Exif\\0\\0`` + TIFF) with the tags DJI cameras write."""
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    exif[0x010E] = description
    exif[0x0131] = software
    exif[0x0132] = taken_at.strftime("%Y:%m:%d %H:%M:%S")
    details = exif.get_ifd(_EXIF_IFD)
    details[0x9003] = taken_at.strftime("%Y:%m:%d %H:%M:%S")
    details[0x9004] = taken_at.strftime("%Y:%m:%d %H:%M:%S")
    details[0x920A] = TiffImagePlugin.IFDRational(round(focal_length_mm * 100), 100)
    if f_number is not None:
        details[0x829D] = TiffImagePlugin.IFDRational(round(f_number * 100), 100)
    if focal_length_35mm is not None:
        details[0xA405] = int(focal_length_35mm)
    details[0xA002] = width
    details[0xA003] = height
    gps = exif.get_ifd(_GPS_IFD)
    gps[0x0000] = b"\x02\x03\x00\x00"
    gps[0x0001] = "N" if latitude >= 0 else "S"
    gps[0x0002] = _dms(abs(latitude))
    gps[0x0003] = "E" if longitude >= 0 else "W"
    gps[0x0004] = _dms(abs(longitude))
    gps[0x0005] = b"\x00" if altitude_m >= 0 else b"\x01"
    gps[0x0006] = TiffImagePlugin.IFDRational(round(abs(altitude_m) * 1000), 1000)
    return exif.tobytes()


def _dms(degrees: float) -> tuple[TiffImagePlugin.IFDRational, ...]:
    whole = int(degrees)
    minutes_float = (degrees - whole) * 60
    minutes = int(minutes_float)
    seconds = (minutes_float - minutes) * 60
    return (
        TiffImagePlugin.IFDRational(whole, 1),
        TiffImagePlugin.IFDRational(minutes, 1),
        TiffImagePlugin.IFDRational(round(seconds * 1_000_000), 1_000_000),
    )


def encode_dji_jpeg(
    image: np.ndarray,
    exif_payload: bytes,
    xmp_fields: dict[str, Any],
    raw_counts: np.ndarray | None = None,
    quality: int = 90,
) -> bytes:
    """Encode ``image`` (BGR or grey uint8) and insert DJI's metadata segments."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {image.shape}")
    segments = [(APP1, exif_payload), (APP1, build_xmp_packet(xmp_fields))]
    if raw_counts is not None:
        raw = np.ascontiguousarray(raw_counts, dtype="<u2").tobytes()
        segments += [(APP3, chunk) for chunk in split_payload(raw)]
    return insert_segments(encoded.tobytes(), segments)
