import html
import re

import cv2
import numpy as np
import pytest

from tests.conftest import aligned_workspace
from ums.core.executors import ExecutorSettings
from ums.ingest import IngestConfig, ingest_flight
from ums.report import summarize, write_html_report
from ums.core.stage_names import ALIGN, AUTOLABEL
from ums.core.workspace import Workspace


def test_summary_counts_and_page(synthetic_flight, tmp_path):
    with Workspace.open(tmp_path / "ws") as ws:
        ingest_flight(ws, synthetic_flight, IngestConfig(), ExecutorSettings(show_progress=False))
        summary = summarize(ws)
        page = write_html_report(ws, page_size=2).read_text()
    assert (summary.captures, summary.pairs, summary.thermal_raw) == (4, 4, 4)
    assert summary.cameras == {"W": 4, "T": 4}
    assert summary.files == {"total": 8, "readable": 8, "unreadable": 0, "missing": 0}
    rows = dict(summary.rows())
    assert rows["issues (error / warning / info)"] == "0 / 0 / 0"
    assert "Captures 1–2 of 4 (page 1 of 2)" in page and page.count("<img") == 4
    assert "registration: not run" in page


def test_summary_lists_issues_by_level(tmp_path):
    flight = tmp_path / "flight"
    flight.mkdir()
    (flight / "DJI_20240101120000_0001_W.JPG").write_bytes(b"")
    with Workspace.open(tmp_path / "ws") as ws:
        ingest_flight(ws, flight, IngestConfig(), ExecutorSettings(show_progress=False))
        summary = summarize(ws)
        page = write_html_report(ws).read_text()
    assert summary.issue_levels["error"] == 1 and summary.captures == 0
    assert "empty file (0 bytes)" in page and "class='error'" in page


@pytest.fixture(scope="module")
def aligned(synthetic_flight, tmp_path_factory):
    workspace = aligned_workspace(synthetic_flight, tmp_path_factory.mktemp("report") / "ws")
    yield workspace
    workspace.close()


def _cards(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section class="card" id="capture-([^"]+)">(.*?)</section>', page, re.S))


def test_every_capture_is_on_a_page_with_captions_and_its_registration(aligned):
    ws = aligned
    captures = [c.capture_id for c in ws.captures()]
    labelled = captures[0]
    preview = ws.stage_dir(AUTOLABEL) / labelled / "preview.jpg"  # what autolabel leaves to look at
    preview.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(preview), np.full((512, 640, 3), 128, np.uint8))
    ws.record_outcome(labelled, AUTOLABEL, "done", {"files": {"preview": str(preview.relative_to(ws.root))}}, [])

    write_html_report(ws, page_size=1)  # 4 pages, 3 of them made stale by the next report
    index = write_html_report(ws, page_size=3)
    folder = index.parent
    assert sorted(p.name for p in folder.glob("*.html")) == ["index.html", "page-2.html", "review-first.html"]
    pages = {p.name: p.read_text() for p in folder.glob("*.html") if p.name != "review-first.html"}
    assert "Nothing to rank: run <code>ums queue</code>" in (folder / "review-first.html").read_text()
    cards = {name: _cards(text) for name, text in pages.items()}
    assert [len(cards["index.html"]), len(cards["page-2.html"])] == [3, 1]
    assert sorted(c for page in cards.values() for c in page) == sorted(captures)

    for name, text in pages.items():
        links = set(re.findall(r'href="([^"#]+)"', text))
        assert links == set(pages) - {name} and all((folder / link).is_file() for link in links), name
    assert re.search(r'<a[^>]*rel="next"[^>]*href="page-2.html"', pages["index.html"])
    assert re.search(r'<a[^>]*rel="prev"[^>]*href="index.html"', pages["page-2.html"])
    assert "Captures 4–4 of 4 (page 2 of 2)" in pages["page-2.html"]

    for page in cards.values():
        for capture_id, card in page.items():
            figures = re.findall(r"<figure><img [^>]*src=\"data:image/jpeg;base64,[^\"]+\"><figcaption>([^<]+)</figcaption>",
                                 card)
            expected = ["W visible", "T raw (stretched)", "aligned overlay"] + (["labels"] * (capture_id == labelled))
            assert figures == expected, capture_id
            align = ws.stage_result(capture_id, ALIGN)
            assert f"registration score {align['estimate']['score']:.2f}" in card
            assert f"decision {align['decision']}" in card and html.escape(align["reason"], quote=False) in card
            assert ("flagged" in card) == align["flagged"]
