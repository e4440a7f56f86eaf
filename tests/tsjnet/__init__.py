"""Tests of tsjnet (mirrors the package layout)."""
