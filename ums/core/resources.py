"""Where the YAML the code reads by name lives: ``labels/`` and ``pipelines/``.

Both folders stay at the top of the repository, the one copy that is edited. A wheel carries them as
``ums/_data/<folder>`` (``ums/_build.py`` copies them in at build time); a checkout or an editable
install has no such copy and reads the top-level folders. Nothing here depends on the working folder.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

PACKAGED = "_data"  # ums/_data/<folder> in a built wheel; ums/_build.py writes the same name
SHIPPED = ("labels", "pipelines")


@lru_cache(maxsize=None)
def resource_dir(folder: str) -> Path:
    """The ``labels`` or ``pipelines`` folder this ``ums`` was installed with."""
    if folder not in SHIPPED:
        raise ValueError(f"no shipped folder {folder!r} (known: {', '.join(SHIPPED)})")
    packaged = files("ums") / PACKAGED / folder
    # the packaged copy first: beside an installed package, ../<folder> would be some other site-packages entry
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / folder
