"""Tests of ums/dji (mirrors the package layout)."""
