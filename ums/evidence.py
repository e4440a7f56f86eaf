"""Label-quality evidence: what a capture's own data says about each of its labels, without a model.

Every piece of evidence has a name a reviewer reads. It comes from what the workspace holds beside
the boxes: which modality saw each box and how sure it was, the raw 16-bit thermal counts (people
and vehicles are warm against their surroundings), SAM's mask for the box, the aligned visible
image (its invalid border, and whether it is too dark to see anything), and the ground sample
distance of the capture (how large a person or a car can be in pixels). The same thermal counts
propose *candidate misses*: warm regions of a person's or a vehicle's size that no label covers.

Everything here is a pure function of arrays: the ``queue`` stage (:mod:`ums.queue`) feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

# names a reviewer reads
ONE_MODALITY = "one modality"
ONE_MODALITY_DARK = "one modality (visible too dark)"
ONE_MODALITY_COLD = "one modality (cold in thermal)"
LOW_SCORE = "low score"
MASK_MISMATCH = "mask mismatch"
ON_BORDER = "on invalid border"
TOO_SMALL = "below resolvable size"
SIZE_UNLIKE_CLASS = "size unlike its class"
NOT_WARM = "not warm"
NOT_VISIBLE = "nothing distinct in visible"
OFF_OBJECT = "box off its warm object"
WARM_UNLABELLED = "warm, unlabelled"

EVIDENCE_NAMES = (ONE_MODALITY, ONE_MODALITY_DARK, ONE_MODALITY_COLD, LOW_SCORE, MASK_MISMATCH, ON_BORDER, TOO_SMALL,
                  SIZE_UNLIKE_CLASS, NOT_WARM, NOT_VISIBLE, OFF_OBJECT)

# Plausible footprint from above, square metres (smallest, largest), per UMS class name. People
# seen from above are ~0.5 x 0.4 m; the largest road vehicles ~2.6 x 13 m.
FOOTPRINT_M2 = {"person": (0.08, 1.2), "bicycle": (0.3, 2.0), "motorcycle": (0.5, 3.0), "car": (4.0, 14.0),
                "bus": (15.0, 40.0), "truck": (8.0, 40.0)}
WARM_CLASSES = frozenset(FOOTPRINT_M2)  # bodies and engines: warmer than the ground around them
CANDIDATE_FOOTPRINT_M2 = (0.08, 40.0)  # a warm region of any of those sizes may be a missed object

LOW_SCORE_BELOW = 0.4
DARK_VISIBLE_BELOW = 35.0  # mean grey level of the visible pixels: a night frame shows almost nothing
WARM_CONTRAST_SIGMA = 3.0  # local thermal contrast, in robust standard deviations of the scene
# a candidate's warmest pixel: on synthetic flights the ground's own warm specks peak at 3-4 sigma,
# people and engines at 4.5-25
CANDIDATE_PEAK_SIGMA = 4.5
MIN_RESOLVABLE_PX = 2.0  # a box narrower than this on the thermal grid holds no resolvable object
BORDER_SHARE = 0.3  # share of the box outside the visible image's valid area
MASK_FILL_BELOW = 0.15  # SAM's mask against its box: less than this share of the box, net of what spills out
BACKGROUND_SIGMA_M = 6.0  # the local background: smoother than any object, finer than the scene's warm patches


@dataclass(frozen=True)
class BoxLabel:
    """What evidence needs of a label (on the aligned thermal grid, pixels)."""

    box: tuple[float, float, float, float]
    class_name: str
    score: float | None
    provenance: dict[str, float]
    mask: np.ndarray | None = None  # bool (H, W)


@dataclass
class ThermalScene:
    """A capture's thermal counts as local contrast: each pixel against its surroundings, in units
    of the scene's robust spread."""

    contrast: np.ndarray  # float32 (H, W)
    warm: np.ndarray  # bool (H, W): contrast above WARM_CONTRAST_SIGMA
    metres_per_px: float
    visible_contrast: np.ndarray | None = None  # |grey - its local background|, robust sigmas; None: too dark


@dataclass
class Candidate:
    box: tuple[float, float, float, float]
    contrast: float  # peak local contrast, robust sigmas
    area_m2: float

    def as_dict(self) -> dict:
        return {"box": [round(v, 2) for v in self.box], "contrast": round(self.contrast, 2), "area_m2": round(self.area_m2, 2)}


@dataclass
class LabelEvidence:
    names: list[str] = field(default_factory=list)
    warmth: float | None = None  # local contrast of the box's warmest quarter


# -- the capture's images --------------------------------------------------------------------------
def thermal_scene(counts: np.ndarray, metres_per_px: float, valid: np.ndarray | None = None,
                  visible: np.ndarray | None = None) -> ThermalScene:
    """Local thermal contrast of raw counts (uint16 or 8-bit): the counts minus a smooth local
    background, over the robust spread (1.4826 MAD) of that difference; and, given the aligned
    visible image (not too dark), the same for its grey levels, unsigned (a dark car on light
    asphalt is as distinct as a light one)."""
    sigma_px = max(BACKGROUND_SIGMA_M / max(metres_per_px, 1e-6), 3.0)
    contrast = local_contrast(counts, sigma_px, valid)
    visible_contrast = None
    if visible is not None and not visible_is_dark(visible, valid):
        grey = cv2.cvtColor(visible, cv2.COLOR_BGR2GRAY) if visible.ndim == 3 else visible
        visible_contrast = np.abs(local_contrast(grey, sigma_px, valid))
    return ThermalScene(contrast, contrast > WARM_CONTRAST_SIGMA, metres_per_px, visible_contrast)


def local_contrast(image: np.ndarray, sigma_px: float, valid: np.ndarray | None = None) -> np.ndarray:
    values = image.astype(np.float32)
    residual = values - cv2.GaussianBlur(values, (0, 0), sigma_px)
    sample = residual[valid] if valid is not None and valid.any() else residual.ravel()
    centre = float(np.median(sample))
    spread = 1.4826 * float(np.median(np.abs(sample - centre)))
    return (residual - centre) / max(spread, 1e-3)


def visible_is_dark(visible: np.ndarray, valid: np.ndarray | None = None) -> bool:
    grey = cv2.cvtColor(visible, cv2.COLOR_BGR2GRAY) if visible.ndim == 3 else visible
    mean = cv2.mean(grey, mask=valid.astype(np.uint8) if valid is not None else None)[0]
    return mean < DARK_VISIBLE_BELOW


def valid_area(visible: np.ndarray) -> np.ndarray:
    """Where the aligned visible image has data: its warp leaves exact zeros outside the frame."""
    return (visible.reshape(visible.shape[0], visible.shape[1], -1) > 0).any(axis=2)


# -- one label -------------------------------------------------------------------------------------
def label_evidence(label: BoxLabel, scene: ThermalScene | None, valid: np.ndarray | None, dark_visible: bool) -> LabelEvidence:
    """Every piece of evidence against one label."""
    evidence = LabelEvidence()
    x0, y0, x1, y1 = _pixel_box(label.box, scene.contrast.shape if scene else (valid.shape if valid is not None else None))
    if scene is not None and x1 > x0 and y1 > y0:
        evidence.warmth = box_warmth(scene.contrast[y0:y1, x0:x1])
    evidence.names += modality_evidence(label.provenance, dark_visible, evidence.warmth)
    if label.score is not None and label.score < LOW_SCORE_BELOW:
        evidence.names.append(LOW_SCORE)
    if label.mask is not None:
        if mask_fill(label.mask, (x0, y0, x1, y1)) < MASK_FILL_BELOW:
            evidence.names.append(MASK_MISMATCH)
    if valid is not None and x1 > x0 and y1 > y0 and 1 - valid[y0:y1, x0:x1].mean() > BORDER_SHARE:
        evidence.names.append(ON_BORDER)
    width, height = label.box[2] - label.box[0], label.box[3] - label.box[1]
    if min(width, height) < MIN_RESOLVABLE_PX:
        evidence.names.append(TOO_SMALL)
    if scene is not None:
        if not touches_edge((x0, y0, x1, y1), scene.contrast.shape):  # a box cut by the frame holds part of its object
            evidence.names += size_evidence(label.class_name, width * height * scene.metres_per_px ** 2)
        if label.class_name in WARM_CLASSES and evidence.warmth is not None:
            if evidence.warmth < WARM_CONTRAST_SIGMA:
                evidence.names.append(NOT_WARM)
            elif off_its_object(scene.warm, (x0, y0, x1, y1)):
                evidence.names.append(OFF_OBJECT)
        if scene.visible_contrast is not None and x1 > x0 and y1 > y0:
            if box_warmth(scene.visible_contrast[y0:y1, x0:x1]) < WARM_CONTRAST_SIGMA:
                evidence.names.append(NOT_VISIBLE)
    return evidence


def touches_edge(box: tuple[int, int, int, int], shape) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= 0 or y0 <= 0 or x1 >= shape[1] or y1 >= shape[0]


def box_warmth(contrast: np.ndarray) -> float:
    """The mean contrast of the warmest quarter of a box's pixels: an object fills at least that
    much of its box, while the peak of a large box of plain ground would still reach 3 sigma."""
    values = np.sort(contrast.ravel())
    return float(values[-max(1, values.size // 4):].mean())


def modality_evidence(provenance: dict[str, float], dark_visible: bool, warmth: float | None) -> list[str]:
    """A box seen by one modality only, and whether the other could have seen it: a visible frame
    too dark to show anything, or an object no warmer than its surroundings, explain the silence."""
    seen = {modality for modality, score in provenance.items() if score and score > 0}
    if len(seen) != 1:
        return []
    if seen == {"thermal"} and dark_visible:
        return [ONE_MODALITY_DARK]
    if seen == {"visible"} and warmth is not None and warmth < WARM_CONTRAST_SIGMA:
        return [ONE_MODALITY_COLD]
    return [ONE_MODALITY]


def size_evidence(class_name: str, area_m2: float) -> list[str]:
    smallest, largest = FOOTPRINT_M2.get(class_name, (0.0, float("inf")))
    # a box is a bounding rectangle: up to twice the footprint of an object seen at 45 degrees
    return [SIZE_UNLIKE_CLASS] if not smallest <= area_m2 <= 2 * largest else []


def mask_fill(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    inside = int(mask[y0:y1, x0:x1].sum())
    area = max((x1 - x0) * (y1 - y0), 1)
    outside = int(mask.sum()) - inside  # a mask spilling out of its box has not found the box's object
    return (inside - outside) / area


def off_its_object(warm: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """The warm object under the box lies mostly outside it (over half of the object's bounds): the
    box covers part of an object. A warm part inside the box (a car's engine) is no evidence; a warm
    region much larger than the box (a road, a roof) is the ground the object stands on."""
    x0, y0, x1, y1 = box
    height, width = warm.shape
    pad_x, pad_y = max(2, x1 - x0), max(2, y1 - y0)
    ox0, oy0, ox1, oy1 = max(x0 - pad_x, 0), max(y0 - pad_y, 0), min(x1 + pad_x, width), min(y1 + pad_y, height)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(warm[oy0:oy1, ox0:ox1].astype(np.uint8), connectivity=8)
    inner = labels[y0 - oy0:y1 - oy0, x0 - ox0:x1 - ox0]
    touched, overlap = np.unique(inner[inner > 0], return_counts=True)
    if len(touched) == 0:
        return False
    x, y, w, h, area = (int(v) for v in stats[int(touched[np.argmax(overlap)])])
    if area > 3 * (x1 - x0) * (y1 - y0):
        return False
    object_box = (x + ox0, y + oy0, x + ox0 + w, y + oy0 + h)
    return _intersection(box, object_box) < 0.5 * w * h


def _intersection(a, b) -> float:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


# -- what no label covers --------------------------------------------------------------------------
def warm_candidates(scene: ThermalScene, boxes: list[tuple[float, float, float, float]],
                    valid: np.ndarray | None = None) -> list[Candidate]:
    """Connected warm regions of a person's to a truck's footprint, compact, and covered by no label."""
    smallest, largest = CANDIDATE_FOOTPRINT_M2
    pixel_m2 = scene.metres_per_px ** 2
    count, labels, stats, _ = cv2.connectedComponentsWithStats(scene.warm.astype(np.uint8), connectivity=8)
    covered = np.zeros(scene.warm.shape, bool)
    for box in boxes:
        x0, y0, x1, y1 = _pixel_box(box, scene.warm.shape, grow=1)
        covered[y0:y1, x0:x1] = True
    candidates = []
    for index in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[index])
        if not smallest <= area * pixel_m2 <= largest or max(w, h) > 4 * max(min(w, h), 1) + 2:
            continue  # too small or large, or a strip (a road edge, a wall)
        region = labels[y:y + h, x:x + w] == index
        if covered[y:y + h, x:x + w][region].mean() > 0.2:
            continue
        if valid is not None and not valid[y:y + h, x:x + w][region].any():
            continue
        peak = float(scene.contrast[y:y + h, x:x + w][region].max())
        if peak < CANDIDATE_PEAK_SIGMA:
            continue
        candidates.append(Candidate((float(x), float(y), float(x + w), float(y + h)), peak, area * pixel_m2))
    return sorted(candidates, key=lambda c: -c.contrast)


def _pixel_box(box, shape, grow: int = 0) -> tuple[int, int, int, int]:
    """Integer pixel bounds covering ``box``, clipped to an image of ``shape`` (H, W)."""
    x0, y0 = int(np.floor(box[0])) - grow, int(np.floor(box[1])) - grow
    x1, y1 = int(np.ceil(box[2])) + grow, int(np.ceil(box[3])) + grow
    if shape is None:
        return x0, y0, x1, y1
    height, width = shape[:2]
    return max(x0, 0), max(y0, 0), min(max(x1, x0 + 1), width), min(max(y1, y0 + 1), height)
