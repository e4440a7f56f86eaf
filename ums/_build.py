"""Build-time only (``[tool.setuptools.cmdclass]`` in pyproject.toml): put ``labels/`` and ``pipelines/``
into the wheel as ``ums/_data/...``, read at run time by ``ums.core.resources``.

setuptools maps package data only from inside a package folder, and a package-dir mapping would need
every package listed by hand instead of found; copying at build time keeps the top-level folders the
one source. The files enter ``build_py.data_files``, so the wheel, the sdist and the egg-info's file
list all see them, and an editable install (which copies nothing) reads the top-level folders instead.
Loaded by setuptools from its file, without importing ``ums``: standard library and setuptools only.
"""

from __future__ import annotations

import os
import shutil
from glob import glob

from setuptools.command.build_py import build_py as _build_py

PACKAGED = "_data"  # the name ums.core.resources.PACKAGED reads
SHIPPED = ("labels", "pipelines")


class build_py(_build_py):
    def run(self) -> None:
        if not self.editable_mode:
            # build/lib outlives a build: a YAML deleted from the repository must not stay in the next wheel
            shutil.rmtree(os.path.join(self.build_lib, "ums", PACKAGED), ignore_errors=True)
        super().run()

    def _get_data_files(self):
        return [*super()._get_data_files(), *self._shipped_data()]

    def get_data_files_without_manifest(self):
        return [*super().get_data_files_without_manifest(), *self._shipped_data()]

    def _shipped_data(self) -> list[tuple[str, str, str, list[str]]]:
        """(package, source folder, build folder, files relative to both) as build_py.data_files holds them."""
        # setuptools runs the build in the project root; paths stay relative as its own package data does
        files = sorted(path for folder in SHIPPED for path in glob(os.path.join(folder, "**", "*.yaml"), recursive=True))
        return [(f"ums.{PACKAGED}", "", os.path.join(self.build_lib, "ums", PACKAGED), files)]
