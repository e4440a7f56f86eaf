"""Tests of ums (mirrors the package layout)."""
