"""bench/ scripts import each other by file name, as they do when run as scripts: the folder joins
the import path, last, so that no installed module is shadowed by a bench script's name."""

from __future__ import annotations

import sys

from tests.conftest import PROJECT_ROOT

BENCH = str(PROJECT_ROOT / "bench")
if BENCH not in sys.path:
    sys.path.append(BENCH)
