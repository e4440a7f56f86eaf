"""Qabf and Nabf against pixel-by-pixel transcriptions of the MATLAB references (VIFB
metricsQabf.m; Shreyamsha Kumar's objective_fusion_perform_fn.m) and hand-worked values."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.signal import convolve2d

from tests.conftest import shared_data
from tsjnet.metrics import nabf, qabf


def matlab_qabf(f, a, b):
    """metricsQabf.m, loop for loop."""
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def edges(x):
        sx, sy = convolve2d(x, h3, mode="same"), convolve2d(x, h1, mode="same")
        g = np.sqrt(sx * sx + sy * sy)
        angle = np.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                angle[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return g, angle

    (ga, aa), (gb, ab), (gf, af) = edges(a), edges(b), edges(f)

    def preservation(g, angle):
        q = np.zeros_like(g)
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                if g[i, j] > gf[i, j]:
                    relative = gf[i, j] / g[i, j]
                elif g[i, j] == gf[i, j]:
                    relative = gf[i, j]
                else:
                    relative = g[i, j] / gf[i, j]
                alignment = 1 - abs(angle[i, j] - af[i, j]) / (math.pi / 2)
                q[i, j] = (0.9994 / (1 + math.exp(-15 * (relative - 0.5)))) * (0.9879 / (1 + math.exp(-22 * (alignment - 0.8))))
        return q

    return np.sum(preservation(ga, aa) * ga + preservation(gb, ab) * gb) / np.sum(ga + gb)


def matlab_nabf(f, a, b):
    """Kumar's modified Nabf, loop for loop, with MATLAB's per_extn_im_fn border."""
    vtemp = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float) / 8
    htemp = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float) / 8

    def edges(x):
        ext = np.pad(x, 1)
        ext[0, :], ext[-1, :] = ext[2, :], ext[-3, :]
        ext[:, 0], ext[:, -1] = ext[:, 2], ext[:, -3]
        gv = np.zeros_like(x)
        gh = np.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                gv[i, j] = np.sum(ext[i:i + 3, j:j + 3] * vtemp)
                gh[i, j] = np.sum(ext[i:i + 3, j:j + 3] * htemp)
        angle = np.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                if gv[i, j] == 0 and gh[i, j] == 0:
                    angle[i, j] = 0
                elif gh[i, j] == 0:
                    angle[i, j] = math.copysign(math.pi / 2, gv[i, j])
                else:
                    angle[i, j] = math.atan(gv[i, j] / gh[i, j])
        return np.sqrt(gv * gv + gh * gh), angle

    (ga, aa), (gb, ab), (gf, af) = edges(a), edges(b), edges(f)

    def preservation(g, angle):
        q = np.zeros_like(g)
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                relative = 0 if g[i, j] == 0 or gf[i, j] == 0 else min(g[i, j], gf[i, j]) / max(g[i, j], gf[i, j])
                alignment = abs(abs(angle[i, j] - af[i, j]) - math.pi / 2) * 2 / math.pi
                qg = 0.9999 / (1 + math.exp(-19 * (relative - 0.5)))
                qa = 0.9995 / (1 + math.exp(-22 * (alignment - 0.5)))
                q[i, j] = math.sqrt(qg * qa)
        return q

    wa, wb = (ga >= 2) * ga**1.5, (gb >= 2) * gb**1.5
    artifact = (gf > ga) & (gf > gb)
    return np.sum(artifact * ((1 - preservation(ga, aa)) * wa + (1 - preservation(gb, ab)) * wb)) / np.sum(wa + wb)


@pytest.fixture(scope="module")
def crops():
    ir = cv2.imread(str(shared_data("msrs", "ir", "00055D.png")), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    vi = cv2.imread(str(shared_data("msrs", "vi", "00055D.png")), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    ir, vi = ir[200:248, 300:360], vi[200:248, 300:360]
    return np.round(np.maximum(ir, vi)), ir, vi


def test_qabf_equals_the_matlab_reference(crops):
    assert qabf(*crops) == pytest.approx(matlab_qabf(*crops), abs=1e-10)


def test_nabf_equals_the_matlab_reference(crops):
    assert nabf(*crops) == pytest.approx(matlab_nabf(*crops), abs=1e-10)
    fused, ir, vi = crops
    sharpened = np.clip(fused + 2.0 * (fused - cv2.GaussianBlur(fused, (5, 5), 1.0)), 0, 255)
    assert nabf(sharpened, ir, vi) == pytest.approx(matlab_nabf(sharpened, ir, vi), abs=1e-10)
    assert nabf(sharpened, ir, vi) > nabf(fused, ir, vi)  # over-sharpening creates artifacts


def step_image():
    image = np.zeros((32, 32))
    image[:, 16:] = 200
    image[8:12, 4:9] = 90
    return image


def test_hand_worked_values():
    image = step_image()
    # perfect fusion of identical sources: every edge kept in strength (G = gF >> 0.5) and angle (A = 1)
    assert qabf(image, image, image) == pytest.approx(0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2)), abs=1e-9)
    # a flat second source carries no weight
    assert qabf(image, image, np.zeros_like(image)) == pytest.approx(qabf(image, image, image), abs=1e-12)
    assert qabf(np.zeros_like(image), image, image) < 1e-3  # nothing of the edges survives
    assert nabf(image, image, image) == 0.0  # no fused edge is stronger than its sources'
    # doubled contrast: every edge an artifact with G = 1/2 and the orientation kept (A' = 1)
    expected = 1 - math.sqrt(0.9999 / 2 * 0.9995 / (1 + math.exp(-11)))
    assert nabf(2 * image, image, image) == pytest.approx(expected, abs=1e-12)
