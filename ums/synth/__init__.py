"""Synthetic M30T flights with exact ground truth (``ums synth-flight``)."""

from ums.synth.flight import GROUND_TRUTH_NAME, SynthFlightConfig, synth_flight

__all__ = ["GROUND_TRUTH_NAME", "SynthFlightConfig", "synth_flight"]
