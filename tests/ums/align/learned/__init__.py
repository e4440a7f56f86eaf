"""Tests of ums/align/learned (mirrors the package layout)."""
