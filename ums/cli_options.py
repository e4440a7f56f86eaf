"""The executor options of every command that runs a batch on workers (ums stages, tsjnet fuse):
one definition, so each command spells and documents them alike (config keys of
:class:`ums.executors.ExecutorSettings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from ums.config import default_config_path

WorkersOption = typer.Option(None, "--workers", "-j", help="Worker processes [default: one per CPU core; 1: in this process].")
ExecutorOption = typer.Option(None, "--executor", help="local (process pool) or dask [default: local; dask with --scheduler].")
SchedulerOption = typer.Option(None, "--scheduler", show_default="none",
                               help="Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786.")
SchedulerFileOption = typer.Option(None, "--scheduler-file", show_default="none",
                                   help="Scheduler file of a running Dask cluster (dask-jobqueue, SLURM).")


def config_default(stage: str, key: str) -> str:
    """What an option left out takes, as ``--help`` shows it: the value in ``pipelines/<stage>.yaml``,
    the file every run of the stage starts from (``key`` dotted for nested settings). Read from the
    YAML, not the config model, so that ``--help`` imports no stage (tests check the two agree)."""
    path = default_config_path(stage)
    value: Any = yaml.safe_load(path.read_text(encoding="utf-8")) if path else None
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "none" if value is None else str(value)


def executor_overrides(workers: Optional[int], executor: Optional[str], scheduler: Optional[str],
                       scheduler_file: Optional[Path]) -> dict[str, Any]:
    """The options as config overrides (None: not given)."""
    if executor is None and (scheduler or scheduler_file):
        executor = "dask"  # an address says where the cluster is: no need to say it is Dask too
    return {"workers": workers, "executor": executor, "scheduler": scheduler, "scheduler_file": scheduler_file}
