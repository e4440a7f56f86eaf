"""Tests of ums/autolabel (mirrors the package layout)."""
