from __future__ import annotations

from tests.ums.dji.conftest import BILLION_LAUGHS
import pytest

from ums.dji.xmp import (
    XMP_APP1_PREFIX,
    XmpError,
    build_xmp_packet,
    find_xmp_packet,
    implausible_numbers,
    parse_drone_dji,
    parse_dewarp,
    parse_number,
)


@pytest.mark.parametrize(
    "text, value",
    [("+32.50", 32.5), ("82.400002", 82.400002), ("-6.90", -6.9), (" 7 ", 7), ("+0", 0), ("1e3", 1000.0)],
)
def test_lenient_numbers(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "Normal", "1.2.3", "5L4SK6A02AA064", "nan", "inf", "1e999", "-1e400"])
def test_non_numbers_stay_text(text):
    assert parse_number(text) is None


def test_round_trip_keeps_raw_and_parses_values():
    packet = build_xmp_packet({"AbsoluteAltitude": "+94.182", "ImageSource": "WideCamera",
                               "DroneSerialNumber": "1581F5FJD22740010156", "SelfData": ""})
    fields = parse_drone_dji(find_xmp_packet([b"Exif\x00\x00", packet]))
    assert fields["AbsoluteAltitude"] == {"raw": "+94.182", "value": 94.182}
    assert fields["ImageSource"]["value"] == "WideCamera"
    assert fields["DroneSerialNumber"]["value"] == "1581F5FJD22740010156"  # an id, not a number
    assert fields["SelfData"] == {"raw": "", "value": ""}


def test_element_form_is_read_too():
    packet = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
              b'22-rdf-syntax-ns#"><rdf:Description xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/">'
              b"<drone-dji:RelativeAltitude>+30.11</drone-dji:RelativeAltitude>"
              b"</rdf:Description></rdf:RDF></x:xmpmeta>")
    assert parse_drone_dji(packet)["RelativeAltitude"]["value"] == pytest.approx(30.11)


def test_dewarp_data():
    parsed = parse_dewarp("2022-06-08;3678.24,3671.39,10.06,-6.47,-0.29,0.12,0.0003,-0.0001,-0.04")
    assert parsed["fx"] == 3678.24 and parsed["cy"] == -6.47 and parsed["k3"] == -0.04
    assert parsed["date"] == "2022-06-08"
    assert parse_dewarp("garbage") is None



EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" drone-dji:SelfData="&secret;"/>
</rdf:RDF></x:xmpmeta>"""


@pytest.mark.parametrize("packet", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["entity-expansion", "external-entity"])
def test_hostile_xml_is_refused(packet):
    with pytest.raises(XmpError, match="refused"):
        parse_drone_dji(XMP_APP1_PREFIX[:0] + packet)


def test_broken_xml_is_an_xmp_error():
    with pytest.raises(XmpError, match="well-formed"):
        parse_drone_dji(b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF></x:xmpmeta>')
    with pytest.raises(XmpError, match="no <x:xmpmeta>"):
        parse_drone_dji(b"just text")


def test_numbers_no_flight_can_have_are_named_in_the_packets_order():
    fields = parse_drone_dji(build_xmp_packet({
        "GimbalPitchDegree": "1e9", "RelativeAltitude": "-500", "LRFTargetDistance": "0.000", "AbsoluteAltitude": "NaN",
        "FlightXSpeed": "+3.2", "GpsLatitude": "+91.5", "LRFStatus": "Normal", "SurveyingMode": "99999"}))
    assert implausible_numbers(fields) == {
        "GimbalPitchDegree": "XMP GimbalPitchDegree is 1e9, outside the plausible -360..360°: later stages ignore it",
        "RelativeAltitude": "XMP RelativeAltitude is -500, outside the plausible -200..1500 m: later stages ignore it",
        "AbsoluteAltitude": "XMP AbsoluteAltitude is 'NaN', not a finite number: later stages ignore it",
        "GpsLatitude": "XMP GpsLatitude is +91.5, outside the plausible -90..90°: later stages ignore it",
    }
