"""Tests of tsjnet/metrics (mirrors the package layout)."""
