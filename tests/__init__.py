"""Tests of tests (mirrors the package layout)."""
