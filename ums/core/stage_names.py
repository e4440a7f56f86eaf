"""The names of the pipeline's stages: how the workspace keys their results, issues and runs.

One module so a stage never imports another stage only to learn its name.
"""

from __future__ import annotations

INGEST = "ingest"
CROP = "crop"
ALIGN = "align"
AUTOLABEL = "autolabel"
QUEUE = "queue"
REVIEW = "review"
SPLIT = "split"
EXPORT = "export"
