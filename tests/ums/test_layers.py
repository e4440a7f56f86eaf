"""Lower layers never import higher ones. Read from the source, so a lazy import inside a function
counts too; and one real import shows that exporting a dataset loads no model library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

# what tsjnet may take from ums: the infrastructure (ums.core), small helpers and data types, never a stage
LIGHT_UMS = {"ums", "ums.taxonomy", "ums.detections", "ums.detection_metrics", "ums.cli_options", "ums.weights"}
STAGE_PACKAGES = ("ums.ingest", "ums.crop", "ums.align", "ums.autolabel", "ums.queue", "ums.review", "ums.demo", "ums.cli")
MODEL_LIBRARIES = {"torch", "torchvision", "segment_anything", "ultralytics", "onnxruntime", "natten"}
CORE = sorted(path.stem for path in (PROJECT_ROOT / "ums" / "core").glob("*.py") if path.stem != "__init__")
# below the stages: what every stage, export and report build on
LOWER_LAYERS = [f"core/{name}" for name in CORE] + [
    "weights", "taxonomy", "masks", "detections", "detection_metrics", "previews", "manifest", "split",
    "export", "exporters", "dataset_card", "report", "evidence", "labels_import", "queue_order"]


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
        heavy = {m for m in from_ums - LIGHT_UMS if not m.startswith("ums.core")}
        assert not heavy, f"{path.relative_to(PROJECT_ROOT)} imports {sorted(heavy)}"


def test_lower_layers_import_no_stage_and_no_model_library():
    for name in LOWER_LAYERS:
        path = PROJECT_ROOT / "ums" / f"{name}.py"
        modules = imported_modules(path)
        stages = sorted(m for m in modules if any(m == stage or m.startswith(stage + ".") for stage in STAGE_PACKAGES))
        models = sorted(m for m in modules if m.split(".")[0] in MODEL_LIBRARIES)
        if name == "core/offline":
            models = []  # it sets those libraries' offline settings, where each reads them
        assert not stages and not models, f"ums/{name}.py imports {stages + models}"


def test_the_infrastructure_imports_nothing_above_it():
    for name in CORE:
        from_ums = {m for m in imported_modules(PROJECT_ROOT / "ums" / "core" / f"{name}.py") if m.startswith("ums.")}
        assert all(m.startswith("ums.core") for m in from_ums), f"ums/core/{name}.py imports {sorted(from_ums)}"
    assert len(CORE) >= 10


def test_exporting_loads_no_model_library():
    probe = ("import sys, ums.export, ums.split, ums.report, ums.review; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & %r))" % MODEL_LIBRARIES)
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert loaded.stdout.strip() == "[]", loaded.stdout
