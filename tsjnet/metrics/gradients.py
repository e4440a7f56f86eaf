"""SF and AG: how much edge content the fused image carries.

SF (spatial frequency) = sqrt(RF^2 + CF^2), RF^2 = mean (F[i, j] - F[i, j-1])^2 over the m(n-1)
horizontal differences, CF^2 likewise vertically (VIFB averages over mn: a known bug).
AG (average gradient) = mean over the (m-1)(n-1) interior-grid points of
sqrt((gx^2 + gy^2) / 2) with forward differences gx = F[i, j+1] - F[i, j], gy = F[i+1, j] - F[i, j].
"""

from __future__ import annotations

import numpy as np

from tsjnet.metrics.convention import as_grey


def spatial_frequency(fused: np.ndarray) -> float:
    image = as_grey(fused)
    row_frequency = np.mean(np.diff(image, axis=1) ** 2)
    column_frequency = np.mean(np.diff(image, axis=0) ** 2)
    return float(np.sqrt(row_frequency + column_frequency))


def average_gradient(fused: np.ndarray) -> float:
    image = as_grey(fused)
    gx = image[:-1, 1:] - image[:-1, :-1]
    gy = image[1:, :-1] - image[:-1, :-1]
    return float(np.mean(np.sqrt((gx**2 + gy**2) / 2)))
