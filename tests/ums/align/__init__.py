"""Tests of ums/align (mirrors the package layout)."""
