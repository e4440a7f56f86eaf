"""Tests of tsjnet.losses."""
