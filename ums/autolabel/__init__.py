"""Automatic labels: detectors on both modalities, cross-modal merging, evaluation."""
