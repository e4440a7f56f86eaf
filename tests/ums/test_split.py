from __future__ import annotations

from tests.conftest import aligned_workspace

from collections import Counter

import pytest

from ums.core.records import LabelRecord
from ums.split import SplitConfig, holdout, split_workspace
from ums.synth import SynthFlightConfig, synth_flight


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    synth_flight(root / "flight", SynthFlightConfig(n=20, seed=2, show_progress=False))
    ws = aligned_workspace(root / "flight", root / "ws")
    for index, capture in enumerate(ws.captures()):
        ws.add_label(capture.capture_id, LabelRecord(class_id=2 if index % 3 else 0, box=(10, 10, 50, 50)))
    yield ws
    ws.close()


def splits_of(ws):
    results = {c.capture_id: ws.stage_results(c.capture_id).get("split") for c in ws.captures()}
    return {k: v for k, v in results.items() if v and v["status"] == "done"}


def test_blocks_never_straddle_splits_and_shares_hold(workspace):
    report = split_workspace(workspace, SplitConfig(max_block_captures=2))
    assigned = splits_of(workspace)
    assert len(assigned) == 20
    by_block: dict[int, set[str]] = {}
    for result in assigned.values():
        by_block.setdefault(result["block"], set()).add(result["split"])
    assert len(by_block) == 10 and all(len(splits) == 1 for splits in by_block.values())
    sizes = Counter(result["split"] for result in assigned.values())
    assert sizes == {"train": 14, "val": 4, "test": 2} or sizes == {"train": 14, "val": 2, "test": 4}
    assert report.counts["train"]["captures"] == 14
    assert all(report.counts[s]["class:person"] >= 1 for s in ("train",))


def test_gaps_start_blocks_and_seeds_reproduce(workspace):
    split_workspace(workspace, SplitConfig(max_block_captures=50, block_gap_s=1.0))  # 2 s apart: every capture alone
    assert len({r["block"] for r in splits_of(workspace).values()}) == 20
    split_workspace(workspace, SplitConfig(max_block_captures=4, seed=7))
    first = {k: v["split"] for k, v in splits_of(workspace).items()}
    split_workspace(workspace, SplitConfig(max_block_captures=4, seed=7))
    assert {k: v["split"] for k, v in splits_of(workspace).items()} == first


def test_rejected_captures_are_left_out(workspace):
    rejected = workspace.captures()[0].capture_id
    workspace.record_stage_result(rejected, "review", "done", {"tags": ["reject"]})
    report = split_workspace(workspace, SplitConfig(max_block_captures=2))
    assert report.rejected == 1 and sum(report.counts[s]["captures"] for s in report.counts) == 19
    assert workspace.stage_results(rejected)["split"] == {"status": "excluded", "split": None, "reason": "rejected in review"}
    workspace.record_stage_result(rejected, "review", "done", {"tags": []})


def test_fractions_are_validated():
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(fractions={"train": 0.8, "val": 0.3, "test": 0.1})


def test_one_short_flight_is_one_block_and_the_report_says_which_setting_splits_it(workspace):
    report = split_workspace(workspace, SplitConfig())  # 20 captures 2 s apart: one block of the default 20
    assert {split: counts["captures"] for split, counts in report.counts.items()} == {"train": 20}
    messages = [issue.message for issue in report.issues]
    assert len(messages) == 3 and all(issue.level == "warning" and issue.stage == "split" for issue in report.issues)
    assert messages[0].startswith("all 20 captures form one block") and "max_block_captures below 20" in messages[0]
    assert messages[1].startswith("val is empty") and messages[2].startswith("test is empty")
    assert "only 1 block for 3 splits" in messages[1] and "max_block_captures (now 20)" in messages[2]
    assert [issue.message for issue in workspace.issues("split")] == messages
    again = split_workspace(workspace, SplitConfig(max_block_captures=2))  # 10 blocks: nothing to warn about
    assert again.issues == [] and workspace.issues("split") == []


def test_an_empty_test_split_is_warned_with_its_reason(workspace):
    report = split_workspace(workspace, SplitConfig(max_block_captures=7))  # blocks of 7, 7, 6: train takes 14
    assert {split: counts["captures"] for split, counts in report.counts.items()} == {"train": 14, "val": 6}
    assert [issue.message.split(":")[0] for issue in report.issues] == ["test is empty"]
    assert "3 blocks of up to 7 captures" in report.issues[0].message and "15% of 20 = 3.0" in report.issues[0].message
    assert "max_block_captures (now 7)" in report.issues[0].message


def test_cli_prints_strata_as_plain_text_and_the_warnings(workspace):
    from typer.testing import CliRunner

    from ums.cli import app

    result = CliRunner().invoke(app, ["split", "--workspace", str(workspace.root)], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    assert "class:car: 13" in result.output and "\N{AUTOMOBILE}" not in result.output  # not rich's :car: emoji
    assert "all 20 captures form one block" in result.output and "test is empty" in result.output


def test_holdout_spreads_its_share_evenly_and_never_takes_all():
    ids = [f"c{i:02d}" for i in range(10)]
    assert holdout(ids, 0.2) == ["c02", "c07"]  # the middle of each half
    assert holdout(ids, 0.2) == holdout(list(ids), 0.2)  # a function of the order alone
    assert holdout(ids[:3], 0.2) == ["c01"]  # at least one
    assert holdout(ids[:2], 0.9) == ["c01"]  # never all: one stays to train on
    assert holdout(ids[:1], 0.5) == [] and holdout([], 0.5) == []
    assert len(set(holdout(ids, 0.5))) == 5
