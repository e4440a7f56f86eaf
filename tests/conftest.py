"""Shared fixtures: the public test data beside the project, and synthetic flights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("UMS_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing and why."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the public test data (not redistributable) lives in "
                    "../shared/data beside the project; set UMS_SHARED_DATA to point elsewhere")
    return path


@pytest.fixture(scope="session")
def synthetic_flight(tmp_path_factory) -> Path:
    """A 4-capture procedural M30T flight (4000x3000 W + 640x512 T), made once per session."""
    from ums.synth import SynthFlightConfig, synth_flight

    out = tmp_path_factory.mktemp("flight")
    synth_flight(out, SynthFlightConfig(n=4, seed=3, show_progress=False))
    return out


def aligned_workspace(flight: Path, root: Path):
    """A workspace with ``flight`` ingested, cropped and aligned (default settings, no progress bars)."""
    from ums.align.stage import AlignConfig, align_workspace
    from ums.crop import CropConfig, crop_workspace
    from ums.ingest import IngestConfig, ingest_flight
    from ums.core.executors import ExecutorSettings
    from ums.core.workspace import Workspace

    workspace = Workspace.open(root)
    quiet = ExecutorSettings(show_progress=False)
    ingest_flight(workspace, flight, IngestConfig(), quiet)
    crop_workspace(workspace, CropConfig(), quiet)
    align_workspace(workspace, AlignConfig(), quiet)
    return workspace
