"""The workspace at a glance: a console table (``ums status``) and an HTML page with thumbnails."""

from __future__ import annotations

import base64
import html
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ums.atomic import write_text
from ums.dji.filenames import VISIBLE_LETTERS
from ums.dji.rjpeg import stretch_to_uint8
from ums.records import CaptureRecord, Issue
from ums.stages import ALIGN, AUTOLABEL
from ums.workspace import Workspace

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


def write_html_report(workspace: Workspace, max_thumbnails: int = 6) -> Path:
    """``reports/index.html``: the summary, thumbnails of the first captures, every issue."""
    summary = summarize(workspace)
    captures = workspace.captures()[:max_thumbnails]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary.rows())
    cards = "".join(_capture_card(workspace, capture) for capture in captures)
    issues = "".join(
        f"<tr class='{i.level}'><td>{i.level}</td><td>{html.escape(i.stage)}</td>"
        f"<td>{html.escape(i.file or '')}</td><td>{html.escape(i.message)}</td></tr>"
        for i in summary.issues
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>UMS workspace report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; font-size: 14px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ border: 1px solid #ccc; padding: 8px; }}
.card img {{ height: {THUMBNAIL_HEIGHT}px; margin-right: 4px; }}
tr.error td {{ background: #fdd; }} tr.warning td {{ background: #ffe; }}
</style></head><body>
<h1>UMS workspace</h1>
<table>{rows}</table>
<h2>Captures (first {len(captures)} of {summary.captures})</h2>
<div class="cards">{cards}</div>
<h2>Issues ({len(summary.issues)})</h2>
<table><tr><th>level</th><th>stage</th><th>file</th><th>message</th></tr>{issues}</table>
</body></html>
"""
    return write_text(workspace.stage_dir("reports") / "index.html", page)


def _capture_card(workspace: Workspace, capture: CaptureRecord) -> str:
    images = []
    for key in VISIBLE_LETTERS:
        if key in capture.frames:
            images.append((key, _visible_thumbnail(Path(capture.frames[key].path))))
            break
    if capture.thermal_raw is not None:
        counts = cv2.imread(str(workspace.absolute(capture.thermal_raw.path)), cv2.IMREAD_UNCHANGED)
        if counts is not None:
            images.append(("T raw", _resize(stretch_to_uint8(counts))))
    elif "T" in capture.frames:
        images.append(("T preview", _visible_thumbnail(Path(capture.frames["T"].path))))
    align = workspace.stage_result(capture.capture_id, ALIGN)
    caption = ""
    if align and align["status"] == "done":
        overlay = cv2.imread(str(workspace.absolute(align["files"]["overlay"])))
        if overlay is not None:
            images.append(("aligned overlay", _resize(overlay)))
        caption = f" · align: {align['decision']}" + (" (flagged)" if align.get("flagged") else "")
    labelled = workspace.stage_result(capture.capture_id, AUTOLABEL)
    if labelled and labelled["status"] == "done":
        labels_preview = cv2.imread(str(workspace.absolute(labelled["files"]["preview"])))
        if labels_preview is not None:
            images.append(("labels", _resize(labels_preview)))
        caption += f" · {len(workspace.labels(capture.capture_id))} labels"
    tags = "".join(
        f'<img alt="{label}" title="{label}" src="data:image/jpeg;base64,{_jpeg_base64(image)}">'
        for label, image in images if image is not None
    )
    return (f'<div class="card"><div>{tags}</div><code>{html.escape(capture.capture_id)}</code>'
            f"{html.escape(caption)}</div>")


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
