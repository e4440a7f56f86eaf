"""The package is self-contained: configs, taxonomies and camera profiles come with the code, not from
the working folder, in a checkout and in a wheel installed elsewhere."""

from __future__ import annotations

import pytest

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.conftest import PROJECT_ROOT

STAGES = ("ingest", "crop", "align", "autolabel", "split", "synth-flight", "train", "train-tiny")
# what the build reads: the project table, the readme it names, the packages and the shipped YAML
BUILD_INPUTS = ("pyproject.toml", "README.md", "ums", "tsjnet", "labels", "pipelines")
PROBE = """
import json, ums, ums.core.config as config, ums.taxonomy as taxonomy, ums.camera as camera
print(json.dumps({
    "ums": ums.__file__,
    "configs": {stage: str(config.default_config_path(stage)) for stage in %r},
    "labels": str(taxonomy.LABELS_DIR),
    "cameras": str(camera.PROFILE_DIR),
    "taxonomy": taxonomy.load_taxonomy("ums").name,
    "mapping": len(taxonomy.load_mapping("coco", "ums").table),
    "profile": camera.CameraProfile.load("m30t").name,
}))
""" % (STAGES,)


def _probe(python: str | Path, cwd: Path, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([str(python), "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _shipped_yaml(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for folder in ("labels", "pipelines") for p in (root / folder).rglob("*.yaml")}


def _under(path: str, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


def test_configs_taxonomies_and_profiles_resolve_from_another_folder(tmp_path):
    found = _probe(sys.executable, tmp_path)
    assert all(found["configs"][stage] != "None" for stage in STAGES), found["configs"]
    for path in [*found["configs"].values(), found["labels"], found["cameras"]]:
        assert Path(path).exists() and not _under(path, tmp_path), path
    assert found["taxonomy"] == "ums" and found["profile"] and found["mapping"] > 0


def _clean_env() -> dict[str, str]:
    # the installed copy alone must answer: nothing may point Python back at the checkout
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "UMS_WORKSPACE"}}


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


@pytest.mark.slow
def test_wheel_installs_and_runs_the_pipeline_from_another_folder(tmp_path):
    # build from a copy: an in-tree build writes build/ and *.egg-info into a checkout others work in
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (PROJECT_ROOT / name).is_dir():
            shutil.copytree(PROJECT_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(PROJECT_ROOT / name, source / name)
    dist = tmp_path / "dist"
    # no build isolation and no index: the setuptools of this environment builds, nothing is downloaded
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist),
          str(source)], tmp_path)
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"ums/_data/{name}" for name in _shipped_yaml(PROJECT_ROOT)} <= names
    assert not any(name.startswith(("labels/", "pipelines/")) for name in names), "top-level folders in site-packages"
    assert {f"ums/align/learned/weights/{name}" for name in ("refiner.safetensors", "MODEL_CARD.md")} <= names

    # a fresh environment without the heavy stack: the wheel goes in alone, then a .pth line lends it
    # this environment's installed dependencies (added after the install, so pip sees no ums-tsjnet there)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp_path)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # only the paths themselves: the .pth files there (this checkout's editable finder) are not run
    lent = dict.fromkeys([*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(purelib) / "lent-dependencies.pth").write_text("".join(f"{p}\n" for p in lent), encoding="utf-8")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    found = _probe(python, elsewhere, env)
    assert _under(found["ums"], venv), f"ums imported from {found['ums']}, not from the new environment"
    for path in [*found["configs"].values(), found["labels"], found["cameras"]]:
        assert _under(path, venv) and Path(path).exists(), path

    ums = str(venv / "bin" / "ums")
    _run([ums, "synth-flight", "flight", "--n", "2", "--seed", "1", "--no-progress"], elsewhere, env)
    _run([ums, "ingest", "flight", "-w", "ws", "--workers", "1", "--no-progress"], elsewhere, env)
    _run([ums, "crop", "-w", "ws", "--workers", "1", "--no-progress"], elsewhere, env)
    _run([ums, "align", "-w", "ws", "--workers", "1", "--no-progress"], elsewhere, env)
    # the learned cascade with the refiner the wheel ships, no --weights
    _run([ums, "align", "-w", "ws", "--workers", "1", "--method", "learned", "--no-progress"], elsewhere, env)
    assert len(list((elsewhere / "flight").rglob("*.JPG"))) == 4
    for stage in ("crop", "align"):
        captures = [p for p in (elsewhere / "ws" / stage).iterdir() if p.is_dir()]
        assert len(captures) == 2 and all(any(p.iterdir()) for p in captures), f"{stage}: {captures}"
