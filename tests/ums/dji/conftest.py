"""Helpers the tests of this folder share."""

from __future__ import annotations

from ums.dji.jpeg import APP3, insert_segments, read_header, split_payload


def with_raw_block(jpeg: bytes, raw: bytes, marker: int = APP3) -> bytes:
    """``jpeg`` with its APP3 segments replaced by ``raw`` split the way DJI splits it."""
    header = read_header(jpeg)
    kept, start = [], 0
    for segment in header.segments:
        if segment.marker == APP3:
            kept.append(jpeg[start:segment.offset])
            start = segment.offset + 4 + len(segment.payload)
    stripped = b"".join(kept) + jpeg[start:]
    return insert_segments(stripped, [(marker, chunk) for chunk in split_payload(raw)])


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" drone-dji:SelfData="&lol3;"/>
</rdf:RDF></x:xmpmeta>"""
