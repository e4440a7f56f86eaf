"""Stage ``split``: train / val / test without leakage.

Consecutive frames of a flight are near-duplicates, so whole *blocks* of them go to one split: a
block is a run of captures of one flight folder with no gap over ``block_gap_s`` and at most
``max_block_captures`` long. Blocks are shuffled (seeded), then placed largest first into the split
that most lacks its share, of captures and of each stratum (label class, time of day, altitude
band, scenario) alike. Rejected captures (review tag ``reject``) are left out.

A short flight is one block (20 captures two seconds apart fit the defaults), and a block cannot be
cut, so everything lands in train; the report warns, naming the setting that makes smaller blocks,
and warns about every empty split. The warnings are the stage's issues (``ums status --issues``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ums.core.stage_names import ALIGN as ALIGN_STAGE
from ums.core.stage_names import SPLIT as STAGE
from ums.core.stage_names import REVIEW as REVIEW_STAGE
from ums.core.records import CaptureRecord, Issue
from ums.taxonomy import load_taxonomy
from ums.core.workspace import Workspace

SPLITS = ("train", "val", "test")


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15})
    block_gap_s: float = Field(30.0, gt=0)
    max_block_captures: int = Field(20, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if set(self.fractions) != set(SPLITS) or abs(sum(self.fractions.values()) - 1) > 1e-6:
            raise ValueError(f"fractions must give {', '.join(SPLITS)} and sum to 1")
        return self


@dataclass
class Block:
    captures: list[CaptureRecord]
    strata: Counter[str]


@dataclass
class SplitReport:
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # split -> stratum -> count
    blocks: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    issues: list[Issue] = field(default_factory=list)  # warnings about the outcome, with what to change

    def rows(self) -> list[tuple[str, object]]:
        rows = [("rejected (left out)", self.rejected)]
        for split in SPLITS:
            counts = self.counts.get(split, Counter())
            strata = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if k != "captures")
            rows.append((f"{split}: captures / blocks", f"{counts['captures']} / {self.blocks.get(split, 0)}"))
            rows.append((f"{split}: strata", strata or "-"))
        return rows


def split_workspace(workspace: Workspace, config: SplitConfig | None = None) -> SplitReport:
    """Assign every aligned, unrejected capture to train / val / test, by blocks of consecutive frames."""
    config = config or SplitConfig()
    with workspace.recorded_run(STAGE, config.model_dump(mode="json")) as summary:
        report = _assign_splits(workspace, config)
        workspace.replace_issues(STAGE, "workspace", report.issues)  # a better split clears the old warnings
        summary.update(report.rows())
        summary["warnings"] = [issue.message for issue in report.issues]
    return report


def _assign_splits(workspace: Workspace, config: SplitConfig) -> SplitReport:
    report = SplitReport()
    eligible = []
    for capture, _ in workspace.captures_with(ALIGN_STAGE):
        if "reject" in (workspace.stage_result(capture.capture_id, REVIEW_STAGE) or {}).get("tags", []):
            report.rejected += 1
            workspace.record_stage_result(capture.capture_id, STAGE, "excluded", {"split": None, "reason": "rejected in review"})
            continue
        eligible.append(capture)
    blocks = make_blocks(workspace, eligible, config)
    assignment = assign_blocks(blocks, config)
    for index, (block, split) in enumerate(zip(blocks, assignment)):
        report.blocks[split] = report.blocks.get(split, 0) + 1
        report.counts.setdefault(split, Counter()).update(block.strata + Counter(captures=len(block.captures)))
        for capture in block.captures:
            workspace.record_stage_result(capture.capture_id, STAGE, "done",
                                          {"split": split, "block": index, "seed": config.seed})
    report.issues = [Issue(stage=STAGE, level="warning", message=message) for message in split_warnings(blocks, report, config)]
    return report


def split_warnings(blocks: list[Block], report: SplitReport, config: SplitConfig) -> list[str]:
    """What went wrong with the outcome, and the setting that changes it."""
    captures = sum(len(block.captures) for block in blocks)
    if not captures:
        return ["nothing to split: no aligned capture outside the rejected ones"]
    smaller = "lower max_block_captures (now {m}) or block_gap_s (now {g:g} s) for more, smaller blocks".format(
        m=config.max_block_captures, g=config.block_gap_s)
    warnings = []
    if len(blocks) == 1 and captures > 1:
        warnings.append(
            f"all {captures} captures form one block (consecutive, no pause over {config.block_gap_s:g} s, at most "
            f"max_block_captures={config.max_block_captures} per block), so all went to train: set "
            f"max_block_captures below {captures} (e.g. {max(1, captures // 10)}) in a --config file for smaller blocks; "
            "near-duplicate neighbours may then sit in different splits")
    splits_wanted = sum(1 for split in SPLITS if config.fractions[split] > 0)
    for split in SPLITS[1:]:
        share = config.fractions[split]
        if share <= 0 or report.counts.get(split, Counter())["captures"]:
            continue
        if len(blocks) < splits_wanted:
            why = f"only {len(blocks)} block{'s' if len(blocks) > 1 else ''} for {splits_wanted} splits"
        else:
            largest = max(len(block.captures) for block in blocks)
            why = (f"{len(blocks)} blocks of up to {largest} captures, and its share is {share:.0%} of {captures} = "
                   f"{share * captures:.1f} captures")
        warnings.append(f"{split} is empty: {why}; {smaller}, or raise its fraction")
    return warnings


def make_blocks(workspace: Workspace, captures: list[CaptureRecord], config: SplitConfig) -> list[Block]:
    ordered = sorted(captures, key=lambda c: (c.flight_root, c.folder, c.timestamp or "", c.sequence))
    blocks: list[Block] = []
    previous: CaptureRecord | None = None
    for capture in ordered:
        if previous is None or _starts_block(previous, capture, blocks[-1], config):
            blocks.append(Block([], Counter()))
        blocks[-1].captures.append(capture)
        blocks[-1].strata.update(strata_of(workspace, capture))
        previous = capture
    return blocks


def _starts_block(previous: CaptureRecord, capture: CaptureRecord, block: Block, config: SplitConfig) -> bool:
    if (previous.flight_root, previous.folder) != (capture.flight_root, capture.folder):
        return True
    if len(block.captures) >= config.max_block_captures:
        return True
    if previous.timestamp and capture.timestamp:
        gap = (datetime.fromisoformat(capture.timestamp) - datetime.fromisoformat(previous.timestamp)).total_seconds()
        return gap > config.block_gap_s
    return False


def capture_conditions(capture: CaptureRecord) -> dict[str, str]:
    """Time of day, altitude band and scenario of a capture (from its time and XMP altitude)."""
    conditions = {}
    if capture.timestamp:
        hour = datetime.fromisoformat(capture.timestamp).hour
        conditions["time"] = "day" if 7 <= hour < 19 else "night"
    altitude = capture.reference_frame.xmp.get("RelativeAltitude")
    if altitude is not None and isinstance(altitude.value, (int, float)):
        value = altitude.value
        conditions["altitude"] = "low (<30 m)" if value < 30 else "mid (30-80 m)" if value < 80 else "high (>=80 m)"
        # the UMS viewpoints: a drone on or near the ground shoots like a ground camera
        conditions["scenario"] = "flight" if value >= 5 else "ground"
    return conditions


def strata_of(workspace: Workspace, capture: CaptureRecord) -> Counter[str]:
    """What the split should balance: label classes, time of day, altitude band, scenario."""
    names = load_taxonomy("ums").names
    strata = Counter(f"class:{names.get(label.class_id, label.class_id)}"
                     for label in workspace.labels(capture.capture_id) if not label.excluded)
    conditions = capture_conditions(capture)
    strata.update(f"{key}:{value}" for key, value in conditions.items())
    return strata


def assign_blocks(blocks: list[Block], config: SplitConfig) -> list[str]:
    """Greedy: each block (largest first, ties in seeded random order) to the split whose share of
    captures and of every stratum is most behind its target fraction."""
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(blocks))
    order = sorted(order, key=lambda i: -len(blocks[i].captures))  # stable: the shuffle breaks ties
    totals = Counter(captures=sum(len(b.captures) for b in blocks))
    for block in blocks:
        totals.update(block.strata)
    placed = {split: Counter() for split in SPLITS}
    assignment: dict[int, str] = {}
    for index in order:
        block = blocks[index]
        content = block.strata + Counter(captures=len(block.captures))

        def deficit(split: str) -> float:
            share = config.fractions[split]
            return sum((share * totals[key] - placed[split][key]) / totals[key] for key in content) / len(content)

        split = max(SPLITS, key=lambda s: (deficit(s), config.fractions[s]))
        placed[split].update(content)
        assignment[index] = split
    return [assignment[i] for i in range(len(blocks))]


def holdout(capture_ids: list[str], fraction: float) -> list[str]:
    """A deterministic val set for too few captures to split by blocks: ``fraction`` of them (at least
    one, never all), spread evenly over ``capture_ids`` in their order, so every part of a flight
    is represented. Neighbours of held-out frames stay in train: metrics on it are optimistic."""
    count = len(capture_ids)
    if count < 2:
        return []
    wanted = min(count - 1, max(1, round(count * fraction)))
    return [capture_ids[int((index + 0.5) * count / wanted)] for index in range(wanted)]
