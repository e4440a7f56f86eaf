"""How a fusion metric turns two sources into one number: the choices the field leaves implicit.

The TSJNet paper's Table 2 (docs/reference/metrics.md): images in 0..255, two-source metrics *averaged* over the
sources (CDDFuse *sums* them: its SSIM is near 1), PSNR per image at peak 255 then averaged over
images, entropies in bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Convention:
    name: str
    combine: str  # "mean" or "sum" over the two sources
    data_range: float  # the images' value range
    log_base: float  # for EN and MI

    def two_sources(self, first: float, second: float) -> float:
        return (first + second) / 2 if self.combine == "mean" else first + second


TSJNET = Convention("tsjnet", combine="mean", data_range=255.0, log_base=2.0)
# CDDFuse's Evaluator: sums over the sources; MI through sklearn, in nats
CDDFUSE = Convention("cddfuse", combine="sum", data_range=255.0, log_base=np.e)
CONVENTIONS = {c.name: c for c in (TSJNET, CDDFUSE)}


def as_grey(image: np.ndarray) -> np.ndarray:
    """float64 single channel in 0..255 (colour images go through BT.601 luma, as cv2's BGR2GRAY)."""
    image = np.asarray(image)
    if image.ndim == 3:
        b, g, r = image[..., 0], image[..., 1], image[..., 2]
        image = 0.299 * r + 0.587 * g + 0.114 * b
    return image.astype(np.float64)
