"""Helpers the tests of this folder share."""

from __future__ import annotations


def claim_size(path, width: int, height: int) -> None:
    """Rewrite the frame size in the JPEG's SOF header, leaving the data as it was."""
    data = bytearray(path.read_bytes())
    index = 2
    while data[index + 1] not in (0xC0, 0xC1, 0xC2):
        index += 2 + int.from_bytes(data[index + 2:index + 4], "big")
    data[index + 5:index + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))


def slice_sample(dataset, capture_id, slice_name):
    from fiftyone import ViewField as F

    return dataset.select_group_slices(slice_name).match(F("capture_id") == capture_id).first()
