"""The visible frame at its own sampling over the aligned thermal grid, and boxes and masks between the two.

The aligned visible image resamples the wide frame about 4x more coarsely than the camera took it
(a person of 15 px becomes 4): detection runs on the region of the source frame that covers the
aligned grid instead, and its boxes come back through the same transforms that made the aligned
image. With pixel centres at integer coordinates (docs/architecture.md):

    aligned pixel p  --align-->  crop grid q = T p  (or p + flow[p])  --crop-->  ideal visible u = H q

where ``H`` is crop's output-to-visible homography (ideal: before the lens distortion that crop
removes in the same resampling) and ``T`` align's transform (aligned image = crop image sampled at
``T p``). The native region is the ideal visible frame itself, cut to the grid's footprint: a plain
crop of the decoded pixels without distortion, an undistorting resampling with it. Boxes are
xyxy with pixel *edges* (pixel i spans i..i+1), as detectors give them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

FLOW_ITERATIONS = 30
EDGE_STEP_PX = 1.0  # spacing of the points a box edge is mapped by, where the map is a flow


@dataclass(frozen=True)
class GridToVisible:
    """Aligned grid pixel -> ideal visible frame pixel, and back."""

    crop_to_visible: np.ndarray  # 3x3: crop's output grid -> ideal visible pixel
    size: tuple[int, int]  # (width, height) of the aligned grid
    transform: np.ndarray | None = None  # 3x3: aligned pixel -> crop grid pixel (align's global models)
    flow: np.ndarray | None = None  # (H, W, 2): aligned pixel p -> crop grid pixel p + flow[p] (learned)

    def __post_init__(self) -> None:
        if (self.transform is None) == (self.flow is None):
            raise ValueError("give align's transform or its flow, one of them")

    def forward(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) aligned pixels -> ideal visible pixels."""
        points = np.asarray(points, np.float64).reshape(-1, 2)
        if self.flow is not None:
            crop = points + sample_bilinear(self.flow, points)
        else:
            crop = homography_points(self.transform, points)
        return homography_points(self.crop_to_visible, crop)

    def inverse(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) ideal visible pixels -> aligned pixels (a flow is inverted by fixed-point iteration)."""
        crop = homography_points(np.linalg.inv(self.crop_to_visible), np.asarray(points, np.float64).reshape(-1, 2))
        if self.flow is None:
            return homography_points(np.linalg.inv(self.transform), crop)
        aligned = crop - sample_bilinear(self.flow, crop)
        for _ in range(FLOW_ITERATIONS):  # p = q - flow(p) contracts: a registration flow varies slowly
            previous, aligned = aligned, crop - sample_bilinear(self.flow, aligned)
            if np.abs(aligned - previous).max(initial=0.0) < 1e-6:
                break
        return aligned

    def scale(self) -> float:
        """Visible pixels per aligned pixel at the grid's centre (the square root of the local area ratio)."""
        w, h = self.size
        centre = np.array([[(w - 1) / 2, (h - 1) / 2]])
        mapped = self.forward(np.vstack([centre, centre + [1, 0], centre + [0, 1]]))
        jacobian = np.stack([mapped[1] - mapped[0], mapped[2] - mapped[0]], 1)
        return math.sqrt(abs(np.linalg.det(jacobian)))

    def exact_by_corners(self) -> bool:
        """A homography maps a box's edges onto straight lines: its corners bound it."""
        return self.flow is None


def homography_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through a 3x3 homography, elementwise: an (N, 3) @ (3, 3) product goes through
    BLAS, whose thread pool made a 640x512 grid take ~0.3 s on a busy machine instead of ~5 ms."""
    m = np.asarray(matrix, np.float64)
    x, y = points[:, 0], points[:, 1]
    w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    return np.stack([(m[0, 0] * x + m[0, 1] * y + m[0, 2]) / w, (m[1, 0] * x + m[1, 1] * y + m[1, 2]) / w], 1)


def sample_bilinear(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``field`` (H, W, C) at float (x, y) points, bilinear in float64, replicated beyond its border
    (cv2.remap quantises the weights to 1/32 px)."""
    h, w = field.shape[:2]
    x = np.clip(points[:, 0], 0, w - 1)
    y = np.clip(points[:, 1], 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros(len(x), np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros(len(y), np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    f = field.astype(np.float64)
    top = f[y0, x0] * (1 - fx) + f[y0, x1] * fx
    bottom = f[y1, x0] * (1 - fx) + f[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@dataclass(frozen=True)
class NativeRegion:
    """Pixels x0..x1-1, y0..y1-1 of the ideal visible frame: the native image's extent."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def size(self) -> tuple[int, int]:
        return self.x1 - self.x0, self.y1 - self.y0

    @property
    def origin(self) -> np.ndarray:
        return np.array([self.x0, self.y0], np.float64)

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


def grid_border(size: tuple[int, int], step: float | None = None) -> np.ndarray:
    """Points on the outer edge of a grid of ``size`` (w, h): its corners, or every ``step`` pixels."""
    w, h = size
    return box_outline(np.array([-0.5, -0.5, w - 0.5, h - 0.5]), step)


def box_outline(box: np.ndarray, step: float | None) -> np.ndarray:
    """A box's (x0, y0, x1, y1) corners, or points along its edges at most ``step`` apart."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if step is None:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    nx = max(2, int(math.ceil((x1 - x0) / step)) + 1)
    ny = max(2, int(math.ceil((y1 - y0) / step)) + 1)
    xs, ys = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
    return np.concatenate([np.stack([xs, np.full(nx, y0)], 1), np.stack([xs, np.full(nx, y1)], 1),
                           np.stack([np.full(ny, x0), ys], 1), np.stack([np.full(ny, x1), ys], 1)])


def native_region(geometry: GridToVisible, frame_size: tuple[int, int]) -> NativeRegion:
    """The visible pixels whose extent covers the aligned grid's footprint, within the frame."""
    step = None if geometry.exact_by_corners() else EDGE_STEP_PX
    footprint = geometry.forward(grid_border(geometry.size, step))
    low, high = footprint.min(0), footprint.max(0)
    # pixel i spans i - 0.5 .. i + 0.5: the first and last pixels that reach into the footprint
    x0, y0 = (int(math.floor(v + 0.5)) for v in low)
    x1, y1 = (int(math.ceil(v - 0.5)) + 1 for v in high)
    width, height = frame_size
    region = NativeRegion(max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
    if region.size[0] < 8 or region.size[1] < 8:
        raise ValueError("the aligned grid's footprint misses the visible frame")
    return region


def native_image(decoded: np.ndarray, region: NativeRegion, K: np.ndarray | None = None,
                 distortion: np.ndarray | None = None) -> np.ndarray:
    """The region of the full-resolution decode, undistorted when the lens has distortion (crop's
    model: OpenCV's, with ``K`` of the full-resolution frame)."""
    if distortion is None or not np.any(distortion):
        return np.ascontiguousarray(decoded[region.y0:region.y1, region.x0:region.x1])
    shifted = np.asarray(K, np.float64).copy()
    shifted[0, 2] -= region.x0
    shifted[1, 2] -= region.y0
    # the window's pixel n is the ideal pixel n + origin: a camera K shifted by the origin, no rotation
    map_x, map_y = cv2.initUndistortRectifyMap(np.asarray(K, np.float64), np.asarray(distortion, np.float64),
                                               np.eye(3), shifted, region.size, cv2.CV_32FC1)
    return cv2.remap(decoded, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def boxes_to_grid(boxes: np.ndarray, region: NativeRegion, geometry: GridToVisible) -> tuple[np.ndarray, np.ndarray]:
    """Native-image boxes -> aligned-grid boxes: each box's edges mapped exactly, the axis-aligned
    box around them, clipped to the grid. Returns the boxes and which inputs they are (a box wholly
    off the grid is dropped)."""
    step = None if geometry.exact_by_corners() else EDGE_STEP_PX
    w, h = geometry.size
    mapped, kept = [], []
    for index, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        # edges -> pixel-centre coordinates of the visible frame, and back to edges on the grid
        outline = box_outline(box, step) - 0.5 + region.origin
        on_grid = geometry.inverse(outline) + 0.5
        x0, y0 = np.clip(on_grid.min(0), 0, [w, h])
        x1, y1 = np.clip(on_grid.max(0), 0, [w, h])
        if x1 > x0 and y1 > y0:
            mapped.append([x0, y0, x1, y1])
            kept.append(index)
    return np.array(mapped, np.float64).reshape(-1, 4), np.array(kept, np.int64)


def boxes_from_grid(boxes: np.ndarray, region: NativeRegion, geometry: GridToVisible) -> np.ndarray:
    """Aligned-grid boxes -> native-image boxes (edges mapped, the axis-aligned box, clipped)."""
    step = None if geometry.exact_by_corners() else 0.25  # a grid pixel spans ~4 native ones
    width, height = region.size
    mapped = []
    for box in np.asarray(boxes, np.float64).reshape(-1, 4):
        native = native_points(box_outline(box, step), region, geometry)
        x0, y0 = np.clip(native.min(0), 0, [width, height])
        x1, y1 = np.clip(native.max(0), 0, [width, height])
        mapped.append([x0, y0, x1, y1])
    return np.array(mapped, np.float64).reshape(-1, 4)


def native_points(points: np.ndarray, region: NativeRegion, geometry: GridToVisible) -> np.ndarray:
    """Aligned-grid points -> native-image points, both in pixel-edge coordinates (as boxes are)."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if not len(points):
        return points
    return geometry.forward(points - 0.5) + 0.5 - region.origin


def grid_maps(region: NativeRegion, geometry: GridToVisible) -> tuple[np.ndarray, np.ndarray]:
    """For cv2.remap: each aligned pixel's position in the native image (float32 maps)."""
    w, h = geometry.size
    xs, ys = np.arange(w, dtype=np.float64)[None, :], np.arange(h, dtype=np.float64)[:, None]
    if geometry.flow is not None:
        xs, ys = xs + geometry.flow[..., 0], ys + geometry.flow[..., 1]  # the crop grid's pixels
        m = geometry.crop_to_visible
    else:
        m = geometry.crop_to_visible @ geometry.transform
    # per plane, outer sums of a row and a column term: no (H * W, 3) product through BLAS
    denominator = m[2, 0] * xs + m[2, 1] * ys + m[2, 2]
    map_x = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / denominator - region.x0
    map_y = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / denominator - region.y0
    return map_x.astype(np.float32), map_y.astype(np.float32)


def masks_to_grid(masks: np.ndarray, maps: tuple[np.ndarray, np.ndarray], scale: float) -> np.ndarray:
    """(N, h, w) native masks -> (N, H, W) grid masks: a grid pixel is in a mask when most of the
    native area it covers is (a Gaussian of ``scale`` native pixels per grid pixel averages it, as
    crop shrinks the thermal image), not when the one native pixel at its centre happens to be."""
    map_x, map_y = maps
    out = np.zeros((len(masks), *map_x.shape), bool)
    sigma = 0.5 * scale
    for index, mask in enumerate(masks):
        left, top, width, height = cv2.boundingRect(mask.view(np.uint8))  # of the nonzero pixels
        if width == 0:
            continue
        margin = int(math.ceil(3 * sigma)) + 2
        x0, y0 = max(left - margin, 0), max(top - margin, 0)
        x1, y1 = min(left + width + margin, mask.shape[1]), min(top + height + margin, mask.shape[0])
        window = mask[y0:y1, x0:x1].astype(np.float32)
        if sigma > 0.6:
            window = cv2.GaussianBlur(window, (0, 0), sigma)
        sampled = cv2.remap(window, map_x - np.float32(x0), map_y - np.float32(y0), cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[index] = sampled >= 0.5
    return out
