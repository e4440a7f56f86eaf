"""Classical IR/visible registration: multi-scale ECC on gradient-magnitude images.

Raw intensities of the two modalities are not related by any affine map (polarity flips between
materials), but their edges coincide; ECC on smoothed, normalised gradient magnitudes is the one
classical method that held up on real pairs (docs/reference/registration.md §4). Low-order models only:
translation, Euclidean or similarity (Euclidean + scale); affine and homography drifted on real
pairs. The ECC iterations are OpenCV's ``findTransformECC`` update (Evangelidis & Psarakis, PAMI
2008) written as dense float32 vector operations with each motion's Jacobian (``ecc_dense``), with
the similarity model OpenCV lacks and a control of the step length it lacks too: across two
modalities the update overshoots and, left alone, swings about the maximum.
A coarse exhaustive translation search on the 1/4-scale gradient maps gives every model its start:
ECC's basin is a few pixels of the coarsest level, the search covers ``search_px``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MOTIONS = ("translation", "euclidean", "similarity")
# One default for the API, `ums align` and the benchmark, chosen by measurement (bench/RESULTS.md):
# on drone-like warps only similarity follows the residual scale between the cameras.
DEFAULT_MOTION = "similarity"
# Bumped when the optimiser's answers can change: align keeps a frame's stored estimate only while
# its crop, its settings and this version are unchanged.
ECC_VERSION = "2"  # 2: step-length control
GRADIENT_SIGMA = 1.5  # px: the blur before the gradients
# A fall of the correlation that makes ECC take its step back. Smaller falls come and go as the
# overlap's edge moves; refusing them stopped ECC short of the maximum on real pairs.
SETBACK = 1e-3


def gradient_representation(image: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Gradient magnitude after Gaussian smoothing, divided by its 99th percentile, clipped to [0, 1]."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey = grey.astype(np.float32)
    if grey.max() > 255:  # 16-bit counts: bring to the same order as 8-bit images
        low, high = np.percentile(grey, (1, 99))
        grey = (grey - low) * (255.0 / max(high - low, 1e-6))
    smooth = cv2.GaussianBlur(grey, (0, 0), sigma)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    # not cv2.magnitude: its SIMD path rounds differently with the arrays' alignment, so the same
    # pair registered in two processes differed by 1e-5 px; each of these numpy steps is exact IEEE
    magnitude = np.multiply(gx, gx, out=gx)
    magnitude += np.multiply(gy, gy, out=gy)
    np.sqrt(magnitude, out=magnitude)
    scale = percentile_99(magnitude)
    if scale <= 1e-6:
        return np.zeros_like(magnitude)
    np.divide(magnitude, scale, out=magnitude)
    return np.minimum(magnitude, 1, out=magnitude)  # magnitudes are >= 0: only the top needs clipping


def percentile_99(values: np.ndarray) -> np.float32:
    """``np.percentile(values, 99)`` of a float32 array, bit for bit, in a tenth of the time: the two
    order statistics it interpolates are selected among the values above a threshold taken from
    every 16th value (selecting over the whole array was a third of the gradient map's cost), then
    interpolated with numpy's own float32 arithmetic."""
    flat = values.ravel()
    quantile = 99 / 100
    position = flat.size * quantile + (1 + quantile * (1 - 1 - 1)) - 1  # numpy's linear method, term for term
    low = max(int(np.floor(position)), 0)
    high = min(low + 1, flat.size - 1)
    sample = flat[::16]
    rank = int(0.97 * (sample.size - 1))
    candidates = flat[flat >= np.partition(sample, rank)[rank]]
    skipped = flat.size - candidates.size  # values below the threshold rank below every candidate
    if skipped > low:  # the sample misjudged the tail: select over everything
        candidates, skipped = flat, 0
    ordered = np.partition(candidates, [low - skipped, high - skipped])
    below, above = ordered[low - skipped], ordered[high - skipped]
    weight = position - low
    if weight < 0.5:
        return below + (above - below) * np.float32(weight)
    return above - (above - below) * np.float32(1 - weight)


def ecc_register(
    fixed: np.ndarray,
    moving: np.ndarray,
    motion: str = DEFAULT_MOTION,
    levels: int = 3,
    iterations: int = 100,
    epsilon: float = 1e-5,
    initial: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    search_px: float = 24.0,
) -> tuple[np.ndarray, float, bool]:
    """Estimate the 2x3 transform mapping fixed pixels to moving pixels, coarse to fine.

    Returns (transform, correlation at the finest level, converged). A level that fails to
    converge keeps the previous level's estimate.
    """
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {sorted(MOTIONS)}, not {motion!r}")
    fixed_rep = gradient_representation(fixed, GRADIENT_SIGMA)
    moving_rep = gradient_representation(moving, GRADIENT_SIGMA)
    if not fixed_rep.any() or not moving_rep.any():
        raise RegistrationFailure("an image has no structure (no gradients)")
    if moving_mask is not None:
        moving_mask = _without_border_edge(moving_mask)
    transform = np.eye(2, 3, dtype=np.float32) if initial is None else initial.astype(np.float32).copy()
    if search_px > 0:
        transform = coarse_translation_search(fixed_rep, moving_rep, transform, search_px)
    correlation, converged = 0.0, True
    for level in reversed(range(levels)):
        scale = 1.0 / (2**level)
        f = _downscale(fixed_rep, scale)
        m = _downscale(moving_rep, scale)
        mask = None if moving_mask is None else _downscale(moving_mask, scale, cv2.INTER_NEAREST)
        scaled = _scale_transform(transform, scale)
        try:
            # 2-6 iterations from the previous level (ecc_dense's guards); the cap bounds the rest
            correlation, scaled = ecc_dense(f, m, scaled, motion, min(iterations, 25), max(epsilon, 1e-4), mask)
            transform = _scale_transform(scaled, 1.0 / scale)
            converged = True
        except RegistrationFailure:
            converged = False
    if not converged:
        correlation = _correlation(fixed_rep, moving_rep, transform)
    return transform, float(max(correlation, 0.0)), converged


def _without_border_edge(mask: np.ndarray) -> np.ndarray:
    """The mask shrunk by the gradient map's reach (3 sigma of its blur + the Sobel tap): inside
    that band the map shows the mask's own border, an edge the fixed image does not have. On
    drone-like warps with the band kept, ECC similarity's floor-free disagreement was 0.58 px median
    and 2.77 px p90; without it 0.12 / 0.50 (bench/RESULTS.md)."""
    reach = int(np.ceil(3 * GRADIENT_SIGMA)) + 1
    return cv2.erode((mask > 0).astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))


def coarse_translation_search(fixed_rep: np.ndarray, moving_rep: np.ndarray, transform: np.ndarray,
                              search_px: float, scale: float = 0.25) -> np.ndarray:
    """Exhaustive normalised cross-correlation of the gradient maps over +-``search_px`` (at 1/4
    scale), around ``transform``; returns it with the best translation added."""
    f = _downscale(fixed_rep, scale)
    h, w = f.shape
    m = cv2.warpAffine(_downscale(moving_rep, scale), _scale_transform(transform, scale), (w, h),
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    radius = int(np.ceil(search_px * scale))
    if h <= 4 * radius or w <= 4 * radius:
        return transform
    template = f[radius:-radius, radius:-radius]
    if not template.any():
        return transform
    scores = cv2.matchTemplate(m, template, cv2.TM_CCOEFF_NORMED)
    _, _, _, (best_x, best_y) = cv2.minMaxLoc(scores)
    shifted = transform.astype(np.float64).copy()
    # a fixed pixel p is seen at p + d in the warped moving map: compose d (full-resolution pixels)
    d = np.array([best_x - radius, best_y - radius]) / scale
    shifted[:, 2] += shifted[:, :2] @ d
    return shifted.astype(np.float32)


class _DenseMotion:
    """One low-order motion about the image centre c (x~ = x - c): its parameters, the Jacobian
    rows of the sampled image with respect to them, and the 2x3 matrix.

    translation: (tx, ty); euclidean: (theta, tx, ty); similarity: (a, b, tx, ty) with
    x' = a x~ - b y~ + tx, y' = b x~ + a y~ + ty."""

    def __init__(self, motion: str, transform: np.ndarray, centre: np.ndarray):
        self.motion, self.centre = motion, centre
        linear = transform[:, :2].astype(np.float64)
        offset = transform[:, 2].astype(np.float64) + linear @ centre  # the translation about the centre
        if motion == "translation":
            self.params = offset.copy()
        elif motion == "euclidean":
            self.params = np.array([np.arctan2(linear[1, 0], linear[0, 0]), *offset])
        else:
            self.params = np.array([linear[0, 0], linear[1, 0], *offset])

    def linear(self) -> np.ndarray:
        if self.motion == "translation":
            return np.eye(2)
        if self.motion == "euclidean":
            c, s = np.cos(self.params[0]), np.sin(self.params[0])
            return np.array([[c, -s], [s, c]])
        a, b = self.params[:2]
        return np.array([[a, -b], [b, a]])

    def jacobian(self, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fills the rows of ``out`` before its last two, which hold the sampled gradients (gx, gy):
        they are the translation's rows, written there in place by the caller."""
        gx, gy = out[-2], out[-1]
        if self.motion == "euclidean":
            c, s = np.float32(np.cos(self.params[0])), np.float32(np.sin(self.params[0]))
            # d/dtheta of (c x - s y, s x + c y) = (-s x - c y, c x - s y)
            out[0] = gy * (c * x - s * y) - gx * (s * x + c * y)
        elif self.motion == "similarity":
            np.multiply(gx, x, out=out[0])
            out[0] += gy * y
            np.multiply(gy, x, out=out[1])
            out[1] -= gx * y
        return out

    @property
    def size(self) -> int:
        return {"translation": 2, "euclidean": 3, "similarity": 4}[self.motion]

    def matrix(self, dtype: type = np.float32) -> np.ndarray:
        linear = self.linear()
        offset = self.params[-2:] - linear @ self.centre
        return np.hstack([linear, offset[:, None]]).astype(dtype)


def ecc_dense(fixed: np.ndarray, moving: np.ndarray, transform: np.ndarray, motion: str = "similarity",
              iterations: int = 100, epsilon: float = 1e-5, mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """ECC maximisation (Evangelidis & Psarakis, PAMI 2008) for translation, Euclidean or
    similarity motion: OpenCV's findTransformECC update (zero-mean images, the closed-form lambda
    of the paper's eq. 28), with the motion's Jacobian. Returns (correlation, 2x3 transform).

    Pixels outside the overlap are weighted 0 rather than gathered out, so every array keeps its
    size and each iteration is a handful of dense float32 vector operations; one BLAS product gives
    the dot products of an update, accumulated in wide lanes, and the small normal equations are
    solved in float64. The moving map and its gradients are sampled by one warpAffine per iteration.

    Two guards keep the iterations few. The update takes the curvature of the correlation from the
    moving map's gradients alone; where the fixed map's edges are narrower than the moving map's
    (two modalities, two blurs) the true curvature is up to twice that, the step overshoots up to
    twofold, and unguarded it swung from one side of the maximum to the other until the iteration
    cap. So a step that turns back on the previous one halves the step length from then on, and a
    step after which the correlation fell by more than ``SETBACK`` is taken back and retried at
    half the length."""
    h, w = fixed.shape
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    # On large levels every other pixel in each direction carries the same information at a
    # quarter of the cost (the images are smoothed gradient maps).
    stride = 2 if h * w > 100_000 else 1
    columns = np.arange(0, w, stride, dtype=np.float32) - np.float32(centre[0])
    lines = np.arange(0, h, stride, dtype=np.float32) - np.float32(centre[1])
    shape = (lines.size, columns.size)
    x_flat, y_flat = np.tile(columns, lines.size), np.repeat(lines, columns.size)
    template_all = np.ascontiguousarray(fixed[::stride, ::stride], dtype=np.float32).ravel()
    channels = _moving_channels(moving, mask)
    model = _DenseMotion(motion, transform, centre)
    reach = max(w, h) / 2  # pixels a change of a linear parameter moves the frame's border
    # the Jacobian's rows, then the zero-mean image and template: their Gram matrix holds every
    # dot product an update needs
    rows = np.empty((model.size + 2, x_flat.size), np.float32)
    jacobian, image, template = rows[:-2], rows[-2], rows[-1]
    best: _Point | None = None
    gain, previous = 1.0, 0.0
    for _ in range(iterations):
        sampled, gx, gy, weight = _sample(channels, model.matrix(np.float64), stride, shape)
        correlation = _zero_mean_correlation(sampled, template_all, weight, image, template)
        if best is not None and correlation < best.correlation - SETBACK:
            gain *= 0.5
            model.params = best.params + gain * best.step
            if _step_px(gain * best.step, reach) < 0.02:
                break
            continue
        np.multiply(gx, weight, out=jacobian[-2])
        np.multiply(gy, weight, out=jacobian[-1])
        model.jacobian(x_flat, y_flat, jacobian)
        step = _ecc_step(rows)
        if best is not None and _turns_back(step, best.step, reach):
            gain *= 0.5
        best = _Point(model.params.copy(), correlation, step)
        model.params = model.params + gain * step
        if _step_px(gain * step, reach) < 0.02 or abs(correlation - previous) < epsilon:
            break
        previous = correlation
    return (best.correlation if best is not None else correlation), model.matrix()


@dataclass
class _Point:
    """The last parameters ECC stepped from: their correlation and the step taken."""

    params: np.ndarray
    correlation: float
    step: np.ndarray


def _turns_back(step: np.ndarray, previous: np.ndarray, reach: float) -> bool:
    """Whether ``step`` points back along ``previous`` (cosine below -0.5, both in pixels moved)."""
    scale = np.ones(step.size)
    scale[:-2] = reach
    a, b = step * scale, previous * scale
    return bool(a @ b < -0.5 * np.linalg.norm(a) * np.linalg.norm(b))


def _moving_channels(moving: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The moving map, its x and y derivatives and its validity (1 where no mask is given) as one
    4-channel image: one warp per iteration samples all four, and the validity, warped with a zero
    border, also drops the samples that fall outside the frame."""
    validity = np.ones(moving.shape, np.float32) if mask is None else (mask > 0).astype(np.float32)
    # Sobel's taps sum to 8 times the derivative
    return cv2.merge([moving.astype(np.float32, copy=False), cv2.Sobel(moving, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8),
                      cv2.Sobel(moving, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8), validity])


def _sample(channels: np.ndarray, transform: np.ndarray, stride: int, shape: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The channels sampled at ``transform`` of every ``stride``-th fixed pixel: the image, its
    gradients and the 0/1 weight of the samples inside the frame and the mask (flat float32).
    warpAffine builds the sample positions itself, row by row, where a remap needed two maps
    computed in numpy on every iteration."""
    on_grid = transform @ np.diag([stride, stride, 1.0])
    sampled = cv2.warpAffine(channels, on_grid, shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    flat = sampled.reshape(-1, 4)
    weight = (flat[:, 3] > 0.999).astype(np.float32)
    return flat[:, 0], flat[:, 1], flat[:, 2], weight


def _zero_mean_correlation(sampled: np.ndarray, template_all: np.ndarray, weight: np.ndarray,
                           image: np.ndarray, template: np.ndarray) -> float:
    """Writes both images, zero-mean over the weighted samples and 0 elsewhere, into ``image`` and
    ``template``; returns their correlation."""
    count = float(np.count_nonzero(weight))
    if count < 64:
        raise RegistrationFailure("the images no longer overlap")
    np.multiply(sampled - np.float32(float(sampled @ weight) / count), weight, out=image)
    np.multiply(template_all - np.float32(float(template_all @ weight) / count), weight, out=template)
    energy = float(image @ image) * float(template @ template)
    return float(template @ image) / max(np.sqrt(energy), 1e-12)


def _ecc_step(rows: np.ndarray) -> np.ndarray:
    """The parameter update H^-1 J (lambda t - i), with H = J J^T and lambda from the paper's
    eq. 28, from ``rows`` = (J, i, t): H^-1 J i and H^-1 J t come from one solve."""
    size = rows.shape[0] - 2
    gram = (rows[:size] @ rows.T).astype(np.float64)
    hessian, projections = gram[:, :size], gram[:, size:]
    try:
        solved = np.linalg.solve(hessian, projections)
    except np.linalg.LinAlgError:  # no gradient along some parameter: the least-norm step
        solved = np.linalg.pinv(hessian) @ projections
    image, template = rows[-2], rows[-1]
    numerator = float(image @ image) - projections[:, 0] @ solved[:, 0]
    denominator = float(template @ image) - projections[:, 1] @ solved[:, 0]
    if denominator <= 0:
        raise RegistrationFailure("ECC diverged (the correlation would decrease)")
    return (numerator / denominator) * solved[:, 1] - solved[:, 0]


def _step_px(step: np.ndarray, reach: float) -> float:
    """How far a parameter step moves the frame at most (px): its translation plus the largest
    linear change times the distance from the centre to the border."""
    linear = step[:-2]
    return float(np.linalg.norm(step[-2:]) + (np.abs(linear).max() * reach if linear.size else 0.0))


class RegistrationFailure(RuntimeError):
    """The pair cannot be registered (no structure, no overlap, no convergence)."""


def _downscale(image: np.ndarray, scale: float, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    if scale == 1.0:
        return image
    size = (max(8, round(image.shape[1] * scale)), max(8, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


def _scale_transform(transform: np.ndarray, scale: float) -> np.ndarray:
    """The same motion expressed on an image resized by ``scale`` (pixel-centre convention)."""
    matrix = np.vstack([transform, [0, 0, 1]]).astype(np.float64)
    s = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5], [0, 0, 1]])
    return (s @ matrix @ np.linalg.inv(s))[:2].astype(np.float32)


def _correlation(fixed_rep: np.ndarray, moving_rep: np.ndarray, transform: np.ndarray) -> float:
    warped = cv2.warpAffine(moving_rep, transform, fixed_rep.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return float(cv2.computeECC(fixed_rep, warped))
