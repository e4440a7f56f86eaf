"""Readers for DJI drone files: names, JPEG segments, EXIF, drone-dji XMP, raw thermal blocks."""
