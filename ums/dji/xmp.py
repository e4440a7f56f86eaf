"""The ``drone-dji`` XMP packet: find it in APP1, parse it with a hardened XML parser.

exifread only parses XMP in debug mode, and a plain XML parser on files from an SD card invites
entity-expansion and external-entity attacks, so the packet is parsed with defusedxml, which refuses
DTDs, entity declarations and external references outright.
"""

from __future__ import annotations

import math
import re
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

XMP_APP1_PREFIX = b"http://ns.adobe.com/xap/1.0/\x00"
DRONE_DJI_NS = "http://www.dji.com/drone-dji/1.0/"
_NS_PREFIX = "{" + DRONE_DJI_NS + "}"
_LENIENT_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
# Fields that look numeric but are identifiers: keep them as text.
_TEXT_FIELDS = {"DroneSerialNumber", "CameraSerialNumber", "Version", "SelfData"}
_ANGLE = (-360.0, 360.0, "°")
_SPEED = (-100.0, 100.0, " m/s")
# Where a real flight's numbers lie (low, high, unit): a value outside is a writer's or an editor's
# error, not a measurement, and later stages must not compute with it. Relative altitude can be
# negative (a take-off above the survey) but not by hundreds of metres.
PLAUSIBLE_RANGES: dict[str, tuple[float, float, str]] = {
    "AbsoluteAltitude": (-500.0, 9000.0, " m"),
    "RelativeAltitude": (-200.0, 1500.0, " m"),
    "LRFTargetDistance": (0.0, 5000.0, " m"),
    "GpsLatitude": (-90.0, 90.0, "°"),
    "GpsLongitude": (-180.0, 180.0, "°"),
    "GpsLongtitude": (-180.0, 180.0, "°"),  # DJI's spelling on some models
    **{f"{part}{axis}Degree": _ANGLE for part in ("Gimbal", "Flight") for axis in ("Roll", "Pitch", "Yaw")},
    **{f"Flight{axis}Speed": _SPEED for axis in "XYZ"},
}


class XmpError(ValueError):
    """The XMP packet exists but cannot be read safely."""


def find_xmp_packet(app1_payloads: list[bytes]) -> bytes | None:
    for payload in app1_payloads:
        if payload.startswith(XMP_APP1_PREFIX):
            return payload[len(XMP_APP1_PREFIX) :]
    return None


def parse_number(text: str) -> float | int | None:
    """Parse DJI's numbers leniently: ``+32.50``, ``82.400002``, `` 7``; None when not a number."""
    if not _LENIENT_NUMBER.match(text):
        return None
    stripped = text.strip()
    if re.fullmatch(r"[+-]?\d+", stripped):
        return int(stripped)
    number = float(stripped)
    return number if math.isfinite(number) else None  # 1e999: no measurement, and JSON cannot hold it


def parse_dewarp(text: str) -> dict[str, Any] | None:
    """``DewarpData`` reads ``<date>;fx,fy,cx,cy,k1,k2,p1,p2,k3`` (cx, cy are offsets from centre)."""
    _, _, values = text.rpartition(";")
    numbers = [parse_number(v) for v in values.split(",")]
    names = ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3")
    if len(numbers) != len(names) or any(n is None for n in numbers):
        return None
    parsed: dict[str, Any] = {name: float(n) for name, n in zip(names, numbers)}
    date = text.split(";")[0] if ";" in text else None
    if date:
        parsed["date"] = date
    return parsed


def parse_drone_dji(packet: bytes) -> dict[str, dict[str, Any]]:
    """Every ``drone-dji`` field as ``{name: {"raw": str, "value": number | str}}``.

    Fields appear either as attributes of ``rdf:Description`` or as child elements; both are read.
    """
    try:
        root = SafeET.fromstring(_strip_packet_wrapper(packet))
    except DefusedXmlException as exc:
        raise XmpError(f"XMP refused by the hardened parser: {type(exc).__name__}") from exc
    except SafeET.ParseError as exc:
        raise XmpError(f"XMP is not well-formed XML: {exc}") from exc
    fields: dict[str, dict[str, Any]] = {}
    for element in root.iter():
        for key, raw in element.attrib.items():
            if key.startswith(_NS_PREFIX):
                fields[key[len(_NS_PREFIX) :]] = _field(key[len(_NS_PREFIX) :], raw)
        if element.tag.startswith(_NS_PREFIX) and len(element) == 0:
            name = element.tag[len(_NS_PREFIX) :]
            fields[name] = _field(name, element.text or "")
    return fields


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def implausible_numbers(fields: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Why each field of :data:`PLAUSIBLE_RANGES` that is not a finite number or lies outside its
    range cannot be used, by name, in the packet's order."""
    problems = {}
    for name, field in fields.items():
        if name not in PLAUSIBLE_RANGES:
            continue
        low, high, unit = PLAUSIBLE_RANGES[name]
        # from the text when the value is not a number: the same answer for a field ingest kept as text
        value = field["value"] if is_number(field["value"]) else parse_number(field["raw"])
        if value is None:
            problems[name] = f"XMP {name} is {field['raw']!r}, not a finite number: later stages ignore it"
        elif not low <= value <= high:
            problems[name] = (f"XMP {name} is {field['raw'].strip()}, outside the plausible {low:g}..{high:g}{unit}: "
                              "later stages ignore it")
    return problems


def _field(name: str, raw: str) -> dict[str, Any]:
    if name == "DewarpData":
        return {"raw": raw, "value": parse_dewarp(raw) or raw}
    number = None if name in _TEXT_FIELDS else parse_number(raw)
    return {"raw": raw, "value": raw if number is None else number}


def _strip_packet_wrapper(packet: bytes) -> bytes:
    # The <?xpacket?> processing instructions and trailing padding are not part of the document;
    # some writers leave NULs or garbage after the closing tag.
    start = packet.find(b"<x:xmpmeta")
    end = packet.find(b"</x:xmpmeta>")
    if start < 0 or end < 0:
        start = packet.find(b"<rdf:RDF")
        end_tag = b"</rdf:RDF>"
        end = packet.find(end_tag)
        if start < 0 or end < 0:
            raise XmpError("no <x:xmpmeta> or <rdf:RDF> element in the XMP packet")
        return packet[start : end + len(end_tag)]
    # A DOCTYPE before the element would be cut off by the slice; keep it so defusedxml sees it.
    doctype = packet.find(b"<!DOCTYPE")
    if 0 <= doctype < start:
        start = doctype
    return packet[start : end + len(b"</x:xmpmeta>")]


def build_xmp_packet(fields: dict[str, Any], extra_namespaces: dict[str, str] | None = None) -> bytes:
    """Write a DJI-style XMP packet (attributes on one rdf:Description), for synthetic flights."""
    from xml.sax.saxutils import quoteattr

    namespaces = {"drone-dji": DRONE_DJI_NS, **(extra_namespaces or {})}
    ns_decl = "\n".join(f'    xmlns:{p}="{uri}"' for p, uri in namespaces.items())
    attrs = "\n".join(f"   drone-dji:{k}={quoteattr(str(v))}" for k, v in fields.items())
    body = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about="DJI Meta Data"\n'
        f"{ns_decl}\n{attrs}>\n"
        "  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return XMP_APP1_PREFIX + body.encode("utf-8")
