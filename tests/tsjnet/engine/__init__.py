"""Tests of tsjnet.engine."""
