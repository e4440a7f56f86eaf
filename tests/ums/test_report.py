from ums.ingest import IngestConfig, ingest_flight
from ums.report import summarize, write_html_report
from ums.workspace import Workspace


def test_summary_counts_and_page(synthetic_flight, tmp_path):
    with Workspace.open(tmp_path / "ws") as ws:
        ingest_flight(ws, synthetic_flight, IngestConfig(show_progress=False))
        summary = summarize(ws)
        page = write_html_report(ws, max_thumbnails=2).read_text()
    assert (summary.captures, summary.pairs, summary.thermal_raw) == (4, 4, 4)
    assert summary.cameras == {"W": 4, "T": 4}
    assert summary.files == {"total": 8, "readable": 8, "unreadable": 0, "missing": 0}
    rows = dict(summary.rows())
    assert rows["issues (error / warning / info)"] == "0 / 0 / 0"
    assert "Captures (first 2 of 4)" in page and page.count("<img") == 4


def test_summary_lists_issues_by_level(tmp_path):
    flight = tmp_path / "flight"
    flight.mkdir()
    (flight / "DJI_20240101120000_0001_W.JPG").write_bytes(b"")
    with Workspace.open(tmp_path / "ws") as ws:
        ingest_flight(ws, flight, IngestConfig(show_progress=False))
        summary = summarize(ws)
        page = write_html_report(ws).read_text()
    assert summary.issue_levels["error"] == 1 and summary.captures == 0
    assert "empty file (0 bytes)" in page and "class='error'" in page
