"""Lower layers never import higher ones. Read from the source, so a lazy import inside a function
counts too; and one real import shows that exporting a dataset loads no model library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

# what tsjnet may take from ums: small helpers and data types, never a stage
LIGHT_UMS = {"ums", "ums.offline", "ums.config", "ums.atomic", "ums.progress", "ums.taxonomy", "ums.detections",
             "ums.detection_metrics", "ums.executors", "ums.cli_options", "ums.weights"}
STAGE_PACKAGES = ("ums.ingest", "ums.crop", "ums.align", "ums.autolabel", "ums.review", "ums.demo", "ums.cli")
MODEL_LIBRARIES = {"torch", "torchvision", "segment_anything", "ultralytics", "onnxruntime", "natten"}
# below the stages: what every stage, export and report build on
LOWER_LAYERS = ["workspace", "records", "runner", "executors", "cli_options", "weights", "resources", "stages", "lock", "atomic",
                "config", "progress",
                "taxonomy", "masks",
                "detections", "detection_metrics", "previews", "manifest", "split", "export", "dataset_card", "report"]


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_tsjnet_takes_only_small_helpers_from_ums():
    for path in sorted((PROJECT_ROOT / "tsjnet").rglob("*.py")):
        from_ums = {m for m in imported_modules(path) if m == "ums" or m.startswith("ums.")}
        assert from_ums <= LIGHT_UMS, f"{path.relative_to(PROJECT_ROOT)} imports {sorted(from_ums - LIGHT_UMS)}"


def test_lower_layers_import_no_stage_and_no_model_library():
    for name in LOWER_LAYERS:
        path = PROJECT_ROOT / "ums" / f"{name}.py"
        modules = imported_modules(path)
        stages = sorted(m for m in modules if m.startswith(STAGE_PACKAGES))
        models = sorted(m for m in modules if m.split(".")[0] in MODEL_LIBRARIES)
        assert not stages and not models, f"ums/{name}.py imports {stages + models}"


def test_exporting_loads_no_model_library():
    probe = ("import sys, ums.export, ums.split, ums.report, ums.review; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & %r))" % MODEL_LIBRARIES)
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert loaded.stdout.strip() == "[]", loaded.stdout
