"""Serve the review App for a workspace and photograph it with headless Chromium.

    python bench/review_app.py WORKSPACE [--port 5151] [--out review_app.png]

Needs Debian's chromium (apt-get install chromium). Prints how long the dataset build, the App
start and the page load took, and writes the screenshot: what a reviewer first sees.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ums.review import build_review_dataset, launch_app  # noqa: E402
from ums.core.workspace import Workspace  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the App did not answer at {url} within {seconds} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--port", type=int, default=5151)
    parser.add_argument("--out", type=Path, default=Path("review_app.png"))
    args = parser.parse_args()
    browser = shutil.which("chromium")
    if browser is None:
        sys.exit("chromium is not installed: apt-get install chromium")
    timings = {}
    start = time.perf_counter()
    with Workspace.open(args.workspace, create=False) as workspace:
        dataset = build_review_dataset(workspace)
    from fiftyone import ViewField as F
    timings["build dataset"] = time.perf_counter() - start
    # open the first sample that has labels: the screenshot then shows a grouped sample with its boxes
    labelled = dataset.select_group_slices(["visible"]).match(F("detections.detections").length() > 0)
    sample_id = labelled.first().id if len(labelled) else None
    start = time.perf_counter()
    session = launch_app(dataset, args.port, wait=False, sample_id=sample_id)
    url = f"http://127.0.0.1:{args.port}/"
    wait_for(url, 60)
    timings["App answers"] = time.perf_counter() - start
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,900",
                        "--virtual-time-budget=15000", f"--screenshot={args.out.resolve()}", url],
                       check=True, capture_output=True, timeout=120)
    timings["page load + screenshot"] = time.perf_counter() - start
    session.close()
    for name, seconds in timings.items():
        print(f"{name:<26} {seconds:6.1f} s")
    print(f"screenshot: {args.out.resolve()}")


if __name__ == "__main__":
    main()
