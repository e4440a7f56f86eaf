"""Label previews: boxes and tinted masks drawn on both images of a pair, for people to look at."""

from __future__ import annotations

import cv2
import numpy as np

from ums.core.records import LabelRecord
from ums.taxonomy import DATASET_TAXONOMY as TARGET_TAXONOMY
from ums.taxonomy import load_taxonomy



def preview(visible: np.ndarray, thermal: np.ndarray, labels: list[LabelRecord], semantic: np.ndarray) -> np.ndarray:
    """Boxes (human labels thick) and tinted masks on both images side by side."""
    names = load_taxonomy(TARGET_TAXONOMY).names
    palette = load_taxonomy(TARGET_TAXONOMY).palette()
    panels = []
    for image in (visible, cv2.cvtColor(thermal, cv2.COLOR_GRAY2BGR)):
        tinted = image.copy()
        painted = semantic > 0
        tinted[painted] = (0.5 * tinted[painted] + 0.5 * palette[semantic[painted]]).astype(np.uint8)
        for label in labels:
            colour = tuple(int(c) for c in palette[label.class_id + 1])
            x0, y0, x1, y1 = (int(round(v)) for v in label.box)
            cv2.rectangle(tinted, (x0, y0), (x1, y1), colour, 2 if label.protected else 1)
            text = f"{names[label.class_id]} {label.score:.2f}" if label.score is not None else names[label.class_id]
            cv2.putText(tinted, text, (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
        panels.append(tinted)
    return np.hstack(panels)
