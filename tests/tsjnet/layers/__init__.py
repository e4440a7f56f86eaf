"""Tests of tsjnet/layers (mirrors the package layout)."""
