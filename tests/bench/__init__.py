"""Tests of the research code in bench/ (not part of the package)."""
