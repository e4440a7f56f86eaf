"""Qabf and Nabf: Xydeas & Petrović's edge-preservation measures, in the two forms the fusion
literature actually reports (implementations disagree on constants; these are the chosen ones).

Qabf follows VIFB ``metricsQabf.m`` = SeAFusion ``analysis_Qabf.m`` = CDDFuse ``Evaluator.Qabf``
(the values in CDDFuse's and most IVIF tables): Sobel by 'same' zero-padded convolution on 0..255
data, edge strength g = |∇|, orientation a = atan(Sy/Sx) (π/2 where Sx = 0); per source
G = min(g, gF)/max(g, gF), A = 1 - |a - aF| / (π/2), Q = Tg/(1+e^{kg(G-Dg)}) · Ta/(1+e^{ka(A-Da)})
with Tg .9994, kg -15, Dg .5, Ta .9879, ka -22, Da .8; Qabf = Σ(Q_A g_A + Q_B g_B) / Σ(g_A + g_B).
Like all three references, where g == gF (flat regions included) G is set to gF, not 1.

Nabf is Shreyamsha Kumar's modified artifact measure (2013; SeAFusion's ``analysis_nabf.m``):
Sobel/8 on a reflect-101 border, weights w = g^1.5 where g >= 2 else 0, Q = sqrt(Qg · Qa) with
Qg = .9999/(1+e^{-19(G-.5)}), Qa = .9995/(1+e^{-22(A'-.5)}), A' = ||a - aF| - π/2| · 2/π,
G = 0 where either strength is 0; a pixel is an artifact where gF exceeds both sources' strengths;
Nabf = Σ_artifacts((1-Q_A) w_A + (1-Q_B) w_B) / Σ(w_A + w_B). Lower is better.
"""

from __future__ import annotations

import cv2
import numpy as np

from tsjnet.metrics.convention import as_grey

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)


def _convolve_same_zero(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    # true convolution (MATLAB conv2 'same'): correlate with the flipped kernel, zero border
    return cv2.filter2D(image, cv2.CV_64F, kernel[::-1, ::-1].copy(), borderType=cv2.BORDER_CONSTANT)


def _qabf_edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sx, sy = _convolve_same_zero(image, SOBEL_X), _convolve_same_zero(image, SOBEL_Y)
    strength = np.sqrt(sx * sx + sy * sy)
    with np.errstate(divide="ignore", invalid="ignore"):
        orientation = np.where(sx == 0, np.pi / 2, np.arctan(sy / sx))
    return strength, orientation


def _qabf_preservation(g_source, a_source, g_fused, a_fused) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(g_source > g_fused, g_fused / g_source,
                            np.where(g_source == g_fused, g_fused, g_source / g_fused))
    alignment = 1 - np.abs(a_source - a_fused) / (np.pi / 2)
    strength_term = 0.9994 / (1 + np.exp(-15 * (relative - 0.5)))
    orientation_term = 0.9879 / (1 + np.exp(-22 * (alignment - 0.8)))
    return strength_term * orientation_term


def qabf(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray) -> float:
    g_f, a_f = _qabf_edges(as_grey(fused))
    g_a, a_a = _qabf_edges(as_grey(infrared))
    g_b, a_b = _qabf_edges(as_grey(visible))
    q_a = _qabf_preservation(g_a, a_a, g_f, a_f)
    q_b = _qabf_preservation(g_b, a_b, g_f, a_f)
    total = np.sum(g_a + g_b)
    return float(np.sum(q_a * g_a + q_b * g_b) / total) if total > 0 else 0.0


def _kumar_edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # the sign convention of the kernels does not matter: strength and atan(gv/gh) are invariant
    gv = cv2.filter2D(image, cv2.CV_64F, SOBEL_X / 8, borderType=cv2.BORDER_REFLECT_101)
    gh = cv2.filter2D(image, cv2.CV_64F, SOBEL_Y / 8, borderType=cv2.BORDER_REFLECT_101)
    strength = np.sqrt(gv * gv + gh * gh)
    with np.errstate(divide="ignore", invalid="ignore"):
        orientation = np.where((gv == 0) & (gh == 0), 0.0, np.arctan(gv / gh))
    return strength, orientation


def _kumar_preservation(g_source, a_source, g_fused, a_fused) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where((g_source == 0) | (g_fused == 0), 0.0,
                            np.minimum(g_source, g_fused) / np.maximum(g_source, g_fused))
    alignment = np.abs(np.abs(a_source - a_fused) - np.pi / 2) * 2 / np.pi
    strength_term = 0.9999 / (1 + np.exp(-19 * (relative - 0.5)))
    orientation_term = 0.9995 / (1 + np.exp(-22 * (alignment - 0.5)))
    return np.sqrt(strength_term * orientation_term)


def nabf(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray) -> float:
    g_f, a_f = _kumar_edges(as_grey(fused))
    g_a, a_a = _kumar_edges(as_grey(infrared))
    g_b, a_b = _kumar_edges(as_grey(visible))
    w_a = np.where(g_a >= 2, g_a**1.5, 0.0)
    w_b = np.where(g_b >= 2, g_b**1.5, 0.0)
    total = np.sum(w_a + w_b)
    if total == 0:
        return 0.0
    artifact = (g_f > g_a) & (g_f > g_b)
    loss = (1 - _kumar_preservation(g_a, a_a, g_f, a_f)) * w_a + (1 - _kumar_preservation(g_b, a_b, g_f, a_f)) * w_b
    return float(np.sum(np.where(artifact, loss, 0.0)) / total)
