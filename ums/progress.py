"""One progress bar for every long stage (rich, already a Typer dependency)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")


def progress_bar(items: Sequence[T], description: str, enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while drawing a bar on stderr; a plain iteration when disabled."""
    if not enabled:
        yield from items
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        yield from progress.track(items, total=len(items), description=description)


