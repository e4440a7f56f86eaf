"""Tests of tsjnet.data."""
