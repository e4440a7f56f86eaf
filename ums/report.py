"""The workspace at a glance: a console table (``ums status``) and an HTML page with thumbnails."""

from __future__ import annotations

import base64
import html
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ums.core.atomic import write_text
from ums.dji.filenames import VISIBLE_LETTERS
from ums.dji.rjpeg import stretch_to_uint8
from ums.core.records import CaptureRecord, Issue
from ums.queue_order import review_order
from ums.core.stage_names import ALIGN, AUTOLABEL, QUEUE
from ums.core.workspace import Workspace

THUMBNAIL_HEIGHT = 200


@dataclass
class WorkspaceSummary:
    root: Path
    schema_version: int
    files: dict[str, int]
    captures: int
    pairs: int
    thermal_raw: int
    cameras: Counter[str]
    stages: dict[str, Counter[str]]
    issues: list[Issue]

    @property
    def issue_levels(self) -> Counter[str]:
        return Counter(issue.level for issue in self.issues)

    def rows(self) -> list[tuple[str, str]]:
        levels = self.issue_levels
        rows = [
            ("workspace", str(self.root)),
            ("schema version", str(self.schema_version)),
            ("source files (readable / unreadable / missing)",
             f"{self.files['readable']} / {self.files['unreadable']} / {self.files['missing']}"),
            ("captures", str(self.captures)),
            ("frames per camera", ", ".join(f"{k}: {v}" for k, v in sorted(self.cameras.items())) or "-"),
            ("visible + thermal pairs", str(self.pairs)),
            ("raw thermal extracted", str(self.thermal_raw)),
        ]
        for stage, statuses in sorted(self.stages.items()):
            rows.append((f"stage {stage}", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))))
        rows.append(("issues (error / warning / info)",
                     f"{levels['error']} / {levels['warning']} / {levels['info']}"))
        return rows


def summarize(workspace: Workspace) -> WorkspaceSummary:
    captures = workspace.captures()
    return WorkspaceSummary(
        root=workspace.root,
        schema_version=workspace.schema_version,
        files=workspace.file_counts(),
        captures=len(captures),
        pairs=sum(1 for c in captures if "T" in c.frames and any(k in c.frames for k in VISIBLE_LETTERS)),
        thermal_raw=sum(1 for c in captures if c.thermal_raw is not None),
        cameras=Counter(key for c in captures for key in c.frames),
        stages=workspace.stage_counts(),
        issues=workspace.issues(),
    )


PAGE_SIZE = 50  # captures per page: each card inlines its thumbnails (30-40 kB), so one page stays a few MB
STYLE = f"""
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; font-size: 14px; }}
nav {{ margin: 1em 0; font-size: 15px; }}
nav a, nav span {{ margin-right: 6px; }}
nav .current {{ font-weight: bold; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ border: 1px solid #ccc; padding: 8px; }}
.card h3 {{ margin: 0 0 6px; font-size: 14px; font-family: monospace; font-weight: normal; }}
.card figure {{ display: inline-block; margin: 0 4px 0 0; vertical-align: top; }}
.card img {{ height: {THUMBNAIL_HEIGHT}px; display: block; }}
.card figcaption {{ font-size: 12px; color: #555; text-align: center; }}
.card p {{ margin: 6px 0 0; font-size: 13px; max-width: 60em; }}
.flagged {{ background: #c00; color: #fff; padding: 0 4px; border-radius: 3px; }}
tr.error td {{ background: #fdd; }} tr.warning td {{ background: #ffe; }}
"""


def page_name(number: int) -> str:
    return "index.html" if number == 1 else f"page-{number}.html"


def write_html_report(workspace: Workspace, page_size: int = PAGE_SIZE) -> Path:
    """``reports/index.html`` (the summary, the first page of captures, every issue) and
    ``reports/page-N.html`` for the other captures, ``page_size`` to a page; returns index.html."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    summary = summarize(workspace)
    captures = workspace.captures()
    pages = max(1, -(-len(captures) // page_size))
    folder = workspace.stage_dir("reports")
    for number in range(1, pages + 1):
        first = (number - 1) * page_size
        chunk = captures[first:first + page_size]
        heading = (f"Captures {first + 1}–{first + len(chunk)} of {len(captures)} (page {number} of {pages})"
                   if chunk else "Captures (none yet)")
        nav = _page_nav(number, pages)
        cards = "".join(_capture_card(workspace, capture) for capture in chunk)
        body = f"<h2>{heading}</h2>{nav}<div class=\"cards\">{cards}</div>{nav}"
        if number == 1:
            body = f"<table>{_summary_rows(summary)}</table>{_review_first_link(workspace)}{body}{_issues_table(summary)}"
        title = "UMS workspace" + ("" if number == 1 else f" · captures page {number}")
        _write_page(folder / page_name(number), title, workspace, body)
    _write_page(folder / REVIEW_FIRST_PAGE, "UMS workspace · review first", workspace,
                _review_first_body(workspace, page_size))
    for stale in folder.glob("page-*.html"):
        # a report of fewer captures than the last one must not leave pages behind that nothing links to
        number = stale.stem.removeprefix("page-")
        if not number.isdigit() or int(number) > pages:
            stale.unlink()
    return folder / page_name(1)


REVIEW_FIRST_PAGE = "review-first.html"


def _write_page(path: Path, title: str, workspace: Workspace, body: str) -> None:
    write_text(path, f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head><body>
<h1>UMS workspace <small>{html.escape(workspace.root.name)}</small></h1>
{body}
</body></html>
""")


def _review_first_link(workspace: Workspace) -> str:
    weighed = len(workspace.captures_with(QUEUE))
    if not weighed:
        return "<p>Review first: no capture weighed yet (run <code>ums queue</code>).</p>"
    return f'<p><a href="{REVIEW_FIRST_PAGE}">Review first</a>: the captures most likely to hold label errors.</p>'


def _review_first_body(workspace: Workspace, limit: int) -> str:
    """The review queue's order, with each capture's priority and the evidence behind it."""
    entries = review_order(workspace, limit=limit)
    if not entries:
        return ("<h2>Review first</h2><p>Nothing to rank: run <code>ums queue</code> after <code>ums autolabel</code> "
                "(or <code>ums labels import</code>); reviewed captures leave the queue.</p>")
    captures = {capture.capture_id: capture for capture in workspace.captures()}
    cards = []
    for rank, entry in enumerate(entries, 1):
        reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in entry.reasons[:8])
        cards.append(f"<div><h3>{rank}. expected errors {entry.priority:.2f}</h3><ul>{reasons}</ul>"
                     f"{_capture_card(workspace, captures[entry.capture_id])}</div>")
    return (f'<h2>Review first ({len(entries)} captures, most likely to hold a label error first)</h2>'
            f'<p><a href="index.html">‹ the workspace</a></p><div class="cards">{"".join(cards)}</div>')


def _summary_rows(summary: WorkspaceSummary) -> str:
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary.rows())


def _issues_table(summary: WorkspaceSummary) -> str:
    issues = "".join(
        f"<tr class='{i.level}'><td>{i.level}</td><td>{html.escape(i.stage)}</td>"
        f"<td>{html.escape(i.file or '')}</td><td>{html.escape(i.message)}</td></tr>"
        for i in summary.issues
    )
    return (f"<h2>Issues ({len(summary.issues)})</h2>"
            f"<table><tr><th>level</th><th>stage</th><th>file</th><th>message</th></tr>{issues}</table>")


def _page_nav(number: int, pages: int) -> str:
    if pages == 1:
        return ""
    links = []
    if number > 1:
        links.append(f'<a rel="prev" href="{page_name(number - 1)}">‹ previous</a>')
    for other in range(1, pages + 1):
        links.append(f'<span class="current">{other}</span>' if other == number
                     else f'<a href="{page_name(other)}">{other}</a>')
    if number < pages:
        links.append(f'<a rel="next" href="{page_name(number + 1)}">next ›</a>')
    return f"<nav>{''.join(links)}</nav>"


def _capture_card(workspace: Workspace, capture: CaptureRecord) -> str:
    images = []
    for key in VISIBLE_LETTERS:
        if key in capture.frames:
            images.append((f"{key} visible", _visible_thumbnail(Path(capture.frames[key].path))))
            break
    if capture.thermal_raw is not None:
        counts = cv2.imread(str(workspace.absolute(capture.thermal_raw.path)), cv2.IMREAD_UNCHANGED)
        if counts is not None:
            images.append(("T raw (stretched)", _resize(stretch_to_uint8(counts))))
    elif "T" in capture.frames:
        images.append(("T preview (camera palette)", _visible_thumbnail(Path(capture.frames["T"].path))))
    align = workspace.stage_result(capture.capture_id, ALIGN)
    if align and align["status"] == "done":
        overlay = cv2.imread(str(workspace.absolute(align["files"]["overlay"])))
        if overlay is not None:
            images.append(("aligned overlay", _resize(overlay)))
    lines = [_registration_line(align)]
    labelled = workspace.stage_result(capture.capture_id, AUTOLABEL)
    if labelled and labelled["status"] == "done":
        labels_preview = cv2.imread(str(workspace.absolute(labelled["files"]["preview"])))
        if labels_preview is not None:
            images.append(("labels", _resize(labels_preview)))
        lines.append(html.escape(f"{len(workspace.labels(capture.capture_id))} labels"))
    figures = "".join(
        f'<figure><img alt="{label}" src="data:image/jpeg;base64,{_jpeg_base64(image)}">'
        f"<figcaption>{label}</figcaption></figure>"
        for label, image in images if image is not None
    )
    capture_id = html.escape(capture.capture_id)
    return (f'<section class="card" id="capture-{capture_id}"><h3>{capture_id}</h3><div>{figures}</div>'
            + "".join(f"<p>{line}</p>" for line in lines) + "</section>")


def _registration_line(align: dict | None) -> str:
    """What registration made of the pair: a flagged or failed one needs a person's eye."""
    if align is None:
        return "registration: not run"
    score = (align.get("estimate") or {}).get("score")
    parts = [f"registration score {score:.2f}" if score is not None else "registration score –",
             f"decision {align.get('decision', align['status'])}"]
    text = html.escape(" · ".join(parts), quote=False)
    if align.get("flagged"):
        text += ' <span class="flagged">flagged</span>'
    if align.get("reason"):
        text += f" · {html.escape(align['reason'], quote=False)}"
    return text


def _visible_thumbnail(path: Path) -> np.ndarray | None:
    # libjpeg's DCT scaling decodes a 12 MP frame at 1/8 size for a fraction of the full cost.
    image = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_8)
    return None if image is None else _resize(image)


def _resize(image: np.ndarray) -> np.ndarray:
    scale = THUMBNAIL_HEIGHT / image.shape[0]
    return cv2.resize(image, (round(image.shape[1] * scale), THUMBNAIL_HEIGHT), interpolation=cv2.INTER_AREA)


def _jpeg_base64(image: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return base64.b64encode(encoded.tobytes()).decode("ascii") if ok else ""
