"""Classical IR/visible registration: multi-scale ECC on gradient-magnitude images.

Raw intensities of the two modalities are not related by any affine map (polarity flips between
materials), but their edges coincide; ECC on smoothed, normalised gradient magnitudes is the one
classical method that held up on real pairs (registration.md §4). Low-order models only:
translation, Euclidean or similarity (Euclidean + scale); affine and homography drifted on real
pairs. The ECC iterations are OpenCV's ``findTransformECC`` update (Evangelidis & Psarakis, PAMI
2008) written as dense float32 vector operations with each motion's Jacobian (``ecc_dense``): the
same estimates as OpenCV's on the drone-like benchmark, 3-4x faster on one core, and the
similarity model OpenCV lacks.
A coarse exhaustive translation search on the 1/4-scale gradient maps gives every model its start:
ECC's basin is a few pixels of the coarsest level, the search covers ``search_px``.
"""

from __future__ import annotations

import cv2
import numpy as np

MOTIONS = ("translation", "euclidean", "similarity")
# One default for the API, `ums align` and the benchmark, chosen by measurement (bench/RESULTS.md,
# issue 14): on drone-like warps only similarity follows the residual scale between the cameras.
DEFAULT_MOTION = "similarity"
GRADIENT_SIGMA = 1.5  # px: the blur before the gradients


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
    magnitude = np.sqrt(gx * gx + gy * gy)
    scale = np.percentile(magnitude, 99)
    if scale <= 1e-6:
        return np.zeros_like(magnitude)
    return np.clip(magnitude / scale, 0, 1)


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
            # converges in 5-10 iterations from the previous level; the cap bounds oscillation
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
    and 2.77 px p90; without it 0.12 / 0.50 (bench/RESULTS.md, issue 14)."""
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
    """One low-order motion about the image centre c (x~ = x - c): its parameters, the map they
    give, the Jacobian rows of the sampled image with respect to them, and the 2x3 matrix.

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

    def maps(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (m00, m01), (m10, m11) = self.linear()
        tx, ty = self.params[-2:]
        return (m00 * xs + m01 * ys + tx).astype(np.float32), (m10 * xs + m11 * ys + ty).astype(np.float32)

    def jacobian(self, gx: np.ndarray, gy: np.ndarray, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        rows = 0
        if self.motion == "euclidean":
            c, s = np.float32(np.cos(self.params[0])), np.float32(np.sin(self.params[0]))
            # d/dtheta of (c x - s y, s x + c y) = (-s x - c y, c x - s y)
            out[0] = gy * (c * x - s * y) - gx * (s * x + c * y)
            rows = 1
        elif self.motion == "similarity":
            np.multiply(gx, x, out=out[0])
            out[0] += gy * y
            np.multiply(gy, x, out=out[1])
            out[1] -= gx * y
            rows = 2
        out[rows], out[rows + 1] = gx, gy
        return out

    @property
    def size(self) -> int:
        return {"translation": 2, "euclidean": 3, "similarity": 4}[self.motion]

    def matrix(self) -> np.ndarray:
        linear = self.linear()
        offset = self.params[-2:] - linear @ self.centre
        return np.hstack([linear, offset[:, None]]).astype(np.float32)


def ecc_dense(fixed: np.ndarray, moving: np.ndarray, transform: np.ndarray, motion: str = "similarity",
              iterations: int = 100, epsilon: float = 1e-5, mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """ECC maximisation (Evangelidis & Psarakis, PAMI 2008) for translation, Euclidean or
    similarity motion: OpenCV's findTransformECC update (zero-mean images, the closed-form lambda
    of the paper's eq. 28), with the motion's Jacobian. Returns (correlation, 2x3 transform).

    Pixels outside the overlap are weighted 0 rather than gathered out, so every array keeps its
    size and each iteration is a handful of dense float32 vector operations; BLAS dot products
    accumulate them in wide lanes and the small normal equations are solved in float64."""
    h, w = fixed.shape
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    # On large levels every other pixel in each direction carries the same information at a
    # quarter of the cost (the images are smoothed gradient maps).
    stride = 2 if h * w > 100_000 else 1
    ys, xs = np.mgrid[0:h:stride, 0:w:stride].astype(np.float32)
    template_all = np.ascontiguousarray(fixed[::stride, ::stride], dtype=np.float32).ravel()
    xs -= centre[0]
    ys -= centre[1]
    x_flat, y_flat = xs.ravel(), ys.ravel()
    # moving, its gradients (and its validity when masked), sampled together by one remap per iteration
    planes = [moving.astype(np.float32), cv2.Sobel(moving, cv2.CV_32F, 1, 0, ksize=3) / 8,
              cv2.Sobel(moving, cv2.CV_32F, 0, 1, ksize=3) / 8]
    if mask is not None:
        planes.append((mask > 0).astype(np.float32))
    channels = cv2.merge(planes)
    model = _DenseMotion(motion, transform, centre)
    reach = max(w, h) / 2  # pixels a change of a linear parameter moves the frame's border
    jacobian = np.empty((model.size, x_flat.size), np.float32)
    correlation = previous = 0.0
    for _ in range(iterations):
        map_x, map_y = model.maps(xs, ys)
        sampled = cv2.remap(channels, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        valid = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        if mask is not None:
            valid &= sampled[..., 3] > 0.999
        weight = valid.ravel().astype(np.float32)
        count = float(np.count_nonzero(valid))
        if count < 64:
            raise RegistrationFailure("the images no longer overlap")
        flat = sampled.reshape(-1, sampled.shape[-1])
        image, gx, gy = flat[:, 0], flat[:, 1] * weight, flat[:, 2] * weight
        image = (image - np.float32(float(image @ weight) / count)) * weight
        template = (template_all - np.float32(float(template_all @ weight) / count)) * weight
        model.jacobian(gx, gy, x_flat, y_flat, jacobian)
        hessian_inv = np.linalg.pinv((jacobian @ jacobian.T).astype(np.float64))
        image_projection = (jacobian @ image).astype(np.float64)
        template_projection = (jacobian @ template).astype(np.float64)
        image_dot_template = float(template @ image)
        image_energy, template_energy = float(image @ image), float(template @ template)
        correlation = image_dot_template / max(np.sqrt(template_energy * image_energy), 1e-12)
        numerator = image_energy - image_projection @ hessian_inv @ image_projection
        denominator = image_dot_template - template_projection @ hessian_inv @ image_projection
        if denominator <= 0:
            raise RegistrationFailure("ECC diverged (the correlation would decrease)")
        error = np.float32(numerator / denominator) * template - image
        delta = hessian_inv @ (jacobian @ error).astype(np.float64)
        model.params += delta
        linear_steps = delta[:-2]
        motion_px = np.linalg.norm(delta[-2:]) + (np.abs(linear_steps).max() * reach if linear_steps.size else 0.0)
        if motion_px < 0.02 or abs(correlation - previous) < epsilon:
            break
        previous = correlation
    return correlation, model.matrix()


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
