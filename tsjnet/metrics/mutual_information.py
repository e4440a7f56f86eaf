"""MI: mutual information of the fused image with each source, from 256-bin joint histograms.

    MI(F, S) = sum p(f, s) log( p(f, s) / (p(f) p(s)) ),  combined over the two sources.

Units follow the convention's log base (bits for TSJNet; CDDFuse's sklearn gives nats).
"""

from __future__ import annotations

import numpy as np

from tsjnet.metrics.convention import TSJNET, Convention, as_grey


def mutual_information_pair(a: np.ndarray, b: np.ndarray, log_base: float = 2.0) -> float:
    x = np.clip(np.round(as_grey(a)), 0, 255).astype(np.int64).ravel()
    y = np.clip(np.round(as_grey(b)), 0, 255).astype(np.int64).ravel()
    joint = np.bincount(x * 256 + y, minlength=256 * 256).reshape(256, 256) / x.size
    px, py = joint.sum(1), joint.sum(0)
    nonzero = joint > 0
    ratio = joint[nonzero] / (px[:, None] * py[None, :])[nonzero]
    return float((joint[nonzero] * np.log(ratio)).sum() / np.log(log_base))


def mutual_information(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray,
                       convention: Convention = TSJNET) -> float:
    return convention.two_sources(mutual_information_pair(fused, infrared, convention.log_base),
                                  mutual_information_pair(fused, visible, convention.log_base))
