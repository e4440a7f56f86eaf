"""Tests of tsjnet.model."""
