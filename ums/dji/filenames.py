"""DJI capture file names.

``DJI_<YYYYMMDDHHMMSS>_<NNNN>_<X>.JPG`` on current firmware (M30T: W wide, Z zoom, T thermal,
S screen, V visible), ``DJI_<NNNN>_<X>.JPG`` on older firmware and other models (M2EA: T and V;
the Thermal SDK samples use R for the radiometric thermal frame).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

CAMERA_ROLES = {
    "W": "wide",
    "Z": "zoom",
    "T": "thermal",
    "R": "thermal",
    "S": "screen",
    "V": "visible",
}
THERMAL_LETTERS = frozenset({"T", "R"})
VISIBLE_LETTERS = ("W", "Z", "V")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg"})

_WITH_TIMESTAMP = re.compile(r"^DJI_(\d{14})_(\d{4})_([A-Z])\.jpe?g$", re.IGNORECASE)
_WITHOUT_TIMESTAMP = re.compile(r"^DJI_(\d{4})_([A-Z])\.jpe?g$", re.IGNORECASE)


@dataclass(frozen=True)
class CaptureName:
    sequence: int
    camera: str | None  # the letter as written, upper case; None until the content decides
    timestamp: datetime | None
    standard: bool = True  # False: a JPEG that is not named like a DJI capture



def parse_capture_name(file_name: str) -> CaptureName | None:
    """Parse a DJI capture file name; None when the name is not one (or names an unknown camera)."""
    match = _WITH_TIMESTAMP.match(file_name)
    if match:
        stamp, sequence, camera = match.groups()
        try:
            timestamp = datetime.strptime(stamp, "%Y%m%d%H%M%S")
        except ValueError:
            return None
    else:
        match = _WITHOUT_TIMESTAMP.match(file_name)
        if not match:
            return None
        sequence, camera = match.groups()
        timestamp = None
    camera = camera.upper()
    if camera not in CAMERA_ROLES:
        return None
    return CaptureName(int(sequence), camera, timestamp)


def fallback_capture_name(file_name: str) -> CaptureName:
    """A JPEG named otherwise (``DJI_H20T.jpg``, a renamed copy): its last digits are the
    sequence number, and its content must tell which camera took it."""
    digits = re.findall(r"\d+", file_name.rsplit(".", 1)[0])
    return CaptureName(int(digits[-1]) % 10000 if digits else 0, None, None, standard=False)
